/**
 * Figures 2 and 5: a full drain of 10 k, 100 k and 1 M idle flows to IPFIX on loopback, and the
 * drain of 1 M flows that stay active (held in the cache, written back as the kernel snapshot),
 * through the daemon's own code (misc/bench/drain-child.ts), counted by a sink in another process
 * (misc/bench/sink.ts); and the drain process's peak RSS.
 */
import {fork, type ChildProcess} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {fileURLToPath} from 'node:url'
import {setTimeout as sleep} from 'node:timers/promises'

import {pathsFromEnv} from '../../src/paths.js'
import {compileMeter} from '../../src/bpf/compile.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import type {DrainExit, DrainRun} from './drain-child.js'
import type {SinkCounts} from './sink.js'
import {cleanup, fixed, log, median, ratio, si, type BenchOptions, type Row} from './util.js'

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url))

/** Capacity of the benchmark's flow maps: the largest drain must fit. */
const CAPACITY = 1 << 20

function request<T>(child: ChildProcess, message: object, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to ${JSON.stringify(message)} in ${timeoutMs} ms`)), timeoutMs)
    const onMessage = (m: T & {error?: string}) => {
      clearTimeout(timer)
      child.off('exit', onExit)
      if (m.error) reject(new Error(m.error))
      else resolve(m)
    }
    const onExit = (code: number | null) => {
      clearTimeout(timer)
      child.off('message', onMessage)
      reject(new Error(`child exited (${code}) before answering ${JSON.stringify(message)}`))
    }
    child.once('message', onMessage)
    child.once('exit', onExit)
    if (Object.keys(message).length) child.send(message)
  })
}

function spawnChild(file: string, args: string[], execArgv: string[] = [], env: Record<string, string> = {}): ChildProcess {
  const child = fork(here(file), args, {stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv, env: {...process.env, ...env}})
  cleanup.push(`stopping ${file}`, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return child
}

/** Waits until the sink has counted `expected` records or its count stops moving. */
async function sinkSettled(sink: ChildProcess, expected: number): Promise<SinkCounts> {
  let last = -1
  for (let quiet = 0; ;) {
    const c = await request<SinkCounts>(sink, {type: 'count'})
    if (c.records >= expected) return c
    if (c.records === last) {
      if (++quiet >= 10) return c
    } else quiet = 0
    last = c.records
    await sleep(50)
  }
}

function memoryText(run: DrainRun): string {
  const m = run.memory
  return `RSS ${fixed(m.vmRssKb / 1024, 0)} MB (own ${fixed(m.rssAnonKb / 1024, 0)}, files ${fixed(m.rssFileKb / 1024, 0)}; peak ${fixed(m.vmHwmKb / 1024, 0)}), heap ${fixed(m.heapUsed / 2 ** 20, 0)} MB, buffers ${fixed(m.arrayBuffers / 2 ** 20, 0)} MB`
}

export async function benchDrain(options: BenchOptions, profile?: string): Promise<Row[]> {
  const sizes = options.quick ? [10_000, 100_000, 1_000_000] : [10_000, 100_000, 1_000_000]
  const repeats = options.repeats
  const netns = 'fct-bench-drain'
  const set = MeterSet.for(pathsFromEnv(), netns)
  log(`drain: loading a meter set with ${CAPACITY} flows per map`)
  await set.create((await compileMeter({capacity: CAPACITY}, pathsFromEnv().cacheDir)).objectPath, CAPACITY)
  cleanup.push('removing the drain meter set', () => set.remove())

  const sink = spawnChild('./sink.js', [])
  const {port} = await request<{port: number}>(sink, {})
  // The drain process runs with the environment the service gives the daemon (Node's options, malloc's).
  const execArgv = profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : []
  const child = spawnChild('./drain-child.js', [JSON.stringify({netns, sinkPort: port})], execArgv, serviceEnvironment())
  await request<{ready: boolean}>(child, {})

  const rows: Row[] = []
  let expected = 0
  let lost = 0
  let sendErrors = 0
  const allRuns: DrainRun[] = []
  for (const n of sizes) {
    const runs: DrainRun[] = []
    for (let r = 0; r < repeats; r++) {
      const run = await request<DrainRun>(child, {type: 'run', flows: n})
      if (run.exported !== n) throw new Error(`drain of ${n} flows exported ${run.exported}`)
      expected += n
      const counts = await sinkSettled(sink, expected)
      if (counts.records < expected) {
        lost += expected - counts.records
        expected = counts.records
      }
      sendErrors += run.sendErrors
      runs.push(run)
      allRuns.push(run)
      if (options.verbose)
        log(
          `drain ${n}: fill ${fixed(run.fillMs, 0)} ms, drain ${fixed(run.drainMs, 0)} ms (sync ${fixed(run.syncMs, 0)} ms, CPU ${fixed(run.cpuMs, 0)} ms; ${phaseText(run)}), ${run.messages} messages; ${memoryText(run)}`,
        )
    }
    const ms = median(runs.map((x) => x.drainMs))
    const flowsPerS = n / (ms / 1000)
    const cpuMs = median(runs.map((x) => x.cpuMs))
    const bytesPerS = median(runs.map((x) => x.octets / (x.drainMs / 1000)))
    const fillMs = median(runs.map((x) => x.fillMs))
    const target = n === 1_000_000 ? 1_000_000 : undefined
    rows.push({
      figure: `drain->IPFIX ${si(n)} flows: flows/s`,
      ours: `${si(flowsPerS)}/s (${fixed(ms, 0)} ms; CPU ${fixed(cpuMs, 0)} ms)`,
      reference: n === 1_000_000 ? `older tool 34-56 k/s; ${phaseText(medianPhases(runs))}` : 'older tool 34-56 k/s',
      ratio: ratio(flowsPerS / 56_000),
      target: target ? `>= ${si(target)}/s` : '',
      pass: target ? flowsPerS >= target : undefined,
    })
    rows.push({
      figure: `drain->IPFIX ${si(n)} flows: bytes/s`,
      ours: `${si(bytesPerS, 'B')}/s`,
      reference: `fill ${fixed(fillMs, 0)} ms`,
      ratio: '',
      target: '',
    })
  }

  // 1 M flows that stay active: the same keys every drain, last seen now. Each drain swaps out a
  // map of 1 M entries, merges them into a cache of 1 M and commits a snapshot of 1 M records.
  const active = 1_000_000
  const activeRuns: DrainRun[] = []
  for (let r = 0; r < repeats; r++) {
    const run = await request<DrainRun>(child, {type: 'run', flows: active, active: true})
    if (run.exported !== 0 || run.pending !== active)
      throw new Error(
        `drain of ${active} active flows exported ${run.exported} (by end reason ${JSON.stringify(run.reasons)}) and holds ${run.pending}, fill ${fixed(run.fillMs, 0)} ms, drain ${fixed(run.drainMs, 0)} ms`,
      )
    activeRuns.push(run)
    allRuns.push(run)
    if (options.verbose)
      log(
        `drain ${active} active: fill ${fixed(run.fillMs, 0)} ms, drain ${fixed(run.drainMs, 0)} ms (CPU ${fixed(run.cpuMs, 0)} ms; ${phaseText(run)}); ${memoryText(run)}`,
      )
  }
  const activeMs = median(activeRuns.map((x) => x.drainMs))
  const activeRate = active / (activeMs / 1000)
  rows.push({
    figure: `drain ${si(active)} ACTIVE flows (cache + snapshot): flows/s`,
    ours: `${si(activeRate)}/s (${fixed(activeMs, 0)} ms; CPU ${fixed(median(activeRuns.map((x) => x.cpuMs)), 0)} ms)`,
    reference: phaseText(medianPhases(activeRuns)),
    ratio: '',
    target: `>= ${si(1_000_000)}/s`,
    pass: activeRate >= 1_000_000,
  })
  // Export what the cache holds (forced drain), so that the sink's count can be checked whole.
  const flushed = await request<DrainRun>(child, {type: 'flush'})
  if (flushed.exported !== active) throw new Error(`the forced drain exported ${flushed.exported} of ${active} held flows`)
  expected += flushed.exported
  const settled = await sinkSettled(sink, expected)
  if (settled.records < expected) lost += expected - settled.records
  sendErrors += flushed.sendErrors

  const counts = await request<SinkCounts>(sink, {type: 'count'})
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const exit = await request<DrainExit>(child, {type: 'exit'})
  await exited // (with --profile, the child writes its profile as it exits)
  rows.push({
    figure: 'drain: records lost on the way',
    ours: `${lost} (sink counted ${si(counts.records)}, seq gaps ${counts.sequenceGaps}, socket drops ${counts.drops}, send errors ${sendErrors})`,
    reference: `rcvbuf ${si(counts.rcvbuf, 'B')}`,
    ratio: '',
    target: '0',
    pass: lost === 0 && counts.sequenceGaps === 0 && counts.drops === 0 && sendErrors === 0,
  })
  const peakMb = exit.vmHwmKb / 1024
  const largest = allRuns.reduce((a, b) => (b.memory.vmRssKb > a.memory.vmRssKb ? b : a))
  rows.push({
    figure: 'daemon peak RSS draining 1 M flows',
    ours: `${fixed(peakMb, 0)} MB`,
    // Of the RSS, what the process has to itself and what are pages of files (Node's binary and libraries, shared with other processes and reclaimable).
    reference: `VmHWM of the drain process; after its largest run ${fixed(largest.memory.rssAnonKb / 1024, 0)} MB its own, ${fixed(largest.memory.rssFileKb / 1024, 0)} MB of files`,
    ratio: '',
    target: '<= 200 MB',
    pass: peakMb <= 200,
  })
  sink.send({type: 'stop'})
  await set.remove()
  return rows
}

/** Each phase's median over the runs. */
function medianPhases(runs: DrainRun[]): Pick<DrainRun, 'phases'> {
  const keys = Object.keys(runs[0].phases) as (keyof DrainRun['phases'])[]
  return {phases: Object.fromEntries(keys.map((k) => [k, median(runs.map((r) => r.phases[k]))])) as DrainRun['phases']}
}

/** "swap 70, merge 800, expire 100, commit 40 ms" */
function phaseText(run: Pick<DrainRun, 'phases'>): string {
  const p = run.phases
  return `swap ${fixed(p.swapMs, 0)}, merge ${fixed(p.mergeMs, 0)}, expire ${fixed(p.expireMs, 0)}, commit ${fixed(p.commitMs, 0)} ms`
}

/** The variables the service's `Environment=` lines set (misc/flowctl.service). */
export function serviceEnvironment(): Record<string, string> {
  const unit = readFileSync(fileURLToPath(new URL('../../../misc/flowctl.service', import.meta.url)), 'utf8')
  const env: Record<string, string> = {}
  for (const [, name, value] of unit.matchAll(/^Environment=([A-Za-z_][A-Za-z0-9_]*)=(.*)$/gm)) env[name] = value.trim()
  return env
}
