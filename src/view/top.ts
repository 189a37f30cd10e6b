/**
 * `flowctl top`: the busiest flows (or talkers, ports, protocols, interfaces) now, as rates over
 * the last interval, read from the live flow maps without disturbing the daemon.
 *
 * The daemon empties the maps by swapping each live map out for a fresh one at every drain, so
 * totals read from the kernel fall back to zero every interval. A sampler keeps a file descriptor
 * on the live map it read last: when the slot holds another map at the next sample, the old one
 * (which no program writes any more, and which the daemon only reads and drops) is read one last
 * time for its final counts, and the new map's counts are all new. The rate of a flow is the
 * growth of its counts between two samples, divided by the time between them. (If the daemon
 * swaps twice between two samples, the map in between is not seen: drain less often than top
 * samples to have every packet in the rates.)
 */
import {VALUE, decodeFlowKey, readU64} from '../bpf/layout.js'
import {BpfMap} from '../bpf/libbpf.js'
import type {FamilyMaps, MeterSet} from '../bpf/meter-set.js'
import {FAMILIES, type Family, type FlowKey} from '../flow/record.js'
import {protocolName} from '../flow/protocols.js'
import type {Paths} from '../paths.js'
import {netnsLabel} from '../sys/netns.js'
import {resolveScope, type FlowScope} from './query.js'
import {matchesSelector, type FlowSelector} from './selectors.js'

export const TOP_GROUPINGS = ['flow', 'src', 'dst', 'port', 'proto', 'interface'] as const
export type TopGrouping = (typeof TOP_GROUPINGS)[number]

export interface TopRow {
  /** What the row stands for, as people read it: a flow, an address, a port... */
  label: string
  netns: string
  packetsPerSecond: number
  bytesPerSecond: number
  /** Flows with traffic in the interval that the row sums. */
  flows: number
}

export interface TopSample {
  /** Seconds between the two readings the rates come from. */
  intervalSeconds: number
  /** Live maps the daemon swapped out within the interval, which top followed (read to their end). */
  swapsFollowed: number
  rows: TopRow[]
}

/** What one flow map entry counted at the previous sample. */
interface Seen {
  packets: number
  bytes: number
}

/** One family's live map of one meter set, followed across the daemon's swaps. */
export class LiveMapFollower {
  private held: BpfMap | undefined
  private previous = new Map<string, Seen>()

  constructor(
    private readonly maps: FamilyMaps,
    readonly family: Family,
  ) {}

  /** Calls `onGrowth` with each flow's growth since the previous call; says whether the live map was swapped meanwhile. */
  sample(onGrowth: (key: Buffer, packets: number, bytes: number) => void): boolean {
    const liveId = this.maps.liveId()
    let swapped = false
    if (this.held && this.held.info.id !== liveId) {
      // Swapped out since: its final counts, then the new map from zero.
      this.read(this.held, onGrowth)
      this.held.close()
      this.held = undefined
      this.previous = new Map()
      swapped = true
    }
    this.held ??= BpfMap.openById(liveId)
    this.read(this.held, onGrowth)
    return swapped
  }

  private read(map: BpfMap, onGrowth: (key: Buffer, packets: number, bytes: number) => void): void {
    const keySize = map.info.keySize
    const valueSize = map.info.valueSize
    const next = new Map<string, Seen>()
    map.forEachBatch((keys, values, n) => {
      for (let i = 0; i < n; i++) {
        const id = keys.toString('latin1', i * keySize, (i + 1) * keySize)
        const packets = readU64(values, i * valueSize + VALUE.packets.offset)
        const bytes = readU64(values, i * valueSize + VALUE.bytes.offset)
        const before = this.previous.get(id)
        next.set(id, {packets, bytes})
        const dp = packets - (before?.packets ?? 0)
        const db = bytes - (before?.bytes ?? 0)
        if (dp > 0 || db > 0) onGrowth(Buffer.from(id, 'latin1'), dp, db)
      }
    })
    this.previous = next
  }

  close(): void {
    this.held?.close()
    this.maps.close()
  }
}

function groupLabel(by: TopGrouping, key: FlowKey, ifname: string): string {
  const host = (a: string) => (key.family === 6 ? `[${a}]` : a)
  switch (by) {
    case 'src':
      return key.src
    case 'dst':
      return key.dst
    case 'port':
      return `${protocolName(key.proto)}/${key.dport}`
    case 'proto':
      return protocolName(key.proto)
    case 'interface':
      return `${ifname} ${key.direction}`
    case 'flow':
      return `${ifname} ${key.direction} ${protocolName(key.proto)} ${host(key.src)}:${key.sport} > ${host(key.dst)}:${key.dport}`
  }
}

/** Follows the live maps of every meter set in scope and turns their growth into rates. */
export class TopSampler {
  private followers: {set: MeterSet; names: Map<number, string>; selector: FlowSelector; maps: LiveMapFollower[]}[] = []
  private lastAt = 0
  private swaps = 0

  static async open(paths: Paths, scope: FlowScope): Promise<TopSampler> {
    const sampler = new TopSampler()
    try {
      for (const {set, names, selector} of await resolveScope(paths, scope)) {
        set.verifyLayout()
        sampler.followers.push({set, names, selector, maps: FAMILIES.map((f) => new LiveMapFollower(set.openFamily(f), f))})
      }
    } catch (error) {
      sampler.close()
      throw error
    }
    return sampler
  }

  /** Takes the first reading; rates come from the next `sample()`. */
  prime(): void {
    this.collect('flow')
  }

  /** Rates since the previous sample, grouped, busiest first. */
  sample(by: TopGrouping, sortBy: 'bytes' | 'packets' = 'bytes', limit = Infinity): TopSample {
    const started = this.lastAt
    this.swaps = 0
    const groups = this.collect(by)
    const seconds = started ? (this.lastAt - started) / 1000 : 1
    const rows = [...groups.values()].map((g) => ({...g, packetsPerSecond: g.packetsPerSecond / seconds, bytesPerSecond: g.bytesPerSecond / seconds}))
    rows.sort((a, b) => (sortBy === 'bytes' ? b.bytesPerSecond - a.bytesPerSecond || b.packetsPerSecond - a.packetsPerSecond : b.packetsPerSecond - a.packetsPerSecond || b.bytesPerSecond - a.bytesPerSecond))
    return {intervalSeconds: seconds, swapsFollowed: this.swaps, rows: rows.slice(0, limit)}
  }

  private collect(by: TopGrouping): Map<string, TopRow> {
    const groups = new Map<string, TopRow>()
    for (const {set, names, selector, maps} of this.followers) {
      const netns = netnsLabel(set.netns)
      for (const m of maps) {
        const swapped = m.sample((raw, packets, bytes) => {
          const key = decodeFlowKey(m.family, raw)
          if (!matchesSelector(selector, key)) return
          const label = groupLabel(by, key, names.get(key.ifindex) ?? `if${key.ifindex}`)
          const id = `${netns}\u0000${label}`
          const row = groups.get(id)
          if (row) {
            row.packetsPerSecond += packets
            row.bytesPerSecond += bytes
            row.flows++
          } else groups.set(id, {label, netns, packetsPerSecond: packets, bytesPerSecond: bytes, flows: 1})
        })
        if (swapped) this.swaps++
      }
    }
    this.lastAt = performance.now()
    return groups
  }

  close(): void {
    for (const f of this.followers) for (const m of f.maps) m.close()
    this.followers = []
  }
}
