/** What is attached, checked against the kernel: the library behind `flowctl meter status`. */
import {existsSync} from 'node:fs'

import {StateError} from '../errors.js'
import type {Paths} from '../paths.js'
import {netnsLabel, listLinks, type NetnsName} from '../sys/netns.js'
import {listFilters} from '../sys/tc.js'
import {FAMILIES, directionName, type DirectionName} from '../flow/record.js'
import {forEachFlow} from './flow-map-reader.js'
import {netnsGone} from './gone-sets.js'
import {KEY, readU32} from './layout.js'
import {BpfMap} from './libbpf.js'
import {MeterSet} from './meter-set.js'
import {readOverflow} from './overflow.js'
import {dropsOn} from './drops.js'
import {readSampling} from './sampling.js'
import {readState, sameNetns} from './state.js'

export interface MeterStatus {
  netns: string
  interface: string
  ifindex: number
  direction: DirectionName
  /**
   * attached: our filter is in place; missing: the filter is gone (interface removed, or deleted
   * by hand); gone: the namespace was deleted, and its set holds kernel memory until
   * `meter detach --gone` (or the daemon that follows it) reclaims it.
   */
  state: 'attached' | 'missing' | 'gone'
  progId: number
  pref: number
  handle: number
  digest: string
  attachedAt: string
  mapPath: string
  /** Flows of this interface and direction in the flow maps now. */
  flows: number
  /** Flows each flow map of the namespace holds (shared by its interfaces). */
  capacity: number
  /** Packets and bytes not metered because the flow map was full. */
  overflowPackets: number
  overflowBytes: number
  /** Kernel memory of the namespace's meter set (shared by its interfaces), now and at most, in bytes. */
  memoryBytes: number
  memoryMaxBytes: number
  /** The namespace's meter set counts 1 packet in N (1: every packet); flows carry the N they were counted at. */
  samplingInterval: number
  /** Whether the namespace's drops are counted per flow (`meter attach --drops`). */
  drops: boolean
}

function slot(ifindex: number, direction: DirectionName): string {
  return `${ifindex}/${direction}`
}

/** Per interface-direction: distinct flows in the live and drained maps, and overflow counters. */
function countFlows(set: MeterSet): {flows: Map<string, number>; overflow: Map<string, {packets: number; bytes: number}>} {
  const flows = new Map<string, number>()
  const drained = set.drainMaps()
  for (const family of FAMILIES) {
    const maps = set.openFamily(family)
    const opened: BpfMap[] = []
    try {
      opened.push(maps.openLive())
      for (const d of drained) {
        // One a daemon committed since it was listed is gone: its flows are in the snapshot now.
        const map = d.family === family ? BpfMap.openIfPinned(d.path) : undefined
        if (map) opened.push(map)
      }
      const keySize = opened[0].info.keySize
      const seen = new Set<string>()
      for (const map of opened) {
        forEachFlow(map, (keys, off) => {
          const id = keys.toString('hex', off, off + keySize)
          if (seen.has(id)) return
          seen.add(id)
          const s = slot(readU32(keys, off + KEY.ifindex.offset), directionName(keys[off + KEY.direction.offset]))
          flows.set(s, (flows.get(s) ?? 0) + 1)
        })
      }
    } finally {
      for (const m of opened) m.close()
      maps.close()
    }
  }
  const overflow = new Map<string, {packets: number; bytes: number}>()
  // None when the set was removed since its flows were read.
  for (const o of readOverflow(set) ?? []) overflow.set(slot(o.ifindex, o.direction), {packets: o.packets, bytes: o.bytes})
  return {flows, overflow}
}

export interface MeterStatusReport {
  rows: MeterStatus[]
  /** Meter sets this flowctl cannot read (made by another, with another layout): what to do about each, in one line. */
  unreadable: string[]
}

export async function meterStatus(paths: Paths, netns?: NetnsName): Promise<MeterStatusReport> {
  const state = readState(paths)
  const out: MeterStatus[] = []
  const unreadable: string[] = []
  const sets = MeterSet.list(paths).filter((s) => netns === undefined || sameNetns(s.netns, netns))
  for (const set of sets) {
    const atts = state.attachments.filter((a) => sameNetns(a.netns, set.netns))
    if (!set.exists()) continue
    try {
      set.verifyLayout()
    } catch (error) {
      if (!(error instanceof StateError)) throw error
      unreadable.push(error.message)
      continue
    }
    const {flows, overflow} = countFlows(set)
    const capacity = set.capacity()
    const memory = set.memory()
    const samplingInterval = readSampling(set)
    const gone = netnsGone(state, set.netns)
    let links: {ifname: string; ifindex: number}[] = []
    try {
      if (!gone) links = await listLinks(set.netns)
    } catch {
      // namespace deleted meanwhile: every attachment shows as missing
    }
    for (const a of atts) {
      let present = false
      if (links.some((l) => l.ifname === a.interface && l.ifindex === a.ifindex)) {
        const filters = await listFilters(a.netns, a.interface, a.direction)
        present = filters.some((f) => f.pref === a.pref && f.handle === a.handle && f.progId === a.progId)
      }
      const o = overflow.get(slot(a.ifindex, a.direction)) ?? {packets: 0, bytes: 0}
      out.push({
        netns: netnsLabel(a.netns),
        interface: a.interface,
        ifindex: a.ifindex,
        direction: a.direction,
        state: gone ? 'gone' : present ? 'attached' : 'missing',
        progId: a.progId,
        pref: a.pref,
        handle: a.handle,
        digest: a.digest.slice(0, 16),
        attachedAt: a.attachedAt,
        mapPath: existsSync(set.mapDir) ? set.mapDir : '',
        flows: flows.get(slot(a.ifindex, a.direction)) ?? 0,
        capacity,
        overflowPackets: o.packets,
        overflowBytes: o.bytes,
        memoryBytes: memory.now,
        memoryMaxBytes: memory.atMost,
        samplingInterval,
        drops: dropsOn(set),
      })
    }
  }
  return {rows: out, unreadable}
}
