/**
 * Taking flows out of one meter set and deciding when each is exported.
 *
 * A drain takes each family's live flow map out whole (src/bpf/flow-store.ts: a fresh map goes
 * into the program's slot; the old one stays pinned until the drain commits), merges its entries
 * into the flow cache, exports the flows that ended, and commits: the cache goes back to the
 * kernel as a snapshot, and one update of drain_state makes it the current one. A daemon that
 * starts loads the snapshot and merges any drained map a cut-short drain left behind: a SIGKILL
 * at any moment can make a flow be sent twice, never lost.
 *
 * A meter set whose live maps hold no flow (live-maps.ts: the program's flow counters did not
 * move) is not swapped: its drain expires what the cache holds, if anything, and changes nothing
 * in the kernel unless a flow was exported. Then, and whenever a drain swaps, both families are
 * swapped under one drain number and committed: each drain number is a swap of both slots, as
 * the readers beside the daemon count on (slot-history.ts). The fresh maps are sized to the set's
 * recent traffic (live-maps.ts); the swap waits for the kernel in one of libuv's threads, so the
 * daemon can have the swaps of many sets in flight at once (startDrain, then finishDrain).
 *
 * When each flow held ends, and how the flows taken are merged into the cache: held-flows.ts.
 */
import {forEachFlow} from '../bpf/flow-map-reader.js'
import type {FlowStore as FlowStoreType} from '../bpf/flow-store.js'
import {takeHandshakes} from '../bpf/handshakes.js'
import {FlowStore} from '../bpf/flow-store.js'
import type {BpfMap} from '../bpf/libbpf.js'
import type {MeterSet} from '../bpf/meter-set.js'
import type {MeterStats} from '../bpf/meter-stats.js'
import type {HandshakeRtt} from '../flow/handshake-rtt.js'
import {FAMILIES, type Family} from '../flow/record.js'
import {monotonicNowNs} from '../sys/clock.js'
import {runningDropReasonNames} from '../bpf/btf.js'
import {dropSetInode, takeDrops} from '../bpf/drops.js'
import {DropTable, type DropTally} from './drop-table.js'
import {HeldFlows, type DrainPolicy, type ExportSink, type SeenBySlot} from './held-flows.js'
import {LiveMaps} from './live-maps.js'

export {addToTally, type DrainPolicy, type ExportSink, type InterfaceTally} from './held-flows.js'

export interface DrainReport {
  /** Entries read from the kernel's flow maps. */
  taken: number
  /** Flows exported, by flowEndReason. */
  exported: Record<number, number>
  /** Flows held for a later export. */
  pending: number
  ms: number
  /**
   * Where the time went: taking the live maps out (swapMs), reading and merging them, with the
   * exports of flows that ended before they were read (mergeMs), expiring and exporting the
   * cache (expireMs), writing the snapshot (commitMs).
   */
  phases: {swapMs: number; mergeMs: number; expireMs: number; commitMs: number}
  /**
   * What the meter counted since the previous drain, per interface and direction (key
   * `ifindex * 2 + direction`): the packets and IP bytes of the entries taken, before any
   * expiry, as estimates of the traffic (a flow counted 1 packet in N, times N). The metrics
   * compare it with the interfaces' own counters.
   */
  seen: SeenBySlot
  /** Entries taken from each family's flow maps: how full they got since the previous drain. */
  takenByFamily: Record<Family, number>
  /** Whether the live maps were swapped (false: they held no flow, and stayed in place). */
  swapped: boolean
  /** The sizes (max_entries) of the live maps in place after the drain. */
  liveEntries: Record<Family, number>
  /** The TCP connections whose handshake this drain found timed whole (each once). */
  handshakes?: HandshakeRtt[]
  /** Drops the drain took out of the kernel, per reason and interface (set with drops on only). */
  drops?: DropTally[]
  /** Drops let go without a flow: the meter never counted their packets (drop-table.ts). */
  unmeteredDrops?: DropTally[]
  /** Why the set's drops could not be taken out (its flows were drained all the same). */
  dropsError?: string
}

/** A drain under way (startDrain), for finishDrain. */
export interface DrainStart {
  started: number
  /** The program's counters, read before anything was taken out. */
  stats: MeterStats
  /** The kernel's number of this drain; undefined: the live maps held no flow and stay in place. */
  gen?: number
  /** The maps taken out, with the entries each is expected to hold (from the counters), when known. */
  taken: {family: Family; map: BpfMap; expected: number | undefined}[]
  /** A swap that failed: the maps taken out beside it are merged and committed, then this is thrown. */
  error?: unknown
  swapMs: number
}

export interface DrainerOptions {
  /** The daemon's drain interval, which the live maps' sizes are reckoned in (default 1 s). */
  intervalMs?: number
}

/** A live flow map the last drain of a set could not read: its flows are lost. */
interface UnreadMap {
  family: Family
  /** Entries it held, when they could still be counted. */
  entries?: number
  error: string
}

export interface FinalDrainReport extends DrainReport {
  unread: UnreadMap[]
}

export class MeterSetDrainer {
  readonly set: MeterSet
  readonly observationDomainId: number
  readonly netns: string
  private readonly store: FlowStoreType
  private readonly held: HeldFlows
  /** The kernel's number of the last drain that swapped (its maps are pinned under it until its commit). */
  private gen = 0
  /**
   * Drains so far, those that left the maps in place included: each cache entry carries the one
   * that last merged packets into it (`cache.gen`), so that one without packets in the latest
   * drain is known (a flow that saw FIN ends then).
   */
  private round = 0
  private readonly live: LiveMaps
  /** The set's handshake map, held with its other maps. */
  private readonly handshakeMap: BpfMap
  /** A handshake this much older than the drain that reads it is given up (drains that saw no end of it). */
  private readonly handshakeStaleNs: number
  /** The drops of the set's flows, from the first drain that finds the set's drops on. */
  private dropTable?: DropTable

  private constructor(set: MeterSet, netns: string, domain: number, store: FlowStoreType, options: DrainerOptions) {
    this.set = set
    this.netns = netns
    this.observationDomainId = domain
    this.store = store
    this.held = new HeldFlows(store.newCaches(), netns, domain)
    this.gen = store.gen
    this.round = store.gen
    const sizes = {} as Record<Family, number>
    for (const family of FAMILIES) {
      const live = store.families[family].openLive()
      sizes[family] = live.info.maxEntries
      live.close()
    }
    this.live = new LiveMaps(store.capacity, sizes, options.intervalMs ?? 1000)
    this.handshakeMap = store.openMap('handshakes')
    this.handshakeStaleNs = Math.max(10_000, 5 * (options.intervalMs ?? 1000)) * 1e6
    // Opens meter_stats now, held with the set's other maps: the maps a daemon holds for a set
    // stay the same from when it finds the set until it lets it go.
    store.readStats()
  }

  /** Opens the meter set's maps, loads the flows held for it, and finishes a drain a crash cut short. */
  static open(set: MeterSet, netns: string, observationDomainId: number, sink: ExportSink, options: DrainerOptions = {}): MeterSetDrainer {
    const store = FlowStore.open(set)
    try {
      const drainer = new MeterSetDrainer(set, netns, observationDomainId, store, options)
      drainer.recover(sink)
      return drainer
    } catch (error) {
      store.close()
      throw error
    }
  }

  /** Which meter set this drainer opened (MeterSet.identity() of the set it found pinned). */
  get identity(): number {
    return this.store.identity
  }

  /** Flows each flow map of the set this drainer holds can take. */
  get capacity(): number {
    return this.store.capacity
  }

  /** One of the set's maps, from the directory this drainer holds. */
  openMap(name: string): BpfMap {
    return this.store.openMap(name)
  }

  /** Flows held in the cache now. */
  get pending(): number {
    return this.held.size
  }

  /** The sizes (max_entries) of the live maps in place now. */
  get liveEntries(): Record<Family, number> {
    return {4: this.live.liveEntries(4), 6: this.live.liveEntries(6)}
  }

  /**
   * Whether a live map is past half its size since its swap (one read of the program's counters,
   * about 1.5 µs) and a larger one could take more: the daemon drains the set early, before the
   * map overflows.
   */
  filling(): boolean {
    return this.live.canGrow() && this.live.filling(this.store.readStats().flowsCreated)
  }

  close(): void {
    this.handshakeMap.close()
    this.store.close()
  }

  /**
   * Pairs the handshakes the meter timed since the last drain into round trips, which the flows of
   * those connections carry from now on (HeldFlows.rtts). Called after the live maps were taken
   * out and before they are merged: a handshake of a flow taken out is in the map by then.
   */
  private timeHandshakes(): HandshakeRtt[] {
    const nowNs = Number(monotonicNowNs())
    let rtts: HandshakeRtt[]
    try {
      rtts = takeHandshakes(this.handshakeMap, nowNs, this.handshakeStaleNs)
    } catch {
      // The round trips are an extra: a map that cannot be read (or written) costs them, never the flows.
      return []
    }
    for (const rtt of rtts) this.held.rtts.add(rtt, nowNs)
    return rtts
  }

  private recover(sink: ExportSink): void {
    this.store.loadSnapshot(this.held.caches)
    this.store.removeStrayChunks()
    const leftovers = this.store.leftovers()
    if (leftovers.length === 0) return
    this.held.begin({idleTimeoutNs: Infinity, activeTimeoutNs: Infinity})
    try {
      for (const l of leftovers) {
        this.gen = Math.max(this.gen, l.gen)
        this.round = this.gen
        forEachFlow(...this.held.merger(l.family, l.map, this.round, false, sink))
      }
      this.held.flushBatches(sink)
      this.store.commit(this.gen, this.held.caches)
    } finally {
      for (const l of leftovers) l.map.close()
    }
  }

  /**
   * One drain of this meter set. With `force` (shutdown, detach), every flow is exported now,
   * the flows held in the cache included.
   */
  async drain(policy: DrainPolicy, sink: ExportSink, force = false): Promise<DrainReport> {
    return this.finishDrain(await this.startDrain(), policy, sink, force)
  }

  /**
   * A drain's first step: reads the program's counters and, if the live maps may hold flows (or
   * one is far larger than the set's traffic now calls for), takes both out, fresh maps sized to
   * that traffic going in their slots. The kernel's wait for running programs is spent in one of
   * libuv's threads: many sets' first steps can be in flight at once. Call finishDrain next.
   */
  async startDrain(): Promise<DrainStart> {
    const started = performance.now()
    const stats = this.store.readStats()
    if (!this.live.mayHoldFlows(stats.flowsCreated) && !this.live.oversized()) {
      this.live.idle()
      return {started, stats, taken: [], swapMs: 0}
    }
    return this.takeOut(started, stats)
  }

  /** Swaps both families' live maps out under the next drain number. */
  private async takeOut(started: number, stats: MeterStats): Promise<DrainStart> {
    const gen = ++this.gen
    const fresh = this.live.freshEntries(stats.flowsCreated, stats.packetsOverflowed)
    const expected = (family: Family) => this.live.expected(family, stats.flowsCreated)
    const outcomes = await Promise.allSettled(FAMILIES.map((family) => this.store.swapOutAsync(family, gen, fresh[family])))
    const taken: DrainStart['taken'] = []
    let error: unknown
    outcomes.forEach((o, i) => {
      const family = FAMILIES[i]
      if (o.status === 'fulfilled') taken.push({family, map: o.value, expected: expected(family)})
      else error ??= o.reason
    })
    this.live.swapped(
      stats.flowsCreated,
      stats.packetsOverflowed,
      fresh,
      taken.map((t) => t.family),
    )
    return {started, stats, gen, taken, error, swapMs: performance.now() - started}
  }

  /**
   * A drain's second step: merges what startDrain took out into the cache, exports what ended,
   * and commits. A drain that took nothing out and exported something swaps the (empty) live
   * maps out before its commit all the same, so that every drain number swaps both slots.
   */
  async finishDrain(start: DrainStart, policy: DrainPolicy, sink: ExportSink, force = false): Promise<DrainReport> {
    this.held.begin(policy)
    this.round++
    let taken = 0
    const takenByFamily: Record<Family, number> = {4: 0, 6: 0}
    const phases = {swapMs: start.swapMs, mergeMs: 0, expireMs: 0, commitMs: 0}
    let t = performance.now()
    const lap = (phase: keyof typeof phases) => {
      const now = performance.now()
      phases[phase] += now - t
      t = now
    }
    const merge = async (maps: DrainStart['taken']) => {
      for (const {family, map, expected} of maps) {
        const n = await this.held.merge(family, map, this.round, force, sink, expected)
        takenByFamily[family] += n
        taken += n
      }
      this.held.flushBatches(sink)
      lap('mergeMs')
    }
    let swap = start
    // A drain that left the live maps in place (no flow was created since the last swap: no
    // packet was counted, so none timed a handshake) has nothing new to read there.
    const handshakes = start.gen === undefined ? [] : this.timeHandshakes()
    let drops: DropTally[] | undefined
    let unmeteredDrops: DropTally[] | undefined
    let dropsError: string | undefined
    try {
      // Before the flows are merged, for a forced drain exports each flow as it reads it. The
      // flow maps were swapped before (startDrain), and a packet is metered before it is dropped:
      // a drop taken here has its packet in the flows taken, held, or (metered after the swap)
      // in the next drain's. A failure here never keeps the flows from being drained.
      drops = await this.takeDrops().catch((error: unknown) => {
        dropsError = (error as Error).message
        return undefined
      })
      await merge(start.taken)
      if (this.held.size > 0 || this.dropTable?.size) {
        this.held.expireAll(force, this.round, sink)
        lap('expireMs')
      }
      if (start.gen === undefined && Object.keys(this.held.exported).length > 0) {
        // The snapshot must lose what was exported: a commit, under a drain number of its own.
        swap = await this.takeOut(performance.now(), this.store.readStats())
        phases.swapMs += swap.swapMs
        t = performance.now()
        // This swap took packets metered after the drops above were taken: their drops (counted
        // as they were metered, or after) are taken now, before these flows are merged.
        const more = await this.takeDrops().catch((error: unknown) => {
          dropsError ??= (error as Error).message
          return undefined
        })
        if (more) drops = [...(drops ?? []), ...more]
        await merge(swap.taken)
      }
      if (swap.gen !== undefined) {
        this.store.commit(swap.gen, this.held.caches)
        lap('commitMs')
      }
      if (this.dropTable?.size) unmeteredDrops = this.dropTable.sweep(this.round, (family, key) => this.held.holds(family, key))
    } finally {
      for (const {map} of [...start.taken, ...(swap === start ? [] : swap.taken)]) map.close()
      this.held.release()
    }
    if (start.error !== undefined || swap.error !== undefined) throw start.error ?? swap.error
    return {
      taken,
      exported: this.held.exported,
      pending: this.pending,
      ms: performance.now() - start.started,
      phases,
      seen: this.held.seen,
      takenByFamily,
      swapped: swap.gen !== undefined,
      liveEntries: this.liveEntries,
      handshakes,
      ...(drops?.length ? {drops} : {}),
      ...(unmeteredDrops?.length ? {unmeteredDrops} : {}),
      ...(dropsError ? {dropsError} : {}),
    }
  }

  /**
   * Takes the namespace's drops out of the kernel into the drop table, when the set has drops on
   * (its marker is read at every drain: `meter attach --drops` may turn them on while the daemon
   * runs). Drops of flows held when the daemon is killed are lost with it: the snapshot keeps
   * the flows, not their drops (docs/drop-reasons.md).
   */
  private async takeDrops(): Promise<DropTally[] | undefined> {
    const inode = dropSetInode(this.store)
    if (inode === undefined) return undefined
    const entries = await takeDrops(this.set.root, inode)
    this.dropTable ??= new DropTable(runningDropReasonNames())
    this.held.drops = this.dropTable
    return entries.length ? this.dropTable.add(entries, this.round) : undefined
  }

  /**
   * The last drain of a meter set whose pins are gone (detached, replaced by another set at its
   * path, bpffs remounted). The maps live on while this drainer holds them: each live map is
   * taken out without a pin (there is no directory left for one) and read, and every flow, read
   * or held in the cache, is exported now (forced end, unless it ended otherwise). Nothing is
   * committed: there are no pins left to commit into. A live map that cannot be taken out is
   * read in place; one that cannot be read at all is named in `unread`. Close the drainer after.
   */
  finalDrain(policy: DrainPolicy, sink: ExportSink): FinalDrainReport {
    const started = performance.now()
    this.held.begin(policy)
    this.round++
    let taken = 0
    const takenByFamily: Record<Family, number> = {4: 0, 6: 0}
    const unread: UnreadMap[] = []
    const phases = {swapMs: 0, mergeMs: 0, expireMs: 0, commitMs: 0}
    let t = started
    let handshakes: HandshakeRtt[] = []
    const lap = (phase: keyof typeof phases) => {
      const now = performance.now()
      phases[phase] += now - t
      t = now
    }
    try {
      for (const family of FAMILIES) {
        let map: BpfMap | undefined
        try {
          try {
            map = this.store.swapOut(family)
          } catch {
            // (No memory for a fresh map, say.) The programs of a detached set are gone: the
            // live map is not written any more, and can be read where it is.
            map = this.store.families[family].openLive()
          }
          lap('swapMs')
          if (family === FAMILIES[0]) handshakes = this.timeHandshakes()
          const n = forEachFlow(...this.held.merger(family, map, this.round, true, sink))
          takenByFamily[family] = n
          taken += n
          lap('mergeMs')
        } catch (error) {
          unread.push({family, error: (error as Error).message, entries: countQuietly(map)})
        } finally {
          map?.close()
        }
      }
      this.held.flushBatches(sink)
      this.held.expireAll(true, this.round, sink)
      lap('expireMs')
    } finally {
      this.held.release()
    }
    return {
      taken,
      exported: this.held.exported,
      pending: this.pending,
      ms: performance.now() - started,
      phases,
      seen: this.held.seen,
      takenByFamily,
      swapped: true,
      liveEntries: this.liveEntries,
      handshakes,
      unread,
    }
  }
}

/** Entries in `map`, or undefined when it cannot be read (or was not opened). */
function countQuietly(map: BpfMap | undefined): number | undefined {
  try {
    return map?.count()
  } catch {
    return undefined
  }
}
