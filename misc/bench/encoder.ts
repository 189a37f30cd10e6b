/**
 * Figure 3: the IPFIX encoder alone, on one core: exportBatch with the default IPv4 and IPv6
 * templates into 1400-byte messages, the transport replaced by a counter (the bytes
 * are built exactly as for a collector; only the send is skipped).
 */
import {defaultConfig} from '../../src/config/load.js'
import {FlowBatch} from '../../src/flow/batch.js'
import {compileTemplates, exporterFor} from '../../src/config/export-settings.js'
import type {CollectorExporter} from '../../src/ipfix/export/collector-exporter.js'
import {fixed, median, ratio, si, type BenchOptions, type Row} from './util.js'

const BATCH = 8192

function fillBatch(family: 4 | 6): FlowBatch {
  const b = new FlowBatch(family, BATCH)
  const now = Date.now() * 1000
  for (let i = 0; i < BATCH; i++) {
    b.ifindex[i] = 3
    b.direction[i] = i & 1
    b.proto[i] = i % 3 ? 6 : 17
    b.sport[i] = 1024 + i
    b.dport[i] = 443
    for (let k = 0; k < b.addrLen; k++) {
      b.src[i * b.addrLen + k] = (i * 7 + k) & 0xff
      b.dst[i * b.addrLen + k] = (i * 13 + k) & 0xff
    }
    b.packets[i] = 10 + i
    b.bytes[i] = 1500 * (10 + i)
    b.startUs[i] = now - 20e6 + i
    b.endUs[i] = now - 1e6 + i
    b.tcpFlags[i] = 0x1a
    b.tos[i] = 0
    b.endReason[i] = 1
  }
  b.length = BATCH
  return b
}

/** An exporter whose transport only counts: exportBatch runs unchanged up to the send. */
function countingExporter(): {exporter: CollectorExporter; sent: {messages: number; bytes: number}} {
  const config = defaultConfig({maxMessageSize: 1400, templateRefreshSeconds: 3600})
  const sent = {messages: 0, bytes: 0}
  const counting = {
    isOpen: true,
    sendErrors: 0,
    localPort: undefined,
    send(message: Buffer) {
      sent.messages++
      sent.bytes += message.length
    },
    flush() {},
    open: () => Promise.resolve(),
    flushed: () => Promise.resolve(),
    close() {},
  }
  const exporter = exporterFor(config, {name: 'bench', remote: {host: '127.0.0.1', port: 9}}, compileTemplates(config), {transport: () => counting})
  return {exporter, sent}
}

export function benchEncoder(options: BenchOptions): Promise<Row[]> {
  const rows: Row[] = []
  const minMs = options.quick ? 300 : 1000
  for (const family of (process.env.BENCH_FAMILIES ?? '4,6').split(',').map(Number) as (4 | 6)[]) {
    const batch = fillBatch(family)
    const {exporter, sent} = countingExporter()
    for (let i = 0; i < 50; i++) exporter.exportBatch(batch) // warm up
    const rates: number[] = []
    let bytesPerRecord = 0
    for (let r = 0; r < options.repeats; r++) {
      const before = {...sent}
      let records = 0
      const t0 = performance.now()
      let t1 = t0
      while (t1 - t0 < minMs) {
        for (let k = 0; k < 20; k++) exporter.exportBatch(batch)
        records += 20 * BATCH
        t1 = performance.now()
      }
      rates.push(records / ((t1 - t0) / 1000))
      bytesPerRecord = (sent.bytes - before.bytes) / records
    }
    const rate = median(rates)
    rows.push({
      figure: `encoder IPv${family} default template`,
      ours: `${si(rate)} rec/s (${fixed(bytesPerRecord, 1)} B/rec, ${si(rate * bytesPerRecord, 'B')}/s)`,
      reference: 'target',
      ratio: ratio(rate / 3_000_000),
      target: '>= 3.00 M/s',
      pass: rate >= 3_000_000,
    })
  }
  return Promise.resolve(rows)
}
