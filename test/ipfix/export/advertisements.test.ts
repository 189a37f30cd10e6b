/**
 * What an export session tells each collector besides the flows (domain-advertisements.ts), over
 * loopback UDP: the sampling rate of each domain's data in an options record in front of it (also
 * at 1), and the names of the interfaces its records carry; both again after every sending of the
 * templates, the rate again when the data's rate changes, one rate per message. The config's
 * exporters (export-settings.ts, one per collector) always advertise.
 */
import assert from 'node:assert/strict'

import {defaultConfig} from '../../../src/config/load.js'
import {compileTemplates, exporterFor} from '../../../src/config/export-settings.js'
import {optionsTemplateIds, type CollectorExporter, type InterfaceLabels} from '../../../src/ipfix/export/collector-exporter.js'
import type {DecodedRecord} from '../../../src/ipfix/collect/decoder.js'
import {batchOf, exporterTo, NOW_MS, randomFlows, Sink, type FlowInput} from '../flows.js'

const IDS = optionsTemplateIds(defaultConfig().templates)
const LABELS: InterfaceLabels = {
  label: (domain, ifindex) =>
    ifindex === 2 ? {name: 'eth0', description: `uplink of ${domain}`} : ifindex === 3 ? {name: 'eth1', description: 'eth1'} : undefined,
}

/** Flows in by ifindex 2, out of 3 (or 0: none), counted 1 in `interval`. */
function flows(n: number, seed: number, interval = 1, peer = 3): FlowInput[] {
  return randomFlows(4, n, seed).map((f) => ({...f, ifindex: 2, peerIfindex: peer, samplingInterval: interval}))
}

/** Each record as a letter by kind, with its domain: R (rate, with N), I (interface names), F (flow), S (statistics). */
function shape(r: DecodedRecord): string {
  if (r.templateId === IDS.sampling) return `R${r.fields.samplingInterval as number}@${r.fields.observationDomainId as number}`
  if (r.templateId === IDS.interfaceNames) return `I${r.fields.ingressInterface as number}`
  if (r.templateId === IDS.nfdumpInterfaceNames) return `i${r.fields.ingressInterface as number}`
  if (r.templateId === IDS.stats) return 'S'
  return 'F'
}

/** Consecutive equal letters as one (F×n is F). */
const runs = (letters: string[]) => letters.filter((x, i) => i === 0 || x !== letters[i - 1])

describe('ipfix/export advertisements: the sampling rate and interface names in front of the data', function () {
  this.timeout(10_000)
  let sink: Sink
  let exporter: CollectorExporter | undefined

  beforeEach(async function () {
    sink = await Sink.start()
  })
  afterEach(async function () {
    exporter?.close()
    exporter = undefined
    await sink.stop()
  })

  async function open(options: Parameters<typeof exporterTo>[1] = {}): Promise<CollectorExporter> {
    exporter = exporterTo(sink.port, {advertise: {templateIds: IDS, interfaceLabels: LABELS}, ...options})
    await exporter.open()
    return exporter
  }

  function assertPass(): void {
    assert.equal(sink.checker.report().verdict, 'PASS', sink.checker.formatReport().join('\n'))
    assert.deepEqual(sink.malformed, [])
  }

  it('sends the rate (also 1) and the names of both interfaces before the first data of every domain, in its messages', async function () {
    const e = await open()
    e.exportBatch(batchOf(flows(5, 1, 1), 7))
    e.exportBatch(batchOf(flows(5, 2, 1), 7))
    e.exportBatch(batchOf(flows(5, 3, 10), 8))
    await sink.settle(e)
    const byDomain = (d: number) => runs(sink.records.filter((r) => r.observationDomainId === d).map(shape))
    assert.deepEqual(byDomain(7), ['I2', 'I3', 'i2', 'i3', 'R1@7', 'F'])
    assert.deepEqual(byDomain(8), ['I2', 'I3', 'i2', 'i3', 'R10@8', 'F'])
    const uplink = sink.records.filter((r) => r.templateId === IDS.interfaceNames && r.fields.ingressInterface === 2)
    assert.deepEqual(
      uplink.map((r) => [r.observationDomainId, r.fields.interfaceName, r.fields.interfaceDescription]),
      [
        [7, 'eth0', 'uplink of 7'],
        [8, 'eth0', 'uplink of 8'],
      ],
    )
    // The rate goes in the message of the data it scales.
    for (const m of sink.received.map((r) => r.message)) {
      if (m.sets.some((s) => s.kind === 'data' && s.id === IDS.sampling)) assert.ok(m.sets.some((s) => s.kind === 'data' && s.id === 256))
    }
    assertPass()
  })

  it('announces each options template in a set of its own, with the data templates', async function () {
    const e = await open()
    e.exportBatch(batchOf(flows(2, 4), 1))
    await sink.settle(e)
    const first = sink.received[0].message
    assert.deepEqual(
      first.sets.map((s) => s.id),
      [2, 3, 3, 3, 3],
    )
    assert.deepEqual(
      first.templates.map((t) => [t.id, t.scopeFieldCount]),
      [
        [256, 0],
        [257, 0],
        [IDS.stats, 1],
        [IDS.sampling, 1],
        [IDS.interfaceNames, 1],
        [IDS.nfdumpInterfaceNames, 1],
      ],
    )
  })

  it('sends the rate and the names again after every template refresh, and the rate again only when the data changes rate', async function () {
    let now = NOW_MS
    const e = await open({templateRefreshMs: 10_000, now: () => now})
    e.exportBatch(batchOf(flows(3, 5, 10), 1))
    e.exportBatch(batchOf(flows(3, 6, 10), 1)) // nothing new to tell
    e.exportBatch(batchOf(flows(3, 7, 20), 1)) // a new rate
    now += 10_000
    e.exportBatch(batchOf(flows(3, 8, 20), 1)) // templates again: everything again
    await sink.settle(e)
    assert.deepEqual(runs(sink.records.map(shape)), ['I2', 'I3', 'i2', 'i3', 'R10@1', 'F', 'R20@1', 'F', 'I2', 'I3', 'i2', 'i3', 'R20@1', 'F'])
    assert.equal(sink.received.filter((r) => r.message.templates.length > 0).length, 2)
    assertPass()
  })

  it('sends a batch of mixed rates one rate per message, each group after its rate, the rate last told first', async function () {
    const e = await open()
    e.exportBatch(batchOf(flows(2, 9, 5), 1))
    const mixed = [...flows(3, 10, 10), ...flows(2, 11, 5), ...flows(1, 12, 10)]
    e.exportBatch(batchOf(mixed, 1))
    await sink.settle(e)
    const shapes = runs(sink.records.map(shape)).filter((x) => x.startsWith('R') || x === 'F')
    assert.deepEqual(shapes, ['R5@1', 'F', 'R10@1', 'F'])
    assert.equal(sink.records.filter((r) => !r.options).length, 8)
    for (const m of sink.received.map((r) => r.message)) {
      const rates = m.sets.filter((s) => s.kind === 'data' && s.id === IDS.sampling).length
      assert.ok(rates <= 1, 'one rate per message')
    }
    // The rows of 10 went after the record of 10, all of them (packets of each sampled row, in order).
    const tenAt = sink.records.findIndex((r) => shape(r) === 'R10@1')
    assert.deepEqual(
      sink.records
        .slice(tenAt)
        .filter((r) => !r.options)
        .map((r) => r.fields.packetDeltaCount),
      [...flows(3, 10, 10), ...flows(1, 12, 10)].map((f) => BigInt(f.packets)),
    )
    assertPass()
  })

  it('names no interface a record does not carry (0), nor one the labels do not know', async function () {
    const e = await open()
    e.exportBatch(batchOf(flows(2, 13, 1, 0), 1))
    e.exportBatch(batchOf(flows(2, 14, 1, 99), 1))
    await sink.settle(e)
    assert.deepEqual(runs(sink.records.map(shape)), ['I2', 'i2', 'R1@1', 'F'])
  })

  it("every collector of a config gets them, from the config's exporters", async function () {
    const second = await Sink.start()
    const config = defaultConfig({
      collectors: [sink, second].map((s) => ({name: `127.0.0.1:${s.port}`, remote: {host: '127.0.0.1', port: s.port}})),
    })
    const templates = compileTemplates(config)
    const exporters = config.collectors.map((c) => exporterFor(config, c, templates, {interfaceLabels: LABELS}))
    try {
      for (const x of exporters) await x.open()
      for (const x of exporters) x.exportBatch(batchOf(flows(2, 15, 100), 4))
      await sink.settle(exporters[0])
      await second.settle(exporters[1])
      for (const s of [sink, second]) assert.deepEqual(runs(s.records.map(shape)), ['I2', 'I3', 'i2', 'i3', 'R100@4', 'F'])
    } finally {
      for (const x of exporters) x.close()
      await second.stop()
    }
  })
})
