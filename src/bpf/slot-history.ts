/**
 * For a reader beside the daemon (`flowctl top`): which drain put the map a flow map slot holds
 * now there. A reader that has seen the live map of drain a and then that of drain b knows that
 * the maps of drains a+1..b-1 came and went unseen, and can still open the one that a drain in
 * progress has taken out.
 *
 * A drain g (src/bpf/flow-store.ts) pins each family's live map as drain<F>_g, swaps a fresh one
 * into the slot, and commits later: drain_state.gen becomes g, then the pins of drain g go. So
 * while drain_state.gen reads G, the slot holds the map drain G put there, or, once drain G+1 has
 * taken that one out (its pin is there and is not the live map), the map drain G+1 put there.
 * A drain that fails before its commit uses up a number all the same (src/daemon/drain.ts): a
 * reader then sees a gap where no map was missed.
 */
import type {Family} from '../flow/record.js'
import {readDrainState} from './layout.js'
import {BpfMap} from './libbpf.js'
import type {FamilyMaps} from './family-maps.js'
import type {MeterSet} from './meter-set.js'

/** A live map by id, and the drain that put it in its slot (undefined: the daemon committed every time we looked). */
export interface LiveMapAt {
  id: number
  drain: number | undefined
}

/** Tries before giving up on telling which drain a live map comes from (each try fails only if a drain commits meanwhile). */
const TRIES = 4

export class SlotHistory {
  private readonly drainState: BpfMap

  constructor(private readonly set: MeterSet) {
    this.drainState = set.openMap('drain_state')
  }

  /** Drains committed so far. */
  committed(): number {
    return readDrainState(this.drainState).gen
  }

  /** The map `family`'s slot holds now, and the drain that put it there. */
  live(maps: FamilyMaps): LiveMapAt {
    let id = 0
    for (let i = 0; i < TRIES; i++) {
      const before = this.committed()
      id = maps.liveId()
      const taken = this.takenOutId(maps.family, before + 1)
      // A commit in between changes what the pin says: look again.
      if (this.committed() !== before) continue
      return {id, drain: taken !== undefined && taken !== id ? before + 1 : before}
    }
    return {id, drain: undefined}
  }

  /**
   * The map drain `gen` took out of `family`'s slot, opened, while that drain has not committed
   * (its pin is there until then); undefined once it is gone.
   */
  openTakenOut(family: Family, gen: number): BpfMap | undefined {
    return BpfMap.openIfPinned(this.set.drainMapPath(family, gen))
  }

  private takenOutId(family: Family, gen: number): number | undefined {
    const map = this.openTakenOut(family, gen)
    if (!map) return undefined
    const {id} = map.info
    map.close()
    return id
  }

  close(): void {
    this.drainState.close()
  }
}
