/**
 * Where a meter set's flows are between the program and the collectors, and how taking them out
 * stays safe when the daemon is killed at any moment.
 *
 *  - The live flow map of each family (written by the program) is taken out whole: a fresh map
 *    goes into its slot, and the old one, pinned first as drain<F>_<gen>, is read at leisure and
 *    then dropped whole (no entry is ever deleted from a map a program may write).
 *  - What the daemon holds and has not exported (its flow cache) is written back to the kernel
 *    after every drain as a snapshot: the `pending` map, in chunks, in one of two slots.
 *  - drain_state says which slot holds the snapshot of which drain; one update of it commits a
 *    drain. Only after that are the drained maps unpinned and the previous slot emptied.
 *
 * A daemon that starts (or `flush`) loads the committed snapshot and merges every drained map of
 * a later drain that is still pinned: each count is in the kernel at least once at every instant.
 * A flow exported by a drain that was cut short before its commit goes out again (at least once,
 * never lost).
 *
 * A store holds its set's map directory open (HeldMapDir) and makes, lists and removes pins only
 * through it: once `meter detach` has removed the set, nothing it does lands in another set
 * attached at the same path since. Its maps live on while it holds them, so the daemon can still
 * take their last flows out (swapOut without a pin) and export them.
 * One process writes a meter set at a time: a writer holds the set's lock (claimMeterSet, an flock
 * on its directory) from open to close. A reader takes no lock; it reads the snapshot as of one
 * commit (readSnapshotCopy) and tries again when a drain committed meanwhile.
 */
import {unlinkSync} from 'node:fs'

import type {HeldLock} from '../sys/flock.js'
import {FAMILIES, type Family} from '../flow/record.js'
import {FlowCache} from '../flow/flow-cache.js'
import {forEachFlow} from './flow-map-reader.js'
import {emptySample, flowRecordLayout, readDrainState, readFlowSample, readMeterMeta, writeDrainState, type DrainState} from './layout.js'
import {BpfMap} from './libbpf.js'
import {FamilyMaps} from './family-maps.js'
import {HeldMapDir, type MeterSet} from './meter-set.js'
import {MeterStatsReader, type MeterStats} from './meter-stats.js'
import {PendingSnapshot, type SnapshotRecordVisitor} from './pending-snapshot.js'
import {claimMeterSet} from './state.js'

export type FamilyCaches = Record<Family, FlowCache>

/** A drained map left pinned by a drain that did not commit: to merge, then unpin at the next commit. */
export interface Leftover {
  family: Family
  gen: number
  map: BpfMap
}

export class FlowStore {
  readonly set: MeterSet
  readonly families: Record<Family, FamilyMaps>
  /** Flows each flow map of this set holds. */
  readonly capacity: number
  private readonly dir: HeldMapDir
  /** The pending map, which holds the snapshot. */
  private readonly snapshot: PendingSnapshot
  private readonly drainStateMap: BpfMap
  private state: DrainState
  /** The set's lock, for a writer; a reader has none. */
  private readonly lock: HeldLock | undefined
  /** Whether close() lets the lock go (it was taken by open(), not handed to it). */
  private readonly ownsLock: boolean
  private statsMap?: BpfMap
  private statsReader?: MeterStatsReader

  private constructor(
    dir: HeldMapDir,
    families: Record<Family, FamilyMaps>,
    pending: BpfMap,
    drainState: BpfMap,
    capacity: number,
    lock: HeldLock | undefined,
    ownsLock: boolean,
  ) {
    this.set = dir.set
    this.dir = dir
    this.families = families
    this.capacity = capacity
    this.snapshot = new PendingSnapshot(pending, dir.set.mapPath('pending'))
    this.drainStateMap = drainState
    this.state = readDrainState(drainState)
    this.lock = lock
    this.ownsLock = ownsLock
  }

  /**
   * Opens a meter set's maps to write them (after checking their layout), holding the set's lock
   * until close(): refused, naming the holder, while another process writes the set. `lock`, a
   * lock on the set already held by the caller, is used instead (and stays the caller's).
   */
  static open(set: MeterSet, options: {lock?: HeldLock} = {}): FlowStore {
    const lock = options.lock ?? claimMeterSet(set)
    try {
      return FlowStore.openMaps(set, lock, !options.lock)
    } catch (error) {
      if (!options.lock) lock.release()
      throw error
    }
  }

  /** Opens a meter set's maps to read them beside their writer (a daemon): no lock, and no write. */
  static openReader(set: MeterSet): FlowStore {
    return FlowStore.openMaps(set, undefined, false)
  }

  /** Opens a meter set's maps (after checking their layout), all from the one directory it holds. */
  private static openMaps(set: MeterSet, lock: HeldLock | undefined, ownsLock: boolean): FlowStore {
    set.verifyLayout()
    const dir = HeldMapDir.open(set)
    const opened: {close(): void}[] = [dir]
    try {
      const meta = dir.openMap('meta')
      let capacity: number
      try {
        capacity = readMeterMeta(meta).capacity
      } finally {
        meta.close()
      }
      const f4 = FamilyMaps.open(set.dir, 4, dir, capacity)
      opened.push(f4)
      const f6 = FamilyMaps.open(set.dir, 6, dir, capacity)
      opened.push(f6)
      const pending = dir.openMap('pending')
      opened.push(pending)
      const drainState = dir.openMap('drain_state')
      opened.push(drainState)
      return new FlowStore(dir, {4: f4, 6: f6}, pending, drainState, capacity, lock, ownsLock)
    } catch (error) {
      for (const m of opened) m.close()
      throw error
    }
  }

  /** The meter set this store opened, as MeterSet.identity() names it. */
  get identity(): number {
    return this.drainStateMap.info.id
  }

  /** One of this set's maps, from the directory the store holds (never from another set at its path). */
  openMap(name: string): BpfMap {
    return this.dir.openMap(name)
  }

  /** A guard on every write: only the holder of the set's lock writes. */
  private writable(): void {
    if (!this.lock) throw new Error(`the meter set at ${this.set.dir} was opened to read: it cannot be written`)
  }

  /** Drains committed so far. */
  get gen(): number {
    return this.state.gen
  }

  /** Empty caches sized for this meter set: the daemon holds up to twice a flow map's capacity. */
  newCaches(): FamilyCaches {
    const max = 2 * this.capacity
    const cache = (family: Family) => new FlowCache(flowRecordLayout(family, this.snapshot.chunkBytes), max)
    return {4: cache(4), 6: cache(6)}
  }

  /**
   * Loads the committed snapshot into `caches` (entries merge into what is there), stamping each
   * entry with the snapshot's drain. Returns the flows loaded.
   */
  loadSnapshot(caches: FamilyCaches): number {
    const sample = emptySample()
    const gen = this.state.gen
    let loaded = 0
    this.snapshot.forEachRecord(this.state, (family, buf, keyAt, valueAt) => {
      // Never full: the snapshot came from a cache of this size.
      const idx = caches[family].add(buf, keyAt, readFlowSample(buf, valueAt, sample))
      if (idx < 0) return
      caches[family].gen[idx] = gen
      loaded++
    })
    return loaded
  }

  /** drain_state as it is now (a reader's view of the last commit; a writer knows its own). */
  readCommitted(): DrainState {
    return readDrainState(this.drainStateMap)
  }

  /**
   * A copy of the snapshot that `state` says is committed, its chunks end to end, for a reader
   * beside a writer: undefined when a chunk is gone already (a later commit emptied its slot).
   * A later commit can also write the slot again, so the copy holds that commit's snapshot only if
   * drain_state still says `state` once it is taken: the caller checks that, and tries again.
   */
  readSnapshotCopy(state: DrainState): Buffer | undefined {
    return this.snapshot.copy(state)
  }

  /** Calls `onRecord` with each record of a snapshot copy (readSnapshotCopy). */
  forEachCopiedRecord(copy: Buffer, onRecord: SnapshotRecordVisitor): void {
    this.snapshot.forEachCopiedRecord(copy, onRecord)
  }

  /**
   * Drained maps a drain left pinned without committing, opened, to merge now. Those its commit
   * covers are unpinned; one that is still live (a crash between its pin and the swap) is only
   * unpinned.
   */
  leftovers(): Leftover[] {
    this.writable()
    const out: Leftover[] = []
    for (const d of this.dir.drainMaps()) {
      if (d.gen <= this.state.gen) {
        unlinkQuietly(d.path)
        continue
      }
      const map = BpfMap.open(d.path)
      if (map.info.id === this.families[d.family].liveId()) {
        map.close()
        unlinkQuietly(d.path)
        continue
      }
      out.push({family: d.family, gen: d.gen, map})
    }
    return out
  }

  /**
   * Takes the live flow map of `family` out (pinned as drained by drain `gen`) and returns it.
   * Without `gen`, it is not pinned: the last drain of a set whose pins are gone, which has no
   * directory to pin it in and commits nothing. The fresh map holds `entries` flows, from 1 to
   * the capacity (the default): see FamilyMaps.swapOut.
   */
  swapOut(family: Family, gen?: number, entries?: number): BpfMap {
    this.writable()
    return this.families[family].swapOut(gen === undefined ? undefined : this.dir.drainMapPath(family, gen), entries)
  }

  /** swapOut() of drain `gen`, the kernel's wait spent in one of libuv's threads (FamilyMaps.swapOutAsync). */
  swapOutAsync(family: Family, gen: number, entries?: number): Promise<BpfMap> {
    this.writable()
    return this.families[family].swapOutAsync(this.dir.drainMapPath(family, gen), entries)
  }

  /** The program's counters (meter_stats) now, through the map this store holds open from its first read. */
  readStats(): MeterStats {
    if (!this.statsReader) {
      this.statsMap = this.dir.openMap('meter_stats')
      this.statsReader = new MeterStatsReader(this.statsMap)
    }
    return this.statsReader.read()
  }

  /**
   * Commits drain `gen`: writes what the caches hold as the snapshot in the other slot, then
   * drain_state (the commit), then empties the previous slot and unpins the drained maps.
   */
  commit(gen: number, caches: FamilyCaches): void {
    this.writable()
    const previous = this.state
    const slot = previous.slot ^ 1
    const chunks = this.snapshot.write(slot, caches)
    const next: DrainState = {gen, slot, chunks, flows4: caches[4].size, flows6: caches[6].size}
    writeDrainState(this.drainStateMap, next)
    this.state = next
    this.snapshot.delete(previous.slot, previous.chunks)
    for (const d of this.dir.drainMaps()) if (d.gen <= gen) unlinkQuietly(d.path)
  }

  /**
   * Deletes flows (with no daemon running): those `matches` selects, or every flow when it is
   * null. Everything the meter set holds (snapshot, drained maps, the live maps, which are
   * swapped out first) is merged, the chosen flows dropped, and the rest committed as the new
   * snapshot. Returns the flows deleted.
   */
  flush(matches: ((family: Family, keys: Uint8Array, keyAt: number) => boolean) | null): number {
    this.writable()
    const gen = this.state.gen + 1
    const caches = this.newCaches()
    this.loadSnapshot(caches)
    const mergeInto = (family: Family, map: BpfMap) => {
      const cache = caches[family]
      forEachFlow(map, (keys, ko, sample) => cache.add(keys, ko, sample))
      map.close()
    }
    for (const l of this.leftovers()) mergeInto(l.family, l.map)
    for (const family of FAMILIES) mergeInto(family, this.swapOut(family, gen))
    let removed = 0
    for (const family of FAMILIES) {
      const cache = caches[family]
      for (let idx = cache.size - 1; idx >= 0; idx--) {
        if (matches && !matches(family, cache.slabOf(idx), cache.recordAt(idx))) continue
        cache.remove(idx)
        removed++
      }
    }
    this.commit(gen, caches)
    return removed
  }

  /**
   * Removes every pending chunk the committed snapshot does not use (left by a daemon killed
   * between a commit and its clean-up).
   */
  removeStrayChunks(): void {
    this.writable()
    this.snapshot.removeStray(this.state)
  }

  /**
   * Flows the set holds that no daemon has exported yet, each key once: the snapshot's, the
   * drained maps' not committed yet, and the live maps' (read in place: for a set whose filters
   * are gone). Changes nothing.
   */
  unexportedFlows(): number {
    const caches = this.newCaches()
    this.loadSnapshot(caches)
    let beyond = 0
    const count = (family: Family, map: BpfMap) => {
      forEachFlow(map, (keys, ko, sample) => {
        if (caches[family].add(keys, ko, sample) < 0) beyond++
      })
    }
    for (const d of this.dir.drainMaps()) {
      if (d.gen <= this.state.gen) continue
      const map = BpfMap.open(d.path)
      try {
        count(d.family, map)
      } finally {
        map.close()
      }
    }
    for (const family of FAMILIES) {
      const live = this.families[family].openLive()
      try {
        count(family, live)
      } finally {
        live.close()
      }
    }
    return caches[4].size + caches[6].size + beyond
  }

  close(): void {
    this.statsMap?.close()
    this.families[4].close()
    this.families[6].close()
    this.snapshot.close()
    this.drainStateMap.close()
    this.dir.close()
    if (this.ownsLock) this.lock?.release()
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
}
