/**
 * Biflows end to end (RFC 5103): a TCP connection and a UDP exchange through a namespace router
 * (client -> router -> server), the meter on the ingress of both router interfaces (each
 * direction of a connection is metered on the side it comes in by), and the daemon exporting to
 * two collectors: one with `biflow: true`, decoded by tshark (which knows the reverse elements of
 * PEN 29305), and one that gets the uniflows as before; and a flow log with `biflow: true`. Then
 * the router metered both ways on both interfaces: a connection is a biflow per interface. And a
 * TCP connection through the delay lab (links of 20 ms and 50 ms round trip, src/lab/delay-lab.ts).
 *
 * The truth is counted apart from the meter: the kernel's counters of the client's interface
 * around the TCP connection (every frame it sent and received: the quiet lab sends nothing else,
 * and with segmentation offloads off each is one TCP segment), and the agents' own counts for UDP. The daemon drains once, at stop, so both directions of each connection end in
 * the same drain.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {DelayLab} from '../../src/lab/delay-lab.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import type {LinkCounters} from '../../src/sys/netns.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {requireE2e, PrivateDirs} from '../helpers/e2e.js'
import {requireTshark, tsharkDecodeIpfix, type TsharkRecord} from '../helpers/tshark.js'
import {Sink} from '../ipfix/flows.js'

const CLIENT = '198.18.60.2'
const SERVER = '198.18.61.2'
const TCP_PORT = 7000
const UDP_PORT = 7001
const UDP_CLIENT_PORT = 47001
const TCP_BYTES = 200_000

/** What the client's interface sent and received: its packets, and their IP bytes (the kernel counts the 14-byte Ethernet header too). */
interface Counted {
  outPackets: number
  inPackets: number
  outBytes: number
  inBytes: number
}

const ETHERNET_HEADER = 14

function since(after: LinkCounters, before: LinkCounters): Counted {
  const outPackets = after.txPackets - before.txPackets
  const inPackets = after.rxPackets - before.rxPackets
  return {
    outPackets,
    inPackets,
    outBytes: after.txBytes - before.txBytes - ETHERNET_HEADER * outPackets,
    inBytes: after.rxBytes - before.rxBytes - ETHERNET_HEADER * inPackets,
  }
}

/** What one run through the router gave: the records of each collector and the log, and the truth. */
interface RouterRun {
  ifindex: Record<string, number>
  biflows: TsharkRecord[]
  uniflows: TsharkRecord[]
  logged: Record<string, unknown>[]
  tcp: {sport: number; counted: Counted}
  udp: {request: {packets: number; bytes: number}; reply: {packets: number; bytes: number}}
}

/** A lab (client -> router -> server) metered in `directions` on both router interfaces, and the run. */
class RouterLab {
  readonly id = randomBytes(3).toString('hex')
  readonly privateDirs = new PrivateDirs(`biflow-${this.id}`)
  readonly lab = new Lab(this.id)
  tmp = ''
  router = ''

  constructor(private readonly directions: ('ingress' | 'egress')[]) {}

  async run(): Promise<RouterRun> {
    const {lab, privateDirs} = this
    const ifindex: Record<string, number> = {}
    this.tmp = mkdtempSync(join(tmpdir(), 'fct-biflow-'))
    const tmp = this.tmp
    privateDirs.apply()
    const {client, router, server} = await lab.router(60)
    this.router = router
    for (const name of ['r0', 'r1']) ifindex[name] = await lab.ifindex(router, name)
    await attachMeters(privateDirs.paths, {
      targets: [
        {netns: router, ifname: 'r0'},
        {netns: router, ifname: 'r1'},
      ],
      directions: this.directions,
      pref: 1,
      handle: 1,
      force: false,
    })

    const uniSink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    const biSink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    const config = join(tmp, 'config.yaml')
    const log = join(tmp, 'biflows.json')
    // One drain, at stop: both directions of each connection end in it.
    writeFileSync(
      config,
      [
        'drainIntervalSeconds: 600',
        'idleTimeoutSeconds: 600',
        'activeTimeoutSeconds: 1200',
        'collectors:',
        `- {name: uniflows, address: 127.0.0.1:${uniSink.port}}`,
        `- {name: biflows, address: 127.0.0.1:${biSink.port}, biflow: true}`,
        'logs:',
        `- {file: ${log}, biflow: true}`,
        'metrics:',
        "  listen: ''",
        `stateFile: ${join(tmp, 'state.json')}`,
        '',
      ].join('\n'),
    )
    let tcp: RouterRun['tcp'] | undefined
    let udp: RouterRun['udp'] | undefined
    const daemon = new DaemonProcess(config)
    try {
      await daemon.waitForLog('started')
      // TCP: the client interface's counters around the connection are its two directions.
      const tcpSink = await startAgent(server, {mode: 'tcp-sink', host: SERVER, port: TCP_PORT})
      const before = await lab.linkStats(client, 'c0')
      const sent = await runAgent<{bytes: number; localPort: number}>(client, {mode: 'tcp-send', host: SERVER, port: TCP_PORT, bytes: TCP_BYTES})
      const received = await tcpSink.result
      assert.equal(received.bytes, TCP_BYTES)
      await new Promise((r) => setTimeout(r, 300)) // the last ACK
      tcp = {sport: sent.localPort, counted: since(await lab.linkStats(client, 'c0'), before)}
      // UDP: 5 datagrams to the server, then 3 back, each side listening while the other sends.
      const serverSink = await startAgent(server, {mode: 'udp-sink', host: SERVER, port: UDP_PORT, expect: 5})
      const request = await runAgent(client, {mode: 'udp-send', host: SERVER, port: UDP_PORT, sport: UDP_CLIENT_PORT, count: 5, size: 120})
      await serverSink.result
      const clientSink = await startAgent(client, {mode: 'udp-sink', host: CLIENT, port: UDP_CLIENT_PORT, expect: 3})
      const reply = await runAgent(server, {mode: 'udp-send', host: CLIENT, port: UDP_CLIENT_PORT, sport: UDP_PORT, count: 3, size: 700})
      await clientSink.result
      udp = {request: {packets: request.packets, bytes: request.bytes}, reply: {packets: reply.packets, bytes: reply.bytes}}
      assert.equal(await daemon.stop(), 0, daemon.tail)
    } finally {
      await daemon.stop('SIGKILL').catch(() => {})
      await uniSink.stop()
      await biSink.stop()
    }
    const logged = readFileSync(log, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    return {
      ifindex,
      biflows: await tsharkDecodeIpfix(biSink.datagrams, biSink.port),
      uniflows: await tsharkDecodeIpfix(uniSink.datagrams, uniSink.port),
      logged,
      tcp,
      udp,
    }
  }

  async destroy(): Promise<void> {
    if (this.router)
      await detachMeters(this.privateDirs.paths, {targets: [{netns: this.router, ifname: '*'}], all: false, directions: this.directions}).catch(() => {})
    await this.lab.destroy()
    if (this.tmp) rmSync(this.tmp, {recursive: true, force: true})
    this.privateDirs.remove()
  }
}

describe('biflows through a namespace router, per collector @e2e', function () {
  // Each direction is metered where it comes into the router: the request on r0, the answer on r1.
  const routerLab = new RouterLab(['ingress'])
  let ifindex: Record<string, number> = {}
  let biflows: TsharkRecord[] = []
  let uniflows: TsharkRecord[] = []
  let logged: Record<string, unknown>[] = []
  let tcp: RouterRun['tcp'] | undefined
  let udp: RouterRun['udp'] | undefined

  before(async function () {
    requireE2e(this)
    await requireTshark(this)
    ;({ifindex, biflows, uniflows, logged, tcp, udp} = await routerLab.run())
  })

  after(async function () {
    await routerLab.destroy()
  })

  const between = (r: TsharkRecord, a: string, b: string) =>
    (r.sourceIPv4Address === a && r.destinationIPv4Address === b) || (r.sourceIPv4Address === b && r.destinationIPv4Address === a)
  const tcpRecords = (records: TsharkRecord[]) => records.filter((r) => r.protocolIdentifier === 6 && between(r, CLIENT, SERVER))
  const udpRecords = (records: TsharkRecord[]) => records.filter((r) => r.protocolIdentifier === 17 && between(r, CLIENT, SERVER))

  it('exports the TCP connection as one biflow: the client forward, exact counts both ways, the client the initiator', function () {
    const [biflow, ...more] = tcpRecords(biflows)
    assert.deepEqual(more, [], 'one record')
    const counted = tcp!.counted
    assert.deepEqual(
      {
        src: biflow.sourceIPv4Address,
        sport: biflow.sourceTransportPort,
        dport: biflow.destinationTransportPort,
        packets: biflow.packetDeltaCount,
        bytes: biflow.octetDeltaCount,
        reversePackets: biflow.reversePacketDeltaCount,
        reverseBytes: biflow.reverseOctetDeltaCount,
        biflowDirection: biflow.biflowDirection,
        in: biflow.ingressInterface,
      },
      {
        src: CLIENT,
        sport: tcp!.sport,
        dport: TCP_PORT,
        packets: counted.outPackets,
        bytes: counted.outBytes,
        reversePackets: counted.inPackets,
        reverseBytes: counted.inBytes,
        biflowDirection: 1,
        in: ifindex.r0,
      },
    )
    assert.ok(counted.outBytes > TCP_BYTES, `${counted.outBytes} bytes sent for ${TCP_BYTES} of payload`)
    assert.ok(Number(biflow.reverseFlowStartMilliseconds) >= Number(biflow.flowStartMilliseconds), 'the SYN-ACK after the SYN')
  })

  it('exports the UDP exchange as one biflow with the side that spoke first forward', function () {
    const [biflow, ...more] = udpRecords(biflows)
    assert.deepEqual(more, [], 'one record')
    assert.deepEqual(
      [biflow.sourceIPv4Address, biflow.sourceTransportPort, biflow.destinationTransportPort, biflow.biflowDirection],
      [CLIENT, UDP_CLIENT_PORT, UDP_PORT, 1],
    )
    // IP bytes: the payload, an 8-byte UDP header and a 20-byte IP header per datagram.
    assert.deepEqual(
      [biflow.packetDeltaCount, biflow.octetDeltaCount, biflow.reversePacketDeltaCount, biflow.reverseOctetDeltaCount],
      [udp!.request.packets, udp!.request.bytes + 28 * udp!.request.packets, udp!.reply.packets, udp!.reply.bytes + 28 * udp!.reply.packets],
    )
  })

  it('sends the other collector the uniflows, each direction where it came in, with the same counts', function () {
    const tcpUni = tcpRecords(uniflows)
    assert.equal(tcpUni.length, 2)
    const out = tcpUni.find((r) => r.sourceIPv4Address === CLIENT)!
    const back = tcpUni.find((r) => r.sourceIPv4Address === SERVER)!
    assert.deepEqual(
      [out.ingressInterface, out.packetDeltaCount, out.octetDeltaCount, back.ingressInterface, back.packetDeltaCount, back.octetDeltaCount],
      [ifindex.r0, tcp!.counted.outPackets, tcp!.counted.outBytes, ifindex.r1, tcp!.counted.inPackets, tcp!.counted.inBytes],
    )
    for (const r of uniflows) {
      assert.equal(r.biflowDirection, undefined)
      assert.equal(r.reversePacketDeltaCount, undefined)
    }
    assert.equal(udpRecords(uniflows).length, 2)
  })

  it('keeps every packet and byte in exactly one record: the biflows add up to the uniflows', function () {
    const sum = (records: TsharkRecord[], keys: string[]) => records.reduce((n, r) => n + keys.reduce((m, k) => m + Number(r[k] ?? 0), 0), 0)
    assert.equal(sum(biflows, ['packetDeltaCount', 'reversePacketDeltaCount']), sum(uniflows, ['packetDeltaCount']))
    assert.equal(sum(biflows, ['octetDeltaCount', 'reverseOctetDeltaCount']), sum(uniflows, ['octetDeltaCount']))
    assert.ok(biflows.length < uniflows.length)
  })

  it('writes the same biflows to the flow log that asks for them', function () {
    const record = logged.find((r) => r.proto === 6 && r.sport === tcp!.sport)!
    assert.deepEqual(
      [record.src, record.pkts, record.bytes, record.reversePkts, record.reverseBytes, record.biflowDirection, record.interface],
      [CLIENT, tcp!.counted.outPackets, tcp!.counted.outBytes, tcp!.counted.inPackets, tcp!.counted.inBytes, 'initiator', 'r0'],
    )
  })
})

describe('biflows of a router metered both ways on both interfaces @e2e', function () {
  // Each packet is metered twice, in by one interface and out by the other: a connection is two
  // biflows, one per interface, each of one interface's two directions.
  const routerLab = new RouterLab(['ingress', 'egress'])
  let run: RouterRun | undefined

  before(async function () {
    requireE2e(this)
    await requireTshark(this)
    run = await routerLab.run()
  })

  after(async function () {
    await routerLab.destroy()
  })

  it('exports the TCP connection as one biflow per interface, each with the exact counts of both directions', function () {
    const {biflows, ifindex, tcp} = run!
    const records = biflows.filter((r) => r.protocolIdentifier === 6 && r.sourceIPv4Address === CLIENT && r.sourceTransportPort === tcp.sport)
    const byInterface = (metered: number, flowDirection: number) =>
      records.filter((r) => r.flowDirection === flowDirection && r[flowDirection ? 'egressInterface' : 'ingressInterface'] === metered)
    assert.equal(records.length, 2, JSON.stringify(biflows))
    const counts = (r: TsharkRecord) => [r.packetDeltaCount, r.octetDeltaCount, r.reversePacketDeltaCount, r.reverseOctetDeltaCount, r.biflowDirection]
    const expected = [tcp.counted.outPackets, tcp.counted.outBytes, tcp.counted.inPackets, tcp.counted.inBytes, 1]
    // In by r0 (its answer out by r0), and out by r1 (its answer in by r1).
    assert.deepEqual(byInterface(ifindex.r0, 0).map(counts), [expected])
    assert.deepEqual(byInterface(ifindex.r1, 1).map(counts), [expected])
  })

  it('keeps every packet and byte in exactly one record', function () {
    const {biflows, uniflows} = run!
    const sum = (records: TsharkRecord[], keys: string[]) => records.reduce((n, r) => n + keys.reduce((m, k) => m + Number(r[k] ?? 0), 0), 0)
    assert.equal(sum(biflows, ['packetDeltaCount', 'reversePacketDeltaCount']), sum(uniflows, ['packetDeltaCount']))
    assert.equal(sum(biflows, ['octetDeltaCount', 'reverseOctetDeltaCount']), sum(uniflows, ['octetDeltaCount']))
    assert.equal(biflows.length * 2, uniflows.length, 'every uniflow paired')
  })
})

describe('a biflow of a TCP connection through the delay lab (20 ms and 50 ms round trips) @e2e', function () {
  this.timeout(120_000)
  const lab = new DelayLab({clientDelayMs: 10, serverDelayMs: 25, ipv6: false})
  const privateDirs = new PrivateDirs(`biflow-delay-${lab.id}`)
  let tmp = ''
  let attached = false
  let biflows: TsharkRecord[] = []
  let sport = 0
  let forward = {packets: 0, bytes: 0}
  let reverse = {packets: 0, bytes: 0}

  before(async function () {
    requireE2e(this)
    await requireTshark(this)
    privateDirs.apply()
    tmp = mkdtempSync(join(tmpdir(), 'fct-biflow-delay-'))
    await lab.build()
    const router = lab.router.netns
    // Each direction metered where it comes into the router.
    await attachMeters(privateDirs.paths, {
      targets: [
        {netns: router, ifname: 'r0'},
        {netns: router, ifname: 'r1'},
      ],
      directions: ['ingress'],
      pref: 1,
      handle: 1,
      force: false,
    })
    attached = true
    const sink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    const config = join(tmp, 'config.yaml')
    writeFileSync(
      config,
      `drainIntervalSeconds: 600\nidleTimeoutSeconds: 600\nactiveTimeoutSeconds: 1200\ncollectors:\n- {address: 127.0.0.1:${sink.port}, biflow: true}\nmetrics: {listen: ''}\nstateFile: ${join(tmp, 'state.json')}\n`,
    )
    const daemon = new DaemonProcess(config)
    try {
      await daemon.waitForLog('started')
      const before = {r0: await lab.lab.linkStats(router, 'r0'), r1: await lab.lab.linkStats(router, 'r1')}
      const tcpSink = await startAgent(lab.server.netns, {mode: 'tcp-sink', host: lab.server.v4, port: TCP_PORT})
      const sent = await runAgent<{bytes: number; localPort: number}>(lab.client.netns, {mode: 'tcp-send', host: lab.server.v4, port: TCP_PORT, bytes: 100_000})
      await tcpSink.result
      // The last ACK crosses the slower link after the sink has closed.
      await new Promise((r) => setTimeout(r, 2 * (lab.clientDelayMs + lab.serverDelayMs) + 200))
      const after = {r0: await lab.lab.linkStats(router, 'r0'), r1: await lab.lab.linkStats(router, 'r1')}
      sport = sent.localPort
      // What came into the router by each side: the client's direction by r0, the server's by r1.
      const into = (ifname: 'r0' | 'r1') => {
        const packets = after[ifname].rxPackets - before[ifname].rxPackets
        return {packets, bytes: after[ifname].rxBytes - before[ifname].rxBytes - ETHERNET_HEADER * packets}
      }
      forward = into('r0')
      reverse = into('r1')
      assert.equal(await daemon.stop(), 0, daemon.tail)
    } finally {
      await daemon.stop('SIGKILL').catch(() => {})
      await sink.stop()
    }
    biflows = await tsharkDecodeIpfix(sink.datagrams, sink.port)
  })

  after(async function () {
    if (attached)
      await detachMeters(privateDirs.paths, {targets: [{netns: lab.router.netns, ifname: '*'}], all: false, directions: ['ingress']}).catch(() => {})
    await lab.close()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it('has exact forward and reverse packets and bytes, the client as the initiator, and the answer a server round trip later', function () {
    const found = biflows.filter((r) => r.protocolIdentifier === 6 && (r.sourceTransportPort === sport || r.destinationTransportPort === sport))
    assert.equal(found.length, 1, JSON.stringify(biflows))
    const [biflow] = found
    assert.ok(forward.packets > 0 && reverse.packets > 0)
    assert.deepEqual(
      [
        biflow.sourceIPv4Address,
        biflow.sourceTransportPort,
        biflow.packetDeltaCount,
        biflow.octetDeltaCount,
        biflow.reversePacketDeltaCount,
        biflow.reverseOctetDeltaCount,
        biflow.biflowDirection,
      ],
      [lab.client.v4, sport, forward.packets, forward.bytes, reverse.packets, reverse.bytes, 1],
    )
    // The SYN came in by r0; the SYN-ACK came in by r1 no sooner than the server's round trip (50 ms) later.
    const answeredAfter = Number(biflow.reverseFlowStartMilliseconds) - Number(biflow.flowStartMilliseconds)
    assert.ok(answeredAfter >= 2 * lab.serverDelayMs - 1, `the reverse began ${answeredAfter} ms after the forward`)
  })
})
