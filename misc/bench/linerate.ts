/**
 * Figures 4 and 6, on real traffic: a veth pair between two lab namespaces (fct-<random>-a/b,
 * 198.18.41.0/24), trafgen (Debian's netsniff-ng) sending one fixed frame (IPv4 UDP, 64-byte
 * payload, 106 bytes on the wire) from a to b, at a fixed rate or as fast as one CPU can, through
 * a's qdisc path (so that tc egress, where the programs sit, sees every frame); and the variants
 * switched on a's interface every segment, in rotating order, inside one traffic run (separate
 * runs swing 2x on veth):
 *
 *   figure 4: nothing / an empty tc program / the meter, each on ingress and egress (clsact,
 *             `tc filter replace ... bpf da object-pinned`);
 *   figure 6: nothing / flowctl (the meter and its daemon draining every second) / softflowd
 *             (started for its segment, libpcap on the same interface), at a fixed offered rate
 *             and at the maximum rate: the CPU time each adds per million packets (every CPU's
 *             busy time from /proc/stat, softirq included, against the segments with neither)
 *             and the packet rate against the segments with neither.
 *
 * Packets are counted at the receiving veth (/proc/<process in namespace b>/net/dev).
 */
import {fork} from 'node:child_process'
import {mkdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {setTimeout as sleep} from 'node:timers/promises'

import {execa, type ResultPromise} from 'execa'

import {compileMeter} from '../../src/bpf/compile.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {Lab} from '../../src/lab/lab.js'
import {pathsFromEnv} from '../../src/paths.js'
import {run} from '../../src/sys/exec.js'
import * as P from '../../test/helpers/packets.js'
import {compileEmptyProgram} from './kernel.js'
import {cleanup, fixed, log, median, ratio, si, spread, type BenchOptions, type Row} from './util.js'

const A_ADDR = '198.18.41.1'
const B_ADDR = '198.18.41.2'
const IF_A = 'fa0'
const IF_B = 'fb0'

interface Rig {
  lab: Lab
  a: string
  b: string
  serverPid: number
  /** trafgen's packet configuration: the one frame it sends. */
  trafgenConf: string
  meterProgs: {ingress: string; egress: string}
  emptyProg: string
  dispose(): Promise<void>
}

async function buildRig(): Promise<Rig> {
  const lab = new Lab()
  const undo: (() => unknown)[] = [() => lab.destroy()]
  const dispose = async () => {
    while (undo.length) await undo.pop()!()
  }
  cleanup.push('removing the lab namespaces', dispose)
  const a = await lab.namespace('a')
  const b = await lab.namespace('b')
  const pair = await lab.veth(a, IF_A, b, IF_B, {v4: [`${A_ADDR}/24`, `${B_ADDR}/24`], quiet: true})
  await run('tc', ['qdisc', 'add', 'dev', IF_A, 'clsact'], {netns: a})

  const set = MeterSet.for(pathsFromEnv(), a)
  await set.create((await compileMeter({capacity: 65_536}, pathsFromEnv().cacheDir)).objectPath, 65_536)
  undo.push(() => set.remove())
  const emptyDir = join(pathsFromEnv().pinRoot, `empty-${lab.id}`)
  mkdirSync(emptyDir, {recursive: true})
  undo.push(() => rmSync(emptyDir, {recursive: true, force: true}))
  await execa('bpftool', ['prog', 'loadall', await compileEmptyProgram(), `${emptyDir}/prog`, 'type', 'classifier'])

  // A process in b, to read b's interface counters through its /proc/<pid>/net/dev.
  const server = execa('nsenter', [`--net=/run/netns/${b}`, 'sleep', 'infinity'], {reject: false, stdio: 'ignore'})
  undo.push(async () => {
    server.kill('SIGKILL')
    await server
  })
  // One IPv4 UDP frame from a to b's discard port, 64 bytes of payload (as iperf3 -l 64 sent).
  const mac = (m: string) => Buffer.from(m.replaceAll(':', ''), 'hex')
  const frame = Buffer.concat([mac(pair.b.mac), mac(pair.a.mac), Buffer.from([0x08, 0x00]), P.ipv4(17, A_ADDR, B_ADDR, P.udp(40000, 9, Buffer.alloc(64)))])
  const trafgenConf = join(pathsFromEnv().cacheDir, `frame-${lab.id}.trafgen`)
  writeFileSync(trafgenConf, `{ ${[...frame].map((x) => `0x${x.toString(16).padStart(2, '0')}`).join(', ')} }\n`)
  await sleep(300)
  return {
    lab,
    a,
    b,
    serverPid: server.pid!,
    trafgenConf,
    meterProgs: {ingress: set.progPath('ingress'), egress: set.progPath('egress')},
    emptyProg: `${emptyDir}/prog/empty`,
    dispose,
  }
}

function rxPackets(pid: number): number {
  for (const line of readFileSync(`/proc/${pid}/net/dev`, 'utf8').split('\n')) {
    const [name, rest] = line.split(':')
    if (name.trim() === IF_B) return Number(rest.trim().split(/\s+/)[1])
  }
  throw new Error(`${IF_B} not found in /proc/${pid}/net/dev`)
}

/** Busy CPU time of every CPU, in seconds (user, nice, system, irq, softirq, steal). */
function busySeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  // steal is missing on older kernels.
  const [user, nice, system, , , irq, softirq, steal = 0] = fields
  return (user + nice + system + irq + softirq + steal) / 100 // USER_HZ
}

/** Puts `progs` (or nothing) on a's interface, both directions, in one tc call. */
async function setFilters(rig: Rig, progs: {ingress: string; egress: string} | null, attached: {now: boolean}): Promise<void> {
  const lines = progs
    ? (['ingress', 'egress'] as const).map((d) => `filter replace dev ${IF_A} ${d} pref 1 handle 0x1 bpf da object-pinned ${progs[d]}`)
    : attached.now
      ? (['ingress', 'egress'] as const).map((d) => `filter del dev ${IF_A} ${d} pref 1`)
      : []
  if (lines.length) await run('tc', ['-batch', '-'], {netns: rig.a, input: `${lines.join('\n')}\n`})
  attached.now = !!progs
}

interface Variant {
  name: string
  enter(): Promise<void>
  leave?(): Promise<void>
}

interface Segment {
  variant: string
  cycle: number
  pps: number
  /** Busy CPU seconds per packet over the segment. */
  cpuPerPacket: number
}

function signalGroup(child: ResultPromise, signal: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(-child.pid, signal)
  } catch {
    // the group is gone already
  }
}

/**
 * trafgen in a, sending the rig's frame until stopped: `pps` frames per second, or with null as
 * fast as its one CPU can. Its own options: the qdisc path (tc egress sees the frames), one
 * process, no socket memory or IRQ tuning (those are the machine's, not the bench's).
 */
function startSource(rig: Rig, pps: number | null): ResultPromise {
  const args = ['-o', IF_A, '-i', rig.trafgenConf, '--qdisc-path', '--cpus', '1', '--no-sock-mem', '--notouch-irq', '--no-cpu-stats']
  if (pps !== null) args.push('--rate', `${pps}pps`)
  // trafgen sends from a process it forks: run it in a process group of its own and signal the
  // group, or the sender outlives its parent (and holds our pipes open).
  const source = execa('nsenter', [`--net=/run/netns/${rig.a}`, 'trafgen', ...args], {reject: false, detached: true, stdio: 'ignore'})
  cleanup.push('stopping trafgen', () => signalGroup(source, 'SIGKILL'))
  return source
}

/** Runs the variants in rotating order, `cycles` times, each for `segmentMs`, under one traffic run. */
async function alternate(rig: Rig, variants: Variant[], cycles: number, segmentMs: number, settleMs: number, pps: number | null): Promise<Segment[]> {
  const client = startSource(rig, pps)
  const segments: Segment[] = []
  try {
    await sleep(1000)
    for (let c = 0; c < cycles; c++) {
      for (let k = 0; k < variants.length; k++) {
        const v = variants[(c + k) % variants.length]
        await v.enter()
        await sleep(settleMs)
        const rx0 = rxPackets(rig.serverPid)
        const cpu0 = busySeconds()
        const t0 = performance.now()
        await sleep(segmentMs - settleMs)
        const rx1 = rxPackets(rig.serverPid)
        const cpu1 = busySeconds()
        const t1 = performance.now()
        await v.leave?.()
        if (client.exitCode !== null) {
          const r = await client
          throw new Error(`trafgen ended early (exit ${r.exitCode}): run it by hand in namespace a to see why`)
        }
        const packets = rx1 - rx0
        segments.push({variant: v.name, cycle: c, pps: packets / ((t1 - t0) / 1000), cpuPerPacket: packets ? (cpu1 - cpu0) / packets : Number.NaN})
      }
    }
  } finally {
    // trafgen stops on SIGINT; its sender is another process of its group.
    signalGroup(client, 'SIGINT')
    const stopped = await Promise.race([client.then(() => true), sleep(3000).then(() => false)])
    if (!stopped) {
      signalGroup(client, 'SIGKILL')
      await client
    }
  }
  return segments
}

/** The ratio between two variants within each cycle. */
function cycleRatios(segments: Segment[], num: string, den: string, pick: (s: Segment) => number): number[] {
  const cycles = new Set(segments.map((s) => s.cycle))
  const ratios: number[] = []
  for (const c of cycles) {
    const n = segments.find((s) => s.cycle === c && s.variant === num)
    const d = segments.find((s) => s.cycle === c && s.variant === den)
    if (n && d) ratios.push(pick(n) / pick(d))
  }
  return ratios
}

/** Median over cycles of a per-cycle ratio between two variants. */
function cycleRatio(segments: Segment[], num: string, den: string, pick: (s: Segment) => number): number {
  return median(cycleRatios(segments, num, den, pick))
}

/** The CPU seconds a variant adds per packet over `base`, cycle by cycle. */
function addedCpus(segments: Segment[], variant: string, base: string): number[] {
  const cycles = new Set(segments.map((s) => s.cycle))
  const added: number[] = []
  for (const c of cycles) {
    const v = segments.find((s) => s.cycle === c && s.variant === variant)
    const b = segments.find((s) => s.cycle === c && s.variant === base)
    if (v && b) added.push(v.cpuPerPacket - b.cpuPerPacket)
  }
  return added
}

/** min..max of values scaled by `k`, for the spread of a line. */
function range(values: number[], k: number, digits: number): string {
  return values.length ? `${fixed(Math.min(...values) * k, digits)}..${fixed(Math.max(...values) * k, digits)}` : '-'
}

function ppsOf(segments: Segment[], variant: string): number {
  return median(segments.filter((s) => s.variant === variant).map((s) => s.pps))
}

export async function benchLineRate(options: BenchOptions): Promise<Row[]> {
  const rig = await buildRig()
  try {
    const attached = {now: false}
    const variants: Variant[] = [
      {name: 'none', enter: () => setFilters(rig, null, attached)},
      {name: 'empty', enter: () => setFilters(rig, {ingress: rig.emptyProg, egress: rig.emptyProg}, attached)},
      {name: 'meter', enter: () => setFilters(rig, rig.meterProgs, attached)},
    ]
    const cycles = options.quick ? 4 : Math.max(16, options.repeats * 3)
    const segments = await alternate(rig, variants, cycles, 600, 150, null)
    if (options.verbose) for (const s of segments) log(`linerate: cycle ${s.cycle} ${s.variant} ${si(s.pps)} pps`)
    const meterVsEmpty = cycleRatio(segments, 'meter', 'empty', (s) => s.pps)
    const emptyVsNone = cycleRatio(segments, 'empty', 'none', (s) => s.pps)
    const perCycle = cycleRatios(segments, 'meter', 'empty', (s) => s.pps)
    return [
      {
        figure: 'line rate trafgen UDP 64 B, meter vs empty prog',
        ours: `${si(ppsOf(segments, 'meter'))} pps`,
        reference: `empty ${si(ppsOf(segments, 'empty'))} pps`,
        ratio: `${ratio(meterVsEmpty)} (spread ${fixed(spread(perCycle) * 100, 0)} %, ${cycles} cycles)`,
        target: '>= 0.97x',
        pass: meterVsEmpty >= 0.97,
      },
      {
        figure: 'line rate trafgen UDP 64 B, empty prog vs none',
        ours: `${si(ppsOf(segments, 'empty'))} pps`,
        reference: `none ${si(ppsOf(segments, 'none'))} pps`,
        ratio: ratio(emptyVsNone),
        target: '',
      },
    ]
  } finally {
    await rig.dispose()
  }
}

export async function benchSoftflowd(options: BenchOptions): Promise<Row[]> {
  const rig = await buildRig()
  const here = (file: string) => fileURLToPath(new URL(file, import.meta.url))
  const sink = fork(here('./sink.js'), [], {stdio: ['ignore', 'inherit', 'inherit', 'ipc']})
  const daemonStateFile = join(pathsFromEnv().stateDir, 'bench-daemon-state.json')
  let daemon: ReturnType<typeof fork> | undefined
  const stopChildren = async () => {
    if (daemon?.exitCode === null) {
      const exited = new Promise((resolve) => daemon!.once('exit', () => resolve(true)))
      daemon.kill('SIGTERM')
      if (!(await Promise.race([exited, sleep(5000).then(() => false)]))) daemon.kill('SIGKILL')
    }
    if (sink.exitCode === null) sink.kill('SIGKILL')
  }
  cleanup.push('stopping the daemon and sink', stopChildren)
  try {
    const port = await new Promise<number>((resolve) => sink.once('message', (m: {port: number}) => resolve(m.port)))
    daemon = fork(here('./daemon-child.js'), [JSON.stringify({netns: rig.a, sinkPort: port, stateFile: daemonStateFile})], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    await new Promise<void>((resolve, reject) => {
      daemon!.once('message', () => resolve())
      daemon!.once('exit', (code) => reject(new Error(`the daemon exited (${code})`)))
    })

    const attached = {now: false}
    const softflowdDir = join(pathsFromEnv().runDir, `softflowd-${rig.lab.id}`)
    mkdirSync(softflowdDir, {recursive: true})
    let softflowd: ResultPromise | undefined
    const variants: Variant[] = [
      {name: 'none', enter: () => setFilters(rig, null, attached)},
      {name: 'flowctl', enter: () => setFilters(rig, rig.meterProgs, attached)},
      {
        name: 'softflowd',
        async enter() {
          await setFilters(rig, null, attached)
          // Debian's softflowd, exporting IPFIX to a port nobody listens on in namespace a.
          softflowd = execa(
            'nsenter',
            [
              `--net=/run/netns/${rig.a}`,
              'softflowd',
              '-i',
              IF_A,
              '-n',
              '127.0.0.1:9',
              '-v',
              '10',
              '-d',
              '-p',
              join(softflowdDir, 'pid'),
              '-c',
              join(softflowdDir, 'ctl'),
            ],
            {reject: false, stdio: 'ignore'},
          )
          const proc = softflowd
          cleanup.push('stopping softflowd', () => {
            if (proc.exitCode === null) proc.kill('SIGKILL')
          })
          await sleep(200) // pcap opened
        },
        async leave() {
          softflowd?.kill('SIGTERM')
          await softflowd
        },
      },
    ]
    // More cycles than the other lines: /proc/stat is machine-wide, and each cycle is one sample.
    const cycles = options.quick ? 3 : Math.max(8, 2 * options.repeats)
    const rows: Row[] = []
    for (const [label, pps] of [
      ['30 kpps offered', 30_000],
      ['max rate', null],
    ] as const) {
      const segments = await alternate(rig, variants, cycles, 2000, 400, pps)
      if (options.verbose)
        for (const s of segments) log(`softflowd ${label}: cycle ${s.cycle} ${s.variant} ${si(s.pps)} pps, ${fixed(s.cpuPerPacket * 1e6, 2)} us/pkt`)
      const oursAdded = addedCpus(segments, 'flowctl', 'none')
      const theirsAdded = addedCpus(segments, 'softflowd', 'none')
      const ours = median(oursAdded) * 1e6
      const theirs = median(theirsAdded) * 1e6
      rows.push({
        figure: `vs softflowd, ${label}: CPU added per M pkts`,
        ours: `${fixed(ours, 2)} s (${range(oursAdded, 1e6, 2)})`,
        reference: `softflowd ${fixed(theirs, 2)} s (${range(theirsAdded, 1e6, 2)})`,
        ratio: theirs > 0 ? `${ratio(ours / theirs)} (${cycles} cycles)` : '-',
        target: '<= softflowd',
        pass: ours <= theirs,
      })
      const oursRates = cycleRatios(segments, 'flowctl', 'none', (s) => s.pps)
      const theirRates = cycleRatios(segments, 'softflowd', 'none', (s) => s.pps)
      const oursRate = median(oursRates)
      const theirRate = median(theirRates)
      rows.push({
        figure: `vs softflowd, ${label}: pkt rate vs none`,
        ours: `${ratio(oursRate)} (${range(oursRates, 1, 3)}; ${si(ppsOf(segments, 'flowctl'))} pps)`,
        reference: `softflowd ${ratio(theirRate)} (${range(theirRates, 1, 3)}; ${si(ppsOf(segments, 'softflowd'))} pps)`,
        ratio: ratio(oursRate / theirRate),
        target: '>= softflowd',
        pass: oursRate >= theirRate * 0.995,
      })
    }
    rmSync(softflowdDir, {recursive: true, force: true})
    return rows
  } finally {
    await stopChildren()
    await rig.dispose()
  }
}
