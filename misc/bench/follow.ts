/**
 * Following (issue 27): a real `flowctl daemon` whose config has a `meters:` entry with
 * `interfaces`, in lab namespaces. Two figures: how long from creating an interface (in a
 * namespace the daemon already meters) to its meter being attached, from when on every packet
 * is counted (median and worst of 50); and the daemon's CPU, open files and memory while idle
 * with 100 followed namespaces (20 with --quick), each with its own meter set.
 */
import {spawn} from 'node:child_process'
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {setTimeout as sleep} from 'node:timers/promises'

import {MeterSet} from '../../src/bpf/meter-set.js'
import {Lab} from '../../src/lab/lab.js'
import {pathsFromEnv} from '../../src/paths.js'
import {run} from '../../src/sys/exec.js'
import {cleanup, fixed, log, median, settle, type BenchOptions, type Row} from './util.js'

const CLI = fileURLToPath(new URL('../../../bin/run.js', import.meta.url))
/** Flows per flow map of each followed namespace's set: small, so 100 sets fit any machine. */
const CAPACITY = 4096

interface LogLine {
  event: string
  netns?: string
  interface?: string
  seenAt: number
}

/** The daemon as a child, its log lines as they come. */
function startDaemon(config: string): {
  pid: number
  lines: LogLine[]
  waitFor: (match: (l: LogLine) => boolean, ms?: number) => Promise<LogLine>
  stop: () => Promise<void>
} {
  const child = spawn(process.execPath, [CLI, 'daemon', '-c', config], {stdio: ['ignore', 'ignore', 'pipe'], env: process.env})
  const lines: LogLine[] = []
  createInterface({input: child.stderr}).on('line', (line) => {
    try {
      lines.push({...(JSON.parse(line) as LogLine), seenAt: performance.now()})
    } catch {
      // not a log line
    }
  })
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    await new Promise((resolve) => child.once('exit', resolve))
  }
  cleanup.push('stopping the daemon', stop)
  const waitFor = async (match: (l: LogLine) => boolean, ms = 120_000) => {
    const deadline = Date.now() + ms
    for (;;) {
      const found = lines.find(match)
      if (found) return found
      if (child.exitCode !== null) throw new Error(`the daemon exited (${child.exitCode})`)
      if (Date.now() > deadline) throw new Error('timed out waiting for the daemon')
      await sleep(2)
    }
  }
  return {pid: child.pid!, lines, waitFor, stop}
}

/** user + system CPU seconds of a process, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ 100)
}

function openFiles(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
  return m ? Number(m[1]) * 1024 : 0
}

export async function benchFollow(options: BenchOptions): Promise<Row[]> {
  const lab = new Lab()
  cleanup.push('removing the lab namespaces', () => lab.destroy())
  const tmp = mkdtempSync(join(tmpdir(), 'fct-bench-follow-'))
  cleanup.push('removing the config', () => rmSync(tmp, {recursive: true, force: true}))
  const config = join(tmp, 'config.yaml')
  writeFileSync(
    config,
    `logs:\n- file: /dev/null\nmetrics:\n  listen: ''\nstateFile: ${join(tmp, 'state.json')}\n` +
      `meters:\n- netns: "fct-${lab.id}-*"\n  interfaces: ["lat*", "veth0"]\n  direction: egress\n  capacity: ${CAPACITY}\n`,
  )
  const rows: Row[] = []
  const daemon = startDaemon(config)
  await daemon.waitFor((l) => l.event === 'started')

  // 1. Interface created -> meter attached, in a namespace that has its set already.
  const host = await lab.namespace('lat')
  await run('ip', ['link', 'add', 'lat0', 'type', 'veth', 'peer', 'name', 'p0'], {netns: host})
  await daemon.waitFor((l) => l.event === 'follow-attach' && l.interface === 'lat0')
  const latencies: number[] = []
  for (let i = 1; i <= 50; i++) {
    const t0 = performance.now()
    await run('ip', ['link', 'add', `lat${i}`, 'type', 'veth', 'peer', 'name', `p${i}`], {netns: host})
    const attached = await daemon.waitFor((l) => l.event === 'follow-attach' && l.interface === `lat${i}`)
    latencies.push(attached.seenAt - t0)
    await run('ip', ['link', 'del', `lat${i}`], {netns: host})
  }
  if (options.verbose) log(`follow: attach latencies (ms) ${latencies.map((l) => l.toFixed(0)).join(' ')}`)
  rows.push({
    figure: 'interface created -> metered (median of 50)',
    ours: `${fixed(median(latencies), 0)} ms`,
    reference: '',
    ratio: '',
    target: '2000 ms',
    pass: median(latencies) <= 2000,
  })
  rows.push({
    figure: 'interface created -> metered (worst of 50)',
    ours: `${fixed(Math.max(...latencies), 0)} ms`,
    reference: '',
    ratio: '',
    target: '2000 ms',
    pass: Math.max(...latencies) <= 2000,
  })

  // 2. Idle with N followed namespaces, each with one metered interface and its own set; beside
  // the daemon with one set (the namespace above), to tell what each namespace adds.
  await settle()
  const base = {files: openFiles(daemon.pid), rss: rssBytes(daemon.pid), cpu: cpuSeconds(daemon.pid), at: performance.now()}
  await sleep(options.quick ? 10_000 : 30_000)
  const baseCpu = (cpuSeconds(daemon.pid) - base.cpu) / ((performance.now() - base.at) / 1000)
  const setMemory = MeterSet.for(pathsFromEnv(process.env), host).memory().now
  const n = options.quick ? 20 : 100
  const t0 = performance.now()
  const names: string[] = []
  for (let i = 0; i < n; i++) {
    const ns = await lab.namespace(`n${i}`)
    await run('ip', ['link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'p0'], {netns: ns})
    names.push(ns)
  }
  for (const ns of names) await daemon.waitFor((l) => l.event === 'follow-attach' && l.netns === ns, 600_000)
  log(`follow: ${n} namespaces followed in ${((performance.now() - t0) / 1000).toFixed(0)} s (a set loaded for each)`)
  await settle()
  const [cpu0, at0] = [cpuSeconds(daemon.pid), performance.now()]
  await sleep(options.quick ? 10_000 : 30_000)
  const idleCpu = (cpuSeconds(daemon.pid) - cpu0) / ((performance.now() - at0) / 1000)
  const monitors = (await run('pgrep', ['-P', String(daemon.pid), '-f', 'ip monitor link all-nsid']).catch(() => ({stdout: ''}))).stdout
    .split('\n')
    .filter(Boolean)
  const [files, rss] = [openFiles(daemon.pid), rssBytes(daemon.pid)]
  rows.push({
    figure: `daemon idle CPU, 1 / ${n + 1} followed namespaces (capacity ${CAPACITY})`,
    ours: `${fixed(baseCpu * 100, 1)} / ${fixed(idleCpu * 100, 1)} % of a core`,
    reference: '',
    ratio: '',
    target: '',
  })
  rows.push({figure: `daemon open files, 1 / ${n + 1} followed namespaces`, ours: `${base.files} / ${files}`, reference: '', ratio: '', target: ''})
  rows.push({
    figure: `daemon RSS, 1 / ${n + 1} followed namespaces`,
    ours: `${fixed(base.rss / 2 ** 20, 0)} / ${fixed(rss / 2 ** 20, 0)} MiB`,
    reference: '',
    ratio: '',
    target: '',
  })
  rows.push({
    figure: `kernel memory of a followed namespace's set (capacity ${CAPACITY}, empty)`,
    ours: `${fixed(setMemory / 2 ** 20, 2)} MiB`,
    reference: '',
    ratio: '',
    target: '',
  })
  rows.push({
    figure: `ip monitor processes, ${n} followed namespaces`,
    ours: String(monitors.length),
    reference: '',
    ratio: '',
    target: '1',
    pass: monitors.length === 1,
  })

  for (const ns of names) await run('ip', ['netns', 'del', ns])
  for (const ns of names) await daemon.waitFor((l) => l.event === 'follow-release' && l.netns === ns, 120_000)
  await daemon.stop()
  return rows
}
