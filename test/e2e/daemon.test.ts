/**
 * The daemon end to end: namespaces joined by a metered veth, real traffic, `flowctl daemon` as a
 * child process exporting to collectors, and what they decode compared with what was sent.
 *
 * Oracles: the traffic agents send known datagrams (UDP and ICMP counts are computed from what was
 * sent, their wall-clock send times are reported), and the veth's own counters: the link carries
 * nothing but IP (static neighbours, offloads off), so per direction the exported packets equal
 * the link's packets and the exported bytes its bytes less 14 bytes of Ethernet header each.
 *
 * Each suite keeps its pins, run state and daemon state in private directories (FLOWCTL_*), so
 * it never meets another run's meters or daemon.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {renderFields} from '../../src/ipfix/collect/render.js'
import {Lab} from '../../src/lab/lab.js'
import {ping, runAgent, startAgent} from '../../src/lab/traffic.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {CLI, requireE2e, sleep, PrivateDirs} from '../helpers/e2e.js'
import {tsharkDecodeIpfix} from '../helpers/tshark.js'
import {Sink} from '../ipfix/flows.js'

const ETH = 14
const END = {idle: 1, active: 2, endOfFlow: 3, forced: 4} as const

type Fields = Record<string, unknown>

function sum(flows: Fields[], key: 'packetDeltaCount' | 'octetDeltaCount', match: (f: Fields) => boolean = () => true): number {
  return flows.filter(match).reduce((a, f) => a + Number(f[key]), 0)
}

const egress = (f: Fields) => f.flowDirection === 1
const ingress = (f: Fields) => f.flowDirection === 0

function matching(flows: Fields[], match: Fields): Fields[] {
  return flows.filter((f) => Object.entries(match).every(([k, v]) => f[k] === v))
}

describe('daemon end to end @e2e', function () {
  this.timeout(240_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(id)
  const dirs = privateDirs.env
  const lab = new Lab()
  let tmp = ''
  let client: string
  let server: string
  let ifindex: number
  const daemons: DaemonProcess[] = []
  const collectors: Sink[] = []
  const agents: {stop(): void}[] = []

  /** A collector in this process: every record and raw datagram, judged by a conformance checker. */
  async function collector(port = 0): Promise<Sink> {
    const c = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600, port})
    collectors.push(c)
    return c
  }

  function daemon(configFile: string, netns?: string): DaemonProcess {
    const d = new DaemonProcess(configFile, netns)
    daemons.push(d)
    return d
  }

  let configCount = 0
  function writeConfig(yaml: string): string {
    const file = join(tmp, `config-${++configCount}.yaml`)
    writeFileSync(file, yaml)
    return file
  }

  /** A config for one collector (plus `extra` YAML), metrics off (other runs may hold the port). */
  function config(collectorsYaml: string, options: {activeTimeoutSeconds?: number; extra?: string} = {}): string {
    return writeConfig(
      `collectors:\n${collectorsYaml}\ndrainIntervalSeconds: 1\nidleTimeoutSeconds: 2\nactiveTimeoutSeconds: ${options.activeTimeoutSeconds ?? 60}\n` +
        `metrics:\n  listen: ''\nstateFile: ${dirs.FLOWCTL_STATE_DIR}/daemon-state.json\n${options.extra ?? ''}`,
    )
  }

  /** A loopback port nothing listens on now (the kernel answers it with ICMP port unreachable). */
  async function closedPort(): Promise<number> {
    const probe = await Sink.start()
    const port = probe.port
    await probe.stop()
    return port
  }

  async function link() {
    return lab.linkStats(client, 'veth0')
  }

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-daemon-'))
    privateDirs.apply()
    client = await lab.namespace('client')
    server = await lab.namespace('server')
    await lab.veth(client, 'veth0', server, 'veth1', {
      v4: ['198.18.0.1/24', '198.18.0.2/24'],
      v6: ['fd00:f10::1/64', 'fd00:f10::2/64'],
      quiet: true,
    })
    ifindex = await lab.ifindex(client, 'veth0')
    await attachMeters(privateDirs.paths, {targets: [{netns: client, ifname: 'veth0'}], directions: ['ingress', 'egress'], pref: 1, handle: 1, force: false})
    // New IPv6 addresses send their MLD reports (76 IP bytes, twice, within about a second) after
    // the meter is on: they are the maps' before any test reads the link's counters, so take them out.
    await sleep(2500)
    await drainAll()
  })

  afterEach(async function () {
    for (const a of agents.splice(0)) a.stop()
    for (const d of daemons.splice(0)) await d.stop('SIGKILL').catch(() => {})
    for (const c of collectors.splice(0)) await c.stop()
    // What a test left in the maps is not the next test's: a short-lived daemon takes it.
    if (client) await drainAll()
  })

  async function drainAll(): Promise<void> {
    const sink = await collector()
    const d = daemon(config(`- address: 127.0.0.1:${sink.port}`))
    await d.waitForLog('started')
    assert.equal(await d.stop(), 0, d.tail)
    daemons.splice(daemons.indexOf(d), 1)
    collectors.splice(collectors.indexOf(sink), 1)
    await sink.stop()
  }

  after(async function () {
    for (const d of daemons) await d.stop('SIGKILL').catch(() => {})
    if (client) await detachMeters(privateDirs.paths, {targets: [{netns: client, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it('exports every field of IPv4 and IPv6 TCP, UDP and ICMP flows exactly, and tshark decodes the same', async function () {
    const sink = await collector()
    const before = await link()
    const d = daemon(config(`- address: 127.0.0.1:${sink.port}`))
    await d.waitForLog('started')

    const udpSink = await startAgent(server, {mode: 'udp-sink', host: '::', port: 5001})
    agents.push(udpSink)
    const udp4 = await runAgent<{sport: number; firstBeforeMs: number; firstMs: number; lastBeforeMs: number; lastMs: number}>(client, {
      mode: 'udp-send',
      host: '198.18.0.2',
      port: 5001,
      count: 20,
      size: 100,
      gapMs: 20,
    })
    const udp6 = await runAgent<{sport: number; firstMs: number; lastMs: number}>(client, {
      mode: 'udp-send',
      host: 'fd00:f10::2',
      port: 5001,
      count: 10,
      size: 300,
    })
    const tcpSink = await startAgent(server, {mode: 'tcp-sink', host: '0.0.0.0', port: 8080})
    const tcp = await runAgent<{localPort: number}>(client, {mode: 'tcp-send', host: '198.18.0.2', port: 8080, bytes: 50_000})
    await tcpSink.result
    await ping(client, '198.18.0.2', 3, 56, 0.05)
    await ping(client, 'fd00:f10::2', 3, 56, 0.05)

    // Idle timeout 2 s, drains every second: all of it leaves within a few seconds.
    await sink.until(
      () => matching(sink.flows, {protocolIdentifier: 58}).length >= 2 && matching(sink.flows, {protocolIdentifier: 6}).length >= 2,
      'every flow',
      20_000,
    )
    const after = await link()
    assert.equal(await d.stop(), 0, d.tail)
    const flows = sink.flows

    const udp4Flow = matching(flows, {sourceIPv4Address: '198.18.0.1', sourceTransportPort: udp4.sport, protocolIdentifier: 17})
    assert.equal(udp4Flow.length, 1, JSON.stringify(flows))
    const u4 = udp4Flow[0]
    assert.deepEqual(
      {...u4, flowStartMilliseconds: undefined, flowEndMilliseconds: undefined},
      {
        sourceIPv4Address: '198.18.0.1',
        destinationIPv4Address: '198.18.0.2',
        sourceTransportPort: udp4.sport,
        destinationTransportPort: 5001,
        protocolIdentifier: 17,
        tcpControlBits: 0,
        octetDeltaCount: 20 * (20 + 8 + 100),
        packetDeltaCount: 20,
        flowStartMilliseconds: undefined,
        flowEndMilliseconds: undefined,
        ingressInterface: 0,
        egressInterface: ifindex,
        flowDirection: 1,
        flowEndReason: END.idle,
        ipClassOfService: 0,
        vlanId: 0,
        // Sent by this host (no ingress interface) to a directly connected server, with Linux's
        // default TTL of 64.
        ipNextHopIPv4Address: '0.0.0.0',
        minimumTTL: 64,
        maximumTTL: 64,
      },
    )
    // Wall-clock times of when the packets really left (between the sender's clock reads around
    // its send call): the start exact to the millisecond (the precise clock, read when the flow
    // is created), the end within one jiffy (the coarse clock: 4 ms at HZ=250, 10 ms at HZ=100).
    const start = Number(u4.flowStartMilliseconds)
    const end = Number(u4.flowEndMilliseconds)
    assert.ok(start >= udp4.firstBeforeMs - 1 && start <= udp4.firstMs + 1, `start ${start} vs sent between ${udp4.firstBeforeMs} and ${udp4.firstMs}`)
    assert.ok(end >= udp4.lastBeforeMs - 11 && end <= udp4.lastMs + 1, `end ${end} vs sent between ${udp4.lastBeforeMs} and ${udp4.lastMs}`)

    const u6 = matching(flows, {sourceIPv6Address: 'fd00:f10::1', sourceTransportPort: udp6.sport})
    assert.equal(u6.length, 1)
    assert.deepEqual(
      [
        u6[0].destinationIPv6Address,
        u6[0].destinationTransportPort,
        u6[0].protocolIdentifier,
        u6[0].packetDeltaCount,
        u6[0].octetDeltaCount,
        u6[0].flowDirection,
      ],
      ['fd00:f10::2', 5001, 17, 10, 10 * (40 + 8 + 300), 1],
    )
    // An IPv4 flow never travels in the IPv6 template nor the reverse.
    for (const r of sink.records.filter((x) => !x.options)) {
      assert.equal(r.templateId, 'sourceIPv4Address' in r.fields ? 256 : 257)
      assert.ok(!('sourceIPv4Address' in r.fields && 'sourceIPv6Address' in r.fields))
    }

    // TCP: both directions end with FIN; together they are exactly what crossed the link, with the ICMP.
    const out = matching(flows, {protocolIdentifier: 6, sourceTransportPort: tcp.localPort})
    const back = matching(flows, {protocolIdentifier: 6, destinationTransportPort: tcp.localPort})
    assert.equal(out.length, 1)
    assert.equal(back.length, 1)
    assert.equal(out[0].flowEndReason, END.endOfFlow)
    assert.equal(back[0].flowEndReason, END.endOfFlow)
    assert.equal(Number(out[0].tcpControlBits) & 0x13, 0x13, 'SYN, ACK and FIN from the client') // FIN|SYN|ACK
    assert.equal(Number(back[0].tcpControlBits) & 0x13, 0x13, 'SYN, ACK and FIN from the server')
    assert.equal(back[0].ingressInterface, ifindex)
    assert.equal(back[0].egressInterface, 0)
    assert.equal(back[0].flowDirection, 0)

    // ICMP: type and code in the destination port (type * 256 + code), as collectors expect.
    const icmp = (proto: number, dport: number, dir: number) =>
      matching(flows, {protocolIdentifier: proto, destinationTransportPort: dport, flowDirection: dir})
    assert.deepEqual(
      icmp(1, 8 * 256, 1).map((f) => [f.packetDeltaCount, f.octetDeltaCount]),
      [[3, 3 * 84]],
    )
    assert.deepEqual(
      icmp(1, 0, 0).map((f) => [f.packetDeltaCount, f.octetDeltaCount]),
      [[3, 3 * 84]],
    )
    assert.deepEqual(
      icmp(58, 128 * 256, 1).map((f) => [f.packetDeltaCount, f.octetDeltaCount]),
      [[3, 3 * 104]],
    )
    assert.deepEqual(
      icmp(58, 129 * 256, 0).map((f) => [f.packetDeltaCount, f.octetDeltaCount]),
      [[3, 3 * 104]],
    )

    // Nothing else crossed the link: per direction, the exported sums are the link's counters.
    const tx = {packets: after.txPackets - before.txPackets, bytes: after.txBytes - before.txBytes}
    const rx = {packets: after.rxPackets - before.rxPackets, bytes: after.rxBytes - before.rxBytes}
    assert.deepEqual([sum(flows, 'packetDeltaCount', egress), sum(flows, 'octetDeltaCount', egress)], [tx.packets, tx.bytes - ETH * tx.packets])
    assert.deepEqual([sum(flows, 'packetDeltaCount', ingress), sum(flows, 'octetDeltaCount', ingress)], [rx.packets, rx.bytes - ETH * rx.packets])

    // The collector's judgement of the stream.
    assert.equal(sink.checker.report().verdict, 'PASS', sink.checker.formatReport().join('\n'))

    // tshark, an independent decoder, reads the same datagrams to the same values.
    const fromTshark = await tsharkDecodeIpfix(sink.datagrams, sink.port)
    const ours = sink.records.filter((r) => !r.options).map((r) => ({fields: renderFields(r.fields)}))
    assert.equal(fromTshark.length, ours.length, 'tshark sees as many flow records')
    const keys = [
      'sourceTransportPort',
      'destinationTransportPort',
      'protocolIdentifier',
      'tcpControlBits',
      'octetDeltaCount',
      'packetDeltaCount',
      'ingressInterface',
      'egressInterface',
      'flowDirection',
      'flowEndReason',
      'flowStartMilliseconds',
      'flowEndMilliseconds',
      'ipClassOfService',
      'vlanId',
    ]
    const addrKeys = ['sourceIPv4Address', 'destinationIPv4Address', 'sourceIPv6Address', 'destinationIPv6Address']
    const project = (f: Record<string, unknown>) =>
      JSON.stringify([...keys.map((k) => Number(f[k])), ...addrKeys.filter((k) => f[k] !== undefined).map((k) => String(f[k]))])
    assert.deepEqual(fromTshark.map((f) => project(f)).sort(), ours.map((r) => project(r.fields)).sort())
  })

  it('loses no packet and no byte under continuous traffic, active timeouts and a final SIGTERM', async function () {
    const sink = await collector()
    const before = await link()
    const d = daemon(config(`- address: 127.0.0.1:${sink.port}`))
    await d.waitForLog('started')
    const udpSink = await startAgent(server, {mode: 'udp-sink', host: '::', port: 5002})
    agents.push(udpSink)
    const tcpSink = await startAgent(server, {mode: 'tcp-sink', host: '0.0.0.0', port: 8081})
    const senders: Promise<unknown>[] = []
    for (let i = 0; i < 24; i++) {
      const host = i % 3 === 0 ? 'fd00:f10::2' : '198.18.0.2'
      senders.push(runAgent(client, {mode: 'udp-send', host, port: 5002, count: 1_000_000, size: 64 + i * 20, gapMs: 2, durationMs: 5000}))
    }
    senders.push(runAgent(client, {mode: 'tcp-send', host: '198.18.0.2', port: 8081, bytes: 5_000_000}))
    await Promise.all(senders)
    await tcpSink.result
    // SIGTERM while flows are still held: they leave as forced ends.
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
    const after = await link()
    const flows = sink.flows
    assert.ok(matching(flows, {flowEndReason: END.forced}).length > 0, 'some flows were still held at SIGTERM')
    const tx = {packets: after.txPackets - before.txPackets, bytes: after.txBytes - before.txBytes}
    const rx = {packets: after.rxPackets - before.rxPackets, bytes: after.rxBytes - before.rxBytes}
    assert.ok(tx.packets > 5000, `traffic flowed (${tx.packets} packets)`)
    assert.deepEqual([sum(flows, 'packetDeltaCount', egress), sum(flows, 'octetDeltaCount', egress)], [tx.packets, tx.bytes - ETH * tx.packets])
    assert.deepEqual([sum(flows, 'packetDeltaCount', ingress), sum(flows, 'octetDeltaCount', ingress)], [rx.packets, rx.bytes - ETH * rx.packets])
    assert.equal(sink.checker.report().verdict, 'PASS', sink.checker.formatReport().join('\n'))
    assert.ok(d.count('drain') >= 3, 'drained repeatedly')
  })

  it('exports long flows every active timeout as deltas that add up', async function () {
    const sink = await collector()
    const d = daemon(config(`- address: 127.0.0.1:${sink.port}`, {activeTimeoutSeconds: 2}))
    await d.waitForLog('started')
    const udpSink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5003})
    agents.push(udpSink)
    const sent = await runAgent<{sport: number; packets: number}>(client, {
      mode: 'udp-send',
      host: '198.18.0.2',
      port: 5003,
      count: 1_000_000,
      size: 100,
      gapMs: 5,
      durationMs: 5500,
    })
    assert.equal(await d.stop(), 0, d.tail)
    const parts = matching(sink.flows, {sourceTransportPort: sent.sport, destinationTransportPort: 5003})
    assert.ok(parts.length >= 2, `the flow was cut by the active timeout (${parts.length} records)`)
    assert.ok(matching(parts, {flowEndReason: END.active}).length >= 1, JSON.stringify(parts.map((p) => p.flowEndReason)))
    assert.equal(sum(parts, 'packetDeltaCount'), sent.packets)
    assert.equal(sum(parts, 'octetDeltaCount'), sent.packets * 128)
    // Consecutive deltas do not overlap in time.
    const sorted = [...parts].sort((a, b) => Number(a.flowStartMilliseconds) - Number(b.flowStartMilliseconds))
    for (let i = 1; i < sorted.length; i++) assert.ok(Number(sorted[i].flowStartMilliseconds) >= Number(sorted[i - 1].flowEndMilliseconds))
  })

  it('loses no count across a SIGKILL and continues the sequence numbers from a fixed source port', async function () {
    const sink = await collector()
    const sourcePort = 40000 + Math.floor(Math.random() * 20000)
    // Long flows leave every 2 s, so the first daemon has exported some before it is killed.
    const file = config(`- address: 127.0.0.1:${sink.port}\n  source: 127.0.0.1:${sourcePort}`, {activeTimeoutSeconds: 2})
    const before = await link()
    const first = daemon(file)
    await first.waitForLog('started')
    const udpSink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5004})
    agents.push(udpSink)
    const traffic = Promise.all(
      [0, 1, 2, 3].map((i) =>
        runAgent<{packets: number}>(client, {mode: 'udp-send', host: '198.18.0.2', port: 5004, count: 1_000_000, size: 200 + i, gapMs: 3, durationMs: 6000}),
      ),
    )
    await sink.until(() => sink.flows.length > 0, "the first daemon's exports", 20_000)
    // Killed right after a drain: the worst moment for the sequence numbers and the journal.
    const drains = first.count('drain')
    await first.waitForLog('drain', () => first.count('drain') > drains, 5000)
    assert.equal(await first.stop('SIGKILL'), 'SIGKILL')
    const recordsBeforeRestart = sink.flows.length
    await sleep(1500) // traffic goes on into the pinned maps
    const second = daemon(file)
    await second.waitForLog('started')
    await traffic
    assert.equal(await second.stop('SIGTERM'), 0, second.tail)
    const after = await link()
    const flows = sink.flows
    assert.ok(recordsBeforeRestart > 0 && flows.length > recordsBeforeRestart, 'both daemons exported')
    const tx = {packets: after.txPackets - before.txPackets, bytes: after.txBytes - before.txBytes}
    assert.deepEqual([sum(flows, 'packetDeltaCount', egress), sum(flows, 'octetDeltaCount', egress)], [tx.packets, tx.bytes - ETH * tx.packets])
    // One transport session (same source port) whose sequence numbers never jump nor repeat.
    const report = sink.checker.report()
    assert.deepEqual(
      report.domains.map((r) => r.exporter),
      [`127.0.0.1:${sourcePort}`],
    )
    assert.equal(report.domains[0].sequence.gapCount, 0, sink.checker.formatReport().join('\n'))
    assert.equal(report.verdict, 'PASS', sink.checker.formatReport().join('\n'))
  })

  it('keeps exporting to a collector that is up while another is down, and resumes the other when it is back', async function () {
    const up = await collector()
    // A port nothing listens on yet: the kernel answers with ICMP port unreachable.
    const probe = await collector()
    const downPort = probe.port
    await probe.stop()
    collectors.splice(collectors.indexOf(probe), 1)
    const d = daemon(config(`- address: 127.0.0.1:${up.port}\n- address: 127.0.0.1:${downPort}`))
    await d.waitForLog('started')
    const udpSink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5005})
    agents.push(udpSink)
    const first = await runAgent<{sport: number}>(client, {mode: 'udp-send', host: '198.18.0.2', port: 5005, count: 5, size: 50})
    await up.until(() => matching(up.flows, {sourceTransportPort: first.sport}).length === 1, 'the first flow', 20_000)
    await d.waitForLog('collector-error', (l) => l.collector === `127.0.0.1:${downPort}`, 10_000)

    const back = await collector(downPort)
    // It gets what it missed from its spool once a probe gets through (the tests below count
    // that exactly); here: new flows until one arrives, at most 10 s.
    const deadline = Date.now() + 10_000
    let arrived: Fields | undefined
    while (!arrived) {
      assert.ok(Date.now() < deadline, `nothing decodable reached the collector that came back: ${JSON.stringify(back.checker.formatReport())}`)
      const sent = await runAgent<{sport: number}>(client, {mode: 'udp-send', host: '198.18.0.2', port: 5005, count: 7, size: 50})
      await up.until(() => matching(up.flows, {sourceTransportPort: sent.sport}).length === 1, 'the flow at the collector that stayed up', 20_000)
      await sleep(500)
      arrived = matching(back.flows, {sourceTransportPort: sent.sport})[0]
    }
    assert.equal(arrived.packetDeltaCount, 7)
    assert.equal(arrived.octetDeltaCount, 7 * 78)
    assert.equal(await d.stop(), 0, d.tail)
    assert.ok(d.count('stopped') === 1)
  })

  it('spools for a collector that starts 10 s after the daemon and the traffic: it still gets every count, in sequence', async function () {
    const port = await closedPort()
    const before = await link()
    const d = daemon(config(`- address: 127.0.0.1:${port}`))
    await d.waitForLog('started')
    const startedAt = Date.now()
    const udpSink = await startAgent(server, {mode: 'udp-sink', host: '::', port: 5008})
    agents.push(udpSink)
    await Promise.all(
      [0, 1, 2, 3, 4, 5].map((i) =>
        runAgent(client, {mode: 'udp-send', host: i % 2 ? 'fd00:f10::2' : '198.18.0.2', port: 5008, count: 40, size: 50 + i, gapMs: 5}),
      ),
    )
    await ping(client, '198.18.0.2', 3, 56, 0.05)
    // Idle timeout 2 s: the flows leave while nothing listens, into the spool.
    await d.waitForLog('collector-error', (l) => l.collector === `127.0.0.1:${port}`, 10_000)
    await sleep(Math.max(0, startedAt + 10_000 - Date.now()))
    const after = await link()
    const sink = await collector(port)
    const tx = {packets: after.txPackets - before.txPackets, bytes: after.txBytes - before.txBytes}
    const rx = {packets: after.rxPackets - before.rxPackets, bytes: after.rxBytes - before.rxBytes}
    await sink.until(() => sum(sink.flows, 'packetDeltaCount') >= tx.packets + rx.packets, 'every packet, replayed', 15_000)
    await d.waitForLog('collector-back', (l) => l.collector === `127.0.0.1:${port}`)
    assert.equal(await d.stop(), 0, d.tail)
    const flows = sink.flows
    assert.deepEqual([sum(flows, 'packetDeltaCount', egress), sum(flows, 'octetDeltaCount', egress)], [tx.packets, tx.bytes - ETH * tx.packets])
    assert.deepEqual([sum(flows, 'packetDeltaCount', ingress), sum(flows, 'octetDeltaCount', ingress)], [rx.packets, rx.bytes - ETH * rx.packets])
    // The replay kept the numbering: from 0, no gap, nothing twice.
    const report = sink.checker.report()
    assert.equal(sink.records.find((r) => !r.options)?.sequenceNumber, 0)
    assert.deepEqual(
      report.domains.map((x) => [x.sequence.gapCount, x.sequence.duplicated]),
      [[0, 0]],
      sink.checker.formatReport().join('\n'),
    )
    assert.equal(report.verdict, 'PASS', sink.checker.formatReport().join('\n'))
    const stopped = d.log.find((l) => l.event === 'stopped')!.collectors as Record<string, number>[]
    assert.equal(stopped[0].spoolDroppedMessages, 0)
  })

  it('drops the oldest messages when the spool is full, and says exactly what it dropped', async function () {
    const port = await closedPort()
    const before = await link()
    // 3 flows a message (16 + 4 + 3 * 59 = 197 bytes), room for 3 messages.
    const d = daemon(config(`- address: 127.0.0.1:${port}`, {extra: 'maxMessageSize: 200\nspoolBytes: 600\n'}))
    await d.waitForLog('started')
    const udpSink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5009})
    agents.push(udpSink)
    await Promise.all(Array.from({length: 16}, (_, i) => runAgent(client, {mode: 'udp-send', host: '198.18.0.2', port: 5009, count: 3 + i, size: 20 + i})))
    const dropped = await d.waitForLog('spool-dropped', (l) => l.collector === `127.0.0.1:${port}` && Number(l.records) > 0, 15_000)
    await sleep(3000) // every flow has left (idle timeout 2 s), into the spool or past it
    const after = await link()
    const sink = await collector(port)
    await d.waitForLog('collector-back', (l) => l.collector === `127.0.0.1:${port}`, 15_000)
    await sleep(500)
    assert.equal(await d.stop(), 0, d.tail)
    const last = d.log.filter((l) => l.event === 'spool-dropped').at(-1)!
    assert.ok(Number(last.records) >= Number(dropped.records))
    const stopped = (d.log.find((l) => l.event === 'stopped')!.collectors as Record<string, number>[])[0]
    assert.deepEqual(
      [stopped.spoolDroppedMessages, stopped.spoolDroppedRecords, stopped.spoolDroppedPackets, stopped.spoolDroppedOctets],
      [last.messages, last.records, last.packets, last.octets],
    )
    // What arrived and what was dropped add up to what crossed the link, exactly.
    const tx = {packets: after.txPackets - before.txPackets, bytes: after.txBytes - before.txBytes}
    const rx = {packets: after.rxPackets - before.rxPackets, bytes: after.rxBytes - before.rxBytes}
    const flows = sink.flows
    assert.equal(sum(flows, 'packetDeltaCount') + Number(last.packets), tx.packets + rx.packets)
    assert.equal(sum(flows, 'octetDeltaCount') + Number(last.octets), tx.bytes - ETH * tx.packets + rx.bytes - ETH * rx.packets)
    // The oldest went: the collector's numbering starts after the dropped records, and the
    // statistics record sent at stop counts them (notSentFlowTotalCount).
    assert.equal(sink.records.find((r) => !r.options)?.sequenceNumber, Number(last.records))
    const stats = sink.records.filter((r) => r.options).at(-1)
    assert.equal(stats?.fields.notSentFlowTotalCount, BigInt(Number(last.records)))
  })

  it('reloads its config on SIGHUP, and keeps the old one when the new one is bad', async function () {
    const sink = await collector()
    const file = config(`- address: 127.0.0.1:${sink.port}`)
    const d = daemon(file)
    await d.waitForLog('started')
    const udpSink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5006})
    agents.push(udpSink)

    writeFileSync(file, `collectors:\n- address: 127.0.0.1:${sink.port}\nidleTimeoutSeconds: banana\n`)
    d.signal('SIGHUP')
    const refused = await d.waitForLog('reload-refused')
    assert.match(String(refused.error), /idleTimeoutSeconds/)
    const a = await runAgent<{sport: number}>(client, {mode: 'udp-send', host: '198.18.0.2', port: 5006, count: 3, size: 10})
    await sink.until(() => matching(sink.flows, {sourceTransportPort: a.sport}).length === 1, 'a flow under the old config', 20_000)

    writeFileSync(
      file,
      `collectors:\n- address: 127.0.0.1:${sink.port}\ndrainIntervalSeconds: 1\nidleTimeoutSeconds: 2\nmetrics:\n  listen: ''\nstateFile: ${dirs.FLOWCTL_STATE_DIR}/daemon-state.json\n` +
        'templates:\n- id: 300\n  fields: [sourceIPv4Address, destinationIPv4Address, sourceTransportPort, packetDeltaCount, octetDeltaCount]\n',
    )
    d.signal('SIGHUP')
    await d.waitForLog('reloaded')
    const b = await runAgent<{sport: number}>(client, {mode: 'udp-send', host: '198.18.0.2', port: 5006, count: 4, size: 10})
    await sink.until(() => matching(sink.flows, {sourceTransportPort: b.sport}).length === 1, 'a flow under the new template', 20_000)
    const rec = sink.records.find((r) => !r.options && renderFields(r.fields).sourceTransportPort === b.sport)!
    assert.equal(rec.templateId, 300)
    assert.deepEqual(renderFields(rec.fields), {
      sourceIPv4Address: '198.18.0.1',
      destinationIPv4Address: '198.18.0.2',
      sourceTransportPort: b.sport,
      packetDeltaCount: 4,
      octetDeltaCount: 4 * 38,
    })
    assert.equal(await d.stop(), 0, d.tail)
  })

  it('does not meter its own IPFIX datagrams crossing a metered interface', async function () {
    // The daemon runs in the client namespace and exports over the metered veth to a collector
    // in the server namespace: without its socket on the skip list it would count itself.
    const listen = execa(
      'nsenter',
      [`--net=/run/netns/${server}`, '--', process.execPath, CLI, 'ipfix', 'listen', '--host', '198.18.0.2', '--port', '4739', '--json'],
      {reject: false},
    )
    const lines: Fields[] = []
    let ready = false
    listen.stdout.on('data', (d: Buffer) => {
      for (const l of d.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Fields)
    })
    listen.stderr.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) ready = true
    })
    try {
      while (!ready) await sleep(50)
      const d = daemon(config('- address: 198.18.0.2:4739'), client)
      await d.waitForLog('started')
      const udpSink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5007})
      agents.push(udpSink)
      const sent = await runAgent<{sport: number}>(client, {mode: 'udp-send', host: '198.18.0.2', port: 5007, count: 6, size: 10})
      const deadline = Date.now() + 15_000
      while (!lines.some((l) => l.sourceTransportPort === sent.sport)) {
        if (Date.now() > deadline) throw new Error(`the collector in ${server} got no flow: ${JSON.stringify(lines)}`)
        await sleep(100)
      }
      await sleep(3000) // past the idle timeout: a flow of the daemon's own datagrams would have left by now
      assert.equal(await d.stop(), 0, d.tail)
      await sleep(300)
      assert.ok(lines.length > 0)
      assert.deepEqual(
        lines.filter((l) => l.destinationTransportPort === 4739 || l.sourceTransportPort === 4739),
        [],
        'no flow of the export traffic',
      )
    } finally {
      listen.kill('SIGTERM')
      await listen
    }
  })
})
