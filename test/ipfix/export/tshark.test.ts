/**
 * Interoperability: what CollectorExporter sends, Wireshark's cflow dissector (tshark) decodes to
 * exactly the flows that went in, with no malformed packet and no expert warning. tshark is an
 * independent implementation of RFC 7011: agreeing with it is evidence our encoder and decoder do
 * not share one misreading of the RFC.
 *
 * The first suite checks the test helpers themselves (pcap writer, tshark output parsing) without
 * tshark; the second needs tshark (no root).
 */
import assert from 'node:assert/strict'

import {renderFields} from '../../../src/ipfix/collect/render.js'
import {EXPORTABLE_ELEMENTS} from '../../../src/ipfix/export/exportable-elements.js'
import {compileTemplate} from '../../../src/ipfix/export/collector-exporter.js'
import {ipv4Checksum, LINKTYPE_ETHERNET, LINKTYPE_RAW, pcapFile, udpPacket} from '../../helpers/pcap.js'
import {parseTsharkTime, requireTshark, TsharkProblemError, tsharkDecodeIpfix, tsharkDissectIpfix} from '../../helpers/tshark.js'
import {
  batchOf,
  expectedJson,
  exporterTo,
  randomFlows,
  REGISTRY_KNOWS_FORWARDING_STATUS,
  sampleFlows,
  Sink,
  STATS_TEMPLATE_ID,
  testTemplate,
  type FlowInput,
} from '../flows.js'
import {hex, ID, message, set, spec, templateRecord, u16, u32} from '../messages.js'

describe('ipfix/tshark helpers (pcap writer, tshark output parsing)', function () {
  it('writes the pcap global header and one record per datagram', function () {
    const payload = hex('de ad be ef')
    const file = pcapFile([{payload, timeMs: 1_700_000_000_250, sport: 1234, dport: 4739}])
    // Magic, version 2.4, zone 0, sigfigs 0, snaplen 65535, linktype 1 (Ethernet).
    assert.deepEqual(file.subarray(0, 24), hex('d4c3b2a1 0200 0400 00000000 00000000 ffff0000 01000000'))
    const frameLength = 14 + 20 + 8 + 4
    // ts_sec, ts_usec (250 ms), incl_len, orig_len.
    assert.deepEqual(file.subarray(24, 40), Buffer.concat([u32le(1_700_000_000), u32le(250_000), u32le(frameLength), u32le(frameLength)]))
    assert.equal(file.length, 40 + frameLength)
    const frame = file.subarray(40)
    assert.equal(frame.readUInt16BE(12), 0x0800)
    const ip = frame.subarray(14)
    assert.equal(ip[0], 0x45)
    assert.equal(ip.readUInt16BE(2), 20 + 8 + 4)
    assert.equal(ip[9], 17)
    assert.deepEqual([...ip.subarray(12, 20)], [192, 0, 2, 1, 192, 0, 2, 2])
    assert.deepEqual(ip.subarray(20, 28), hex('04d2 1283 000c 0000')) // ports 1234 -> 4739, length 12, no checksum
    assert.deepEqual(ip.subarray(28), payload)
    assert.equal(pcapFile([{payload}], {linktype: LINKTYPE_RAW}).readUInt32LE(20), LINKTYPE_RAW)
    assert.equal(LINKTYPE_ETHERNET, 1)
  })

  it('computes the IPv4 header checksum (RFC 1071: the header then sums to 0xffff)', function () {
    const ip = udpPacket({payload: Buffer.alloc(100, 7), src: '10.0.0.1', dst: '172.16.5.9'}, 0x1c46).subarray(0, 20)
    let sum = 0
    for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i)
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
    assert.equal(sum, 0xffff)
    // The example header of RFC 1071 §3 / Wikipedia: checksum b861.
    assert.equal(ipv4Checksum(hex('4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7')), 0xb861)
  })

  it('reads tshark times in UTC to the nanosecond', function () {
    assert.equal(parseTsharkTime('Nov 14, 2023 22:13:20.123456789 UTC'), 1_700_000_000_123_456_789n)
    assert.equal(parseTsharkTime('Jan  1, 1970 00:00:00.000000000 UTC'), 0n)
    assert.throws(() => parseTsharkTime('Nov 14, 2023 23:13:20.000000000 CET'), /cannot read tshark time/)
  })
})

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n)
  return b
}

describe('ipfix/tshark interop: tshark decodes what the exporter sends @e2e', function () {
  this.timeout(60_000)
  let sink: Sink

  before(async function () {
    await requireTshark(this)
  })
  beforeEach(async function () {
    sink = await Sink.start()
  })
  afterEach(async function () {
    await sink.stop()
  })

  /** Exports the flows (a batch per family), then a statistics record; returns once the sink has it all. */
  async function exportAll(flows: FlowInput[], options: Parameters<typeof exporterTo>[1] = {}, templates?: Parameters<typeof exporterTo>[2]): Promise<void> {
    const e = exporterTo(sink.port, options, templates)
    await e.open()
    try {
      for (const family of [4, 6] as const) {
        const of = flows.filter((f) => f.family === family)
        if (of.length) e.exportBatch(batchOf(of, 5))
      }
      e.sendStats(5, {packets: 17, bytes: 1_700})
      await sink.settle(e)
    } finally {
      e.close()
    }
  }

  it('IPv4 and IPv6 TCP, UDP and ICMP flows: every default template field, exactly', async function () {
    const flows = [...sampleFlows(4), ...sampleFlows(6)]
    await exportAll(flows)
    assert.equal(sink.checker.report().verdict, 'PASS', sink.checker.formatReport().join('\n'))

    const {records, problems} = await tsharkDissectIpfix(sink.datagrams, sink.port)
    assert.deepEqual(problems, [])
    const data = records.filter((r) => !r.options)
    assert.deepEqual(
      data.map((r) => r.templateId),
      flows.map((f) => (f.family === 4 ? 256 : 257)),
    )
    // Exactly the input: every field, nothing missing, nothing extra.
    assert.deepEqual(
      data.map((r) => r.fields),
      flows.map(expectedJson),
    )
    // And the header of each record's message, as our collector read it.
    const ours = sink.records.filter((r) => !r.options)
    assert.deepEqual(
      data.map((r) => [r.observationDomainId, r.sequenceNumber, r.exportTime]),
      ours.map((r) => [r.observationDomainId, r.sequenceNumber, r.exportTime]),
    )
  })

  it('many random flows over several messages, and the flat API (tsharkDecodeIpfix)', async function () {
    const flows = [...randomFlows(4, 60, 101), ...randomFlows(6, 40, 102)]
    await exportAll(flows, {maxMessageSize: 512})
    assert.ok(sink.received.length > 10)
    const fromTshark = await tsharkDecodeIpfix(sink.datagrams, sink.port)
    assert.deepEqual(fromTshark, flows.map(expectedJson))
    // Our own rendering of the same datagrams agrees field for field.
    assert.deepEqual(
      fromTshark,
      sink.records.filter((r) => !r.options).map((r) => renderFields(r.fields)),
    )
  })

  it('the statistics options record (IEs 149, 41, 42, 40, 164, 165, 166, 323)', async function () {
    await exportAll(sampleFlows(4))
    const withOptions = await tsharkDecodeIpfix(sink.datagrams, sink.port, {includeOptions: true})
    const stats = sink.records.find((r) => r.options)!
    assert.equal(stats.templateId, STATS_TEMPLATE_ID)
    assert.deepEqual(withOptions.at(-1), renderFields(stats.fields))
    assert.equal(withOptions.at(-1)!.ignoredOctetTotalCount, 1_700)
  })

  it('reduced-size counters (octetDeltaCount in 4 bytes, packetDeltaCount in 2)', async function () {
    const template = compileTemplate(300, [
      {name: 'sourceIPv4Address', length: 4},
      {name: 'octetDeltaCount', length: 4},
      {name: 'packetDeltaCount', length: 2},
    ])
    const flow = {...sampleFlows(4)[1], bytes: 4_000_000_000, packets: 60_000}
    await exportAll([flow], {}, [template])
    assert.deepEqual(await tsharkDecodeIpfix(sink.datagrams, sink.port), [
      {sourceIPv4Address: flow.src, octetDeltaCount: 4_000_000_000, packetDeltaCount: 60_000},
    ])
  })

  /**
   * Our decoder's records as JSON, with forwardingStatus by name: until the registry table knows
   * IE 89 (the 2013 snapshot does not), the decoder shows it as `ie89`, its bytes in hex.
   */
  function oursByName(): Record<string, unknown>[] {
    return sink.records
      .filter((r) => !r.options)
      .map((r) => {
        const fields = renderFields(r.fields)
        if (REGISTRY_KNOWS_FORWARDING_STATUS || !('ie89' in fields)) return fields
        return Object.fromEntries(Object.entries(fields).map(([k, v]) => (k === 'ie89' ? ['forwardingStatus', Number.parseInt(String(v), 16)] : [k, v])))
      })
  }

  it('every element flowctl can export but the durations, in templates of each family', async function () {
    // Wider than the defaults: the NTP times, ICMP type and code, DSCP, precedence, ipVersion,
    // QinQ, forwardingStatus... flowDuration* is left out: tshark names its own duration of start
    // and end times the same. Each field at its default length.
    const names = (family: 4 | 6) =>
      Object.entries(EXPORTABLE_ELEMENTS)
        .filter(([name, e]) => (e.family ?? family) === family && !name.startsWith('flowDuration'))
        .map(([name]) => name)
    const templates = [testTemplate(400, names(4)), testTemplate(401, names(6))]
    // ICMP with a code: destination unreachable, port (3/3) and ICMPv6 (1/4).
    const icmp = (f: FlowInput): FlowInput => ({...f, dport: f.family === 4 ? 0x0303 : 0x0104})
    const flows = [...sampleFlows(4).slice(0, 2), icmp(sampleFlows(4)[2]), ...sampleFlows(6).slice(0, 2), icmp(sampleFlows(6)[2])]
    await exportAll(flows, {}, templates)
    const fromTshark = await tsharkDecodeIpfix(sink.datagrams, sink.port)
    const ours = oursByName()
    assert.equal(ours.length, flows.length)
    assert.deepEqual(fromTshark, ours)
    assert.deepEqual(
      ours.map((r) => [r.icmpTypeCodeIPv4 ?? r.icmpTypeCodeIPv6, r.icmpTypeIPv4 ?? r.icmpTypeIPv6, r.icmpCodeIPv4 ?? r.icmpCodeIPv6]),
      [
        [0, 0, 0],
        [0, 0, 0],
        [0x0303, 3, 3],
        [0, 0, 0],
        [0, 0, 0],
        [0x0104, 1, 4],
      ],
    )
  })

  it('the router fields under their names: both interfaces of each direction, next hop, TTL range, QinQ, forwarding status', async function () {
    const router = (family: 4 | 6) => {
      const v = family === 4 ? 'IPv4' : 'IPv6'
      return [
        `source${v}Address`,
        'flowDirection',
        'ingressInterface',
        'egressInterface',
        `ipNextHop${v}Address`,
        'minimumTTL',
        'maximumTTL',
        'vlanId',
        'dot1qCustomerVlanId',
        'forwardingStatus',
      ]
    }
    // And reduced sizes: interfaces in 2 bytes, forwardingStatus as the unsigned32 it is.
    const reduced = (family: 4 | 6) => [
      ...router(family).slice(0, 2),
      {name: 'ingressInterface', length: 2},
      {name: 'egressInterface', length: 2},
      {name: 'forwardingStatus', length: 4},
    ]
    const templates = [testTemplate(410, router(4)), testTemplate(411, router(6))]
    const flows = [...sampleFlows(4), ...sampleFlows(6)]
    // Worked out from the input: the metered interface on the flow's side, the other one (0 for
    // traffic for this host) on the other side.
    const expected = (f: FlowInput) => {
      const v = f.family === 4 ? 'IPv4' : 'IPv6'
      return {
        [`source${v}Address`]: f.src,
        flowDirection: f.direction,
        ingressInterface: f.direction === 0 ? f.ifindex : f.peerIfindex,
        egressInterface: f.direction === 0 ? f.peerIfindex : f.ifindex,
        [`ipNextHop${v}Address`]: f.nextHop,
        minimumTTL: f.minTtl,
        maximumTTL: f.maxTtl,
        vlanId: f.vlanId,
        dot1qCustomerVlanId: f.innerVlanId,
        forwardingStatus: f.fwdStatus,
      }
    }
    await exportAll(flows, {}, templates)
    const fromTshark = await tsharkDecodeIpfix(sink.datagrams, sink.port)
    assert.deepEqual(fromTshark, flows.map(expected))
    assert.deepEqual(oursByName(), fromTshark)
    // The sample flows cover: an ingress flow with a gateway, an egress flow from interface
    // 4,000,000,000 directly connected, a flow for this host (no egress interface, consumed).
    assert.deepEqual(fromTshark.map((r) => [r.ingressInterface, r.egressInterface, r.forwardingStatus]).slice(0, 3), [
      [7, 9, 64],
      [4_000_000_000, 65_537, 64],
      [3, 0, 195],
    ])
    assert.deepEqual(
      fromTshark.map((r) => ('ipNextHopIPv4Address' in r ? r.ipNextHopIPv4Address : r.ipNextHopIPv6Address)),
      ['198.19.255.1', '0.0.0.0', '0.0.0.0', 'fe80::1:2ff:fe03:405', '::', '::'],
    )

    await sink.stop()
    sink = await Sink.start()
    const dropped = flows.map((f, i) => ({...f, fwdStatus: [128, 131, 0, 64, 195, 131][i]}))
    await exportAll(dropped, {}, [testTemplate(412, reduced(4)), testTemplate(413, reduced(6))])
    const small = await tsharkDecodeIpfix(sink.datagrams, sink.port)
    assert.deepEqual(
      small.map((r) => [r.ingressInterface, r.egressInterface, r.forwardingStatus]),
      // 4,000,000,000 does not fit 2 bytes: sent as 65535 (RFC 7011 §6.2 leaves the choice; flowctl saturates).
      [
        [7, 9, 128],
        [65_535, 65_535, 131],
        [3, 0, 0],
        [7, 9, 64],
        [65_535, 65_535, 195],
        [3, 0, 131],
      ],
    )
    assert.deepEqual(oursByName(), small)
  })

  describe('the helper reports what tshark finds wrong (so a clean result means something)', function () {
    const T = set(2, templateRecord(300, spec(ID.sourceIPv4Address, 4), spec(ID.packetDeltaCount, 4)))
    const D = set(300, u32(0x0a000001, 5))

    it('data before its template', async function () {
      const err = await tsharkDecodeIpfix([message({}, D), message({}, T), message({}, D)], 4739).then(
        () => assert.fail('expected a TsharkProblemError'),
        (e: unknown) => e,
      )
      assert.ok(err instanceof TsharkProblemError, String(err))
      assert.deepEqual(err.problems, ['frame 1: Data (8 bytes), no template found', 'frame 1: malformed packet (Malformed Packet)'])
      // The record after the template was still decoded.
      assert.deepEqual(
        err.records.map((r) => [r.frame, r.fields]),
        [[3, {sourceIPv4Address: '10.0.0.1', packetDeltaCount: 5}]],
      )
    })

    it('a set length below 4', async function () {
      const {problems} = await tsharkDissectIpfix([message({}, T), message({}, u16(300, 2))], 4739)
      assert.deepEqual(problems, ['frame 2: Flowset Length (2) too short', 'frame 2: malformed packet (Malformed Packet)'])
    })

    it('a datagram that is not IPFIX', async function () {
      const {problems, records} = await tsharkDissectIpfix([hex('00 0a 00 05')], 4739)
      assert.deepEqual(records, [])
      assert.ok(
        problems.some((p) => /^frame 1: malformed packet/.test(p)),
        problems.join('\n'),
      )
    })
  })
})
