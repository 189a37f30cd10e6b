/**
 * `flowctl top`: the busiest flows (or talkers, ports, protocols, interfaces) now, as rates over
 * the last interval, read from the live flow maps without disturbing the daemon.
 *
 * The daemon empties the maps by swapping each live map out for a fresh one at every drain, so
 * totals read from the kernel fall back to zero every interval. The sampler looks at each slot
 * (one bpf() call while nothing changed) ten times per drain interval (WATCH_MS), and opens each
 * new live map as soon as it appears. A map swapped out is no longer written by any program and
 * loses no entry (the daemon drops maps whole), so top reads it once more to its end, for its
 * final counts, and lets it go; a new map's counts are all new. The growth of a flow's counts
 * over all the maps of an interval, divided by its length, is its rate: every packet counted once.
 *
 * Should top still miss a map (held up for longer than a drain interval: SIGSTOP, a loaded
 * machine), src/bpf/slot-history.ts tells: each live map is known by the drain that put it in its
 * slot, so a gap in those numbers is a map that came and went unseen. The one a drain in progress
 * has taken out is still pinned and read; any other is counted in `swapsMissed`, and the interval's
 * rates are not shown as if they were whole.
 */
import {forEachFlow} from '../bpf/flow-map-reader.js'
import {decodeFlowKey} from '../bpf/layout.js'
import {BpfError} from '../errors.js'
import {BpfMap, ENOENT} from '../bpf/libbpf.js'
import type {FamilyMaps} from '../bpf/family-maps.js'
import type {MeterSet} from '../bpf/meter-set.js'
import {SlotHistory} from '../bpf/slot-history.js'
import {FAMILIES, type Family, type FlowKey} from '../flow/record.js'
import {protocolName} from '../flow/protocols.js'
import type {Paths} from '../paths.js'
import {netnsLabel} from '../sys/netns.js'
import {resolveScope, type FlowScope} from './query.js'
import {HandshakeWatch} from './top-rtt.js'
import {TopDrops} from './top-drops.js'
import {matchesSelector, type FlowSelector} from './selectors.js'

export const TOP_GROUPINGS = ['flow', 'src', 'dst', 'port', 'proto', 'interface'] as const
export type TopGrouping = (typeof TOP_GROUPINGS)[number]

/**
 * Milliseconds between two looks at the slots: the time between the daemon's swaps divided by
 * `perSwap`, within `min` and `max`. A live map stays reachable for at least one drain interval
 * (0.1 s at the least) and the time its drain takes to commit, so ten looks in that time leave
 * room for a process held up by load; a daemon that drains every second (the default), or none,
 * costs ten looks a second. Each look is one bpf() call per slot.
 */
export const WATCH_MS = {min: 10, max: 100, perSwap: 10} as const

export interface TopRow {
  /** What the row stands for, as people read it: a flow, an address, a port... */
  label: string
  netns: string
  packetsPerSecond: number
  bytesPerSecond: number
  /** Packets and bytes counted in the interval (the rates times its length). */
  packets: number
  bytes: number
  /** Flows with traffic in the interval that the row sums. */
  flows: number
  /** By flow: the TCP round trips of its connection (router to client, router to server), when top saw its handshake timed. */
  tcpRttClientMicroseconds?: number
  tcpRttServerMicroseconds?: number
  /** Packets of the row's flows the kernel dropped in the interval (namespaces with drops on), and the reason with the most. */
  droppedPackets?: number
  dropReason?: string
}

export interface TopSample {
  /** Seconds between the two readings the rates come from. */
  intervalSeconds: number
  /** Live maps the daemon swapped out within the interval, which top followed (read to their end). */
  swapsFollowed: number
  /**
   * Live maps that came and went within the interval without top seeing them (it was held up for
   * longer than a drain interval): their packets are not in the rows, which undercount.
   */
  swapsMissed: number
  rows: TopRow[]
}

/** What a flow map entry counted when top last read it. */
interface Seen {
  packets: number
  bytes: number
}

/** A flow map top holds: the drain that put it in its slot, and each flow's counts at the last read. */
interface HeldMap {
  map: BpfMap
  drain: number | undefined
  previous: Map<string, Seen>
}

/** Tries at opening the live map by id when the daemon swaps it out and drops it in between. */
const OPEN_TRIES = 4

/** One family's live map of one meter set, followed across the daemon's swaps. */
export class LiveMapFollower {
  private current: HeldMap | undefined
  /** Maps swapped out since, to read to their end. */
  private readonly retired: HeldMap[] = []
  /** Each flow's growth since the last take(), by key bytes. */
  private growth = new Map<string, Seen>()
  private followed = 0
  private missed = 0
  /** When this slot last changed, as seen here (performance.now()), and the time between its last two changes. */
  lastSwapAt: number | undefined
  swapGapMs: number | undefined

  constructor(
    private readonly maps: FamilyMaps,
    readonly family: Family,
    private readonly history: SlotHistory,
  ) {}

  /**
   * Looks at the slot: one bpf() call while it holds the map top holds. A new live map is opened
   * at once, and the one before it kept to be read to its end (`settle`).
   */
  watch(): void {
    const held = this.current
    // (Nothing held: no look at the slot here, the loop below looks.)
    if (held !== undefined) {
      if (held.map.info.id === this.maps.liveId()) return
    }
    for (let tries = 1; ; tries++) {
      const live = this.history.live(this.maps)
      let map: BpfMap
      try {
        map = BpfMap.openById(live.id, `the live IPv${this.family} flow map`)
      } catch (error) {
        // Swapped out and dropped since we read its id: the next one is in the slot now.
        if (error instanceof BpfError && error.errno === ENOENT && tries < OPEN_TRIES) continue
        throw error
      }
      this.follow({map, drain: live.drain, previous: new Map()})
      return
    }
  }

  private follow(next: HeldMap): void {
    const before = this.current
    this.current = next
    if (!before) return
    this.retired.push(before)
    this.followed++
    const now = performance.now()
    if (this.lastSwapAt !== undefined) this.swapGapMs = now - this.lastSwapAt
    this.lastSwapAt = now
    if (before.drain === undefined || next.drain === undefined) return
    // The maps drains before.drain+1 .. next.drain-1 put in the slot came and went unseen. Map g
    // was taken out by drain g+1, which keeps it pinned until it commits: read it if it still is.
    for (let gen = before.drain + 1; gen < next.drain; gen++) {
      const missed = this.history.openTakenOut(this.family, gen + 1)
      if (missed && missed.info.id !== before.map.info.id && missed.info.id !== next.map.info.id) {
        this.retired.push({map: missed, drain: gen, previous: new Map()})
        this.followed++
      } else {
        missed?.close()
        this.missed++
      }
    }
  }

  /**
   * Reads every map swapped out since to its end (no program writes it any more), adding what
   * it grew, and lets it go. `between` runs after each read batch of a long read.
   */
  settle(between?: () => void): void {
    for (let held = this.retired.shift(); held; held = this.retired.shift()) {
      try {
        this.read(held, between)
      } finally {
        held.map.close()
      }
    }
  }

  /** Adds what the live map grew since it was last read. */
  readLive(between?: () => void): void {
    if (this.current) this.read(this.current, between)
  }

  /** Calls `onGrowth` with each flow's growth since the previous take (or discard), and starts the next interval. */
  take(onGrowth: (key: Buffer, packets: number, bytes: number) => void): {followed: number; missed: number} {
    for (const [id, g] of this.growth) onGrowth(Buffer.from(id, 'latin1'), g.packets, g.bytes)
    const counts = {followed: this.followed, missed: this.missed}
    this.discard()
    return counts
  }

  /** Forgets the growth and the swaps seen so far: what counted before now is not in any interval. */
  discard(): void {
    this.growth = new Map()
    this.followed = 0
    this.missed = 0
  }

  private read(held: HeldMap, between?: () => void): void {
    const keySize = held.map.info.keySize
    const next = new Map<string, Seen>()
    forEachFlow(
      held.map,
      (keys, at, {packets, bytes}) => {
        const id = keys.toString('latin1', at, at + keySize)
        const before = held.previous.get(id)
        next.set(id, {packets, bytes})
        const dp = packets - (before?.packets ?? 0)
        const db = bytes - (before?.bytes ?? 0)
        if (dp <= 0 && db <= 0) return
        const g = this.growth.get(id)
        if (g) {
          g.packets += dp
          g.bytes += db
        } else this.growth.set(id, {packets: dp, bytes: db})
      },
      {afterBatch: between},
    )
    held.previous = next
  }

  close(): void {
    this.current?.map.close()
    this.current = undefined
    for (const held of this.retired.splice(0)) held.map.close()
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
  private followers: {
    set: MeterSet
    names: Map<number, string>
    selector: FlowSelector
    history: SlotHistory
    maps: LiveMapFollower[]
    handshakes: HandshakeWatch
    drops: TopDrops
  }[] = []
  private lastAt = 0
  private readonly openedAt = performance.now()
  private timer: NodeJS.Timeout | undefined
  /** What went wrong while watching between samples, for the next sample to throw. */
  private failure: Error | undefined

  private constructor() {}

  static async open(paths: Paths, scope: FlowScope): Promise<TopSampler> {
    const sampler = new TopSampler()
    try {
      for (const {set, names, selector} of await resolveScope(paths, scope)) {
        set.verifyLayout()
        const history = new SlotHistory(set)
        const maps: LiveMapFollower[] = []
        const handshakes = new HandshakeWatch(set)
        sampler.followers.push({set, names, selector, history, maps, handshakes, drops: new TopDrops(set)})
        for (const f of FAMILIES) maps.push(new LiveMapFollower(set.openFamily(f), f, history))
      }
    } catch (error) {
      sampler.close()
      throw error
    }
    return sampler
  }

  /** Takes the first reading and starts watching the slots; rates come from the next `sample()`. */
  prime(): void {
    this.catchUp()
    for (const {maps} of this.followers) for (const m of maps) m.discard()
    this.lastAt = performance.now()
    if (!this.timer) this.schedule()
  }

  /** Rates since the previous sample, grouped, busiest first. */
  sample(by: TopGrouping, sortBy: 'bytes' | 'packets' = 'bytes', limit = Infinity): TopSample {
    this.catchUp()
    const started = this.lastAt
    this.lastAt = performance.now()
    const seconds = started ? (this.lastAt - started) / 1000 : 1
    const {groups, followed, missed} = this.collect(by)
    const rows = [...groups.values()].map((g) => ({...g, packetsPerSecond: g.packets / seconds, bytesPerSecond: g.bytes / seconds}))
    rows.sort((a, b) => (sortBy === 'bytes' ? b.bytes - a.bytes || b.packets - a.packets : b.packets - a.packets || b.bytes - a.bytes))
    return {intervalSeconds: seconds, swapsFollowed: followed, swapsMissed: missed, rows: rows.slice(0, limit)}
  }

  /** Follows every swap up to now and reads every map held, the live ones included. */
  private catchUp(): void {
    this.throwFailure()
    const between = () => this.watchQuietly()
    this.watchAll()
    this.lookAtHandshakes()
    for (const {maps} of this.followers) for (const m of maps) m.settle(between)
    for (const {maps} of this.followers) for (const m of maps) m.readLive(between)
    // A swap during the reads: the map swapped out is read to its end in this interval too.
    for (const {maps} of this.followers) for (const m of maps) m.settle(between)
    this.throwFailure()
  }

  /** Throws what went wrong while watching, if anything did (a read's `between` can note it). */
  private throwFailure(): void {
    if (this.failure) throw this.failure
  }

  private noteFailure(error: unknown): void {
    this.failure ??= error instanceof Error ? error : new Error(String(error))
  }

  /** Between samples: looks at every slot, and reads what was swapped out at once (a map held is kernel memory kept). */
  private tick(): void {
    if (this.failure !== undefined) return
    try {
      this.watchAll()
      this.lookAtHandshakes()
      const between = () => this.watchQuietly()
      for (const {maps} of this.followers) for (const m of maps) m.settle(between)
    } catch (error) {
      this.noteFailure(error)
      return
    }
    this.schedule()
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.tick(), this.watchMs())
    this.timer.unref()
  }

  /**
   * WATCH_MS for the slot that changes most often: its time between swaps, or the time since its
   * last swap when that is longer (a daemon that stopped draining, or none yet).
   */
  private watchMs(): number {
    const now = performance.now()
    let swapMs = Infinity
    for (const {maps} of this.followers) {
      for (const m of maps) swapMs = Math.min(swapMs, Math.max(m.swapGapMs ?? 0, now - (m.lastSwapAt ?? this.openedAt)))
    }
    return Math.min(WATCH_MS.max, Math.max(WATCH_MS.min, swapMs / WATCH_MS.perSwap))
  }

  private watchAll(): void {
    for (const {maps} of this.followers) for (const m of maps) m.watch()
  }

  /** The handshakes timed since the last look (at each look at the slots, not between read batches). */
  private lookAtHandshakes(): void {
    for (const {handshakes} of this.followers) handshakes.look()
  }

  /** Between the read batches of a long read: a failure waits for the sample (a read cut short would count its first batches twice). */
  private watchQuietly(): void {
    try {
      this.watchAll()
    } catch (error) {
      this.noteFailure(error)
    }
  }

  private collect(by: TopGrouping): {groups: Map<string, TopRow>; followed: number; missed: number} {
    const groups = new Map<string, TopRow>()
    const mostDropped = new Map<string, number>()
    let followed = 0
    let missed = 0
    for (const {set, names, selector, maps, handshakes, drops} of this.followers) {
      const netns = netnsLabel(set.netns)
      const dropped = drops.read()
      for (const m of maps) {
        const swaps = m.take((raw, counted, countedBytes) => {
          const key = decodeFlowKey(m.family, raw)
          if (!matchesSelector(selector, key)) return
          // A flow counted 1 packet in N stands for N times its count: rows sum estimates, whatever the rate of each flow in them.
          const packets = counted * key.samplingInterval
          const bytes = countedBytes * key.samplingInterval
          const label = groupLabel(by, key, names.get(key.ifindex) ?? `if${key.ifindex}`)
          const id = `${netns}\u0000${label}`
          let row = groups.get(id)
          if (row) {
            row.packets += packets
            row.bytes += bytes
            row.flows++
          } else {
            const rtt = by === 'flow' && key.proto === 6 ? handshakes.of(m.family, raw) : undefined
            const timed = rtt && {tcpRttClientMicroseconds: rtt.clientUs, tcpRttServerMicroseconds: rtt.serverUs}
            groups.set(id, (row = {label, netns, packetsPerSecond: 0, bytesPerSecond: 0, packets, bytes, flows: 1, ...timed}))
          }
          const d = dropped.size ? dropped.get(raw.toString('latin1')) : undefined
          if (d) {
            // The row's reason: that of its flow with the most drops.
            const n = d.packets * key.samplingInterval
            if (n > (mostDropped.get(id) ?? 0)) {
              row.dropReason = d.reason
              mostDropped.set(id, n)
            }
            row.droppedPackets = (row.droppedPackets ?? 0) + n
          }
        })
        followed += swaps.followed
        missed += swaps.missed
      }
    }
    return {groups, followed, missed}
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    for (const f of this.followers) {
      for (const m of f.maps) m.close()
      f.history.close()
      f.handshakes.close()
    }
    this.followers = []
  }
}
