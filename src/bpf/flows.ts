/**
 * Reading the flows a meter set holds, for people-facing commands: the live flow maps through
 * bpftool's JSON, drained maps a daemon has not committed yet, and the daemon's snapshot (flows
 * it holds until they end). A flow may be in several at once; it is shown once, merged by key.
 * The snapshot and drained maps are indexed in memory; the live map, which can be full, is
 * streamed and never held.
 */
import {dumpMap, dumpMapById} from './bpftool.js'
import {FlowStore} from './flow-store.js'
import {decodeFlowKey, decodeFlowValue, pendingFlowLayout} from './layout.js'
import {FAMILIES, mergeCounters, type Family, type FlowCounters, type FlowKey} from '../flow/record.js'
import type {MeterSet} from './meter-set.js'

export interface KernelFlow {
  key: FlowKey
  /** The key's bytes, as the kernel keeps them. */
  rawKey: Buffer
  counters: FlowCounters
}

function add(index: Map<string, KernelFlow>, family: Family, key: Buffer, counters: FlowCounters): void {
  const id = key.toString('hex')
  const known = index.get(id)
  if (known) mergeCounters(known.counters, counters)
  else index.set(id, {key: decodeFlowKey(family, key), rawKey: key, counters})
}

/** Every flow of a meter set, each once, counters merged over the places that hold it. */
export async function* readMeterSetFlows(set: MeterSet, families: readonly Family[] = FAMILIES): AsyncGenerator<KernelFlow> {
  const store = FlowStore.open(set)
  try {
    const held: Record<Family, Map<string, KernelFlow>> = {4: new Map(), 6: new Map()}
    store.forEachSnapshotRecord((family, buf, keyAt, valueAt) => {
      const layout = pendingFlowLayout(family)
      const key = Buffer.from(buf.subarray(keyAt, keyAt + layout.fields.key.size))
      add(held[family], family, key, decodeFlowValue(family, buf, valueAt))
    })
    for (const d of set.drainMaps()) {
      for await (const e of dumpMap(d.path)) add(held[d.family], d.family, e.key, decodeFlowValue(d.family, e.value))
    }
    for (const family of families) {
      const index = held[family]
      for await (const e of dumpMapById(store.families[family].liveId())) {
        const counters = decodeFlowValue(family, e.value)
        const id = e.key.toString('hex')
        const known = index.get(id)
        if (known) {
          index.delete(id)
          mergeCounters(counters, known.counters)
        }
        yield {key: decodeFlowKey(family, e.key), rawKey: e.key, counters}
      }
      yield* index.values()
    }
  } finally {
    store.close()
  }
}
