/**
 * Biflow templates (RFC 5103): the collector's template, the reverse counterparts of its
 * per-direction fields under PEN 29305, and biflowDirection; decoded by our collector (reverse
 * elements by name) and by tshark.
 */
import assert from 'node:assert/strict'

import {BiflowPairer} from '../../../src/flow/biflow.js'
import {compileBiflowTemplate, REVERSE_PEN} from '../../../src/ipfix/export/biflow-templates.js'
import {DEFAULT_TEMPLATES} from '../../../src/ipfix/export/exportable-elements.js'
import {defaultFieldLength} from '../../../src/ipfix/export/flow-fields.js'
import {requireTshark, tsharkDecodeIpfix} from '../../helpers/tshark.js'
import {batchOf, exporterTo, NOW_MS, routedReply, routedUniflow, Sink, type FlowInput} from '../flows.js'

/** A connection through a router, both ingresses metered, and a UDP datagram nobody answered. */
const CONNECTION = [routedUniflow({}), routedReply({minTtl: 63}), routedUniflow({sport: 5353, dport: 53, proto: 17, tcpFlags: 0, bytes: 60, packets: 1})]

const template = (fields: readonly string[], lengths: Record<string, number> = {}) =>
  compileBiflowTemplate(
    DEFAULT_TEMPLATES[0].id,
    fields.map((name) => ({name, length: lengths[name] ?? defaultFieldLength(name)!})),
  )

describe('ipfix biflow templates (RFC 5103)', function () {
  let sink: Sink
  beforeEach(async function () {
    sink = await Sink.start()
  })
  afterEach(async function () {
    await sink.stop()
  })

  async function exportBiflows(flows: FlowInput[], t = template(DEFAULT_TEMPLATES[0].fields)): Promise<void> {
    const e = exporterTo(sink.port, {}, [t])
    await e.open()
    try {
      e.exportBatch(new BiflowPairer().pair(batchOf(flows, 5)))
      await sink.settle(e)
    } finally {
      e.close()
    }
  }

  it('adds the reverse of each per-direction field under PEN 29305, then biflowDirection', function () {
    const t = template(DEFAULT_TEMPLATES[0].fields).template
    const reverse = t.fields.filter((f) => f.enterpriseNumber === REVERSE_PEN).map((f) => f.element.name)
    assert.deepEqual(reverse, [
      'tcpControlBits',
      'octetDeltaCount',
      'packetDeltaCount',
      'flowStartMilliseconds',
      'flowEndMilliseconds',
      'ipClassOfService',
      'minimumTTL',
      'maximumTTL',
    ])
    assert.equal(t.fields.at(-1)!.element.name, 'biflowDirection')
    assert.equal(t.fields.length, DEFAULT_TEMPLATES[0].fields.length + reverse.length + 1)
  })

  it('is decoded by our collector with the reverse elements by name, a lone direction with zero reverse counts', async function () {
    await exportBiflows(CONNECTION)
    assert.equal(sink.checker.report().verdict, 'PASS', sink.checker.formatReport().join('\n'))
    assert.equal(sink.flows.length, 2)
    const tcp = sink.flows.find((f) => f.protocolIdentifier === 6)!
    assert.deepEqual(
      [tcp.sourceTransportPort, tcp.packetDeltaCount, tcp.octetDeltaCount, tcp.reversePacketDeltaCount, tcp.reverseOctetDeltaCount, tcp.biflowDirection],
      [40000, 5, 400, 4, 3000, 1],
    )
    assert.deepEqual([tcp.minimumTTL, tcp.reverseMinimumTTL, tcp.reverseFlowStartMilliseconds], [64, 63, NOW_MS + 2])
    const udp = sink.flows.find((f) => f.protocolIdentifier === 17)!
    assert.deepEqual([udp.packetDeltaCount, udp.reversePacketDeltaCount, udp.reverseOctetDeltaCount, udp.biflowDirection], [1, 0, 0, 1])
  })

  it('splits a count too large for a reduced-size field over records, in both directions, exactly', async function () {
    const flows = [routedUniflow({packets: 3, bytes: 300}), routedUniflow({...CONNECTION[1], packets: 700, bytes: 70_000})]
    await exportBiflows(flows, template(DEFAULT_TEMPLATES[0].fields, {packetDeltaCount: 1, octetDeltaCount: 2}))
    assert.equal(sink.flows.length, 3, 'ceil(700 / 255) records')
    const sum = (k: string) => sink.flows.reduce((n, f) => n + Number(f[k]), 0)
    assert.deepEqual([sum('packetDeltaCount'), sum('octetDeltaCount'), sum('reversePacketDeltaCount'), sum('reverseOctetDeltaCount')], [3, 300, 700, 70_000])
  })
})

describe('ipfix biflow templates: tshark decodes the reverse elements @e2e', function () {
  this.timeout(60_000)
  let sink: Sink
  before(async function () {
    await requireTshark(this)
    sink = await Sink.start()
  })
  after(async function () {
    await sink?.stop()
  })

  it('reads the same forward and reverse counts, times and initiator as our collector', async function () {
    const e = exporterTo(sink.port, {}, [template(DEFAULT_TEMPLATES[0].fields)])
    await e.open()
    try {
      e.exportBatch(new BiflowPairer().pair(batchOf(CONNECTION, 5)))
      await sink.settle(e)
    } finally {
      e.close()
    }
    const records = await tsharkDecodeIpfix(sink.datagrams, sink.port)
    assert.deepEqual(records, sink.flows)
    const tcp = records.find((r) => r.protocolIdentifier === 6)!
    assert.deepEqual([tcp.packetDeltaCount, tcp.reversePacketDeltaCount, tcp.reverseOctetDeltaCount, tcp.biflowDirection], [5, 4, 3000, 1])
  })
})
