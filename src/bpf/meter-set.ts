/**
 * A meter set: the programs and maps flowctl pins for one network namespace, under
 * <pin root>/root or <pin root>/netns/<name>. Every interface metered in that namespace runs
 * the same two programs (ingress, egress) and writes the same maps, keyed by ifindex; flows of
 * different namespaces live in different maps and never merge.
 */
import {existsSync, readdirSync} from 'node:fs'
import {mkdir, rename, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {StateError} from '../errors.js'
import type {Paths} from '../paths.js'
import type {NetnsName} from '../sys/netns.js'
import {describeNetns} from '../sys/netns.js'
import {loadAll} from './bpftool.js'
import {DRAIN_STATE, FLOW_COUNTERS, FLOW_KEY4, FLOW_KEY6, FLOW_RECORD, OVERFLOW_COUNTERS, OVERFLOW_KEY} from './layout.js'
import {type DirectionName, type Family} from '../flow/record.js'
import {BpfMap, innerMapId, MAP_TYPE, progInfo, setInnerMap} from './libbpf.js'

export const PROGRAM_NAMES: Record<DirectionName, string> = {ingress: 'flowctl_ingress', egress: 'flowctl_egress'}

/** What each pinned map must look like for this flowctl to use it. */
const EXPECTED_MAPS: Record<string, {type: number; keySize: number; valueSize: number}> = {
  flows4: {type: MAP_TYPE.arrayOfMaps, keySize: 4, valueSize: 4},
  flows4_a: {type: MAP_TYPE.percpuHash, keySize: FLOW_KEY4.size, valueSize: FLOW_COUNTERS.size},
  flows4_b: {type: MAP_TYPE.percpuHash, keySize: FLOW_KEY4.size, valueSize: FLOW_COUNTERS.size},
  pending4: {type: MAP_TYPE.hash, keySize: FLOW_KEY4.size, valueSize: FLOW_RECORD.size},
  flows6: {type: MAP_TYPE.arrayOfMaps, keySize: 4, valueSize: 4},
  flows6_a: {type: MAP_TYPE.percpuHash, keySize: FLOW_KEY6.size, valueSize: FLOW_COUNTERS.size},
  flows6_b: {type: MAP_TYPE.percpuHash, keySize: FLOW_KEY6.size, valueSize: FLOW_COUNTERS.size},
  pending6: {type: MAP_TYPE.hash, keySize: FLOW_KEY6.size, valueSize: FLOW_RECORD.size},
  overflow: {type: MAP_TYPE.percpuHash, keySize: OVERFLOW_KEY.size, valueSize: OVERFLOW_COUNTERS.size},
  skip_socks: {type: MAP_TYPE.hash, keySize: 8, valueSize: 1},
  drain_state: {type: MAP_TYPE.array, keySize: 4, valueSize: DRAIN_STATE.size},
}

export const MAP_NAMES = Object.keys(EXPECTED_MAPS)

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

  /** Loads the object and pins its programs and (new, empty) maps. */
  async create(objectPath: string): Promise<void> {
    await mkdir(this.dir, {recursive: true})
    try {
      await loadAll(objectPath, this.progDir, {mapDir: this.mapDir})
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
    const next = `${this.progDir}.next`
    await rm(next, {recursive: true, force: true})
    const reuse = Object.fromEntries(MAP_NAMES.map((name) => [name, this.mapPath(name)]))
    await loadAll(objectPath, next, {reuse})
    const old = `${this.progDir}.old`
    await rm(old, {recursive: true, force: true})
    await rename(this.progDir, old)
    await rename(next, this.progDir)
    await rm(old, {recursive: true, force: true})
  }

  async remove(): Promise<void> {
    await rm(this.dir, {recursive: true, force: true})
    // Leave no empty parents behind.
    for (const parent of [join(this.root, 'netns'), this.root]) {
      try {
        if (existsSync(parent) && readdirSync(parent).length === 0) await rm(parent, {recursive: true})
      } catch {
        // another meter set appeared meanwhile
      }
    }
  }

  /** Fails with a clear message if the pinned maps were made by an incompatible flowctl. */
  verifyLayout(): void {
    for (const [name, expected] of Object.entries(EXPECTED_MAPS)) {
      const path = this.mapPath(name)
      if (!existsSync(path)) {
        throw new StateError(
          `the meter of ${describeNetns(this.netns)} at ${this.dir} lacks map '${name}': it was made by another flowctl version; detach it with that version, or remove ${this.dir}`,
        )
      }
      const map = BpfMap.open(path)
      const {info} = map
      map.close()
      if (info.type !== expected.type || info.keySize !== expected.keySize || info.valueSize !== expected.valueSize) {
        throw new StateError(
          `map ${path} has type ${info.type}, key ${info.keySize} B, value ${info.valueSize} B where this flowctl expects type ${expected.type}, key ${expected.keySize} B, value ${expected.valueSize} B: it was made by another flowctl version; detach it with that version, or remove ${this.dir}`,
        )
      }
    }
  }

  /** Flows each flow map holds. */
  capacity(): number {
    const map = BpfMap.open(this.mapPath('flows4_a'))
    map.close()
    return map.info.maxEntries
  }

  progId(direction: DirectionName): number {
    return progInfo(this.progPath(direction)).id
  }

  openFamily(family: Family): FamilyMaps {
    return FamilyMaps.open(this, family)
  }

  openMap(name: string): BpfMap {
    return BpfMap.open(this.mapPath(name))
  }
}

/**
 * The flow maps of one address family: the two per-CPU hashes (one live, written by the program,
 * one idle) and the pending map. Only the idle map may be emptied: deleting from the live map
 * could let an in-flight packet's update land in a recycled element of another flow.
 */
export class FamilyMaps {
  readonly family: Family
  readonly outer: BpfMap
  readonly a: BpfMap
  readonly b: BpfMap
  readonly pending: BpfMap

  private constructor(family: Family, outer: BpfMap, a: BpfMap, b: BpfMap, pending: BpfMap) {
    this.family = family
    this.outer = outer
    this.a = a
    this.b = b
    this.pending = pending
  }

  static open(set: MeterSet, family: Family): FamilyMaps {
    const opened: BpfMap[] = []
    try {
      for (const name of [`flows${family}`, `flows${family}_a`, `flows${family}_b`, `pending${family}`]) {
        opened.push(set.openMap(name))
      }
    } catch (error) {
      for (const m of opened) m.close()
      throw error
    }
    const [outer, a, b, pending] = opened
    return new FamilyMaps(family, outer, a, b, pending)
  }

  /** The map the program writes now. */
  live(): BpfMap {
    return innerMapId(this.outer) === this.b.info.id ? this.b : this.a
  }

  idle(): BpfMap {
    return this.live() === this.a ? this.b : this.a
  }

  /**
   * Makes the idle map live and returns the previously live one, which no program writes any
   * more once this returns (the kernel waits for running programs before the update returns).
   */
  swap(): BpfMap {
    const wasLive = this.live()
    setInnerMap(this.outer, wasLive === this.a ? this.b : this.a)
    return wasLive
  }

  close(): void {
    for (const m of [this.outer, this.a, this.b, this.pending]) m.close()
  }
}
