/**
 * CollectorExporter end to end over loopback UDP (no root): FlowBatches in, an IpfixCollector with
 * a ConformanceChecker out. What comes back must be exactly what went in, in messages RFC 7011
 * accepts: sequence numbers, sizes, templates first and refreshed, statistics, reduced-size
 * counters, and a collector that is down.
 */
import assert from 'node:assert/strict'

import {performance} from 'node:perf_hooks'
import {setTimeout as sleep} from 'node:timers/promises'

import {
  compileTemplate,
  CONFIRM_MS,
  REPLAY_BURST_BYTES,
  SpoolBudget,
  type CollectorExporter,
  type ExporterOptions,
} from '../../../src/ipfix/export/collector-exporter.js'
import {HELD_MESSAGE_OVERHEAD} from '../../../src/ipfix/export/held-messages.js'
import type {DecodedMessage} from '../../../src/ipfix/collect/decoder.js'
import {
  batchOf,
  NOW_MS,
  defaultExportTemplates,
  expectedFields,
  exporterTo,
  randomFlows,
  sampleFlows,
  Sink,
  STATS_TEMPLATE_ID,
  type FlowInput,
} from '../flows.js'

const TEMPLATE_SET = 2
const OPTIONS_TEMPLATE_SET = 3

function dataSetIds(m: DecodedMessage): number[] {
  return m.sets.filter((s) => s.kind === 'data').map((s) => s.id)
}

function templateIdsIn(m: DecodedMessage): number[] {
  return m.templates.map((t) => t.id)
}

describe('ipfix/exporter (CollectorExporter over loopback UDP)', function () {
  this.timeout(10_000)
  let sink: Sink
  let exporter: CollectorExporter | undefined
  const errors: Error[] = []

  beforeEach(async function () {
    errors.length = 0
    sink = await Sink.start()
  })
  afterEach(async function () {
    exporter?.close()
    exporter = undefined
    await sink.stop()
  })

  async function open(options: Parameters<typeof exporterTo>[1] = {}, templates = defaultExportTemplates()): Promise<CollectorExporter> {
    exporter = exporterTo(sink.port, {onError: (e) => errors.push(e), ...options}, templates)
    await exporter.open()
    return exporter
  }

  function assertPass(): void {
    assert.equal(sink.checker.report().verdict, 'PASS', sink.checker.formatReport().join('\n'))
    assert.deepEqual(sink.malformed, [])
  }

  describe('every record decodes back to its input', function () {
    it('IPv4 and IPv6 flows, all default template fields, each family in its own template, never mixed', async function () {
      const e = await open()
      const v4 = [...sampleFlows(4), ...randomFlows(4, 200, 1)]
      const v6 = [...sampleFlows(6), ...randomFlows(6, 150, 2)]
      e.exportBatch(batchOf(v4, 1))
      e.exportBatch(batchOf(v6, 1))
      await sink.settle(e)

      const flows = sink.records.filter((r) => !r.options)
      assert.deepEqual(
        flows.map((r) => r.templateId),
        [...v4.map(() => 256), ...v6.map(() => 257)],
      )
      assert.deepEqual(
        flows.map((r) => r.fields),
        [...v4, ...v6].map(expectedFields),
      )
      for (const {message} of sink.received) {
        const ids = new Set(dataSetIds(message))
        assert.ok(ids.size <= 1, `message seq ${message.header.sequenceNumber} mixes data sets of templates ${[...ids].join(',')}`)
      }
      // The templates announce exactly the default fields, in order.
      const t256 = sink.collector.decoder.template(`127.0.0.1:${e.localPort}`, 1, 256)
      assert.deepEqual(
        t256?.fields.map((f) => `${f.element.name}/${f.length}`),
        [
          'sourceIPv4Address/4',
          'destinationIPv4Address/4',
          'sourceTransportPort/2',
          'destinationTransportPort/2',
          'protocolIdentifier/1',
          'tcpControlBits/1',
          'octetDeltaCount/8',
          'packetDeltaCount/8',
          'flowStartMilliseconds/8',
          'flowEndMilliseconds/8',
          'ingressInterface/4',
          'egressInterface/4',
          'flowDirection/1',
          'flowEndReason/1',
          'ipClassOfService/1',
          'vlanId/2',
          'ipNextHopIPv4Address/4',
          'minimumTTL/1',
          'maximumTTL/1',
        ],
      )
      assertPass()
      assert.deepEqual(errors, [])
      assert.equal(e.stats.records, v4.length + v6.length)
    })

    it('an empty batch sends nothing', async function () {
      const e = await open()
      e.exportBatch(batchOf([], 1))
      await e.flushed()
      assert.equal(e.stats.messages, 0)
    })
  })

  describe('sequence numbers (RFC 7011 §3.1)', function () {
    it('count the data records sent before, per domain, continuing across batches', async function () {
      const e = await open()
      const plan: [number, FlowInput[]][] = [
        [1, randomFlows(4, 30, 3)],
        [2, randomFlows(6, 20, 4)],
        [1, randomFlows(6, 40, 5)],
        [1, randomFlows(4, 1, 6)],
        [2, randomFlows(4, 25, 7)],
      ]
      for (const [odid, flows] of plan) e.exportBatch(batchOf(flows, odid))
      await sink.settle(e)

      // Worked out from the messages themselves, independently of the checker.
      const sent = new Map<number, number>()
      for (const {message} of sink.received) {
        const odid = message.header.observationDomainId
        assert.equal(message.header.sequenceNumber, sent.get(odid) ?? 0, `domain ${odid}: message after ${sent.get(odid) ?? 0} records`)
        sent.set(odid, (sent.get(odid) ?? 0) + message.records.length)
      }
      assert.deepEqual([...sent.entries()].sort(), [
        [1, 71],
        [2, 45],
      ])
      assertPass()
    })

    it('go on from a sequence store when the source port is fixed (a restart)', async function () {
      const stored = new Map<string, number>()
      const sequences = {get: (s: string, d: number) => stored.get(`${s}/${d}`), set: (s: string, d: number, n: number) => void stored.set(`${s}/${d}`, n)}
      const first = exporterTo(sink.port, {sequences})
      // A fixed source port makes a session whose numbering survives; pick a free one by binding 0 first.
      ;(first.config as {source?: {host: string; port: number}}).source = {host: '127.0.0.1', port: 0}
      await first.open()
      const port = first.localPort!
      first.close()
      const a = exporterTo(sink.port, {sequences})
      ;(a.config as {source?: {host: string; port: number}}).source = {host: '127.0.0.1', port}
      await a.open()
      a.exportBatch(batchOf(randomFlows(4, 10, 8), 1))
      await a.flushed()
      a.close()
      const b = exporterTo(sink.port, {sequences})
      ;(b.config as {source?: {host: string; port: number}}).source = {host: '127.0.0.1', port}
      exporter = b
      await b.open()
      b.exportBatch(batchOf(randomFlows(4, 5, 9), 1))
      await b.flushed()
      await sink.until(() => sink.records.length === 15, '15 records')
      const data = sink.received.filter((r) => r.message.records.length > 0)
      assert.deepEqual(
        data.map((r) => r.message.header.sequenceNumber),
        [0, 10],
      )
      assertPass()
    })
  })

  describe('message size', function () {
    for (const max of [1400, 100]) {
      it(`no message is larger than ${max} bytes, and each is as full as it can be`, async function () {
        const e = await open({maxMessageSize: max})
        const v4 = randomFlows(4, 120, 10 + max)
        e.exportBatch(batchOf(v4, 1))
        e.sendStats(1, {packets: 0, bytes: 0})
        await sink.settle(e)
        for (const {raw} of sink.received) assert.ok(raw.length <= max, `a ${raw.length}-byte message`)
        // 16-byte header, 4-byte set header, 65-byte IPv4 records: all but the last message of the batch are full.
        const perMessage = Math.floor((max - 20) / 65)
        const counts = sink.received.filter((r) => r.message.records.length && !r.message.records[0].options).map((r) => r.message.records.length)
        assert.deepEqual(
          counts.slice(0, -1),
          counts.slice(0, -1).map(() => perMessage),
        )
        assert.equal(
          counts.reduce((a, b) => a + b, 0),
          v4.length,
        )
        assert.deepEqual(
          sink.records.filter((r) => !r.options).map((r) => r.fields),
          v4.map(expectedFields),
        )
        const checker = new Sink({maxMessageSize: max}).checker
        for (const {raw, message} of sink.received) checker.feed(raw, 'x', message)
        assert.equal(checker.report().verdict, 'PASS', checker.formatReport().join('\n'))
      })
    }

    it('a record that can never fit the message size is not sent, and nothing breaks (IPv6 in 100 bytes)', async function () {
      // An IPv6 record of the default template is 101 bytes: with the 20 bytes of headers, 121 > 100.
      const e = await open({maxMessageSize: 100})
      const v6 = randomFlows(6, 3, 11)
      assert.doesNotThrow(() => e.exportBatch(batchOf(v6, 1)))
      const v4 = randomFlows(4, 2, 12)
      e.exportBatch(batchOf(v4, 1))
      await sink.settle(e)
      for (const {raw} of sink.received) assert.ok(raw.length <= 100, `a ${raw.length}-byte message`)
      assert.equal(e.stats.unexportable, v6.length)
      assert.deepEqual(
        sink.records.map((r) => r.fields),
        v4.map(expectedFields),
      )
      assertPass()
    })

    it('a template that can never be announced in the message size is not used, and nothing breaks (80 bytes)', async function () {
      // A default template record is 4 + 16 * 4 = 68 bytes: with the 20 bytes of headers, 88 > 80.
      const e = await open({maxMessageSize: 80})
      assert.doesNotThrow(() => e.exportBatch(batchOf(randomFlows(4, 3, 21), 1)))
      e.sendStats(1, {packets: 0, bytes: 0})
      await sink.settle(e)
      assert.equal(e.stats.unexportable, 3)
      // Only the statistics template and record: no empty message, nothing cut short.
      assert.deepEqual(
        sink.received.map((r) => r.message.sets.map((s) => s.id)),
        [[OPTIONS_TEMPLATE_SET], [STATS_TEMPLATE_ID]],
      )
      for (const {raw} of sink.received) assert.ok(raw.length <= 80, `a ${raw.length}-byte message`)
      assertPass()
    })
  })

  describe('templates (RFC 7011 §8.4: over UDP, sent first and again periodically)', function () {
    it('are sent first, data and options templates, before any data', async function () {
      const e = await open()
      e.exportBatch(batchOf(randomFlows(4, 3, 13), 1))
      await sink.settle(e)
      const [first, second] = sink.received.map((r) => r.message)
      assert.deepEqual(
        first.sets.map((s) => s.id),
        [TEMPLATE_SET, OPTIONS_TEMPLATE_SET],
      )
      assert.deepEqual(templateIdsIn(first), [256, 257, STATS_TEMPLATE_ID])
      assert.equal(first.templates[2].scopeFieldCount, 1)
      assert.deepEqual(dataSetIds(second), [256])
      assertPass()
    })

    it('are sent again once templateRefreshMs has passed, not before', async function () {
      let now = NOW_MS
      const e = await open({templateRefreshMs: 10_000, now: () => now})
      const batch = () => e.exportBatch(batchOf(randomFlows(4, 2, now % 1000), 1))
      batch() // templates, data
      now += 9_999
      batch() // data
      now += 1
      batch() // templates, data
      e.refreshTemplates() // not due
      now += 10_000
      e.refreshTemplates() // due: templates
      await sink.settle(e)
      assert.deepEqual(
        sink.received.map((r) => (r.message.templates.length ? 'T' : 'D')),
        ['T', 'D', 'D', 'T', 'D', 'T'],
      )
      // The export time follows the clock given.
      assert.equal(sink.received.at(-1)!.message.header.exportTime, Math.floor(now / 1000))
    })

    it('are sent to a new domain before its first data', async function () {
      const e = await open()
      e.exportBatch(batchOf(randomFlows(4, 2, 14), 1))
      e.exportBatch(batchOf(randomFlows(4, 2, 15), 9))
      await sink.settle(e)
      assert.deepEqual(
        sink.received.map((r) => [r.message.header.observationDomainId, r.message.templates.length ? 'T' : 'D']),
        [
          [1, 'T'],
          [1, 'D'],
          [9, 'T'],
          [9, 'D'],
        ],
      )
      assertPass()
    })

    it('are sent before data of a template not yet sent (new templates on reload)', async function () {
      const all = defaultExportTemplates()
      const e = await open(
        {},
        all.filter((t) => t.template.id === 256),
      )
      assert.equal(e.templateFor(6), undefined)
      e.exportBatch(batchOf(randomFlows(6, 2, 16), 1)) // no template for IPv6: not exportable
      e.exportBatch(batchOf(randomFlows(4, 2, 17), 1))
      e.setTemplates(all)
      const v6 = randomFlows(6, 2, 18)
      e.exportBatch(batchOf(v6, 1))
      await sink.settle(e)
      assert.equal(e.stats.unexportable, 2)
      const kinds = sink.received.map((r) => (r.message.templates.length ? `T${templateIdsIn(r.message).join(',')}` : `D${dataSetIds(r.message).join(',')}`))
      assert.deepEqual(kinds, [`T256,${STATS_TEMPLATE_ID}`, 'D256', `T256,257,${STATS_TEMPLATE_ID}`, 'D257'])
      assert.deepEqual(
        sink.records.slice(-2).map((r) => r.fields),
        v6.map(expectedFields),
      )
      assertPass()
    })

    it('split across messages when they do not fit one', async function () {
      // 130 bytes: room for one record of either template (IPv6: 20 + 101).
      const e = await open({maxMessageSize: 130})
      e.sendTemplates(1)
      await sink.settle(e)
      // 84-byte template records: one per message with the 20 bytes of headers (104 + 84 > 130),
      // and the 34-byte options template does not fit beside one either (104 + 4 + 34 > 130).
      assert.deepEqual(
        sink.received.map((r) => templateIdsIn(r.message)),
        [[256], [257], [STATS_TEMPLATE_ID]],
      )
      for (const {raw} of sink.received) assert.ok(raw.length <= 130)
    })
  })

  describe('statistics options record', function () {
    it("carries the exporter's totals, this message included, and the ignored counts (IEs 40, 41, 42, 164, 165)", async function () {
      let now = NOW_MS + 123_456
      const e = await open({now: () => now})
      e.exportBatch(batchOf(randomFlows(4, 50, 19), 4))
      e.exportBatch(batchOf(randomFlows(6, 30, 20), 4))
      now += 5
      e.sendStats(4, {packets: 12_345, bytes: 9_876_543_210})
      await sink.settle(e)
      const stats = sink.records.filter((r) => r.options)
      assert.equal(stats.length, 1)
      const s = stats[0]
      assert.equal(s.templateId, STATS_TEMPLATE_ID)
      // Worked out from what the collector received, independently of the exporter's counters.
      const dataRecords = sink.records.length // the statistics record itself included
      assert.deepEqual(s.fields, {
        observationDomainId: 4,
        exportedMessageTotalCount: BigInt(sink.received.length),
        exportedFlowRecordTotalCount: BigInt(dataRecords),
        exportedOctetTotalCount: BigInt(sink.received.reduce((n, r) => n + r.raw.length, 0)),
        ignoredPacketTotalCount: 12_345n,
        ignoredOctetTotalCount: 9_876_543_210n,
        notSentFlowTotalCount: 0n,
        observationTimeMilliseconds: now,
      })
      assert.equal(s.sequenceNumber, 80)
      assertPass()
    })
  })

  describe('reduced-size counters (RFC 7011 §6.2)', function () {
    const fields = (octets: number, packets: number, ingress = 4) => [
      {name: 'sourceIPv4Address', length: 4},
      {name: 'octetDeltaCount', length: octets},
      {name: 'packetDeltaCount', length: packets},
      {name: 'ingressInterface', length: ingress},
    ]

    it('a counter too large for its field is split into records whose counts add up exactly', async function () {
      const e = await open({}, [compileTemplate(300, fields(4, 2))])
      const flows = sampleFlows(4).slice(0, 2)
      flows[0] = {...flows[0], bytes: 10_000_000_000, packets: 70_000} // > 2^32 - 1 bytes, > 65535 packets
      flows[1] = {...flows[1], bytes: 4_294_967_295, packets: 65_535} // exactly the maxima: one record
      e.exportBatch(batchOf(flows, 1))
      await sink.settle(e)
      const recs = sink.records.map((r) => r.fields)
      const first = recs.filter((r) => r.sourceIPv4Address === flows[0].src)
      // ceil(10e9 / (2^32 - 1)) = 3 parts.
      assert.equal(first.length, 3)
      assert.equal(
        first.reduce((n, r) => n + (r.octetDeltaCount as bigint), 0n),
        10_000_000_000n,
      )
      assert.equal(
        first.reduce((n, r) => n + (r.packetDeltaCount as bigint), 0n),
        70_000n,
      )
      for (const r of first) {
        assert.ok((r.octetDeltaCount as bigint) <= 0xffffffffn && (r.packetDeltaCount as bigint) <= 0xffffn)
        assert.equal(r.ingressInterface, flows[0].ifindex)
      }
      // flows[1] is an egress flow: its ingress interface is the one it came in by.
      assert.deepEqual(
        recs.filter((r) => r.sourceIPv4Address === flows[1].src),
        [{sourceIPv4Address: flows[1].src, octetDeltaCount: 4_294_967_295n, packetDeltaCount: 65_535n, ingressInterface: flows[1].peerIfindex}],
      )
      // The split records are data records like any: the next sequence number counts them.
      e.exportBatch(batchOf(flows.slice(1), 1))
      await sink.settle(e)
      assert.equal(sink.received.at(-1)!.message.header.sequenceNumber, 4)
      assertPass()
    })

    it('another reduced-size field saturates at its maximum', async function () {
      const e = await open({}, [compileTemplate(300, fields(8, 8, 2))])
      const flow = {...sampleFlows(4)[0], ifindex: 70_000, direction: 0 as const}
      e.exportBatch(batchOf([flow], 1))
      await sink.settle(e)
      assert.deepEqual(
        sink.records.map((r) => r.fields.ingressInterface),
        [65_535],
      )
    })
  })

  describe('a collector that is down (its spool)', function () {
    it('keeps what it refused, the first sends included, and replays it in order with the original sequence numbers once it answers', async function () {
      let now = NOW_MS
      const port = sink.port
      await sink.stop()
      const e = await open({now: () => now})
      const sent: FlowInput[] = []
      for (let i = 0; i < 5; i++) {
        const flows = randomFlows(4, 3, 30 + i)
        sent.push(...flows)
        assert.doesNotThrow(() => e.exportBatch(batchOf(flows, 1)))
        await e.flushed()
        await sleep(5)
        e.service()
      }
      assert.ok(errors.length > 0, 'the refusal was reported to onError')
      assert.ok(
        errors.every((err) => (err as NodeJS.ErrnoException).code === 'ECONNREFUSED'),
        errors.map((x) => x.message).join('; '),
      )
      assert.ok(e.stats.sendErrors > 0)
      // Everything is held: the data messages (the templates before them are sent again anyway).
      assert.ok(e.stats.spooledMessages >= 5, `spooled ${e.stats.spooledMessages}`)

      sink = await Sink.start({port})
      const back = randomFlows(4, 4, 40)
      sent.push(...back)
      e.exportBatch(batchOf(back, 1)) // spooled behind the others
      e.service() // probe: templates and the oldest message
      now += CONFIRM_MS
      await sleep(20)
      e.service() // no error for CONFIRM_MS: the rest is replayed
      await sink.until(() => sink.records.length === sent.length, `${sent.length} records`)
      assert.ok(sink.received[0].message.templates.length > 0, 'templates first')
      assert.deepEqual(
        sink.records.map((r) => r.fields),
        sent.map(expectedFields),
      )
      // Numbered as first built: from 0, 3 records a batch, no gap.
      const data = sink.received.filter((r) => r.message.records.length > 0)
      assert.deepEqual(
        data.map((r) => r.message.header.sequenceNumber),
        [0, 3, 6, 9, 12, 15],
      )
      assert.equal(e.stats.spooledMessages, 0)
      assert.equal(e.stats.spoolDroppedMessages, 0)
      assertPass()
    })

    it('drops the oldest messages past spoolBytes, and counts their records, packets and octets exactly', async function () {
      let now = NOW_MS
      const port = sink.port
      await sink.stop()
      // Room for 3 of the 5 data messages (16 + 4 + 2 * 59 = 138 bytes each).
      const e = await open({now: () => now, spoolBytes: 3 * 138 + 50})
      const batches = [0, 1, 2, 3, 4].map((i) => randomFlows(4, 2, 60 + i))
      e.sendTemplates(1)
      await sleep(5)
      for (const flows of batches) {
        e.exportBatch(batchOf(flows, 1))
        await sleep(5)
        e.service()
      }
      const s = e.stats
      assert.ok(s.spoolDroppedMessages >= 2, JSON.stringify(s))
      sink = await Sink.start({port})
      e.service()
      now += CONFIRM_MS
      await sleep(20)
      e.service()
      const kept = sink.records
      await sink.until(() => sink.records.filter((r) => !r.options).length + e.stats.spoolDroppedRecords === 10, 'the records kept')
      const lost = batches.flat().filter((f) => !kept.some((r) => r.fields.sourceIPv4Address === f.src && r.fields.destinationIPv4Address === f.dst))
      const st = e.stats
      assert.equal(st.spoolDroppedRecords, lost.length)
      assert.equal(
        st.spoolDroppedPackets,
        lost.reduce((n, f) => n + f.packets, 0),
      )
      assert.equal(
        st.spoolDroppedOctets,
        lost.reduce((n, f) => n + f.bytes, 0),
      )
      // The oldest went: what arrived is the newest, and the collector sees the loss as a sequence gap.
      assert.deepEqual(
        kept.filter((r) => !r.options).map((r) => r.fields),
        batches.flat().slice(lost.length).map(expectedFields),
      )
      assert.equal(kept[0].sequenceNumber, lost.length)
      // The statistics record says it too (notSentFlowTotalCount).
      e.sendStats(1, {packets: 0, bytes: 0})
      await sink.until(() => sink.records.some((r) => r.options), 'the statistics record')
      assert.equal(sink.records.find((r) => r.options)!.fields.notSentFlowTotalCount, BigInt(lost.length))
    })

    it('never counts as dropped a probe that reaches a collector that is back, when the full spool must let go of something before the probe is confirmed', async function () {
      let now = NOW_MS
      const port = sink.port
      await sink.stop()
      // Room for 3 data messages (16 + 4 + 2 * 59 = 138 bytes each).
      const e = await open({now: () => now, spoolBytes: 3 * (138 + HELD_MESSAGE_OVERHEAD) + 50})
      const batches = [0, 1, 2, 3, 4].map((i) => randomFlows(4, 2, 80 + i))
      e.sendTemplates(1)
      await sleep(5)
      for (const flows of batches) {
        now += 10 // templates go again once after the refusal, not with every batch
        e.exportBatch(batchOf(flows, 1))
        await sleep(5)
        e.service()
      }
      assert.ok(e.stats.spoolDroppedMessages >= 2, JSON.stringify(e.stats))
      // Back: the probe (the oldest spooled message) goes and arrives; before it counts as
      // arrived, the next drain's message fills the spool again and something must go.
      sink = await Sink.start({port})
      e.service()
      await sink.until(() => sink.records.some((r) => !r.options), 'the probe')
      const after = randomFlows(4, 2, 89)
      e.exportBatch(batchOf(after, 1))
      now += CONFIRM_MS
      await sleep(20)
      e.service() // the probe arrived: the replay
      const all = [...batches.flat(), ...after]
      await sink.until(
        () => sink.records.filter((r) => !r.options).length + e.stats.spoolDroppedRecords >= all.length && e.stats.spooledMessages === 0,
        'the records kept',
      )
      await sleep(50)
      const arrived = sink.records.filter((r) => !r.options)
      // Each record either arrived or was counted as dropped, never both: what the sequence
      // numbers say never arrived (before the first record that did, numbered from 0, and the
      // gaps after it) is exactly what the exporter counts as dropped.
      const missing = arrived[0].sequenceNumber + sink.checker.report().domains.reduce((n, d) => n + d.sequence.missing, 0)
      assert.deepEqual(
        {arrived: arrived.length, dropped: e.stats.spoolDroppedRecords, missing},
        {arrived: all.length - e.stats.spoolDroppedRecords, dropped: missing, missing},
      )
      assert.ok(
        arrived.every((r, i) => i === 0 || r.sequenceNumber >= arrived[i - 1].sequenceNumber),
        `in order: ${arrived.map((r) => r.sequenceNumber).join(', ')}`,
      )
    })

    it('reuses the memory of confirmed messages and never that of messages it still holds (many chunks over a collector that goes down)', async function () {
      let now = NOW_MS
      const e = await open({now: () => now})
      const sent: FlowInput[] = []
      // ~8 chunks of messages, confirmed: their memory goes back to the builder.
      for (let i = 0; i < 8; i++) {
        const flows = randomFlows(4, 4000, 100 + i)
        e.exportBatch(batchOf(flows, 1))
        sent.push(...flows)
        await sink.settle(e)
        now += CONFIRM_MS + 1
        e.service()
      }
      await sink.until(() => sink.records.length === sent.length, `${sent.length} records`)
      const port = sink.port
      await sink.stop()
      // Down: new messages are built in reused memory and held in the spool, while yet more are built.
      const missed: FlowInput[] = []
      for (let i = 0; i < 8; i++) {
        const flows = randomFlows(4, 4000, 200 + i)
        missed.push(...flows)
        e.exportBatch(batchOf(flows, 1))
        await sleep(5)
        e.service()
      }
      assert.ok(e.stats.spooledMessages > 100, `spooled ${e.stats.spooledMessages}`)
      sink = await Sink.start({port})
      e.service()
      now += CONFIRM_MS
      await sleep(20)
      e.service()
      await sink.until(() => sink.records.length >= missed.length, `${missed.length} records`, 10_000)
      await sleep(50)
      assert.deepEqual(
        sink.records.map((r) => r.fields),
        missed.map(expectedFields),
      )
      assert.equal(e.stats.spoolDroppedMessages, 0)
      assertPass()
    })

    it('replays nothing twice: a collector that was up until it stopped gets only what it missed', async function () {
      let now = NOW_MS
      const e = await open({now: () => now})
      const first = randomFlows(4, 5, 70)
      e.exportBatch(batchOf(first, 1))
      await sink.settle(e)
      now += CONFIRM_MS + 1
      e.service() // what was sent is confirmed
      const port = sink.port
      await sink.stop()
      const missed = randomFlows(4, 5, 71)
      e.exportBatch(batchOf(missed, 1))
      await sleep(5)
      e.service()
      assert.ok(e.stats.spooledMessages > 0)
      sink = await Sink.start({port})
      e.service()
      now += CONFIRM_MS
      await sleep(20)
      e.service()
      await sink.until(() => sink.records.length >= missed.length, `${missed.length} records`)
      await sleep(50)
      assert.deepEqual(
        sink.records.map((r) => r.fields),
        missed.map(expectedFields),
      )
      assert.equal(sink.records[0].sequenceNumber, first.length)
    })
  })
  /** The data messages a collector got: their sequence numbers go on from 0 without a gap or a repeat. */
  function assertNumberedOnFrom(received: Sink['received'], first: number): void {
    const data = received.filter((r) => r.message.records.length > 0 && !r.message.records[0].options)
    let next = first
    for (const {message} of data) {
      assert.equal(message.header.sequenceNumber, next, `a message numbered ${message.header.sequenceNumber} where ${next} was due`)
      next += message.records.length
    }
  }

  describe('the replay after an outage (paced; what is exported meanwhile waits behind it)', function () {
    it('sends one burst at once and the rest as the pace clock moves, with what was exported meanwhile after it, in order', async function () {
      let now = NOW_MS
      // The pace clock stands still while `pace` is a number: the bucket then never refills.
      let pace: number | undefined = 0
      const options: Partial<ExporterOptions> = {now: () => now, paceClock: () => pace ?? performance.now()}
      const port = sink.port
      await sink.stop()
      const e = await open(options)
      const spooled: FlowInput[] = []
      for (let i = 0; i < 6; i++) {
        const flows = randomFlows(4, 420, 300 + i) // 20 messages of 1385 bytes
        spooled.push(...flows)
        e.exportBatch(batchOf(flows, 1))
        await sleep(5)
        e.service()
      }
      assert.ok(e.stats.spooledBytes > 4 * REPLAY_BURST_BYTES, `spooled ${e.stats.spooledBytes} bytes`)
      sink = await Sink.start({port})
      e.service() // the probe: templates and the oldest message
      now += CONFIRM_MS
      await sleep(20)
      e.service() // it arrived: the replay starts with one burst
      await sleep(300)
      const dataBytes = sink.received.filter((r) => r.message.records.length > 0).reduce((n, r) => n + r.raw.length, 0)
      assert.ok(dataBytes > 0, 'the replay began')
      // The probe's message, then no more than one burst while the pace clock stands still.
      assert.ok(dataBytes <= 1400 + REPLAY_BURST_BYTES, `${dataBytes} bytes of data arrived at once`)
      const live = randomFlows(4, 30, 399)
      e.exportBatch(batchOf(live, 1))
      await sleep(100)
      assert.ok(!sink.flows.some((f) => f.sourceIPv4Address === live[0].src && f.destinationIPv4Address === live[0].dst), 'a live flow overtook the replay')
      pace = undefined // the clock moves: the rest follows at the replay's rate
      const all = [...spooled, ...live]
      await sink.until(() => sink.records.length >= all.length, `${all.length} records`, 10_000)
      await sleep(50)
      assert.deepEqual(
        sink.records.map((r) => r.fields),
        all.map(expectedFields),
      )
      assertNumberedOnFrom(sink.received, 0)
      assert.equal(e.stats.spoolDroppedMessages, 0)
      assertPass()
    })
  })

  describe("the live export paced (sendBytesPerSecond): every message through the replay's token bucket", function () {
    /** The bytes of the data messages the sink got. */
    const dataBytes = () => sink.received.filter((r) => r.message.records.length > 0 && !r.message.records[0].options).reduce((n, r) => n + r.raw.length, 0)

    it('sends one burst at once and the rest only as the pace clock moves, in order and numbered on', async function () {
      const rate = 100_000
      // The pace clock stands still while `pace` is a number: the bucket fills once (a burst) and never again.
      let pace: number | undefined = 1000
      const e = await open({sendBytesPerSecond: rate, paceClock: () => pace ?? performance.now()})
      const sent: FlowInput[] = []
      for (let i = 0; i < 6; i++) {
        const flows = randomFlows(4, 420, 700 + i) // 20 messages of 1385 bytes
        sent.push(...flows)
        e.exportBatch(batchOf(flows, 1))
      }
      await sleep(300)
      const first = dataBytes()
      assert.ok(first > 0, 'the first burst left')
      assert.ok(first <= REPLAY_BURST_BYTES, `${first} bytes of data arrived with the pace clock standing still (a burst is ${REPLAY_BURST_BYTES})`)
      assert.ok(e.stats.spooledMessages > 90, `${e.stats.spooledMessages} messages wait their turn`)
      assert.ok(e.isReplaying, 'the exporter says messages wait')
      // 100 ms of the pace clock: 10 kB more may go, and no more.
      pace += 100
      await sleep(300)
      const second = dataBytes() - first
      assert.ok(second > 0 && second <= rate / 10 + 1400, `${second} bytes after 100 ms at ${rate} B/s`)
      pace = undefined // the clock moves: the rest follows at the pace (250 kB in about 2.5 s)
      await sink.until(() => sink.flows.length >= sent.length, `${sent.length} records`, 15_000)
      await sleep(50)
      assert.deepEqual(
        sink.records.filter((r) => !r.options).map((r) => r.fields),
        sent.map(expectedFields),
      )
      assertNumberedOnFrom(sink.received, 0)
      assert.equal(e.stats.spoolDroppedMessages, 0)
      assert.equal(e.stats.spooledMessages, 0)
      assertPass()
    })

    it('is not paced without it (0): the whole export leaves at once, the pace clock standing still', async function () {
      const e = await open({sendBytesPerSecond: 0, paceClock: () => 1000})
      const sent = randomFlows(4, 2520, 800) // 120 messages
      e.exportBatch(batchOf(sent, 1))
      await sink.until(() => sink.flows.length >= sent.length, `${sent.length} records`)
      assert.equal(e.stats.spooledMessages, 0)
    })

    it('takes the daemon-wide pace of a reload (reconfigure with new defaults) for a collector it keeps, and its own over it', async function () {
      let pace: number | undefined = 1000
      const e = await open({sendBytesPerSecond: 0, paceClock: () => pace ?? performance.now()})
      await e.reconfigure(e.config, {sendBytesPerSecond: 100_000})
      e.exportBatch(batchOf(randomFlows(4, 2520, 850), 1)) // 120 messages
      await sleep(300)
      assert.ok(dataBytes() > 0 && dataBytes() <= REPLAY_BURST_BYTES, `${dataBytes()} bytes left with the pace clock standing still`)
      pace = undefined
      await sink.until(() => sink.flows.length >= 2520 && e.stats.spooledMessages === 0, '2520 records', 10_000)
      // The collector's own setting (0: unpaced) wins over the default: all leaves at once, the pace clock standing still.
      pace = performance.now()
      await e.reconfigure({...e.config, sendBytesPerSecond: 0}, {sendBytesPerSecond: 100_000})
      e.exportBatch(batchOf(randomFlows(4, 2520, 851), 1))
      await sink.until(() => sink.flows.length >= 5040, '5040 records')
      assert.equal(e.stats.spoolDroppedMessages, 0)
    })

    it('holds what waits within spoolBytes: past it the oldest are dropped and counted, the rest arrive in order', async function () {
      let pace: number | undefined = 1000
      const spoolBytes = 40 * (1385 + HELD_MESSAGE_OVERHEAD)
      const e = await open({sendBytesPerSecond: 50_000, spoolBytes, paceClock: () => pace ?? performance.now()})
      const batches: FlowInput[][] = []
      for (let i = 0; i < 6; i++) {
        batches.push(randomFlows(4, 420, 900 + i))
        e.exportBatch(batchOf(batches[i], 1))
      }
      const s = e.stats
      assert.ok(s.spoolDroppedMessages > 0, 'the oldest waiting messages were dropped')
      assert.ok(s.spooledBytes + HELD_MESSAGE_OVERHEAD * s.spooledMessages <= spoolBytes, `${s.spooledBytes} bytes wait, over spoolBytes (${spoolBytes})`)
      pace = undefined
      const all = batches.flat()
      await sink.until(() => sink.flows.length + e.stats.spoolDroppedRecords >= all.length && e.stats.spooledMessages === 0, 'every record kept', 15_000)
      await sleep(50)
      // What arrived plus what was counted as dropped is everything; what arrived came in order.
      const dropped = e.stats.spoolDroppedRecords
      assert.equal(sink.flows.length + dropped, all.length)
      assert.equal(
        e.stats.spoolDroppedPackets,
        all.slice(0, dropped).reduce((n, f) => n + f.packets, 0),
      )
      assert.deepEqual(
        sink.records.filter((r) => !r.options).map((r) => r.fields),
        all.slice(dropped).map(expectedFields),
      )
    })
  })

  describe('many collectors down at once (one budget for their spools)', function () {
    const others: CollectorExporter[] = []
    const sinks: Sink[] = []
    afterEach(async function () {
      for (const e of others.splice(0)) e.close()
      for (const s of sinks.splice(0)) await s.stop()
    })

    it('hold no more than the budget together; the oldest messages go first, each counted by its own collector', async function () {
      const cap = 40_000
      const budget = new SpoolBudget(cap)
      let now = NOW_MS
      const ports: number[] = []
      for (let c = 0; c < 6; c++) {
        const probe = await Sink.start()
        ports.push(probe.port)
        await probe.stop()
        const e = exporterTo(probe.port, {now: () => now, spoolBudget: budget, onError: () => {}})
        others.push(e)
        await e.open()
      }
      // Round robin, one data message (21 flows) at a time: 60 messages, twice the budget.
      const sent: {collector: number; flows: FlowInput[]}[] = []
      for (let round = 0; round < 10; round++) {
        for (let c = 0; c < others.length; c++) {
          const flows = randomFlows(4, 21, 1000 + round * 10 + c)
          sent.push({collector: c, flows})
          others[c].exportBatch(batchOf(flows, 1))
          await sleep(2)
          others[c].service()
          const held = others.reduce((n, e) => n + e.stats.spooledBytes, 0)
          assert.ok(held <= cap && budget.bytes <= cap, `${held} bytes spooled, ${budget.bytes} held, over the budget of ${cap}`)
        }
      }
      const dropped = others.map((e) => e.stats.spoolDroppedRecords)
      assert.ok(
        dropped.every((n) => n > 0),
        `every collector lost its oldest: ${dropped.join(',')}`,
      )
      // Back: each gets what it kept, in order, numbered after what it lost.
      for (const port of ports) sinks.push(await Sink.start({port}))
      for (const e of others) e.service()
      now += CONFIRM_MS
      await sleep(20)
      for (const e of others) e.service()
      for (const [c, s] of sinks.entries()) {
        const kept = sent.filter((b) => b.collector === c).reduce((n, b) => n + b.flows.length, 0) - others[c].stats.spoolDroppedRecords
        await s.until(() => s.flows.length >= kept, `${kept} records at collector ${c}`, 10_000)
        assertNumberedOnFrom(s.received, others[c].stats.spoolDroppedRecords)
      }
      await sleep(50)
      // What arrived is the newest of all: every batch kept is newer than every batch dropped.
      const arrived = sent.map((b) =>
        sinks[b.collector].flows.some((f) => f.sourceIPv4Address === b.flows[0].src && f.destinationIPv4Address === b.flows[0].dst),
      )
      const firstKept = arrived.indexOf(true)
      assert.ok(
        firstKept > 0 && arrived.slice(firstKept).every(Boolean) && !arrived.slice(0, firstKept).some(Boolean),
        `arrived: ${arrived.map(Number).join('')}`,
      )
      // Each collector counted exactly its own losses.
      for (const [c, e] of others.entries()) {
        const lost = sent
          .slice(0, firstKept)
          .filter((b) => b.collector === c)
          .flatMap((b) => b.flows)
        assert.deepEqual(
          [e.stats.spoolDroppedRecords, e.stats.spoolDroppedPackets, e.stats.spoolDroppedOctets],
          [lost.length, lost.reduce((n, f) => n + f.packets, 0), lost.reduce((n, f) => n + f.bytes, 0)],
        )
      }
      // Once the replayed messages count as arrived, nothing is held.
      now += CONFIRM_MS + 1
      for (const e of others) e.service()
      assert.equal(budget.bytes, 0)
    })
  })

  describe('a collector that moves (the same name at another address: a config reload)', function () {
    const oldSinks: Sink[] = []
    afterEach(async function () {
      for (const s of oldSinks.splice(0)) await s.stop()
    })

    it('gets at its new address what the old one did not take, in order, numbered on', async function () {
      let now = NOW_MS
      await sink.stop() // the old address: down
      const e = await open({now: () => now})
      const sent: FlowInput[] = []
      for (let i = 0; i < 3; i++) {
        const flows = randomFlows(4, 50, 500 + i)
        sent.push(...flows)
        e.exportBatch(batchOf(flows, 1))
        await sleep(5)
        e.service()
      }
      assert.ok(e.stats.spooledMessages >= 3, `spooled ${e.stats.spooledMessages}`)
      sink = await Sink.start() // the new address
      await e.reconfigure({...e.config, remote: {host: '127.0.0.1', port: sink.port}})
      const after = randomFlows(4, 7, 510)
      sent.push(...after)
      e.exportBatch(batchOf(after, 1))
      e.service() // probe the new address
      now += CONFIRM_MS
      await sleep(20)
      e.service()
      await sink.until(() => sink.records.length >= sent.length, `${sent.length} records`)
      await sleep(50)
      assert.deepEqual(
        sink.records.map((r) => r.fields),
        sent.map(expectedFields),
      )
      assertNumberedOnFrom(sink.received, 0)
      assert.equal(e.stats.spoolDroppedMessages, 0)
      assertPass()
    })

    it('leaves with the old address what it took and sends nothing twice, the rest going to the new one', async function () {
      let now = NOW_MS
      const old = sink
      oldSinks.push(old)
      const e = await open({now: () => now})
      const first = randomFlows(4, 40, 520)
      e.exportBatch(batchOf(first, 1)) // sent, not confirmed yet
      sink = await Sink.start()
      const moving = e.reconfigure({...e.config, remote: {host: '127.0.0.1', port: sink.port}})
      const during = randomFlows(4, 25, 521)
      e.exportBatch(batchOf(during, 1)) // waits for the move
      await moving
      e.service()
      now += CONFIRM_MS
      await sleep(20)
      e.service()
      await sink.until(() => sink.records.length >= during.length, `${during.length} records`)
      await sleep(50)
      assert.deepEqual(
        old.records.filter((r) => !r.options).map((r) => r.fields),
        first.map(expectedFields),
      )
      assert.deepEqual(
        sink.records.map((r) => r.fields),
        during.map(expectedFields),
      )
      assertNumberedOnFrom(sink.received, first.length)
    })
  })
})
