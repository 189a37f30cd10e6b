/**
 * `npm run soak -- --minutes N [--phase restarts|reliability|all]`: traffic over thousands of
 * flows through a metered veth, exported by a real `flowctl daemon` to two collectors in this
 * process, while things go wrong on a schedule. Needs root; not part of `npm test`. Each phase
 * runs N minutes in a lab of its own; `all` (the default) runs both, one after the other.
 *
 * Phase `restarts` (2,000 flows unless --flows): one collector ("restarted") is stopped for 10 s
 * and started again every few minutes, and the daemon is SIGKILLed and started again. At the
 * end: the packets each collector counted against the link's own counter (the link carries
 * nothing but the soak's datagrams), so the steady collector must match exactly; the restarted
 * one's shortfall is what was sent while it was down, reported apart with the sequence numbers'
 * own count of missing records.
 *
 * Phase `reliability` (50,000 flows unless --flows; issue 25): the operations of an operator's
 * week, in turn, while the traffic runs:
 * - the meter detached and attached again beside the daemon: within one drain interval (right
 *   after a drain), or after a few seconds without a meter, with the same or another
 *   --capacity. The traffic is paused (SIGSTOP) around each detach and each attach, so that the
 *   link's counter read while it stands still says exactly which packets crossed with no meter
 *   attached: they are reported apart, and what the collectors must have is what was metered;
 * - the collector "moved" (a `name:`, paced by sendBytesPerSecond) sent to another address by a
 *   rewritten config and SIGHUP, back and forth between two ports this process listens on, both
 *   counted as that one collector;
 * - the collector "outage" down for 15 s (stopped right after a drain, once its socket's queue
 *   is empty, so that what it had received it had read), with a detach, an attach and a move
 *   meanwhile, and started again. The daemon's spoolBytes is 2 MiB there, less than the outage
 *   holds at the default rate: the oldest of it is dropped, and counted.
 * At the end, for each collector: its packets must be the metered packets less what the daemon
 * counted as dropped for it (spoolDroppedPackets in its `stopped` log line, which spool-dropped
 * and spool-lost lines say as they happen); every number is printed.
 *
 * Both phases print the daemon's resident memory at start and end, and exit 1 unless every
 * verdict is PASS.
 *
 *   node dist/misc/soak/index.js --minutes 3 [--phase reliability] [--flows N] [--pps 4000]
 *
 * Everything lives under private roots (fct-soak-<random>) and is removed at the end, on failure
 * and on SIGINT.
 */
import {randomBytes} from 'node:crypto'
import {mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'

import {execa, type ResultPromise} from 'execa'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {IpfixCollector} from '../../src/ipfix/collect/collector.js'
import {ConformanceChecker} from '../../src/ipfix/collect/conformance.js'
import type {DecodedRecord} from '../../src/ipfix/collect/decoder.js'
import {renderFields} from '../../src/ipfix/collect/render.js'
import {Lab} from '../../src/lab/lab.js'
import {startAgent} from '../../src/lab/traffic.js'
import {pathsFromEnv, type Paths} from '../../src/paths.js'

const CLI = fileURLToPath(new URL('../../../bin/run.js', import.meta.url))
const TRAFFIC = fileURLToPath(new URL('./traffic.js', import.meta.url))
const SINK_HOST = '198.18.0.2'
const SINK_PORT = 5001
/** The reliability phase's spoolBytes: less than its outage holds (about 4.5 MB), so that some of it is dropped and counted. */
const RELIABILITY_SPOOL_BYTES = 2 << 20
const PHASES = ['restarts', 'reliability'] as const
type Phase = (typeof PHASES)[number]

function log(message: string): void {
  process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${message}\n`)
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Math.round(Number(m[1]) / 1024) : Number.NaN
  } catch {
    return Number.NaN
  }
}

/** A port from [from, from + 1000) (the soak's collectors and sources: runs beside each other rarely collide). */
function somePort(from: number): number {
  return from + Math.floor(Math.random() * 1000)
}

/** Datagrams waiting in the receive queue of the socket bound to 127.0.0.1:port (/proc/net/udp, this namespace). */
function receiveQueue(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`
  const line = readFileSync('/proc/net/udp', 'utf8')
    .split('\n')
    .find((l) => l.trim().split(/\s+/)[1] === local)
  return line ? Number.parseInt(line.trim().split(/\s+/)[4].split(':')[1], 16) : 0
}

/** This namespace's UDP counters (/proc/net/snmp): the collectors' receive buffer errors. */
function udpCounters(): Record<string, number> {
  const lines = readFileSync('/proc/net/snmp', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('Udp:'))
  const keys = lines[0].split(/\s+/)
  const values = lines[1].split(/\s+/)
  return Object.fromEntries(keys.slice(1).map((k, i) => [k, Number(values[i + 1])]))
}

/**
 * A collector that counts the soak's packets, flows and records, across restarts, on one or more
 * ports (a collector that moves between addresses is one collector: one count, one checker).
 */
class CountingCollector {
  readonly checker = new ConformanceChecker({maxMessageSize: 1400, timeToleranceSeconds: 600})
  packets = 0
  records = 0
  readonly flows = new Set<string>()
  unknownTemplateSets = 0
  downMs = 0
  private readonly listeners: IpfixCollector[] = []
  private downSince = 0

  constructor(
    readonly name: string,
    readonly ports: number[],
  ) {}

  get port(): number {
    return this.ports[0]
  }

  async start(): Promise<void> {
    for (const port of this.ports) {
      const c = new IpfixCollector({host: '127.0.0.1', port, checker: this.checker})
      c.on('record', (r: DecodedRecord) => this.count(r))
      c.on('message', (m) => (this.unknownTemplateSets += m.unknownSets.length))
      await c.start()
      this.listeners.push(c)
    }
    if (this.downSince) this.downMs += Date.now() - this.downSince
    this.downSince = 0
  }

  async stop(): Promise<void> {
    for (const c of this.listeners.splice(0)) await c.stop()
    this.downSince = Date.now()
  }

  /** Whether its sockets have read everything that arrived (a stop now loses nothing unseen). */
  get drained(): boolean {
    return this.ports.every((p) => receiveQueue(p) === 0)
  }

  private count(r: DecodedRecord): void {
    if (r.options) return
    const f = renderFields(r.fields)
    if (f.protocolIdentifier !== 17 || f.destinationIPv4Address !== SINK_HOST) return
    this.packets += Number(f.packetDeltaCount)
    this.records++
    this.flows.add(`${String(f.sourceTransportPort)}>${String(f.destinationTransportPort)}`)
  }

  /** Records the sequence numbers say were never received (gaps), over every domain. */
  missingRecords(): number {
    return this.checker.report().domains.reduce((a, d) => a + d.sequence.missing, 0)
  }
}

interface LogLine {
  event: string
  level: string
  [key: string]: unknown
}

class DaemonChild {
  readonly child: ResultPromise
  readonly startedAt = Date.now()
  /** Its JSON log lines, in order. */
  readonly lines: LogLine[] = []
  private stderr = ''
  private partial = ''
  errors = 0

  constructor(configFile: string, env: Record<string, string>, logFile: string) {
    this.child = execa(process.execPath, [CLI, 'daemon', '-c', configFile], {reject: false, env: {...process.env, ...env}})
    this.child.stderr!.on('data', (d: Buffer) => {
      const text = d.toString()
      this.stderr = `${this.stderr}${text}`.slice(-20_000)
      writeFileSync(logFile, text, {flag: 'a'})
      const lines = `${this.partial}${text}`.split('\n')
      this.partial = lines.pop()!
      for (const line of lines) {
        try {
          const parsed = JSON.parse(line) as LogLine
          this.lines.push(parsed)
          if (parsed.level === 'error') this.errors++
        } catch {
          // not a log line
        }
      }
    })
  }

  get pid(): number {
    return this.child.pid!
  }

  /** The first `event` line from index `from` on that matches, once it is there. */
  async waitFor(event: string, from: number, timeoutMs: number, match: (l: LogLine) => boolean = () => true): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.lines.slice(from).find((l) => l.event === event && match(l))
      if (found) return found
      if (this.child.exitCode !== null) throw new Error(`the daemon exited before logging ${event}: ${this.stderr.slice(-2000)}`)
      if (Date.now() > deadline) throw new Error(`the daemon did not log ${event} within ${timeoutMs / 1000} s: ${this.stderr.slice(-2000)}`)
      await sleep(20)
    }
  }

  async started(): Promise<void> {
    await this.waitFor('started', 0, 60_000)
  }

  /** Resolves just after the daemon's next drain that exported or took something. */
  async nextDrain(): Promise<void> {
    await this.waitFor('drain', this.lines.length, 30_000)
  }

  count(event: string, match: (l: LogLine) => boolean = () => true): number {
    return this.lines.filter((l) => l.event === event && match(l)).length
  }

  async stop(signal: NodeJS.Signals): Promise<number | string> {
    this.child.kill(signal)
    const r = await this.child
    return r.exitCode ?? r.signal ?? -1
  }
}

interface TrafficResult {
  sent: number
  failed: number
  flows: number
  ports: number
}

/** The traffic generator in the client namespace, which can be paused (SIGSTOP) and resumed. */
class TrafficChild {
  readonly child: ResultPromise

  constructor(client: string, spec: {flows: number; pps: number}) {
    // nsenter with --net only enters the namespace and execs node: the pid is node's.
    this.child = execa(
      'nsenter',
      [`--net=/run/netns/${client}`, '--', process.execPath, TRAFFIC, JSON.stringify({host: SINK_HOST, port: SINK_PORT, size: 64, ...spec})],
      {reject: false},
    )
  }

  async ready(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve())
      void this.child.then((r) => reject(new Error(`the traffic generator exited: ${String(r.stderr)}`)))
    })
  }

  /** Stops it and resolves once every thread of it is stopped: from then on, nothing crosses the link. */
  async pause(): Promise<void> {
    const pid = this.child.pid!
    process.kill(pid, 'SIGSTOP')
    const deadline = Date.now() + 10_000
    for (;;) {
      const states = readdirSync(`/proc/${pid}/task`).map((t) => {
        try {
          // The state follows the command name in parentheses.
          return readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8').replace(/^.*\) /s, '')[0]
        } catch {
          return 'T'
        }
      })
      if (states.every((s) => s === 'T' || s === 't')) return
      if (Date.now() > deadline) throw new Error(`the traffic generator did not stop (${states.join('')})`)
      await sleep(2)
    }
  }

  resume(): void {
    process.kill(this.child.pid!, 'SIGCONT')
  }

  async stop(): Promise<TrafficResult> {
    this.resume()
    this.child.kill('SIGTERM')
    return JSON.parse(
      String((await this.child).stdout)
        .trim()
        .split('\n')
        .pop()!,
    ) as TrafficResult
  }
}

interface CollectorSpec {
  collector: CountingCollector
  /** Its `name:` in the config (else its address names it). */
  named?: boolean
  /** Which of its ports the config sends to. */
  at?: number
  /** Its own sendBytesPerSecond. */
  sendBytesPerSecond?: number
}

/** One phase's lab, meter, collectors, daemon and traffic, and their removal. */
class SoakLab {
  readonly id = randomBytes(3).toString('hex')
  readonly work = join(tmpdir(), `fct-soak-${this.id}`)
  readonly env = {FLOWCTL_PIN_ROOT: `/sys/fs/bpf/fct-soak-${this.id}`, FLOWCTL_RUN_DIR: `/run/fct-soak-${this.id}`, FLOWCTL_STATE_DIR: join(this.work, 'state')}
  readonly paths: Paths = pathsFromEnv({...process.env, ...this.env})
  readonly lab = new Lab()
  readonly configFile = join(this.work, 'daemon.yaml')
  readonly daemonLog = join(this.work, 'daemon.log')
  client = ''
  collectors: CollectorSpec[] = []
  daemon?: DaemonChild
  traffic?: TrafficChild
  private sink?: {stop(): void}
  private readonly sources = [somePort(44000), somePort(45000)]
  private cleaned?: Promise<void>

  constructor(readonly settings: string) {}

  async setUp(capacity?: number): Promise<void> {
    mkdirSync(this.work, {recursive: true})
    this.client = await this.lab.namespace('client')
    const server = await this.lab.namespace('server')
    await this.lab.veth(this.client, 'veth0', server, 'veth1', {v4: ['198.18.0.1/24', `${SINK_HOST}/24`], quiet: true})
    await this.attach(capacity)
    this.sink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: SINK_PORT})
  }

  attach(capacity?: number): ReturnType<typeof attachMeters> {
    return attachMeters(this.paths, {targets: [{netns: this.client, ifname: 'veth0'}], directions: ['egress'], pref: 1, handle: 1, force: false, capacity})
  }

  detach(): ReturnType<typeof detachMeters> {
    return detachMeters(this.paths, {targets: [{netns: this.client, ifname: '*'}], all: false, directions: ['egress']})
  }

  async startCollectors(specs: CollectorSpec[]): Promise<void> {
    this.collectors = specs
    for (const s of specs) await s.collector.start()
  }

  writeConfig(): void {
    const collectors = this.collectors.map((s, i) => {
      const c = s.collector
      return (
        `- ${s.named ? `name: ${c.name}\n  ` : ''}address: 127.0.0.1:${c.ports[s.at ?? 0]}\n  source: 127.0.0.1:${this.sources[i]}\n` +
        (s.sendBytesPerSecond ? `  sendBytesPerSecond: ${s.sendBytesPerSecond}\n` : '')
      )
    })
    writeFileSync(
      this.configFile,
      `collectors:\n${collectors.join('')}${this.settings}metrics:\n  listen: ''\nstateFile: ${join(this.work, 'state', 'daemon-state.json')}\n`,
    )
  }

  async startDaemon(): Promise<DaemonChild> {
    const d = new DaemonChild(this.configFile, this.env, this.daemonLog)
    this.daemon = d
    await d.started()
    return d
  }

  async startTraffic(flows: number, pps: number): Promise<TrafficChild> {
    this.traffic = new TrafficChild(this.client, {flows, pps})
    await this.traffic.ready()
    return this.traffic
  }

  async linkTx(): Promise<number> {
    return (await this.lab.linkStats(this.client, 'veth0')).txPackets
  }

  cleanup(): Promise<void> {
    this.cleaned ??= this.doCleanup()
    return this.cleaned
  }

  private async doCleanup(): Promise<void> {
    if (this.traffic?.child.exitCode === null) this.traffic.child.kill('SIGKILL')
    this.sink?.stop()
    if (this.daemon?.child.exitCode === null) await this.daemon.stop('SIGKILL').catch(() => {})
    for (const s of this.collectors) await s.collector.stop().catch(() => {})
    if (this.client) await this.detach().catch(() => {})
    await this.lab.destroy()
    for (const dir of [this.env.FLOWCTL_PIN_ROOT, this.env.FLOWCTL_RUN_DIR, this.work]) rmSync(dir, {recursive: true, force: true})
  }
}

interface Options {
  minutes: number
  flows?: number
  pps: number
}

interface PhaseResult {
  lines: string[]
  pass: boolean
}

/** The collector "restarted" goes down for 10 s now and then; the daemon is SIGKILLed now and then. */
async function restartsPhase(soak: SoakLab, options: Options): Promise<PhaseResult> {
  const {minutes, pps} = options
  const flows = options.flows ?? 2000
  await soak.setUp()
  const steady = new CountingCollector('steady', [somePort(47000)])
  const restarted = new CountingCollector('restarted', [somePort(48000)])
  const collectors = [steady, restarted]
  await soak.startCollectors(collectors.map((collector) => ({collector})))
  soak.writeConfig()

  const linkBefore = await soak.linkTx()
  let daemon = await soak.startDaemon()
  log(`phase restarts: daemon pid ${daemon.pid} started; traffic: ${flows} flows, ${pps} datagrams/s, for ${minutes} min`)
  const traffic = await soak.startTraffic(flows, pps)

  const endAt = Date.now() + minutes * 60_000
  // The faults, every few minutes (scaled down for short runs): the restarted collector goes
  // down for 10 s every collectorEveryMs; the daemon is SIGKILLed every killEveryMs.
  const collectorEveryMs = Math.min(180_000, Math.max(40_000, (minutes * 60_000) / 3))
  const killEveryMs = Math.min(240_000, Math.max(55_000, (minutes * 60_000) / 2))
  let nextCollector = Date.now() + collectorEveryMs / 2
  let nextKill = Date.now() + killEveryMs
  let collectorUpAt = 0
  let rssStart: number | undefined
  const rssAtKill: number[] = []
  let kills = 0
  let collectorRestarts = 0
  while (Date.now() < endAt) {
    await sleep(250)
    const now = Date.now()
    if (rssStart === undefined && now - daemon.startedAt > 15_000) rssStart = rssMb(daemon.pid)
    if (collectorUpAt && now >= collectorUpAt) {
      await restarted.start()
      collectorUpAt = 0
      log('collector "restarted" is back')
    } else if (!collectorUpAt && now >= nextCollector && now + 10_000 < endAt - 10_000) {
      await restarted.stop()
      collectorUpAt = now + 10_000
      nextCollector = now + collectorEveryMs
      collectorRestarts++
      log('collector "restarted" stopped for 10 s')
    }
    if (now >= nextKill && now + 15_000 < endAt) {
      rssAtKill.push(rssMb(daemon.pid))
      await daemon.stop('SIGKILL')
      kills++
      daemon = await soak.startDaemon()
      nextKill = now + killEveryMs
      log(`daemon SIGKILLed (RSS ${rssAtKill.at(-1)} MB) and started again: pid ${daemon.pid}`)
    }
  }
  if (collectorUpAt) await restarted.start()

  const sent = await traffic.stop()
  await sleep(500)
  const linkAfter = await soak.linkTx()
  const rssEnd = rssMb(daemon.pid)
  const code = await daemon.stop('SIGTERM')
  // The final drain's flows are on their way over loopback.
  await sleep(3000)

  const linkPackets = linkAfter - linkBefore
  const lines = [
    `phase restarts: ${minutes} min, ${sent.flows} flows, ${sent.sent} datagrams sent (${sent.failed} refused by the sender's kernel), link tx ${linkPackets} packets`,
    `faults: ${kills} daemon SIGKILL${kills === 1 ? '' : 's'}, ${collectorRestarts} restart${collectorRestarts === 1 ? '' : 's'} of collector "restarted" (down ${Math.round(restarted.downMs / 1000)} s in all); last daemon stopped with ${code}`,
  ]
  for (const c of collectors) {
    const diff = c.packets - linkPackets
    lines.push(
      `collector "${c.name}": ${c.packets} packets in ${c.records} records over ${c.flows.size} flows; ${diff === 0 ? 'EXACT' : `${diff > 0 ? '+' : ''}${diff} packets vs the link`}; ` +
        `sequence gaps: ${c.missingRecords()} records missing; data sets before their template: ${c.unknownTemplateSets}`,
    )
  }
  lines.push(
    `lost while collector "restarted" was down (its spool replays what it missed): ${steady.packets - restarted.packets} packets, ${restarted.missingRecords()} records by its sequence numbers`,
  )
  lines.push(
    `daemon RSS: ${rssStart ?? '?'} MB 15 s after start, ${rssEnd} MB at the end${rssAtKill.length ? ` (at each SIGKILL: ${rssAtKill.join(', ')} MB)` : ''}`,
  )
  const exact = collectors.every((c) => c.packets === linkPackets && c.missingRecords() === 0)
  const pass = exact && linkPackets === sent.sent
  lines.push(
    `verdict: ${pass ? 'PASS' : 'FAIL'} (${pass ? 'every collector, the restarted one too, got exactly' : 'a collector did not get exactly'} what crossed the link)`,
  )
  return {lines, pass}
}

/** What the reliability phase did, for its report. */
interface ReliabilityTally {
  /** Detach and attach with the traffic paused between: no packet crossed without a meter. */
  quickCycles: number
  /** Detach, some seconds of traffic with no meter, attach. */
  gapCycles: number
  capacities: number[]
  moves: number
  outages: number
  outageMs: number
  /** Packets that crossed the link while no meter was attached (the link's counter around each gap). */
  unmetered: number
}

/**
 * Detach/attach cycles of the meter beside the daemon, a collector's address changed by SIGHUP,
 * and a long outage of the other collector, in turn, while 50,000 flows run.
 */
async function reliabilityPhase(soak: SoakLab, options: Options): Promise<PhaseResult> {
  const {minutes, pps} = options
  const flows = options.flows ?? 50_000
  const capacities = [65_536, 131_072]
  let capacity = capacities[0]
  await soak.setUp(capacity)
  const moved = new CountingCollector('moved', [somePort(47000), somePort(48000)])
  const outage = new CountingCollector('outage', [somePort(49000)])
  const collectors = [moved, outage]
  // "moved" goes paced (sendBytesPerSecond): the live pace meets moves and detaches there.
  const movedSpec: CollectorSpec = {collector: moved, named: true, at: 0, sendBytesPerSecond: 10_000_000}
  await soak.startCollectors([movedSpec, {collector: outage, named: true}])
  soak.writeConfig()
  const udpBefore = udpCounters()

  const tally: ReliabilityTally = {quickCycles: 0, gapCycles: 0, capacities: [capacity], moves: 0, outages: 0, outageMs: 0, unmetered: 0}
  const linkBefore = await soak.linkTx()
  const daemon = await soak.startDaemon()
  log(`phase reliability: daemon pid ${daemon.pid} started; traffic: ${flows} flows, ${pps} datagrams/s, for ${minutes} min`)
  const traffic = await soak.startTraffic(flows, pps)

  /** Detach, `gapMs` of traffic without a meter, attach (at `next` capacity): the traffic stands still at each end. */
  const cycle = async (gapMs: number, next: number): Promise<void> => {
    // Right after a drain: a quick cycle is over before the next one.
    await daemon.nextDrain()
    await traffic.pause()
    await soak.detach()
    const off = await soak.linkTx()
    if (gapMs) {
      traffic.resume()
      await sleep(gapMs)
      await traffic.pause()
    }
    const on = await soak.linkTx()
    await soak.attach(next)
    traffic.resume()
    tally.unmetered += on - off
    if (gapMs) tally.gapCycles++
    else tally.quickCycles++
    if (next !== capacity) tally.capacities.push(next)
    log(
      `meter detached and attached again${gapMs ? ` after ${gapMs / 1000} s (${on - off} packets crossed with no meter)` : ' at once'}, capacity ${capacity === next ? `${next} again` : `${capacity} -> ${next}`}`,
    )
    capacity = next
  }
  const otherCapacity = () => capacities[(capacities.indexOf(capacity) + 1) % capacities.length]

  /** The collector "moved" to its other port: config rewritten, SIGHUP. */
  const move = async (): Promise<void> => {
    movedSpec.at = 1 - movedSpec.at!
    soak.writeConfig()
    const from = daemon.lines.length
    process.kill(daemon.pid, 'SIGHUP')
    const line = await daemon.waitFor('collector-moved', from, 30_000, (l) => l.collector === moved.name)
    await daemon.waitFor('reloaded', from, 30_000)
    tally.moves++
    log(`collector "moved" moved by SIGHUP: ${String(line.from)} -> ${String(line.to)} (${String(line.spooledMessages)} messages carried over)`)
  }

  /** The collector "outage" down for `ms`, with a quick cycle and a move meanwhile. */
  const down = async (ms: number): Promise<void> => {
    await daemon.nextDrain()
    // Everything exported so far has arrived and been read: the stop loses nothing unseen.
    await sleep(300)
    while (!outage.drained) await sleep(10)
    await outage.stop()
    const since = Date.now()
    const from = daemon.lines.length
    log(`collector "outage" stopped for ${ms / 1000} s`)
    await sleep(ms / 3)
    await cycle(0, otherCapacity())
    await sleep(Math.max(0, since + (ms * 2) / 3 - Date.now()))
    await move()
    await sleep(Math.max(0, since + ms - Date.now()))
    await outage.start()
    tally.outages++
    tally.outageMs += Date.now() - since
    const back = await daemon.waitFor('collector-back', from, 30_000, (l) => l.collector === outage.name)
    log(`collector "outage" is back after ${Math.round((Date.now() - since) / 1000)} s: ${String(back.replayed)} messages replayed`)
  }

  const steps: {name: string; needsMs: number; run: () => Promise<void>}[] = [
    {name: 'quick cycle', needsMs: 5000, run: () => cycle(0, capacity)},
    {name: 'move', needsMs: 5000, run: move},
    {name: 'gap cycle, another capacity', needsMs: 10_000, run: () => cycle(3000, otherCapacity())},
    {name: 'quick cycle, another capacity', needsMs: 5000, run: () => cycle(0, otherCapacity())},
    {name: 'outage', needsMs: 50_000, run: () => down(15_000)},
    {name: 'gap cycle', needsMs: 10_000, run: () => cycle(2000, capacity)},
    {name: 'move', needsMs: 5000, run: move},
  ]
  const endAt = Date.now() + minutes * 60_000
  // The steps in turn, spread over the run, the outage first among those that do not fit at the end.
  const spacingMs = Math.max(3000, Math.min(30_000, (minutes * 60_000) / 14))
  let rssStart: number | undefined
  let step = 0
  await sleep(Math.min(10_000, spacingMs))
  while (Date.now() < endAt) {
    if (rssStart === undefined && Date.now() - daemon.startedAt > 15_000) rssStart = rssMb(daemon.pid)
    const next = steps[step % steps.length]
    // Every kind of fault once before any repeats, even in a short run; later ones only if they fit.
    if (step >= steps.length && Date.now() + next.needsMs > endAt) break
    await next.run()
    step++
    await sleep(spacingMs)
  }
  rssStart ??= rssMb(daemon.pid)

  const sent = await traffic.stop()
  await sleep(500)
  const linkAfter = await soak.linkTx()
  const rssEnd = rssMb(daemon.pid)
  const code = await daemon.stop('SIGTERM')
  // The final drain's flows, and the pace's last messages, are on their way over loopback.
  await sleep(3000)
  const udpAfter = udpCounters()

  const linkPackets = linkAfter - linkBefore
  const metered = linkPackets - tally.unmetered
  const stopped = (daemon.lines.find((l) => l.event === 'stopped')?.collectors ?? []) as Record<string, number | string>[]
  const gone = (pins: string) => daemon.count('meter-gone', (l) => l.pins === pins)
  const lines = [
    `phase reliability: ${minutes} min, ${sent.flows} flows over ${sent.ports} destination port${sent.ports === 1 ? '' : 's'}, ${sent.sent} datagrams sent (${sent.failed} refused by the sender's kernel), link tx ${linkPackets} packets`,
    `faults: ${tally.quickCycles} detach+attach with no packet between (${gone('replaced')} followed by the daemon within one drain as a replaced set), ${tally.gapCycles} detach, traffic, attach; ` +
      `capacities ${tally.capacities.join(' -> ')}; meter-gone ${gone('removed') + gone('replaced')} (${gone('removed')} removed, ${gone('replaced')} replaced), meter-found ${daemon.count('meter-found')}; ` +
      `${tally.moves} moves of collector "moved" by SIGHUP; ${tally.outages} outage${tally.outages === 1 ? '' : 's'} of collector "outage" (${Math.round(tally.outageMs / 1000)} s in all); daemon stopped with ${code}, ${daemon.errors} error lines`,
    `unmetered: ${tally.unmetered} packets crossed the link while no meter was attached; metered: ${linkPackets} - ${tally.unmetered} = ${metered} packets`,
  ]
  let pass = linkPackets === sent.sent && code === 0
  for (const c of collectors) {
    const stats = stopped.find((s) => s.collector === c.name)
    const droppedPackets = Number(stats?.spoolDroppedPackets ?? Number.NaN)
    const droppedRecords = Number(stats?.spoolDroppedRecords ?? Number.NaN)
    const said = (event: string) => daemon.lines.filter((l) => l.event === event && l.collector === c.name)
    const lastDropped = said('spool-dropped').at(-1)
    const lost = said('spool-lost').reduce((n, l) => n + Number(l.packets), 0)
    const want = metered - droppedPackets
    const exact = c.packets === want
    pass &&= exact
    lines.push(
      `collector "${c.name}": ${c.packets} packets in ${c.records} records over ${c.flows.size} flows; metered ${metered} - dropped ${droppedPackets} = ${want}: ` +
        `${exact ? 'EXACT' : `${c.packets - want > 0 ? '+' : ''}${c.packets - want} packets`}; ` +
        `dropped as the daemon counted them: ${droppedPackets} packets in ${droppedRecords} records (log: spool-dropped ${Number(lastDropped?.packets ?? 0)}, spool-lost ${lost}); ` +
        `sequence gaps: ${c.missingRecords()} records missing; data sets before their template: ${c.unknownTemplateSets}`,
    )
  }
  lines.push(
    `this namespace's UDP counters (the collectors', and any other program's here): receive buffer errors ${udpAfter.RcvbufErrors - udpBefore.RcvbufErrors}, input errors ${udpAfter.InErrors - udpBefore.InErrors}`,
  )
  lines.push(`daemon RSS: ${rssStart} MB 15 s after start, ${rssEnd} MB at the end`)
  lines.push(
    `verdict: ${pass ? 'PASS' : 'FAIL'} (${pass ? 'each collector got exactly what was metered, less what the daemon counted as dropped' : 'a collector did not get exactly what was metered less what was counted as dropped, or the link, the traffic and the daemon disagree'})`,
  )
  return {lines, pass}
}

async function main(): Promise<void> {
  const {values} = parseArgs({
    options: {
      minutes: {type: 'string', default: '10'},
      phase: {type: 'string', default: 'all'},
      flows: {type: 'string'},
      pps: {type: 'string', default: '4000'},
    },
  })
  const minutes = Number(values.minutes)
  const flows = values.flows === undefined ? undefined : Number(values.flows)
  const pps = Number(values.pps)
  const usage = `usage: npm run soak -- --minutes N [--phase ${[...PHASES, 'all'].join('|')}] [--flows N] [--pps N] (numbers above 0)`
  if (!(minutes > 0) || (flows !== undefined && !(flows > 0)) || !(pps > 0)) throw new Error(usage)
  if (values.phase !== 'all' && !PHASES.includes(values.phase as Phase)) throw new Error(usage)
  if (process.getuid?.() !== 0) throw new Error('the soak needs root (network namespaces, tc, bpffs)')
  const phases: Phase[] = values.phase === 'all' ? [...PHASES] : [values.phase as Phase]

  let current: SoakLab | undefined
  // `on`, not `once`: execa's exit hook re-raises a signal that no other listener is left to
  // handle, which killed the soak before it removed its namespaces and pins.
  let interrupted = false
  process.on('SIGINT', () => {
    if (interrupted) return
    interrupted = true
    log('SIGINT: cleaning up')
    void (current?.cleanup() ?? Promise.resolve()).then(() => process.exit(130))
  })

  const results: PhaseResult[] = []
  for (const phase of phases) {
    const settings =
      phase === 'restarts'
        ? 'drainIntervalSeconds: 1\nidleTimeoutSeconds: 5\nactiveTimeoutSeconds: 20\ntemplateRefreshSeconds: 5\nstatsIntervalSeconds: 30\n'
        : // A spool of 2 MiB: the outage (60,000 flows at the default rate) holds more, and the
          // oldest are dropped and counted, which the verdict checks too.
          `drainIntervalSeconds: 2\nidleTimeoutSeconds: 5\nactiveTimeoutSeconds: 20\ntemplateRefreshSeconds: 5\nstatsIntervalSeconds: 30\nspoolBytes: ${RELIABILITY_SPOOL_BYTES}\n`
    const soak = new SoakLab(settings)
    current = soak
    try {
      const result = phase === 'restarts' ? await restartsPhase(soak, {minutes, flows, pps}) : await reliabilityPhase(soak, {minutes, flows, pps})
      results.push(result)
      process.stdout.write(`${result.lines.join('\n')}\n`)
    } finally {
      await soak.cleanup()
    }
  }
  if (!results.every((r) => r.pass)) process.exitCode = 1
}

main().catch((error: Error) => {
  process.stderr.write(`soak: ${error.message}\n`)
  process.exit(1)
})
