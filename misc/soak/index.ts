/**
 * `npm run soak -- --minutes N`: N minutes of traffic over thousands of flows through a metered
 * veth, exported by a real `flowctl daemon` to two collectors in this process, while things go
 * wrong on a schedule: one collector ("restarted") is stopped for a while and started again,
 * and the daemon is SIGKILLed and started again. Needs root; not part of `npm test`.
 *
 * At the end: the packets each collector counted against the link's own counter (the link
 * carries nothing but the soak's datagrams), so the steady collector must match exactly; the
 * restarted one's shortfall is what was sent while it was down (lost until the daemon spools for
 * a collector that is down), reported separately with the sequence numbers' own count of missing
 * records; and the daemon's resident memory at start and end.
 *
 *   node dist/misc/soak/index.js --minutes 2 [--flows 2000] [--pps 4000]
 *
 * Everything lives under private roots (fct-soak-<random>) and is removed at the end, on failure
 * and on SIGINT.
 */
import {randomBytes} from 'node:crypto'
import {mkdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
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
import type {Paths} from '../../src/paths.js'

const CLI = fileURLToPath(new URL('../../../bin/run.js', import.meta.url))
const TRAFFIC = fileURLToPath(new URL('./traffic.js', import.meta.url))
const SINK_PORT = 5001

function log(message: string): void {
  process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${message}\n`)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Math.round(Number(m[1]) / 1024) : Number.NaN
  } catch {
    return Number.NaN
  }
}

/** A collector that counts the soak's packets, flows and records, across restarts on one port. */
class CountingCollector {
  readonly checker = new ConformanceChecker({maxMessageSize: 1400, timeToleranceSeconds: 600})
  packets = 0
  records = 0
  readonly flows = new Set<number>()
  unknownTemplateSets = 0
  downMs = 0
  private collector?: IpfixCollector
  private downSince = 0

  constructor(
    readonly name: string,
    readonly port: number,
  ) {}

  async start(): Promise<void> {
    const c = new IpfixCollector({host: '127.0.0.1', port: this.port, checker: this.checker})
    c.on('record', (r: DecodedRecord) => this.count(r))
    c.on('message', (m) => (this.unknownTemplateSets += m.unknownSets.length))
    await c.start()
    this.collector = c
    if (this.downSince) this.downMs += Date.now() - this.downSince
  }

  async stop(): Promise<void> {
    await this.collector?.stop()
    this.collector = undefined
    this.downSince = Date.now()
  }

  private count(r: DecodedRecord): void {
    if (r.options) return
    const f = renderFields(r.fields)
    if (f.protocolIdentifier !== 17 || f.destinationTransportPort !== SINK_PORT) return
    this.packets += Number(f.packetDeltaCount)
    this.records++
    this.flows.add(Number(f.sourceTransportPort))
  }

  /** Records the sequence numbers say were never received (gaps), over every domain. */
  missingRecords(): number {
    return this.checker.report().domains.reduce((a, d) => a + d.sequence.missing, 0)
  }
}

class DaemonChild {
  readonly child: ResultPromise
  readonly startedAt = Date.now()
  private stderr = ''
  errors = 0

  constructor(configFile: string, env: Record<string, string>, logFile: string) {
    this.child = execa(process.execPath, [CLI, 'daemon', '-c', configFile], {reject: false, env: {...process.env, ...env}})
    this.child.stderr!.on('data', (d: Buffer) => {
      const text = d.toString()
      this.stderr = `${this.stderr}${text}`.slice(-20_000)
      writeFileSync(logFile, text, {flag: 'a'})
      this.errors += (text.match(/"level":"error"/g) ?? []).length
    })
  }

  get pid(): number {
    return this.child.pid!
  }

  async started(): Promise<void> {
    const deadline = Date.now() + 60_000
    while (!this.stderr.includes('"event":"started"')) {
      if (this.child.exitCode !== null) throw new Error(`the daemon exited: ${this.stderr.slice(-2000)}`)
      if (Date.now() > deadline) throw new Error(`the daemon did not start: ${this.stderr.slice(-2000)}`)
      await sleep(50)
    }
  }

  async stop(signal: NodeJS.Signals): Promise<number | string> {
    this.child.kill(signal)
    const r = await this.child
    return r.exitCode ?? r.signal ?? -1
  }
}

async function main(): Promise<void> {
  const {values} = parseArgs({options: {minutes: {type: 'string', default: '10'}, flows: {type: 'string', default: '2000'}, pps: {type: 'string', default: '4000'}}})
  const minutes = Number(values.minutes)
  const flows = Number(values.flows)
  const pps = Number(values.pps)
  if (!(minutes > 0) || !(flows > 0) || !(pps > 0)) throw new Error('usage: npm run soak -- --minutes N [--flows N] [--pps N] (numbers above 0)')
  if (process.getuid?.() !== 0) throw new Error('the soak needs root (network namespaces, tc, bpffs)')

  const id = randomBytes(3).toString('hex')
  const work = join(tmpdir(), `fct-soak-${id}`)
  const env = {FLOWCTL_PIN_ROOT: `/sys/fs/bpf/fct-soak-${id}`, FLOWCTL_RUN_DIR: `/run/fct-soak-${id}`, FLOWCTL_STATE_DIR: join(work, 'state')}
  const paths: Paths = {pinRoot: env.FLOWCTL_PIN_ROOT, runDir: env.FLOWCTL_RUN_DIR, stateDir: env.FLOWCTL_STATE_DIR, cacheDir: process.env.FLOWCTL_CACHE_DIR || '/var/cache/flowctl'}
  mkdirSync(work, {recursive: true})
  const lab = new Lab()
  const collectors = [new CountingCollector('steady', 47000 + Math.floor(Math.random() * 1000)), new CountingCollector('restarted', 48000 + Math.floor(Math.random() * 1000))]
  const [steady, restarted] = collectors
  let daemon: DaemonChild | undefined
  let traffic: ResultPromise | undefined
  let sink: {stop(): void} | undefined
  let client = ''
  const cleanup = async (): Promise<void> => {
    traffic?.kill('SIGKILL')
    sink?.stop()
    if (daemon && daemon.child.exitCode === null) await daemon.stop('SIGKILL').catch(() => {})
    for (const c of collectors) await c.stop().catch(() => {})
    if (client) await detachMeters(paths, {targets: [{netns: client, ifname: '*'}], all: false, directions: ['egress']}).catch(() => {})
    await lab.destroy()
    for (const dir of [env.FLOWCTL_PIN_ROOT, env.FLOWCTL_RUN_DIR, work]) rmSync(dir, {recursive: true, force: true})
  }
  // `on`, not `once`: execa's exit hook re-raises a signal that no other listener is left to
  // handle, which killed the soak before it removed its namespaces and pins.
  let interrupted = false
  process.on('SIGINT', () => {
    if (interrupted) return
    interrupted = true
    log('SIGINT: cleaning up')
    void cleanup().then(() => process.exit(130))
  })

  try {
    client = await lab.namespace('client')
    const server = await lab.namespace('server')
    await lab.veth(client, 'veth0', server, 'veth1', {v4: ['198.18.0.1/24', '198.18.0.2/24'], quiet: true})
    await attachMeters(paths, {targets: [{netns: client, ifname: 'veth0'}], directions: ['egress'], pref: 1, handle: 1, force: false})
    sink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: SINK_PORT})
    for (const c of collectors) await c.start()

    const config = join(work, 'daemon.yaml')
    writeFileSync(
      config,
      collectors.map((c, i) => `- address: 127.0.0.1:${c.port}\n  source: 127.0.0.1:${46000 + i}\n`).join('').replace(/^/, 'collectors:\n') +
        'drainIntervalSeconds: 1\nidleTimeoutSeconds: 5\nactiveTimeoutSeconds: 20\ntemplateRefreshSeconds: 5\nstatsIntervalSeconds: 30\n' +
        `metrics:\n  listen: ''\nstateFile: ${join(work, 'state', 'daemon-state.json')}\n`,
    )
    const daemonLog = join(work, 'daemon.log')
    const startDaemon = async (): Promise<DaemonChild> => {
      const d = new DaemonChild(config, env, daemonLog)
      await d.started()
      return d
    }

    const linkBefore = await lab.linkStats(client, 'veth0')
    daemon = await startDaemon()
    log(`daemon pid ${daemon.pid} started; traffic: ${flows} flows, ${pps} datagrams/s, for ${minutes} min`)
    traffic = execa('nsenter', [`--net=/run/netns/${client}`, '--', process.execPath, TRAFFIC, JSON.stringify({host: '198.18.0.2', port: SINK_PORT, flows, pps, size: 64})], {reject: false})
    await new Promise<void>((resolve, reject) => {
      traffic!.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve())
      void traffic!.then((r) => reject(new Error(`the traffic generator exited: ${String(r.stderr)}`)))
    })

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
        daemon = await startDaemon()
        nextKill = now + killEveryMs
        log(`daemon SIGKILLed (RSS ${rssAtKill.at(-1)} MB) and started again: pid ${daemon.pid}`)
      }
    }
    if (collectorUpAt) await restarted.start()

    traffic.kill('SIGTERM')
    const sent = JSON.parse(String((await traffic).stdout).trim().split('\n').pop()!) as {sent: number; failed: number; flows: number}
    traffic = undefined
    await sleep(500)
    const linkAfter = await lab.linkStats(client, 'veth0')
    const rssEnd = rssMb(daemon.pid)
    const code = await daemon.stop('SIGTERM')
    daemon = undefined
    // The final drain's flows are on their way over loopback.
    await sleep(3000)

    const linkPackets = linkAfter.txPackets - linkBefore.txPackets
    const lines = [
      `soak: ${minutes} min, ${sent.flows} flows, ${sent.sent} datagrams sent (${sent.failed} refused by the sender's kernel), link tx ${linkPackets} packets`,
      `faults: ${kills} daemon SIGKILL${kills === 1 ? '' : 's'}, ${collectorRestarts} restart${collectorRestarts === 1 ? '' : 's'} of collector "restarted" (down ${Math.round(restarted.downMs / 1000)} s in all); last daemon stopped with ${code}`,
    ]
    for (const c of collectors) {
      const diff = c.packets - linkPackets
      lines.push(
        `collector "${c.name}": ${c.packets} packets in ${c.records} records over ${c.flows.size} flows; ${diff === 0 ? 'EXACT' : `${diff > 0 ? '+' : ''}${diff} packets vs the link`}; ` +
          `sequence gaps: ${c.missingRecords()} records missing; data sets before their template: ${c.unknownTemplateSets}`,
      )
    }
    lines.push(`lost while collector "restarted" was down (its spool replays what it missed): ${steady.packets - restarted.packets} packets, ${restarted.missingRecords()} records by its sequence numbers`)
    lines.push(`daemon RSS: ${rssStart ?? '?'} MB 15 s after start, ${rssEnd} MB at the end${rssAtKill.length ? ` (at each SIGKILL: ${rssAtKill.join(', ')} MB)` : ''}`)
    const exact = collectors.every((c) => c.packets === linkPackets && c.missingRecords() === 0)
    const verdict = exact && linkPackets === sent.sent ? 'PASS' : 'FAIL'
    lines.push(`verdict: ${verdict} (${verdict === 'PASS' ? 'every collector, the restarted one too, got exactly' : 'a collector did not get exactly'} what crossed the link)`)
    process.stdout.write(`${lines.join('\n')}\n`)
    if (verdict !== 'PASS') process.exitCode = 1
  } finally {
    await cleanup()
  }
}

main().catch((error: Error) => {
  process.stderr.write(`soak: ${error.message}\n`)
  process.exit(1)
})
