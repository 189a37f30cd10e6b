/**
 * Carrying meter sets of an older layout over to this one without losing a count, for `meter
 * attach --force`.
 *
 * Layouts 2 (shared flow maps, no sampling) and 3 (no handshake timing) are upgraded in place
 * (upgradeInPlace): their flow maps, snapshot and journal keep their shapes, so this layout's
 * programs are loaded onto them, beside the few maps that hold no count and are new or changed.
 *
 * Layout 1 (flowctl 0.1: per-CPU preallocated flow maps, a pending map of records) is not: the
 * old maps are moved aside (their pin directory renamed to <dir>-v1; the programs the filters run
 * keep them alive), a new meter set is made in their place and the filters are moved to its
 * programs. Once no old program can run any more, everything the old maps hold is read (both
 * flow maps of each family, summed over CPUs, and the old daemon's pending records) and merged
 * into the new meter set's snapshot, where the next daemon finds it. A migration cut short leaves
 * <dir>-v1 in place, and the next `meter attach` finishes it.
 */
import {existsSync, unlinkSync} from 'node:fs'
import {rename, rm} from 'node:fs/promises'
import {join} from 'node:path'

import type {HeldLock} from '../sys/flock.js'
import {FAMILIES, firstPacketWins, type Family, type FlowSample} from '../flow/record.js'
import {FlowStore} from './flow-store.js'
import {emptySample, FLOW_KEY4, FLOW_KEY6, KEY, LAYOUT_VERSION, readMeterMeta, readU64, writeMeterMeta, writeMeterSettings} from './layout.js'
import * as V1 from './layout-v1.generated.js'
import {BpfMap, innerMapId, numPossibleCpus, setInnerMap} from './libbpf.js'
import {REMADE_MAPS, type MeterSet} from './meter-set.js'

/** The layouts upgradeInPlace carries over. */
export const UPGRADED_IN_PLACE = [2, 3]

/**
 * Carries a layout-2 or layout-3 meter set over to this layout in place, losing no count. Its flow
 * maps, overflow counters, snapshot and journal have the shapes they had (a layout-2 key's
 * sampling_interval was its padding, 0, which readers take as 1), so they stay as they are. The
 * maps that hold no count and are new or changed (REMADE_MAPS; a layout-3 set has all but
 * `handshakes` in the right shape already, and keeps them) are made and pinned, this layout's
 * programs are loaded onto all of them (as MeterSet.reloadPrograms does), and then meta says this
 * layout. `samplingInterval` is written unless undefined (a layout-3 set keeps its own; a layout-2
 * set has none, so 1). Cut short anywhere, it is done again: a map already remade is kept. The
 * caller moves the filters to the new programs; until then the old ones count as before, into
 * the same flow maps.
 */
export async function upgradeInPlace(set: MeterSet, objectPath: string, samplingInterval: number | undefined): Promise<void> {
  for (const [name, shape] of Object.entries(REMADE_MAPS)) {
    const path = set.mapPath(name)
    const pinned = BpfMap.openIfPinned(path)
    if (pinned) {
      const {info} = pinned
      pinned.close()
      if (info.type === shape.type && info.keySize === shape.keySize && info.valueSize === shape.valueSize && info.maxEntries === shape.maxEntries) continue
      // Programs that use it (the old ones, still on the filters) keep it until they go.
      unlinkSync(path)
    }
    const fresh = BpfMap.create(shape.type, name, shape.keySize, shape.valueSize, shape.maxEntries)
    try {
      fresh.pin(path)
    } finally {
      fresh.close()
    }
  }
  if (samplingInterval !== undefined) {
    const settings = set.openMap('settings')
    try {
      writeMeterSettings(settings, {samplingInterval})
    } finally {
      settings.close()
    }
  }
  await set.reloadPrograms(objectPath)
  const meta = set.openMap('meta')
  try {
    writeMeterMeta(meta, {...readMeterMeta(meta), layoutVersion: LAYOUT_VERSION})
  } finally {
    meta.close()
  }
}

/** Where a layout-1 meter set waits while its flows are carried over. */
export function legacyDir(set: MeterSet): string {
  return `${set.dir}-v1`
}

/** The flows per map of a layout-1 meter set (its per-CPU flow maps were sized by it). */
export function legacyCapacity(set: MeterSet): number {
  const map = BpfMap.open(join(set.mapDir, 'flows4_a'))
  map.close()
  return map.info.maxEntries
}

/**
 * The most flows of one family a layout-1 meter set can hand over: the distinct keys its two flow
 * maps and its pending map hold now, and as many new ones as the flow map its programs write has
 * room for (they run until the filters move to the new programs). A new meter set keeps up to
 * twice its capacity per family (the daemon's cache and snapshot), so that is what must fit.
 */
export function legacyFlowsAtMost(set: MeterSet): number {
  let most = 0
  for (const family of FAMILIES) {
    const keys = new Set<string>()
    let room = 0
    const outer = BpfMap.open(join(set.mapDir, `flows${family}`))
    try {
      const liveId = innerMapId(outer)
      for (const name of [`flows${family}_a`, `flows${family}_b`, `pending${family}`]) {
        const path = join(set.mapDir, name)
        if (!existsSync(path)) continue
        const map = BpfMap.open(path)
        try {
          const keySize = map.info.keySize
          const count = map.forEachBatch((k, _v, n) => {
            for (let i = 0; i < n; i++) keys.add(k.toString('latin1', i * keySize, (i + 1) * keySize))
          })
          if (map.info.id === liveId) room = map.info.maxEntries - count
        } finally {
          map.close()
        }
      }
    } finally {
      outer.close()
    }
    most = Math.max(most, keys.size + room)
  }
  return most
}

/** Moves a layout-1 meter set's pins aside, so that a new meter set can be made in their place. */
export async function moveLegacyAside(set: MeterSet): Promise<void> {
  const aside = legacyDir(set)
  if (existsSync(aside)) throw new Error(`${aside} exists: a migration is already under way; run \`flowctl meter attach\` again to finish it`)
  await rename(set.dir, aside)
}

/**
 * Merges every flow the layout-1 maps under legacyDir(set) hold into `set`'s snapshot, then
 * removes them. Call it once no filter runs the old programs. It writes the set: `lock` is the
 * set's lock if the caller holds it already (claimMeterSet), else it is taken here (refused while
 * a daemon drains the set). Returns the flows carried over.
 */
export async function carryOverLegacy(set: MeterSet, lock?: HeldLock): Promise<number> {
  const aside = legacyDir(set)
  if (!existsSync(aside)) return 0
  const store = FlowStore.open(set, {lock})
  try {
    // An update of a map-in-map slot returns only after synchronize_rcu(): no program that
    // started before it (an old one, on a filter replaced just now) is still running.
    const live = store.families[4].openLive()
    try {
      setInnerMap(store.families[4].outer, live)
    } finally {
      live.close()
    }
    const caches = store.newCaches()
    store.loadSnapshot(caches)
    let carried = 0
    for (const family of FAMILIES) {
      const cache = caches[family]
      const sample = emptySample()
      const add = (keys: Buffer, ko: number) => {
        if (cache.add(keys, ko, sample) >= 0) carried++
      }
      const mapsDir = join(aside, 'maps')
      const keySize = (family === 4 ? V1.FLOW_KEY4 : V1.FLOW_KEY6).size
      const keys = Buffer.alloc(FLOW_KEY6.size)
      for (const name of [`flows${family}_a`, `flows${family}_b`]) {
        const path = join(mapsDir, name)
        if (!existsSync(path)) continue
        const map = BpfMap.open(path)
        try {
          const stride = map.valueBytes / numPossibleCpus()
          map.forEachBatch((k, values, n) => {
            for (let i = 0; i < n; i++) {
              sumPerCpu(values, i * map.valueBytes, stride, sample)
              if (sample.packets === 0 && sample.bytes === 0) continue
              add(convertKey(family, k, i * keySize, keys), 0)
            }
          })
        } finally {
          map.close()
        }
      }
      const pendingPath = join(mapsDir, `pending${family}`)
      if (existsSync(pendingPath)) {
        const pending = BpfMap.open(pendingPath)
        try {
          pending.forEachBatch((k, values, n) => {
            for (let i = 0; i < n; i++) {
              readRecord(values, i * V1.FLOW_RECORD.size, sample)
              add(convertKey(family, k, i * keySize, keys), 0)
            }
          })
        } finally {
          pending.close()
        }
      }
    }
    store.commit(store.gen + 1, caches)
    await rm(aside, {recursive: true, force: true})
    return carried
  } finally {
    store.close()
  }
}

/**
 * A layout-1 key as a key of this layout: the same fields (this one adds the inner VLAN and the
 * sampling interval before the addresses); layout 1 counted every packet, which is interval 1, as
 * the new programs write it, so a flow counted before and after lands in one record.
 */
function convertKey(family: Family, from: Buffer, at: number, into: Buffer): Buffer {
  const v1 = family === 4 ? V1.FLOW_KEY4 : V1.FLOW_KEY6
  const now = family === 4 ? FLOW_KEY4 : FLOW_KEY6
  const out = into.subarray(0, now.size)
  out.fill(0)
  from.copy(out, 0, at, at + v1.fields.src.offset) // ifindex .. dport: same offsets in both
  out.writeUInt16LE(1, KEY.samplingInterval.offset)
  from.copy(out, now.fields.src.offset, at + v1.fields.src.offset, at + v1.fields.src.offset + v1.fields.src.size + v1.fields.dst.size)
  return out
}

/** What layout 1 counted of a flow: the fields of a FlowSample it had. */
type V1Sample = Pick<FlowSample, 'packets' | 'bytes' | 'firstNs' | 'lastNs' | 'tcpFlags' | 'tos'>

function sumPerCpu(values: Buffer, off: number, stride: number, into: V1Sample): void {
  const f = V1.FLOW_COUNTERS.fields
  into.packets = 0
  into.bytes = 0
  into.firstNs = 0
  into.lastNs = 0
  into.tcpFlags = 0
  into.tos = 0
  for (let o = off; o < off + numPossibleCpus() * stride; o += stride) {
    const first = readU64(values, o + f.firstSeenNs.offset)
    if (!first) continue
    into.packets += readU64(values, o + f.packets.offset)
    into.bytes += readU64(values, o + f.bytes.offset)
    if (firstPacketWins(into.firstNs, first)) {
      into.firstNs = first
      into.tos = values[o + f.ipTos.offset]
    }
    into.lastNs = Math.max(into.lastNs, readU64(values, o + f.lastSeenNs.offset))
    into.tcpFlags |= values[o + f.tcpFlags.offset]
  }
}

function readRecord(values: Buffer, off: number, into: V1Sample): void {
  const f = V1.FLOW_RECORD.fields
  into.packets = readU64(values, off + f.packets.offset)
  into.bytes = readU64(values, off + f.bytes.offset)
  into.firstNs = readU64(values, off + f.firstSeenNs.offset)
  into.lastNs = readU64(values, off + f.lastSeenNs.offset)
  into.tcpFlags = values[off + f.tcpFlags.offset]
  into.tos = values[off + f.ipTos.offset]
}
