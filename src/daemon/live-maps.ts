/**
 * What the daemon knows of the live flow maps of one meter set, from the program's flow counters
 * (meter_stats.flows<F>_created, src/bpf/meter-stats.ts) and from what its drains took out:
 *
 *  - whether they hold flows at all. The counter of a family grows only when a flow is inserted
 *    into that family's live map. Read BEFORE a swap, its sum says how many inserts are visible by
 *    then; every insert into the map that swap put in place happens after it, and is counted after
 *    the insert. So at the next drain, a sum equal to the one read before the previous swap means
 *    that map holds no flow whose count is visible: the drain needs no swap and no fresh map. An
 *    insert whose count is not visible yet (the program is between the insert and its count) stays
 *    in the map, which the drain left in place: its count shows at the next read, and that drain
 *    takes it out. Nothing is missed; an idle meter set costs one counter read per drain.
 *  - how big the fresh maps should be: a power of two at least HEADROOM times the largest demand
 *    of the last HISTORY drains (the entries a drain took, scaled to a whole drain interval: an
 *    early drain took what came in a part of one), within [FLOOR_ENTRIES, capacity]. A map that
 *    overflowed (meter_stats.packets_overflowed grew) was too small by an unknown amount: its
 *    demand counts as twice its size. The kernel's bucket array is 16 bytes per slot of a map's
 *    size, whether or not flows come: a set sized to its traffic costs memory in proportion to it.
 *  - whether a live map is filling up between drains: past FILL_MARK of its size (by the counter's
 *    growth since its swap, an upper bound on what it holds), the daemon drains the set early,
 *    into a map sized for the rate it saw, before the small map overflows.
 */
import {FAMILIES, type Family} from '../flow/record.js'

/** The smallest fresh map (and the one an idle set keeps): 4096 slots, 64 KiB of buckets. */
export const FLOOR_ENTRIES = 4096
/** Fresh maps hold at least this many times the demand (a power of two above it: 2 to 4 times). */
const HEADROOM = 2
/** Drains whose demand sizes the next fresh map (at 1 s drains, the last ten seconds). */
export const HISTORY = 10
/** Share of a live map's size past which the set is drained early. */
export const FILL_MARK = 0.5
/** A live map this many times larger than wanted is replaced by a smaller one even when idle. */
const SHRINK_RATIO = 4

interface FamilyState {
  /** The counter as read before the last swap; undefined before this daemon's first swap of the set. */
  createdAtSwap: number | undefined
  /** Size (max_entries) of the map in the slot now. */
  liveEntries: number
  /** When the last swap happened (performance.now(), ms). */
  swappedAtMs: number
  /** Demand of the last drains, newest last (entries per drain interval). */
  demand: number[]
}

export class LiveMaps {
  private readonly families: Record<Family, FamilyState>
  /** meter_stats.packets_overflowed as read before the last swap. */
  private overflowedAtSwap: number | undefined

  /**
   * `capacity`: the set's, the largest map; `liveEntries`: the sizes of the maps in the slots
   * when the daemon opened the set.
   */
  constructor(
    readonly capacity: number,
    liveEntries: Record<Family, number>,
    private readonly intervalMs: number,
  ) {
    const state = (family: Family): FamilyState => ({createdAtSwap: undefined, liveEntries: liveEntries[family], swappedAtMs: performance.now(), demand: []})
    this.families = {4: state(4), 6: state(6)}
  }

  /** The smallest map this set is given: FLOOR_ENTRIES, or its capacity if that is less. */
  get floor(): number {
    return Math.min(FLOOR_ENTRIES, this.capacity)
  }

  /** Size of the map in `family`'s slot now. */
  liveEntries(family: Family): number {
    return this.families[family].liveEntries
  }

  /**
   * Whether a drain that read `created` (per family, before any swap) may find flows in the live
   * maps: a counter moved since the read before the last swap, or the set was never swapped by
   * this daemon. False: both maps are empty (see the module's comment).
   */
  mayHoldFlows(created: Record<Family, number>): boolean {
    return FAMILIES.some((f) => this.families[f].createdAtSwap !== created[f])
  }

  /** Whether a live map is much larger than its demand now calls for (after a burst): it is worth a swap to give the memory back. */
  oversized(): boolean {
    return FAMILIES.some((f) => this.families[f].liveEntries >= SHRINK_RATIO * this.wanted(f, 0))
  }

  /**
   * Whether a live map is past FILL_MARK of its size by `created` (read between drains), and a
   * larger one could take more: the set is worth an early drain.
   */
  filling(created: Record<Family, number>): boolean {
    return FAMILIES.some((f) => {
      const s = this.families[f]
      if (s.createdAtSwap === undefined || s.liveEntries >= this.capacity) return false
      return created[f] - s.createdAtSwap >= FILL_MARK * s.liveEntries
    })
  }

  /** Whether a live map is smaller than the capacity (a larger one could take more). */
  canGrow(): boolean {
    return FAMILIES.some((f) => this.families[f].liveEntries < this.capacity)
  }

  /** A drain that left the maps in place (they held no flow): no demand in this interval. */
  idle(): void {
    for (const s of Object.values(this.families)) pushDemand(s, 0)
  }

  /**
   * The sizes of the fresh maps for a swap now, from the counters read before it (`created` per
   * family, and meter_stats.packets_overflowed).
   */
  freshEntries(created: Record<Family, number>, overflowed: number): Record<Family, number> {
    const now = performance.now()
    const out = {} as Record<Family, number>
    for (const family of FAMILIES) out[family] = this.wanted(family, this.demandNow(family, created, overflowed, now))
    return out
  }

  /**
   * The entries the live map of `family` holds at most by `created`: the flows inserted since its
   * swap (undefined before this daemon's first swap of the set).
   */
  expected(family: Family, created: Record<Family, number>): number | undefined {
    const at = this.families[family].createdAtSwap
    return at === undefined ? undefined : created[family] - at
  }

  /**
   * Records a swap of `families` (those whose swap went through): the counters read before it, and
   * the sizes of the fresh maps put in place.
   */
  swapped(created: Record<Family, number>, overflowed: number, fresh: Record<Family, number>, families: readonly Family[] = FAMILIES): void {
    const now = performance.now()
    for (const family of families) {
      const s = this.families[family]
      pushDemand(s, this.demandNow(family, created, overflowed, now))
      s.createdAtSwap = created[family]
      s.liveEntries = fresh[family]
      s.swappedAtMs = now
    }
    this.overflowedAtSwap = overflowed
  }

  /**
   * The demand the live map of `family` shows now: the flows inserted since its swap (the
   * counter's growth), scaled to a whole interval (an early drain sees part of one; 1 ms at the
   * least, so that the scale stays finite). A map that filled while packets overflowed counts as
   * twice its size. Before this daemon's first swap of the set the growth is unknown (the map may
   * hold what came while no daemon ran): the map in place is kept at its size.
   */
  private demandNow(family: Family, created: Record<Family, number>, overflowed: number, now: number): number {
    const s = this.families[family]
    if (s.createdAtSwap === undefined) return s.liveEntries / HEADROOM
    const scale = this.intervalMs / Math.max(1, Math.min(this.intervalMs, now - s.swappedAtMs))
    const growth = created[family] - s.createdAtSwap
    const overflowing = this.overflowedAtSwap !== undefined && overflowed > this.overflowedAtSwap && growth >= s.liveEntries
    return (overflowing ? 2 * s.liveEntries : growth) * scale
  }

  /** The size a fresh map of `family` should have for a demand of `now` beside the last drains'. */
  private wanted(family: Family, now: number): number {
    const demand = Math.max(now, ...this.families[family].demand)
    let entries = this.floor
    while (entries < HEADROOM * demand && entries < this.capacity) entries *= 2
    return Math.min(entries, this.capacity)
  }
}

function pushDemand(s: FamilyState, demand: number): void {
  s.demand.push(demand)
  if (s.demand.length > HISTORY) s.demand.shift()
}
