/**
 * The demo's verdict: what the collector decoded, set against what was sent. Each flow sent crosses
 * the lab's router, so it must be metered entering c0 and leaving s0, with the counts sent.
 */
import {recordsOf, type DemoRecord, type DemoResult} from './demo.js'

/** Where each record was metered ("router:c0 ingress"), with the packets and bytes summed there. */
export function countsByInterface(records: readonly DemoRecord[]): Map<string, {packets: number; bytes: number}> {
  const out = new Map<string, {packets: number; bytes: number}>()
  for (const r of records) {
    const key = `${r.interface} ${r.direction}`
    const got = out.get(key) ?? {packets: 0, bytes: 0}
    got.packets += r.packets
    got.bytes += r.bytes
    out.set(key, got)
  }
  return out
}

/** The metering points every sent flow must appear at. */
const DEMO_METERING_POINTS = ['router:c0 ingress', 'router:s0 egress'] as const

/** One line per difference between what was sent and what was decoded; empty when all match. */
export function demoMismatches(result: Pick<DemoResult, 'sent' | 'records'>): string[] {
  const problems: string[] = []
  for (const t of result.sent) {
    const seen = countsByInterface(recordsOf(result.records, t))
    for (const where of DEMO_METERING_POINTS) {
      const got = seen.get(where)
      if (!got) problems.push(`${t.what} ${t.src} -> ${t.dst}: no record at ${where}`)
      else if (t.packets !== undefined && (got.packets !== t.packets || got.bytes !== t.bytes)) {
        problems.push(`${t.what} ${t.src} -> ${t.dst} at ${where}: ${got.packets} packets, ${got.bytes} bytes; sent ${t.packets}, ${t.bytes}`)
      }
    }
  }
  return problems
}
