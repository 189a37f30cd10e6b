/**
 * The embedded default (`flowctl demo`, the README's first command): a small router lab, the
 * meter on the router's two interfaces, the daemon exporting into the embedded collector, a few
 * seconds of varied traffic, and what the collector decoded next to what was sent.
 *
 *   client 198.18.1.1 fd00:1::1 --veth-- [c0 router s0] --veth-- 198.18.2.1 fd00:2::1 server
 *                                        (metered, both directions)
 *
 * It runs with its own pin root, run and state directories, so it neither meets nor disturbs a
 * daemon or meters already running on this machine. Everything it creates is removed at the end,
 * also when it fails or is interrupted.
 */
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {attachMeters, detachMeters} from '../bpf/attach.js'
import {defaultConfig} from '../config/load.js'
import {Daemon} from '../daemon/daemon.js'
import {createLogger, type Logger} from '../daemon/log.js'
import {DaemonMetrics} from '../daemon/metrics/daemon-metrics.js'
import {IpfixCollector} from '../ipfix/collect/collector.js'
import {ConformanceChecker} from '../ipfix/collect/conformance.js'
import {renderFields} from '../ipfix/collect/render.js'
import type {Paths} from '../paths.js'
import {Lab} from './lab.js'
import {ping, startAgent} from './traffic.js'

/** What the demo sent, with what the meter must count for it at each router interface. */
export interface DemoTraffic {
  what: string
  proto: number
  src: string
  dst: string
  sport?: number
  dport?: number
  /** IP packets and bytes, when known exactly (TCP's depend on the kernel's segmentation). */
  packets?: number
  bytes?: number
}

/** One flow record as the embedded collector decoded it. */
export interface DemoRecord {
  interface: string
  direction: 'ingress' | 'egress'
  proto: number
  src: string
  sport: number
  dst: string
  dport: number
  packets: number
  bytes: number
  tcpFlags: number
  endReason: number
  start: number
  end: number
}

export interface DemoResult {
  sent: DemoTraffic[]
  records: DemoRecord[]
  /** The collector's RFC 7011 judgement of the stream: 'PASS' or 'FAIL', with reasons. */
  conformance: {verdict: string; reasons: string[]}
  messages: number
}

export interface DemoOptions {
  /** Progress and status lines. */
  log: (line: string) => void
  /** A live progress line (rewritten in place on a terminal). */
  progress?: (line: string) => void
  /** Where compiled meters are cached (the machine's own cache: compiling is the same for every caller). */
  cacheDir: string
  /** Seconds of traffic (default 4). */
  seconds?: number
  /** Prometheus metrics address for the demo's daemon (default: none). */
  metricsListen?: string | null
  /** The daemon's log (default: none; its JSON lines would drown the demo). */
  daemonLog?: Logger
}

export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  const {log} = options
  const seconds = options.seconds ?? 4
  const id = randomBytes(3).toString('hex')
  const stateDir = mkdtempSync(join(tmpdir(), `fct-demo-${id}-`))
  // Private roots: the demo never meets the meters, daemon or state of this machine.
  const paths: Paths = {pinRoot: `/sys/fs/bpf/fct-demo-${id}`, runDir: `/run/fct-demo-${id}`, stateDir, cacheDir: options.cacheDir}

  const lab = new Lab(id)
  const collector = new IpfixCollector({host: '127.0.0.1', port: 0, checker: new ConformanceChecker({maxMessageSize: 1400})})
  let daemon: Daemon | undefined
  let metrics: DaemonMetrics | undefined
  let router: string | undefined
  const agents: {stop(): void}[] = []
  let interrupted = false
  let interruptNow = () => {}
  const interruption = new Promise<never>((_, reject) => {
    interruptNow = () => reject(new Error('interrupted'))
  })
  interruption.catch(() => {})
  /** `promise`, or the interruption, whichever comes first: a signal need not wait for the traffic to end. */
  const untilInterrupted = <T>(promise: Promise<T>): Promise<T> => Promise.race([promise, interruption])
  const onSignal = () => {
    if (interrupted) return
    interrupted = true
    log('interrupted: removing the lab')
    interruptNow()
  }
  // `on`, not `once`, and kept until the lab is removed: execa's exit hook re-raises a signal that
  // no other listener is left to handle, which would kill the process before it removes the lab.
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const checkInterrupt = () => {
    if (interrupted) throw new Error('interrupted')
  }

  try {
    const client = await lab.namespace('client')
    router = await lab.namespace('router')
    const server = await lab.namespace('server')
    await lab.veth(client, 'eth0', router, 'c0', {v4: ['198.18.1.1/24', '198.18.1.254/24'], v6: ['fd00:1::1/64', 'fd00:1::fe/64'], quiet: true})
    await lab.veth(router, 's0', server, 'eth0', {v4: ['198.18.2.254/24', '198.18.2.1/24'], v6: ['fd00:2::fe/64', 'fd00:2::1/64'], quiet: true})
    await lab.sysctl(router, 'net.ipv4.ip_forward', '1')
    await lab.sysctl(router, 'net.ipv6.conf.all.forwarding', '1')
    for (const [ns, v4, v6] of [
      [client, '198.18.1.254', 'fd00:1::fe'],
      [server, '198.18.2.254', 'fd00:2::fe'],
    ]) {
      await lab.exec(ns, 'ip', ['route', 'add', 'default', 'via', v4])
      await lab.exec(ns, 'ip', ['-6', 'route', 'add', 'default', 'via', v6])
    }
    log(`lab ${id}: client 198.18.1.1 fd00:1::1 <-> [c0 router s0] <-> server 198.18.2.1 fd00:2::1`)
    checkInterrupt()

    await attachMeters(paths, {
      targets: [
        {netns: router, ifname: 'c0'},
        {netns: router, ifname: 's0'},
      ],
      directions: ['ingress', 'egress'],
      pref: 1,
      handle: 1,
      force: false,
    })
    log("meter attached to the router's c0 and s0, both directions")
    const names = await interfaceNames(lab, router)

    const records: DemoRecord[] = []
    let messages = 0
    collector.on('message', () => messages++)
    collector.on('record', (r) => {
      if (r.options) return
      const f = renderFields(r.fields)
      const dir = Number(f.flowDirection) === 0 ? 'ingress' : 'egress'
      const ifindex = Number(dir === 'ingress' ? f.ingressInterface : f.egressInterface)
      records.push({
        interface: names.get(ifindex) ?? String(ifindex),
        direction: dir,
        proto: Number(f.protocolIdentifier),
        src: String(f.sourceIPv4Address ?? f.sourceIPv6Address),
        sport: Number(f.sourceTransportPort),
        dst: String(f.destinationIPv4Address ?? f.destinationIPv6Address),
        dport: Number(f.destinationTransportPort),
        packets: Number(f.packetDeltaCount),
        bytes: Number(f.octetDeltaCount),
        tcpFlags: Number(f.tcpControlBits),
        endReason: Number(f.flowEndReason),
        start: Number(f.flowStartMilliseconds),
        end: Number(f.flowEndMilliseconds),
      })
    })
    const {port} = await collector.start()
    const config = defaultConfig({
      collectors: [{name: `127.0.0.1:${port}`, remote: {host: '127.0.0.1', port}}],
      idleTimeoutSeconds: 2,
      activeTimeoutSeconds: 60,
      metrics: {listen: options.metricsListen ?? null},
      stateFile: join(stateDir, 'daemon-state.json'),
    })
    const daemonLog = options.daemonLog ?? createLogger(() => {})
    if (options.metricsListen) {
      metrics = new DaemonMetrics({paths, log: daemonLog})
      await metrics.listen(options.metricsListen)
      log(`daemon metrics on http://${options.metricsListen}/metrics`)
    }
    daemon = new Daemon(paths, config, {log: daemonLog, observer: metrics?.daemonObserver})
    metrics?.watch(daemon)
    await daemon.start()
    log(`daemon exporting IPFIX to the embedded collector on udp 127.0.0.1:${port} (drain every second, idle timeout 2 s)`)

    const sent: DemoTraffic[] = []
    const started = Date.now()
    const ticker = setInterval(() => {
      const s = ((Date.now() - started) / 1000).toFixed(1)
      options.progress?.(`${s} s: ${messages} IPFIX messages, ${records.length} flow records decoded`)
    }, 200)
    try {
      const udp = await startAgent(server, {mode: 'udp-sink', host: '::', port: 5353})
      agents.push(udp)
      const tcp4 = await startAgent<{bytes: number; peerPort: number}>(server, {mode: 'tcp-sink', host: '0.0.0.0', port: 8080})
      agents.push(tcp4)
      const ms = seconds * 1000
      const udpSends = [
        {host: '198.18.2.1', size: 200, gapMs: 20, src: '198.18.1.1'},
        {host: '198.18.2.1', size: 1000, gapMs: 50, src: '198.18.1.1'},
        {host: 'fd00:2::1', size: 400, gapMs: 30, src: 'fd00:1::1'},
      ]
      // Senders run as agents the clean-up stops, so that an interrupted demo leaves none behind.
      const sender = async <T>(spec: Parameters<typeof startAgent>[1]): Promise<T> => {
        const agent = await startAgent<T>(client, spec)
        agents.push(agent)
        return agent.result
      }
      const udpRuns = Promise.all(
        udpSends.map((u) =>
          sender<{packets: number; sport: number}>({
            mode: 'udp-send',
            host: u.host,
            port: 5353,
            count: 1_000_000,
            size: u.size,
            gapMs: u.gapMs,
            durationMs: ms,
          }),
        ),
      )
      const tcpRun = sender<{localPort: number}>({mode: 'tcp-send', host: '198.18.2.1', port: 8080, bytes: 2_000_000})
      await untilInterrupted(Promise.all([ping(client, '198.18.2.1', 5, 56, 0.2), ping(client, 'fd00:2::1', 5, 56, 0.2)]))
      const [u1, u2, u3] = await untilInterrupted(udpRuns)
      const t = await untilInterrupted(tcpRun)
      await untilInterrupted(tcp4.result)
      for (const [i, r] of [u1, u2, u3].entries()) {
        const u = udpSends[i]
        const header = u.host.includes(':') ? 48 : 28
        sent.push({what: 'udp', proto: 17, src: u.src, dst: u.host, sport: r.sport, dport: 5353, packets: r.packets, bytes: r.packets * (u.size + header)})
      }
      sent.push({what: 'tcp, 2 MB then FIN', proto: 6, src: '198.18.1.1', dst: '198.18.2.1', sport: t.localPort, dport: 8080})
      sent.push({what: 'icmp echo', proto: 1, src: '198.18.1.1', dst: '198.18.2.1', packets: 5, bytes: 5 * 84})
      sent.push({what: 'icmpv6 echo', proto: 58, src: 'fd00:1::1', dst: 'fd00:2::1', packets: 5, bytes: 5 * 104})
      checkInterrupt()
      // Idle timeout (2 s) and a drain: the UDP flows leave as idle, the TCP ones ended with FIN.
      await untilInterrupted(new Promise((r) => setTimeout(r, 3500)))
    } finally {
      clearInterval(ticker)
    }
    await daemon.stop()
    daemon = undefined
    // The last datagrams are on loopback: let the collector read them.
    await new Promise((r) => setTimeout(r, 300))
    options.progress?.(`${((Date.now() - started) / 1000).toFixed(1)} s: ${messages} IPFIX messages, ${records.length} flow records decoded`)
    const report = collector.checker!.report()
    return {sent, records, conformance: {verdict: report.verdict, reasons: report.reasons}, messages}
  } finally {
    try {
      for (const a of agents) a.stop()
      if (daemon) await daemon.stop().catch(() => {})
      await metrics?.close()
      await collector.stop()
      if (router) await detachMeters(paths, {targets: [{netns: router, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
      await lab.destroy()
      for (const dir of [paths.pinRoot, paths.runDir, stateDir]) rmSync(dir, {recursive: true, force: true})
      log('lab removed')
    } finally {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
  }
}

async function interfaceNames(lab: Lab, netns: string): Promise<Map<number, string>> {
  const links = JSON.parse(await lab.exec(netns, 'ip', ['-j', 'link', 'show'])) as {ifindex: number; ifname: string}[]
  return new Map(links.map((l) => [l.ifindex, `router:${l.ifname}`]))
}

/** The records of one sent flow (either direction's records are matched by its 5-tuple as sent). */
export function recordsOf(records: DemoRecord[], t: DemoTraffic): DemoRecord[] {
  return records.filter(
    (r) =>
      r.proto === t.proto &&
      r.src === t.src &&
      r.dst === t.dst &&
      (t.sport === undefined || r.sport === t.sport) &&
      (t.dport === undefined || r.dport === t.dport),
  )
}
