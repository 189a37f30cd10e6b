/**
 * The flow maps of one address family of a meter set, and taking the live one out: the one
 * operation that hands a drain a map no program writes any more.
 */
import {join} from 'node:path'

import {StateError} from '../errors.js'
import type {Family} from '../flow/record.js'
import {BpfMap, innerMapId, setInnerMap, setInnerMapAsync} from './libbpf.js'

/**
 * The flow maps of one address family: `flows<F>`, a one-slot ARRAY_OF_MAPS holding the hash the
 * program writes now (the live map, known by id, never pinned).
 */
export class FamilyMaps {
  readonly family: Family
  readonly outer: BpfMap
  /** The set's capacity: the most flows a live map may be made for, and the size of a fresh one unless asked. */
  readonly capacity: number
  /** The meter set's directory, which messages name. */
  private readonly setDir: string

  private constructor(setDir: string, family: Family, outer: BpfMap, capacity: number) {
    this.setDir = setDir
    this.family = family
    this.outer = outer
    this.capacity = capacity
  }

  /**
   * `setDir`: the meter set's directory; `from`: where its pins are opened (the set's path, or a
   * directory held open); `capacity`: the set's (meta).
   */
  static open(setDir: string, family: Family, from: {openMap(name: string): BpfMap}, capacity: number): FamilyMaps {
    return new FamilyMaps(setDir, family, from.openMap(`flows${family}`), capacity)
  }

  liveId(): number {
    const id = innerMapId(this.outer)
    if (!id) throw new StateError(`the flow map slot of ${join(this.setDir, 'maps', `flows${this.family}`)} is empty: remove ${this.setDir} and attach again`)
    return id
  }

  /** The map the program writes now. */
  openLive(): BpfMap {
    return BpfMap.openById(this.liveId(), `the live IPv${this.family} flow map of ${this.setDir}`)
  }

  /**
   * Puts a fresh, empty map for `entries` flows in the slot and returns the one the program wrote
   * until now, which no program writes any more once this returns (the kernel waits for running
   * programs before the update returns). With `pinAs`, the old map is pinned there first, so that
   * a crash at any moment leaves it reachable.
   *
   * `entries` is the fresh map's max_entries, from 1 to the set's capacity (the default): the
   * kernel takes a hash of any size in the slot (the outer map's template fixes type, key and
   * value, not the size), and the program treats a small full map as a big one: a packet of a new
   * flow that does not fit is counted in `overflow` (and meter_stats.packets_overflowed), never
   * lost. The capacity stays the ceiling: the daemon's cache and snapshot are sized for it.
   */
  swapOut(pinAs?: string, entries: number = this.capacity): BpfMap {
    const {live, fresh} = this.freshAndLive(pinAs, entries)
    try {
      setInnerMap(this.outer, fresh)
      return live
    } catch (error) {
      live.close()
      throw error
    } finally {
      fresh.close() // the slot holds it now
    }
  }

  /**
   * swapOut() with the kernel's wait for running programs (a grace period, 8-20 ms here) spent in
   * one of libuv's threads: the event loop goes on meanwhile, and the swaps of many meter sets in
   * flight at once wait for about one grace period in all (setInnerMapAsync).
   */
  async swapOutAsync(pinAs?: string, entries: number = this.capacity): Promise<BpfMap> {
    const {live, fresh} = this.freshAndLive(pinAs, entries)
    try {
      await setInnerMapAsync(this.outer, fresh)
      return live
    } catch (error) {
      live.close()
      throw error
    } finally {
      fresh.close()
    }
  }

  /** The live map (pinned at `pinAs` first) and a fresh, empty one of `entries` flows to put in its slot. */
  private freshAndLive(pinAs: string | undefined, entries: number): {live: BpfMap; fresh: BpfMap} {
    if (!Number.isInteger(entries) || entries < 1 || entries > this.capacity) {
      throw new RangeError(`a fresh flow map of ${this.setDir} holds from 1 to ${this.capacity} flows (its capacity), not ${entries}`)
    }
    const live = this.openLive()
    try {
      const fresh = BpfMap.create(live.info.type, live.info.name, live.info.keySize, live.info.valueSize, entries, live.info.flags)
      try {
        if (pinAs) live.pin(pinAs)
      } catch (error) {
        fresh.close()
        throw error
      }
      return {live, fresh}
    } catch (error) {
      live.close()
      throw error
    }
  }

  close(): void {
    this.outer.close()
  }
}
