/**
 * Router-grade records end to end: real traffic routed through a namespace router (client ->
 * router -> server, and a network behind the server reached through a gateway), the meter on both
 * router interfaces in both directions, the daemon exporting, and tshark decoding the export:
 * both interfaces of every record, the next hop, the TTL range, forwarding status, a fragmented
 * datagram counted under its ports, and the start time against the send time.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {DEFAULT_TEMPLATES} from '../../src/ipfix/export/exportable-elements.js'
import {Lab} from '../../src/lab/lab.js'
import {ping, runAgent, startAgent} from '../../src/lab/traffic.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {requireE2e, PrivateDirs} from '../helpers/e2e.js'
import {requireTshark, tsharkDecodeIpfix, type TsharkRecord} from '../helpers/tshark.js'
import {Sink} from '../ipfix/flows.js'

const FORWARDED = 64
const FOR_US = 195

describe('router-grade records through a namespace router @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`router-${id}`)
  const lab = new Lab(id)
  let tmp = ''
  let router = ''
  let records: TsharkRecord[] = []
  const ifindex: Record<string, number> = {}
  let udpFar: {sport: number; firstBeforeMs: number; firstMs: number} | undefined
  let udpNear: {sport: number} | undefined
  let fragmented: {sport: number} | undefined

  before(async function () {
    requireE2e(this)
    await requireTshark(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-router-'))
    privateDirs.apply()
    const routed = await lab.router(50, {ipv6: true})
    const {client, server} = routed
    router = routed.router
    // A network behind the server, reached through it as a gateway.
    await lab.exec(server, 'ip', ['addr', 'add', '198.18.52.1/32', 'dev', 'lo'])
    await lab.exec(router, 'ip', ['route', 'add', '198.18.52.0/24', 'via', '198.18.51.2'])
    for (const name of ['r0', 'r1']) ifindex[name] = await lab.ifindex(router, name)
    await attachMeters(privateDirs.paths, {
      targets: [
        {netns: router, ifname: 'r0'},
        {netns: router, ifname: 'r1'},
      ],
      directions: ['ingress', 'egress'],
      pref: 1,
      handle: 1,
      force: false,
    })

    const sink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    const config = join(tmp, 'config.yaml')
    // The default templates, and forwardingStatus (not in them: one byte more per record).
    const templates = DEFAULT_TEMPLATES.map((t) => `- id: ${t.id}\n  fields: [${[...t.fields, 'forwardingStatus'].join(', ')}]`).join('\n')
    writeFileSync(
      config,
      `collectors:\n- address: 127.0.0.1:${sink.port}\ntemplates:\n${templates}\nmetrics:\n  listen: ''\nstateFile: ${join(tmp, 'state.json')}\n`,
    )
    const daemon = new DaemonProcess(config)
    try {
      await daemon.waitForLog('started')
      const udpSink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 6000})
      udpFar = await runAgent(client, {mode: 'udp-send', host: '198.18.52.1', port: 6000, count: 10, size: 100, gapMs: 5})
      udpNear = await runAgent(client, {mode: 'udp-send', host: '198.18.51.2', port: 6000, count: 4, size: 100})
      // 4000 bytes of payload: three fragments on a 1500-byte MTU.
      fragmented = await runAgent(client, {mode: 'udp-send', host: '198.18.51.2', port: 6000, count: 1, size: 4000})
      udpSink.stop()
      await ping(client, '198.18.50.1', 3, 56, 0.05) // for the router itself
      await ping(client, 'fd00:51::2', 2, 56, 0.05)
      assert.equal(await daemon.stop(), 0, daemon.tail)
    } finally {
      await daemon.stop('SIGKILL').catch(() => {})
      await sink.stop()
    }
    records = await tsharkDecodeIpfix(sink.datagrams, sink.port)
  })

  after(async function () {
    if (router) await detachMeters(privateDirs.paths, {targets: [{netns: router, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  function find(match: (r: TsharkRecord) => boolean, what: string): TsharkRecord[] {
    const found = records.filter(match)
    assert.ok(found.length > 0, `no record of ${what} in ${JSON.stringify(records)}`)
    return found
  }

  const udpTo = (dst: string, sport: number) => (r: TsharkRecord) =>
    r.protocolIdentifier === 17 && r.destinationIPv4Address === dst && r.sourceTransportPort === sport

  it('gives a forwarded flow both interfaces in both directions, the gateway as next hop, and the TTL before and after the hop', function () {
    const far = find(udpTo('198.18.52.1', udpFar!.sport), 'the UDP flow through the gateway')
    const inbound = far.find((r) => r.flowDirection === 0)!
    const outbound = far.find((r) => r.flowDirection === 1)!
    for (const r of [inbound, outbound]) {
      assert.equal(r.ingressInterface, ifindex.r0, 'in by r0')
      assert.equal(r.egressInterface, ifindex.r1, 'out by r1')
      assert.equal(r.ipNextHopIPv4Address, '198.18.51.2')
      assert.equal(r.packetDeltaCount, 10)
    }
    assert.deepEqual([inbound.minimumTTL, inbound.maximumTTL], [64, 64], 'as the client sent it')
    assert.deepEqual([outbound.minimumTTL, outbound.maximumTTL], [63, 63], 'one hop later')
    assert.equal(Number(inbound.forwardingStatus), FORWARDED)
  })

  it('has next hop 0 for a directly connected destination', function () {
    const near = find(udpTo('198.18.51.2', udpNear!.sport), 'the UDP flow to the server')
    for (const r of near) {
      assert.equal(r.ipNextHopIPv4Address, '0.0.0.0')
      assert.equal(r.packetDeltaCount, 4)
    }
  })

  it('counts every fragment of a datagram under its ports, once', function () {
    const frag = find(udpTo('198.18.51.2', fragmented!.sport), 'the fragmented datagram')
    for (const r of frag) {
      assert.equal(r.packetDeltaCount, 3, 'three fragments')
      assert.equal(r.octetDeltaCount, 4008 + 3 * 20, 'UDP header and payload, and an IP header per fragment')
    }
    const portless = records.filter((r) => r.protocolIdentifier === 17 && r.sourceTransportPort === 0)
    assert.deepEqual(portless, [], 'no fragment counted without ports')
  })

  it('marks traffic for the router itself as consumed, with no egress interface', function () {
    const mine = find((r) => r.protocolIdentifier === 1 && r.destinationIPv4Address === '198.18.50.1' && r.flowDirection === 0, 'the pings to the router')
    assert.equal(Number(mine[0].forwardingStatus), FOR_US)
    assert.equal(mine[0].egressInterface, 0)
    assert.equal(mine[0].ingressInterface, ifindex.r0)
  })

  it('gives IPv6 the same: both interfaces and the hop limit before and after the hop', function () {
    const v6 = find((r) => r.protocolIdentifier === 58 && r.destinationIPv6Address === 'fd00:51::2', 'the IPv6 pings')
    const inbound = v6.find((r) => r.flowDirection === 0)!
    const outbound = v6.find((r) => r.flowDirection === 1)!
    assert.equal(inbound.egressInterface, ifindex.r1)
    assert.equal(outbound.ingressInterface, ifindex.r0)
    assert.equal(inbound.minimumTTL, 64)
    assert.equal(outbound.maximumTTL, 63)
    assert.equal(inbound.ipNextHopIPv6Address, '::')
  })

  it('starts a flow at the millisecond its first packet was sent', function () {
    const inbound = find(udpTo('198.18.52.1', udpFar!.sport), 'the UDP flow').find((r) => r.flowDirection === 0)!
    const start = Number(inbound.flowStartMilliseconds)
    assert.ok(
      start >= udpFar!.firstBeforeMs - 1 && start <= udpFar!.firstMs + 1,
      `start ${start} vs sent between ${udpFar!.firstBeforeMs} and ${udpFar!.firstMs}`,
    )
  })
})
