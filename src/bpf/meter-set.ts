/**
 * A meter set: the programs and maps flowctl pins for one network namespace, under
 * <pin root>/root or <pin root>/netns/<name>. Every interface metered in that namespace runs
 * the same two programs (ingress, egress) and writes the same maps, keyed by ifindex; flows of
 * different namespaces live in different maps and never merge.
 */
import {closeSync, constants, existsSync, openSync, readdirSync, unlinkSync} from 'node:fs'
import {rename, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {BpfError, StateError} from '../errors.js'
import type {Paths} from '../paths.js'
import type {NetnsName} from '../sys/netns.js'
import {describeNetns} from '../sys/netns.js'
import {loadAll} from './bpftool.js'
import {
  DRAIN_STATE,
  FLOW_KEY4,
  FLOW_KEY6,
  FLOW_VALUE4,
  FLOW_VALUE6,
  FRAG_KEY,
  FRAG_MAP_ENTRIES,
  FRAG_PORTS,
  HANDSHAKE_KEY,
  HANDSHAKE_MAP_ENTRIES,
  HANDSHAKE_TIMES,
  LAYOUT_VERSION,
  METER_META,
  METER_SETTINGS,
  METER_STATS,
  OVERFLOW_KEY,
  OVERFLOW_VALUE,
  PENDING_CHUNK_BYTES,
  readMeterMeta,
  writeMeterMeta,
  writeMeterSettings,
} from './layout.js'
import {FAMILIES, type DirectionName, type Family} from '../flow/record.js'
import {makeDirectories} from '../sys/directories.js'
import {FamilyMaps} from './family-maps.js'
import {BpfMap, ENOENT, innerMapId, MAP_TYPE, progInfo} from './libbpf.js'

const PROGRAM_NAMES: Record<DirectionName, string> = {ingress: 'flowctl_ingress', egress: 'flowctl_egress'}

/** The snapshot's chunk size in meter sets of layout 2 made before bpf/flowctl.h's was lowered. */
export const FIRST_PENDING_CHUNK_BYTES = 32768

interface ExpectedMap {
  type: number
  keySize: number
  valueSize: number
  orValueSize?: number
}

/**
 * The maps that hold no count, which a layout-2 or layout-3 set is given anew when it is carried
 * over (upgradeInPlace in migrate.ts) unless it has them in this shape: `settings` and `meter_stats`
 * are new in layout 3, `frags` took the sampling decision beside the ports in layout 3 (a fresh one
 * forgets the ports of the datagrams in reassembly at that moment, nothing else), `handshakes` is
 * new in layout 4 (a fresh one forgets the handshakes in progress: those connections get no round
 * trip time). With the entries each has (as meter.bpf.c declares them).
 */
export const REMADE_MAPS: Record<string, ExpectedMap & {maxEntries: number}> = {
  frags: {type: MAP_TYPE.lruHash, keySize: FRAG_KEY.size, valueSize: FRAG_PORTS.size, maxEntries: FRAG_MAP_ENTRIES},
  settings: {type: MAP_TYPE.array, keySize: 4, valueSize: METER_SETTINGS.size, maxEntries: 1},
  // Per CPU: 40 bytes on each possible CPU (5 KiB on 128), which memory() counts through memlock.
  meter_stats: {type: MAP_TYPE.percpuArray, keySize: 4, valueSize: METER_STATS.size, maxEntries: 1},
  handshakes: {type: MAP_TYPE.lruHash, keySize: HANDSHAKE_KEY.size, valueSize: HANDSHAKE_TIMES.size, maxEntries: HANDSHAKE_MAP_ENTRIES},
}

/** What each pinned map must look like for this flowctl to use it. */
const EXPECTED_MAPS: Record<string, ExpectedMap> = {
  flows4: {type: MAP_TYPE.arrayOfMaps, keySize: 4, valueSize: 4},
  flows6: {type: MAP_TYPE.arrayOfMaps, keySize: 4, valueSize: 4},
  overflow: {type: MAP_TYPE.hash, keySize: OVERFLOW_KEY.size, valueSize: OVERFLOW_VALUE.size},
  skip_socks: {type: MAP_TYPE.hash, keySize: 8, valueSize: 1},
  pending: {type: MAP_TYPE.hash, keySize: 4, valueSize: PENDING_CHUNK_BYTES, orValueSize: FIRST_PENDING_CHUNK_BYTES},
  drain_state: {type: MAP_TYPE.array, keySize: 4, valueSize: DRAIN_STATE.size},
  meta: {type: MAP_TYPE.array, keySize: 4, valueSize: METER_META.size},
  ...REMADE_MAPS,
}

/** The maps a reloaded program takes over as they are (the live flow maps hang off flows4/6). */
const MAP_NAMES = Object.keys(EXPECTED_MAPS)

/** The layouts whose meter sets `meter attach --force` carries over to this one. */
const CARRIED_OVER_LAYOUTS = [1, 2, 3]

/** The live flow maps' pins, which exist only between loading and the end of `create`. */
const LIVE_PIN = (family: Family) => `flows${family}_live`

/** A drained flow map stays pinned as drain<F>_<gen> until the snapshot that holds it is committed. */
// bpffs refuses dots in names (EPERM: reserved), hence the underscore.
const DRAIN_PIN = /^drain([46])_(\d+)$/

/** The shape of each family's flow map. */
const FLOW_MAP_SHAPE: Record<Family, {keySize: number; valueSize: number}> = {
  4: {keySize: FLOW_KEY4.size, valueSize: FLOW_VALUE4.size},
  6: {keySize: FLOW_KEY6.size, valueSize: FLOW_VALUE6.size},
}

export interface PinnedDrainMap {
  family: Family
  gen: number
  path: string
}

/** Kernel memory of a meter set, in bytes. */
export interface MeterSetMemory {
  /** What its maps take now (the kernel's own accounting, memlock). */
  now: number
  /** With both flow maps full, and the daemon's snapshot at its largest. */
  atMost: number
}

export class MeterSet {
  readonly netns: NetnsName
  readonly dir: string
  /** The pin root it lives under. */
  readonly root: string

  private constructor(netns: NetnsName, root: string) {
    this.netns = netns
    this.root = root
    this.dir = netns === null ? join(root, 'root') : join(root, 'netns', netns)
  }

  static for(paths: Paths, netns: NetnsName): MeterSet {
    return new MeterSet(netns, paths.pinRoot)
  }

  /** Every meter set pinned now. */
  static list(paths: Paths): MeterSet[] {
    const sets: MeterSet[] = []
    if (existsSync(join(paths.pinRoot, 'root'))) sets.push(MeterSet.for(paths, null))
    const nsDir = join(paths.pinRoot, 'netns')
    if (existsSync(nsDir)) for (const name of readdirSync(nsDir).sort()) sets.push(MeterSet.for(paths, name))
    return sets
  }

  get progDir(): string {
    return join(this.dir, 'prog')
  }

  get mapDir(): string {
    return join(this.dir, 'maps')
  }

  progPath(direction: DirectionName): string {
    return join(this.progDir, PROGRAM_NAMES[direction])
  }

  mapPath(name: string): string {
    return join(this.mapDir, name)
  }

  exists(): boolean {
    return existsSync(this.mapPath('flows4'))
  }

  /**
   * Which meter set is pinned here now: the kernel id of its drain_state map (ids are not reused
   * while the machine runs), or undefined when nothing is pinned (detached, or bpffs remounted).
   * A set detached and attached again at the same path has another identity; one whose programs
   * were reloaded (`attach --force`) keeps its maps, and its identity.
   */
  identity(): number | undefined {
    let map: BpfMap
    try {
      map = this.openMap('drain_state')
    } catch (error) {
      if (error instanceof BpfError && error.errno === ENOENT) return undefined
      throw error
    }
    map.close()
    return map.info.id
  }

  /**
   * Loads the object and pins its programs and (new, empty) maps, and records what it is and the
   * sampling interval it starts with (before any filter runs its programs).
   */
  async create(objectPath: string, capacity: number, samplingInterval = 1): Promise<void> {
    makeDirectories(this.dir)
    try {
      await loadAll(objectPath, this.progDir, {mapDir: this.mapDir})
      const meta = this.openMap('meta')
      try {
        writeMeterMeta(meta, {layoutVersion: LAYOUT_VERSION, capacity})
      } finally {
        meta.close()
      }
      const settings = this.openMap('settings')
      try {
        writeMeterSettings(settings, {samplingInterval})
      } finally {
        settings.close()
      }
      // The outer maps hold the live flow maps; their own pins would only go stale at the first drain.
      for (const family of FAMILIES) unlinkSync(this.mapPath(LIVE_PIN(family)))
    } catch (error) {
      await this.remove()
      throw error
    }
  }

  /**
   * Loads a newer object's programs onto the maps already pinned here (which keep their flows),
   * and pins them in place of the old ones. Filters keep running the old programs until they are
   * replaced; the caller does that next.
   */
  async reloadPrograms(objectPath: string): Promise<void> {
    // (bpffs refuses names with a dot: prog_next, not prog.next.)
    const next = `${this.progDir}_next`
    await rm(next, {recursive: true, force: true})
    const reuse = Object.fromEntries(MAP_NAMES.map((name) => [name, this.mapPath(name)]))
    await loadAll(objectPath, next, {reuse})
    const old = `${this.progDir}_old`
    await rm(old, {recursive: true, force: true})
    await rename(this.progDir, old)
    await rename(next, this.progDir)
    await rm(old, {recursive: true, force: true})
  }

  async remove(): Promise<void> {
    // A daemon's drain may pin a drained map here while this runs (after rm listed the directory,
    // before it removes it): rm then finds the directory not empty and, with retries, starts over.
    await rm(this.dir, {recursive: true, force: true, maxRetries: 5, retryDelay: 20})
    // Leave no empty parents behind.
    for (const parent of [join(this.root, 'netns'), this.root]) {
      try {
        if (existsSync(parent) && readdirSync(parent).length === 0) await rm(parent, {recursive: true})
      } catch {
        // another meter set appeared meanwhile
      }
    }
  }

  /** The layout version of the pinned maps: 1 for a meter set made before the meta map existed. */
  layoutVersion(): number {
    if (!existsSync(this.mapPath('meta'))) return existsSync(this.mapPath('flows4_a')) ? 1 : 0
    const meta = this.openMap('meta')
    try {
      return readMeterMeta(meta).layoutVersion
    } finally {
      meta.close()
    }
  }

  /** Fails with one line saying what to do if the pinned maps were made by an incompatible flowctl. */
  verifyLayout(): void {
    const version = this.layoutVersion()
    if (version !== LAYOUT_VERSION) {
      const ns = this.netns === null ? '' : ` --netns ${this.netns}`
      throw new StateError(
        `the meter of ${describeNetns(this.netns)} has kernel layout ${version || 'unknown'}, this flowctl reads layout ${LAYOUT_VERSION}: ` +
          (CARRIED_OVER_LAYOUTS.includes(version)
            ? `carry its flows over with \`flowctl meter attach${ns} --force -n IFACE...\` (nothing is lost), or detach and attach it again`
            : `detach it with the flowctl that made it, or remove ${this.dir}`),
      )
    }
    for (const [name, expected] of Object.entries(EXPECTED_MAPS)) {
      const path = this.mapPath(name)
      if (!existsSync(path))
        throw new StateError(`the meter of ${describeNetns(this.netns)} at ${this.dir} lacks map '${name}': remove ${this.dir} and attach again`)
      const map = BpfMap.open(path)
      const {info} = map
      map.close()
      if (
        info.type !== expected.type ||
        info.keySize !== expected.keySize ||
        (info.valueSize !== expected.valueSize && info.valueSize !== expected.orValueSize)
      ) {
        throw new StateError(
          `map ${path} has type ${info.type}, key ${info.keySize} B, value ${info.valueSize} B where this flowctl expects type ${expected.type}, key ${expected.keySize} B, value ${expected.valueSize} B: remove ${this.dir} and attach again`,
        )
      }
    }
  }

  /** Bytes of one chunk of the daemon's snapshot in this meter set (its pending map's values). */
  pendingChunkBytes(): number {
    const pending = this.openMap('pending')
    try {
      return pending.info.valueSize
    } finally {
      pending.close()
    }
  }

  /** Flows each flow map holds. */
  capacity(): number {
    const meta = this.openMap('meta')
    try {
      return readMeterMeta(meta).capacity
    } finally {
      meta.close()
    }
  }

  progId(direction: DirectionName): number {
    return progInfo(this.progPath(direction)).id
  }

  openFamily(family: Family): FamilyMaps {
    return FamilyMaps.open(this.dir, family, this, this.capacity())
  }

  openMap(name: string): BpfMap {
    return BpfMap.open(this.mapPath(name))
  }

  /** Drained flow maps still pinned, oldest first. */
  drainMaps(): PinnedDrainMap[] {
    if (!existsSync(this.mapDir)) return []
    return drainPins(readdirSync(this.mapDir), (name) => this.mapPath(name))
  }

  drainMapPath(family: Family, gen: number): string {
    return this.mapPath(`drain${family}_${gen}`)
  }

  /**
   * Kernel memory now and at most (see MeterSetMemory). `now` is the kernel's memlock of every
   * map, the per-CPU meter_stats at its size on this machine's CPUs and the live flow maps at
   * their own sizes (a fresh one may be smaller than the capacity); `atMost` takes both families'
   * flow maps full at the capacity, their ceiling.
   */
  memory(): MeterSetMemory {
    let now = 0
    const opened: BpfMap[] = []
    try {
      for (const name of MAP_NAMES) opened.push(this.openMap(name))
      for (const family of FAMILIES) {
        const outer = opened[MAP_NAMES.indexOf(`flows${family}`)]
        const id = innerMapId(outer)
        if (id) opened.push(BpfMap.openById(id))
      }
      for (const d of this.drainMaps()) {
        // A daemon beside us unpins a drained map once it commits it.
        const map = BpfMap.openIfPinned(d.path)
        if (map) opened.push(map)
      }
      for (const m of opened) now += m.memlock()
    } finally {
      for (const m of opened) m.close()
    }
    return {now, atMost: now + flowMemoryAtMost(this.capacity())}
  }
}

/** The drained flow maps among the pin names of a map directory, oldest first. */
function drainPins(names: string[], pathOf: (name: string) => string): PinnedDrainMap[] {
  const out: PinnedDrainMap[] = []
  for (const name of names) {
    const m = DRAIN_PIN.exec(name)
    if (m) out.push({family: Number(m[1]) as Family, gen: Number(m[2]), path: pathOf(name)})
  }
  return out.sort((a, b) => a.gen - b.gen || a.family - b.family)
}

/**
 * A meter set's map directory, held open by the daemon's drainer: every pin it makes, lists,
 * opens or removes goes through the directory it opened (/proc/self/fd/N/NAME), never through the
 * set's path again. Once `meter detach` (or a bpffs remount) has removed that directory, those
 * calls find nothing or fail with ENOENT; they never reach another meter set attached at the
 * same path meanwhile.
 */
export class HeldMapDir {
  readonly set: MeterSet
  private readonly fd: number

  private constructor(set: MeterSet, fd: number) {
    this.set = set
    this.fd = fd
  }

  static open(set: MeterSet): HeldMapDir {
    return new HeldMapDir(set, openSync(set.mapDir, constants.O_RDONLY | constants.O_DIRECTORY))
  }

  /** Pin `name` of this directory, reached through the held descriptor. */
  private path(name: string): string {
    return `/proc/self/fd/${this.fd}/${name}`
  }

  openMap(name: string): BpfMap {
    return BpfMap.open(this.path(name), this.set.mapPath(name))
  }

  /** Drained flow maps still pinned here, oldest first (none once the directory is removed). */
  drainMaps(): PinnedDrainMap[] {
    return drainPins(readdirSync(this.path('')), (name) => this.path(name))
  }

  drainMapPath(family: Family, gen: number): string {
    return this.path(`drain${family}_${gen}`)
  }

  close(): void {
    closeSync(this.fd)
  }
}

/**
 * Kernel memory the flows of a meter set of `capacity` can take beyond its empty maps: per family,
 * one element per flow in a full live map (htab_elem header, key and value rounded to 8 bytes)
 * and in the map being drained, and the daemon's snapshot of up to twice the capacity.
 */
export function flowMemoryAtMost(capacity: number): number {
  let bytes = 0
  for (const family of FAMILIES) {
    const shape = FLOW_MAP_SHAPE[family]
    bytes += 2 * capacity * (HTAB_ELEM_HEADER + round8(shape.keySize) + round8(shape.valueSize))
    bytes += 2 * capacity * (shape.keySize + shape.valueSize)
  }
  return bytes
}

/** struct htab_elem before its key, on 64-bit kernels (kernel/bpf/hashtab.c). */
const HTAB_ELEM_HEADER = 48

function round8(n: number): number {
  return Math.ceil(n / 8) * 8
}
