/**
 * Reading the flows a meter set holds, for people-facing commands: the live flow maps through
 * bpftool's JSON, drained maps a daemon has not committed yet, and the daemon's snapshot (flows
 * it holds until they end). A flow may be in several at once; it is shown once, merged by key.
 * The snapshot and drained maps are indexed in memory; the live map, which can be full, is
 * streamed and never held.
 *
 * A daemon beside the reader moves flows on at every drain (live map -> drained map -> snapshot,
 * whose chunks it rewrites and deletes), so the reader first takes a cut: the maps and the
 * snapshot as of one commit, each map held open so that nothing it reads can vanish. A cut that a
 * drain's commit crossed is let go and taken again.
 */
import {BpfError, FlowctlError} from '../errors.js'
import {describeNetns} from '../sys/netns.js'
import {dumpMapById, type DumpStats} from './bpftool.js'
import {FlowStore} from './flow-store.js'
import {decodeFlowKey, decodeFlowValue, pendingFlowLayout} from './layout.js'
import {BpfMap, ENOENT} from './libbpf.js'
import {FAMILIES, mergeCounters, type Family, type FlowCounters, type FlowKey} from '../flow/record.js'
import type {MeterSet} from './meter-set.js'

export interface KernelFlow {
  key: FlowKey
  /** The key's bytes, as the kernel keeps them. */
  rawKey: Buffer
  counters: FlowCounters
}

/** Cuts taken in a row, each crossed by a commit, before a read gives up. */
const CUT_ATTEMPTS = 20

function add(index: Map<string, KernelFlow>, family: Family, key: Buffer, counters: FlowCounters): void {
  const id = key.toString('hex')
  const known = index.get(id)
  if (known) mergeCounters(known.counters, counters)
  else index.set(id, {key: decodeFlowKey(family, key), rawKey: key, counters})
}

/**
 * What a meter set held as of one commit of its writer: the live map of each family and the
 * drained maps that commit does not cover, open, and a copy of the committed snapshot.
 */
interface MeterSetCut {
  live: Record<Family, BpfMap>
  drained: {family: Family; map: BpfMap}[]
  snapshot: Buffer
  close(): void
}

function isGone(error: unknown): boolean {
  return error instanceof BpfError && error.errno === ENOENT
}

/**
 * One try at a cut; undefined when a commit crossed it (a map or a snapshot chunk went away, or
 * drain_state changed). The live maps are opened before the drained ones are listed: a drain pins
 * the live map it takes out before it swaps a fresh one in, so a live map missed as live is found
 * pinned as drained, and one found both ways is read once.
 */
function tryCut(store: FlowStore): MeterSetCut | undefined {
  const opened: BpfMap[] = []
  const close = () => {
    for (const m of opened) m.close()
  }
  try {
    const before = store.readCommitted()
    const live = {} as Record<Family, BpfMap>
    for (const family of FAMILIES) {
      live[family] = store.families[family].openLive()
      opened.push(live[family])
    }
    const liveIds = new Set(FAMILIES.map((f) => live[f].info.id))
    const drained: MeterSetCut['drained'] = []
    for (const d of store.set.drainMaps()) {
      if (d.gen <= before.gen) continue // committed: its flows are in the snapshot
      const map = BpfMap.openIfPinned(d.path)
      if (!map) {
        close() // committed since it was listed
        return undefined
      }
      opened.push(map)
      if (!liveIds.has(map.info.id)) drained.push({family: d.family, map})
    }
    const snapshot = store.readSnapshotCopy(before)
    const after = store.readCommitted()
    if (!snapshot || after.gen !== before.gen) {
      close()
      return undefined
    }
    return {live, drained, snapshot, close}
  } catch (error) {
    close()
    if (isGone(error)) return undefined
    throw error
  }
}

/**
 * A cut of a meter set (see MeterSetCut), taken again while a writer's commits cross it, up to
 * CUT_ATTEMPTS times; then a one-line error.
 */
async function takeCut(store: FlowStore): Promise<MeterSetCut> {
  for (let attempt = 1; ; attempt++) {
    const cut = tryCut(store)
    if (cut) return cut
    if (attempt === CUT_ATTEMPTS) {
      throw new FlowctlError(
        `the flows of ${describeNetns(store.set.netns)} changed under each of ${CUT_ATTEMPTS} reads in a row (the daemon committed a drain during each): try again, or set a longer drainIntervalSeconds`,
      )
    }
    // Out of step with the drains, a little later each time.
    await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20 * attempt))
  }
}

/**
 * Every flow of a meter set, each once, counters merged over the places that hold it, as of one
 * commit of its daemon. Entries deleted while being read are passed over and counted in `stats`.
 */
export async function* readMeterSetFlows(set: MeterSet, families: readonly Family[] = FAMILIES, stats?: DumpStats): AsyncGenerator<KernelFlow> {
  const store = FlowStore.openReader(set)
  let cut: MeterSetCut | undefined
  try {
    cut = await takeCut(store)
    const held: Record<Family, Map<string, KernelFlow>> = {4: new Map(), 6: new Map()}
    store.forEachCopiedRecord(cut.snapshot, (family, buf, keyAt, valueAt) => {
      const layout = pendingFlowLayout(family)
      const key = Buffer.from(buf.subarray(keyAt, keyAt + layout.fields.key.size))
      add(held[family], family, key, decodeFlowValue(family, buf, valueAt))
    })
    cut.snapshot = Buffer.alloc(0)
    for (const d of cut.drained) {
      for await (const e of dumpMapById(d.map.info.id, stats)) add(held[d.family], d.family, e.key, decodeFlowValue(d.family, e.value))
    }
    for (const family of families) {
      const index = held[family]
      for await (const e of dumpMapById(cut.live[family].info.id, stats)) {
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
    cut?.close()
    store.close()
  }
}
