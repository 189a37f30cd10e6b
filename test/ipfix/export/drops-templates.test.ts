/**
 * The drops templates (drops-templates.ts, issue 23): with the default templates, a flow with
 * drops goes out under its template + forwardingStatus, droppedPacketDeltaCount and
 * droppedOctetDeltaCount (id 1256 for 256, 1257 for 257), announced only once the session has
 * such a record to send; a flow without drops keeps its template and its bytes exactly. Decoded by
 * our collector and by tshark.
 */
import assert from 'node:assert/strict'

import {defaultConfig} from '../../../src/config/load.js'
import type {DecodedRecord} from '../../../src/ipfix/collect/decoder.js'
import {optionsTemplateIds, type CollectorExporter} from '../../../src/ipfix/export/collector-exporter.js'
import {dropsTemplateIds} from '../../../src/ipfix/export/drops-templates.js'
import {requireTshark, tsharkDissectIpfix} from '../../helpers/tshark.js'
import {batchOf, defaultExportTemplates, expectedFields, expectedJson, exporterTo, randomFlows, Sink, testTemplate, type FlowInput} from '../flows.js'

const IDS = optionsTemplateIds(defaultConfig().templates)
/** forwardingStatus of a dropped flow: status 2 (dropped), reason 2 (ACL deny, RFC 7270). */
const ACL_DENY = 130

interface Drops {
  packets: number
  bytes: number
}

/** The flows as a batch, with the drops given by row (and their flows' forwardingStatus a dropped one). */
function batchWithDrops(flows: FlowInput[], drops: Map<number, Drops>, domain = 1): ReturnType<typeof batchOf> {
  const b = batchOf(
    flows.map((f, i) => (drops.has(i) ? {...f, fwdStatus: ACL_DENY} : f)),
    domain,
  )
  for (const [i, d] of drops) {
    const columns = b.dropsColumns()
    columns.packets[i] = d.packets
    columns.bytes[i] = d.bytes
    columns.reason[i] = 'NETFILTER_DROP'
  }
  return b
}

/** What a flow with drops decodes to under the drops template of a default template. */
function expectedWithDrops(f: FlowInput, d: Drops): Record<string, string | number | bigint> {
  return {...expectedFields(f), forwardingStatus: ACL_DENY, droppedPacketDeltaCount: BigInt(d.packets), droppedOctetDeltaCount: BigInt(d.bytes)}
}

/** The data records of template `id` in the datagrams, as their bytes. */
function recordBytes(sink: Sink, id: number, recordLength: number): Buffer[] {
  const out: Buffer[] = []
  for (const {message, raw} of sink.received)
    for (const s of message.sets) {
      if (s.kind !== 'data' || s.id !== id) continue
      for (let at = s.offset + 4; at + recordLength <= s.offset + s.length - s.padding; at += recordLength) out.push(raw.subarray(at, at + recordLength))
    }
  return out
}

/** The ids of the data templates each message defines, in arrival order (messages with none left out). */
function templatesAnnounced(sink: Sink): number[][] {
  return sink.received.map((r) => r.message.templates.filter((t) => t.scopeFieldCount === 0).map((t) => t.id)).filter((ids) => ids.length > 0)
}

const flowRecords = (sink: Sink): DecodedRecord[] => sink.records.filter((r) => !r.options)

describe('ipfix/export drops templates: flows with drops under a derived template, the others as before', function () {
  this.timeout(20_000)
  const sinks: Sink[] = []
  const exporters: CollectorExporter[] = []

  afterEach(async function () {
    for (const e of exporters.splice(0)) e.close()
    for (const s of sinks.splice(0)) await s.stop()
  })

  async function open(
    options: Parameters<typeof exporterTo>[1] = {},
    templates?: Parameters<typeof exporterTo>[2],
  ): Promise<{sink: Sink; e: CollectorExporter}> {
    const sink = await Sink.start()
    sinks.push(sink)
    const e = exporterTo(sink.port, options, templates)
    exporters.push(e)
    await e.open()
    return {sink, e}
  }

  function assertPass(sink: Sink): void {
    assert.equal(sink.checker.report().verdict, 'PASS', sink.checker.formatReport().join('\n'))
    assert.deepEqual(sink.malformed, [])
  }

  it('the flows without drops keep template 256 byte for byte; those with drops go under 1256 with their counts and forwardingStatus', async function () {
    const flows = randomFlows(4, 8, 31)
    const drops = new Map([
      [1, {packets: 3, bytes: 180}],
      [6, {packets: 7_000_000_000, bytes: 9_000_000_000_000}],
    ])
    const before = await open()
    before.e.exportBatch(batchOf(flows))
    await before.sink.settle(before.e)
    const after = await open()
    after.e.exportBatch(batchWithDrops(flows, drops))
    await after.sink.settle(after.e)
    assertPass(after.sink)

    const length = defaultExportTemplates()[0].recordLength
    const unchanged = recordBytes(before.sink, 256, length).filter((_, i) => !drops.has(i))
    assert.equal(unchanged.length, 6)
    assert.deepEqual(recordBytes(after.sink, 256, length), unchanged)
    assert.deepEqual(recordBytes(after.sink, 1256, length + 17).length, 2)

    const records = flowRecords(after.sink)
    assert.deepEqual(
      records.filter((r) => r.templateId === 256).map((r) => r.fields),
      flows.filter((_, i) => !drops.has(i)).map(expectedFields),
    )
    assert.deepEqual(
      records.filter((r) => r.templateId === 1256).map((r) => r.fields),
      [...drops].map(([i, d]) => expectedWithDrops(flows[i], d)),
    )
    // The template: 256's fields, then the three, forwardingStatus in one byte, the counters in eight.
    const t1256 = after.sink.received.flatMap((r) => r.message.templates).find((t) => t.id === 1256)!
    const t256 = defaultExportTemplates()[0].template
    assert.deepEqual(
      t1256.fields.map((f) => [f.element.id, f.length]),
      [...t256.fields.map((f) => [f.element.id, f.length]), [89, 1], [133, 8], [132, 8]],
    )
  })

  it('tshark decodes the same: the forwarded flows under 256, the dropped ones with their drop counts and code under 1256 (IPv6: 1257)', async function () {
    await requireTshark(this)
    const v4 = randomFlows(4, 5, 41)
    const v6 = randomFlows(6, 4, 42)
    const {sink, e} = await open()
    e.exportBatch(batchWithDrops(v4, new Map([[2, {packets: 2, bytes: 120}]])))
    e.exportBatch(batchWithDrops(v6, new Map([[0, {packets: 9, bytes: 1_300}]])))
    await sink.settle(e)
    assertPass(sink)
    const {records, problems} = await tsharkDissectIpfix(sink.datagrams, sink.port)
    assert.deepEqual(problems, [])
    const data = records.filter((r) => !r.options)
    const dropped = (f: FlowInput, packets: number, bytes: number) => ({
      ...expectedJson(f),
      forwardingStatus: ACL_DENY,
      droppedPacketDeltaCount: packets,
      droppedOctetDeltaCount: bytes,
    })
    assert.deepEqual(
      data.map((r) => [r.templateId, r.fields]),
      [
        ...[0, 1, 3, 4].map((i) => [256, expectedJson(v4[i])]),
        [1256, dropped(v4[2], 2, 120)],
        ...[1, 2, 3].map((i) => [257, expectedJson(v6[i])]),
        [1257, dropped(v6[0], 9, 1_300)],
      ],
    )
  })

  it('with sampling options: each rate in messages of its own, its flows without drops under 256 and those with drops under 1256', async function () {
    const flows = randomFlows(4, 6, 51).map((f, i) => ({...f, samplingInterval: i % 2 === 0 ? 1 : 100}))
    // Drops in a row of each rate, and a rate-100 row without.
    const drops = new Map([
      [0, {packets: 1, bytes: 60}],
      [3, {packets: 4, bytes: 400}],
    ])
    const {sink, e} = await open({advertise: {templateIds: IDS}})
    e.exportBatch(batchWithDrops(flows, drops, 7))
    await sink.settle(e)
    assertPass(sink)
    const shape = (r: DecodedRecord) => (r.templateId === IDS.sampling ? `R${r.fields.samplingInterval as number}` : `${r.templateId}`)
    assert.deepEqual(
      sink.received.map((m) => m.message.records.map(shape)).filter((x) => x.length > 0),
      [
        ['R1', '256', '256', '1256'],
        ['R100', '256', '256', '1256'],
      ],
    )
    const byRow = (i: number) => (drops.has(i) ? expectedWithDrops(flows[i], drops.get(i)!) : expectedFields(flows[i]))
    assert.deepEqual(
      flowRecords(sink).map((r) => r.fields),
      [2, 4, 0, 1, 5, 3].map(byRow),
    )
  })

  it('a template that names all three drop fields gets no derived template: flows with drops go out under it', async function () {
    const fields = [...defaultConfig().templates[0].fields.map((f) => f.name), 'forwardingStatus', 'droppedPacketDeltaCount', 'droppedOctetDeltaCount']
    const {sink, e} = await open({templateRefreshMs: 0}, [testTemplate(300, fields)])
    const flows = randomFlows(4, 3, 61)
    e.exportBatch(batchWithDrops(flows, new Map([[1, {packets: 5, bytes: 500}]])))
    e.exportBatch(batchOf(flows))
    await sink.settle(e)
    assertPass(sink)
    assert.deepEqual(templatesAnnounced(sink), [[300], [300]])
    assert.deepEqual(
      flowRecords(sink).map((r) => [r.templateId, r.fields.droppedPacketDeltaCount, r.fields.forwardingStatus]),
      [...flows.map((f, i) => (i === 1 ? [300, 5n, ACL_DENY] : [300, 0n, f.fwdStatus])), ...flows.map((f) => [300, 0n, f.fwdStatus])],
    )
  })

  it('announces a drops template only once a record is to go under it, before that record, and with the others from then on', async function () {
    const {sink, e} = await open({templateRefreshMs: 0})
    const flows = randomFlows(4, 3, 71)
    e.exportBatch(batchOf(flows))
    e.exportBatch(batchWithDrops(flows, new Map([[2, {packets: 1, bytes: 40}]])))
    e.exportBatch(batchOf(flows))
    await sink.settle(e)
    assertPass(sink)
    // Each batch's refresh, and 1256 on its own in front of its first record.
    assert.deepEqual(templatesAnnounced(sink), [[256, 257], [256, 257], [1256], [256, 257, 1256]])
    const firstDefinition = sink.received.findIndex((r) => r.message.templates.some((t) => t.id === 1256))
    const firstRecord = sink.received.findIndex((r) => r.message.records.some((x) => x.templateId === 1256))
    assert.ok(firstDefinition >= 0 && firstDefinition < firstRecord, `1256 defined in message ${firstDefinition}, first used in ${firstRecord}`)
    assert.equal(flowRecords(sink).filter((r) => r.templateId === 1256).length, 1)
  })

  it('a flow split over several records (a reduced-size counter) splits its drop counts too: their sums stay exact', async function () {
    const fields = ['sourceIPv4Address', {name: 'packetDeltaCount', length: 1}, 'forwardingStatus', 'droppedPacketDeltaCount', 'droppedOctetDeltaCount']
    const {sink, e} = await open({}, [testTemplate(300, fields)])
    const flow = {...randomFlows(4, 1, 91)[0], packets: 600}
    e.exportBatch(batchWithDrops([flow], new Map([[0, {packets: 10, bytes: 1_001}]])))
    await sink.settle(e)
    assertPass(sink)
    const records = flowRecords(sink)
    assert.equal(records.length, 3)
    const sum = (k: string) => records.reduce((n, r) => n + BigInt(r.fields[k] as number | bigint), 0n)
    assert.deepEqual([sum('packetDeltaCount'), sum('droppedPacketDeltaCount'), sum('droppedOctetDeltaCount')], [600n, 10n, 1_001n])
  })

  it("chooses ids that none of the collector's templates use", async function () {
    // The IPv6 default template under id 1256: the IPv4 one's drops template takes 1257, its own 2256.
    const [t4, t6] = defaultExportTemplates()
    const v6 = {...t6, template: {...t6.template, id: 1256}}
    const {sink, e} = await open({}, [t4, v6])
    e.exportBatch(batchWithDrops(randomFlows(4, 2, 81), new Map([[0, {packets: 1, bytes: 50}]])))
    e.exportBatch(batchWithDrops(randomFlows(6, 2, 82), new Map([[1, {packets: 2, bytes: 150}]])))
    await sink.settle(e)
    assertPass(sink)
    assert.deepEqual(
      flowRecords(sink).map((r) => [r.templateId, r.fields.droppedPacketDeltaCount ?? null]),
      [
        [256, null],
        [1257, 1n],
        [1256, null],
        [2256, 2n],
      ],
    )
  })

  it('dropsTemplateIds: the lowest free id from id + 1000 up, past the options templates, then from 256 up', function () {
    const t = (id: number, names = ['sourceIPv4Address']) => ({id, fields: names.map((name) => ({name}))})
    assert.deepEqual(
      [
        ...dropsTemplateIds(
          [t(256), t(1256), t(1257, ['forwardingStatus', 'droppedOctetDeltaCount', 'droppedPacketDeltaCount']), t(64100), t(64600)],
          [65100, 65101],
        ),
      ],
      [
        [256, 1258],
        [1256, 2256],
        [64100, 65102],
        [64600, 257],
      ],
    )
  })
})
