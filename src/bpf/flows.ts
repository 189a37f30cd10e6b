/**
 * Reading the flows a meter set holds, through bpftool's JSON (for people-facing commands).
 *
 * A flow may have entries in several maps at once: the live flow map, the idle one (counted
 * before the last swap and not yet drained) and the daemon's pending map. They are merged by key.
 * The idle and pending maps are indexed in memory (they are small unless a daemon is exporting a
 * large table); the live map, which can be full, is streamed and never held.
 */
import {dumpMap, type DumpStats} from './bpftool.js'
import {decodeFlowKey, decodeFlowRecord, decodePerCpuCounters} from './layout.js'
import {FAMILIES, mergeCounters, type Family, type FlowCounters, type FlowKey} from '../flow/record.js'
import {type FamilyMaps, MeterSet} from './meter-set.js'

export interface KernelFlow {
  key: FlowKey
  /** The key's bytes, as the kernel keeps them (for deleting the flow). */
  rawKey: Buffer
  counters: FlowCounters
}

async function indexEntries(index: Map<string, KernelFlow>, family: Family, path: string, kind: 'perCpu' | 'record', stats?: DumpStats): Promise<void> {
  for await (const e of dumpMap(path, undefined, stats)) {
    const counters = kind === 'record' ? decodeFlowRecord(e.value) : decodePerCpuCounters(e.value, 0, e.cpus, e.value.length / e.cpus)
    const id = e.key.toString('hex')
    const known = index.get(id)
    if (known) mergeCounters(known.counters, counters)
    else index.set(id, {key: decodeFlowKey(family, e.key), rawKey: e.key, counters})
  }
}

async function* familyFlows(set: MeterSet, maps: FamilyMaps, stats?: DumpStats): AsyncGenerator<KernelFlow> {
  const live = maps.live()
  const idle = maps.idle()
  const index = new Map<string, KernelFlow>()
  await indexEntries(index, maps.family, idle.path, 'perCpu', stats)
  await indexEntries(index, maps.family, maps.pending.path, 'record', stats)
  for await (const e of dumpMap(live.path, undefined, stats)) {
    const counters = decodePerCpuCounters(e.value, 0, e.cpus, e.value.length / e.cpus)
    const id = e.key.toString('hex')
    const known = index.get(id)
    if (known) {
      index.delete(id)
      mergeCounters(counters, known.counters)
    }
    yield {key: decodeFlowKey(maps.family, e.key), rawKey: e.key, counters}
  }
  yield* index.values()
}

/**
 * Every flow of a meter set, each once, counters merged over the maps that hold it. Entries deleted
 * while being read are passed over and counted in `stats`.
 */
export async function* readMeterSetFlows(set: MeterSet, families: readonly Family[] = FAMILIES, stats?: DumpStats): AsyncGenerator<KernelFlow> {
  for (const family of families) {
    const maps = set.openFamily(family)
    try {
      yield* familyFlows(set, maps, stats)
    } finally {
      maps.close()
    }
  }
}
