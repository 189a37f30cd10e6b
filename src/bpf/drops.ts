/**
 * The drop hook (bpf/drops.bpf.c): one program for the host on the kfree_skb raw tracepoint, and
 * which namespaces it counts drops for.
 *
 *   <pin root>/drops/prog      the program
 *   <pin root>/drops/link      its attachment (a pinned link: unlinking it detaches the program)
 *   <pin root>/drops/maps/     drop_netns, drop_maps, drop_stats (see drops.bpf.c)
 *   <meter set>/maps/drops     struct drop_set: drops are on for the set's namespace (its inode)
 *
 * The meter set's layout does not change: the meter never reads any of these, and a set without
 * the `drops` marker has drops off. The hook is loaded with the first namespace that asks for
 * drops and removed with the last one.
 */
import {existsSync, readdirSync} from 'node:fs'
import {rm} from 'node:fs/promises'
import {join} from 'node:path'

import {BpfError, CommandFailedError, StateError} from '../errors.js'
import type {Paths} from '../paths.js'
import {makeDirectories} from '../sys/directories.js'
import {run} from '../sys/exec.js'
import {netnsInode, type NetnsName} from '../sys/netns.js'
import {compileBpfObject, DEFAULT_CAPACITY} from './compile.js'
// The hook's structs are not part of a meter set's layout (layout.ts): read from the generated module directly.
import {DROP_KEY, DROP_NETNS, DROP_SET, DROP_STATS, DROP_VALUE, DROPS_MAP_ENTRIES} from './layout.generated.js'
import {familyKeyOf} from './layout.js'
import {attachRawTracepoint, BPF_F_NO_PREALLOC, BpfMap, ENOENT, MAP_TYPE, numPossibleCpus} from './libbpf.js'
import type {MeterSet} from './meter-set.js'

const DROP_MARKER = 'drops'
const TRACEPOINT = 'kfree_skb'

function dropHookDir(paths: Paths): string {
  return join(paths.pinRoot, 'drops')
}

const progPath = (paths: Paths) => join(dropHookDir(paths), 'prog')
const linkPath = (paths: Paths) => join(dropHookDir(paths), 'link')
const hookMapPath = (paths: Paths, name: string) => join(dropHookDir(paths), 'maps', name)

/** Whether the hook is attached (its link is pinned). */
export function dropHookAttached(paths: Paths): boolean {
  return existsSync(linkPath(paths))
}

/** Whether drops are on for a meter set (its marker is pinned). */
export function dropsOn(set: MeterSet): boolean {
  return existsSync(set.mapPath(DROP_MARKER))
}

/** Loads and attaches the hook, unless it is attached already. */
async function ensureDropHook(paths: Paths): Promise<void> {
  if (dropHookAttached(paths)) return
  const dir = dropHookDir(paths)
  const {objectPath} = await compileBpfObject('drops.bpf.c', {capacity: DEFAULT_CAPACITY}, paths.cacheDir)
  // A hook cut short (loaded, never linked) is loaded again from the start.
  await rm(dir, {recursive: true, force: true})
  makeDirectories(dir)
  try {
    // libbpf (inside bpftool) relocates the program's skb reads against the running kernel's BTF.
    await run('bpftool', ['prog', 'load', objectPath, progPath(paths), 'pinmaps', join(dir, 'maps')])
    attachRawTracepoint(progPath(paths), TRACEPOINT, linkPath(paths))
  } catch (error) {
    await rm(dir, {recursive: true, force: true})
    if (error instanceof CommandFailedError) {
      throw new StateError(`loading the drop hook failed: ${error.stderr.trim().split('\n').pop() ?? 'unknown error'}`, {cause: error})
    }
    throw error
  }
}

/** Detaches and removes the hook and its maps (and the pin root, if nothing else is left in it). */
async function removeDropHook(paths: Paths): Promise<void> {
  await rm(dropHookDir(paths), {recursive: true, force: true})
  try {
    if (existsSync(paths.pinRoot) && readdirSync(paths.pinRoot).length === 0) await rm(paths.pinRoot, {recursive: true})
  } catch {
    // a meter set appeared meanwhile
  }
}

function u32Key(n: number): Buffer {
  const key = Buffer.alloc(4)
  key.writeUInt32LE(n >>> 0)
  return key
}

/** A new, empty drops hash shaped as drop_maps' inner map (flags and sizes must match it). */
function newDropsMap(): BpfMap {
  return BpfMap.create(MAP_TYPE.hash, 'drops', DROP_KEY.size, DROP_VALUE.size, DROPS_MAP_ENTRIES, BPF_F_NO_PREALLOC)
}

function withMap<T>(path: string, use: (map: BpfMap) => T): T {
  const map = BpfMap.open(path)
  try {
    return use(map)
  } finally {
    map.close()
  }
}

/** The namespace inode a set's marker names, or undefined when drops are off for it. */
export function dropSetInode(set: {openMap(name: string): BpfMap}): number | undefined {
  let marker: BpfMap
  try {
    marker = set.openMap(DROP_MARKER)
  } catch {
    return undefined
  }
  try {
    return marker.lookup(u32Key(0))?.readUInt32LE(DROP_SET.fields.netnsInode.offset)
  } finally {
    marker.close()
  }
}

/**
 * Turns drops on for a meter set's namespace (loading the hook if it is not yet): the namespace
 * goes in drop_netns with its sampling interval, an empty drops hash in drop_maps, and the marker
 * in the set's maps. Again on a set that has drops on, it only updates the sampling interval.
 */
export async function enableDrops(paths: Paths, set: MeterSet, netns: NetnsName, samplingInterval: number): Promise<void> {
  await ensureDropHook(paths)
  const inode = netnsInode(netns)
  const key = u32Key(inode)
  const settings = Buffer.alloc(DROP_NETNS.size)
  settings.writeUInt32LE(samplingInterval, DROP_NETNS.fields.samplingInterval.offset)
  withMap(hookMapPath(paths, 'drop_maps'), (outer) => {
    if (outer.lookup(key, Buffer.alloc(4))) return
    const drops = newDropsMap()
    try {
      const fd = Buffer.alloc(4)
      fd.writeUInt32LE(drops.fd)
      outer.update(key, fd)
    } finally {
      drops.close()
    }
  })
  withMap(hookMapPath(paths, 'drop_netns'), (map) => map.update(key, settings))
  const value = Buffer.alloc(DROP_SET.size)
  value.writeUInt32LE(inode, DROP_SET.fields.netnsInode.offset)
  value.writeUInt32LE(samplingInterval, DROP_SET.fields.samplingInterval.offset)
  if (!dropsOn(set)) {
    const marker = BpfMap.create(MAP_TYPE.array, DROP_MARKER, 4, DROP_SET.size, 1)
    try {
      marker.update(u32Key(0), value)
      marker.pin(set.mapPath(DROP_MARKER))
    } finally {
      marker.close()
    }
  } else {
    withMap(set.mapPath(DROP_MARKER), (marker) => marker.update(u32Key(0), value))
  }
}

/**
 * Turns drops off for a meter set: its namespace leaves the hook's maps and its marker goes. The
 * last namespace to leave takes the hook with it. Returns whether drops were on.
 */
export async function disableDrops(paths: Paths, set: MeterSet): Promise<boolean> {
  const inode = dropSetInode(set)
  if (inode === undefined) return false
  if (dropHookAttached(paths)) {
    const key = u32Key(inode)
    withMap(hookMapPath(paths, 'drop_netns'), (map) => map.delete(key))
    withMap(hookMapPath(paths, 'drop_maps'), (map) => map.delete(key))
  }
  await rm(set.mapPath(DROP_MARKER), {force: true})
  if (dropHookAttached(paths) && withMap(hookMapPath(paths, 'drop_netns'), (map) => map.count()) === 0) await removeDropHook(paths)
  return true
}

/** One entry of a namespace's drops hash. */
export interface DropEntry {
  family: 4 | 6
  /** The flow's key bytes as the meter's flow map of its family keys it (flow_key4 or flow_key6). */
  flowKey: Buffer
  ifindex: number
  direction: number
  /** The running kernel's enum skb_drop_reason value. */
  reason: number
  ttlExpired: boolean
  packets: number
  bytes: number
}

/** Every entry of a drops hash. */
function readDrops(map: BpfMap): DropEntry[] {
  const out: DropEntry[] = []
  const f = DROP_KEY.fields
  map.forEachBatch((keys, values, n) => {
    for (let i = 0; i < n; i++) {
      const k = i * DROP_KEY.size
      const v = i * DROP_VALUE.size
      const family = keys[k + f.family.offset] === 6 ? 6 : 4
      out.push({
        family,
        flowKey: familyKeyOf(keys, k, family),
        ifindex: keys.readUInt32LE(k),
        direction: keys[k + 4],
        reason: keys.readUInt32LE(k + f.reason.offset),
        ttlExpired: (keys[k + f.flags.offset] & 1) !== 0,
        packets: Number(values.readBigUInt64LE(v + DROP_VALUE.fields.packets.offset)),
        bytes: Number(values.readBigUInt64LE(v + DROP_VALUE.fields.bytes.offset)),
      })
    }
  })
  return out
}

/** The hook's map of drops hashes, and one namespace's current hash in it (both open: close both). */
interface CurrentDropsHash {
  outer: BpfMap
  key: Buffer
  id: number
  hash: BpfMap
}

/**
 * Opens a namespace's current drops hash through drop_maps; undefined when drops are off or the
 * hook is gone. A hash swapped out and freed between the two reads (`freedIsGone`: for readers
 * beside the daemon) is gone too; otherwise that throws, naming the drops hash.
 */
function openDropsHash(pinRoot: string, inode: number, freedIsGone: boolean): CurrentDropsHash | undefined {
  let outer: BpfMap
  try {
    outer = BpfMap.open(join(pinRoot, 'drops', 'maps', 'drop_maps'))
  } catch (error) {
    if (error instanceof BpfError && error.errno === ENOENT) return undefined
    throw error
  }
  try {
    const key = u32Key(inode)
    const id = outer.lookup(key, Buffer.alloc(4))?.readUInt32LE(0)
    if (id === undefined) {
      outer.close()
      return undefined
    }
    return {outer, key, id, hash: BpfMap.openById(id, 'a drops hash')}
  } catch (error) {
    outer.close()
    if (freedIsGone && error instanceof BpfError && error.errno === ENOENT) return undefined
    throw error
  }
}

/**
 * Takes a namespace's drops out: an empty hash goes in its place in drop_maps (the kernel's update
 * of a map-in-map waits until no program can still see the old one, so no drop is lost between
 * them), and the old one is read whole. Empty when drops are off or the hook is gone.
 */
export async function takeDrops(pinRoot: string, inode: number): Promise<DropEntry[]> {
  const current = openDropsHash(pinRoot, inode, false)
  if (!current) return []
  const {outer, key, hash: old} = current
  try {
    // Nothing dropped since the last swap (an idle namespace, or one that drops nothing): the
    // hash stays, and the drain pays one bpf() call instead of a fresh hash and a wait for the
    // programs (a map-in-map update) every interval. A drop counted right after the look waits
    // for the next drain in it.
    if (old.isEmpty()) return []
    const fresh = newDropsMap()
    try {
      const fd = Buffer.alloc(4)
      fd.writeUInt32LE(fresh.fd)
      await outer.updateAsync(key, fd)
    } finally {
      fresh.close()
    }
    return readDrops(old)
  } finally {
    old.close()
    outer.close()
  }
}

/**
 * A namespace's drops so far in its current drops hash, read where it is (not taken out: for
 * readers beside the daemon, such as `top`), with the hash's id: a new id is a hash the daemon
 * swapped in since. Undefined when drops are off or the hook is gone.
 */
export function peekDrops(pinRoot: string, inode: number): {id: number; entries: DropEntry[]} | undefined {
  const current = openDropsHash(pinRoot, inode, true)
  if (!current) return undefined
  try {
    return {id: current.id, entries: readDrops(current.hash)}
  } finally {
    current.hash.close()
    current.outer.close()
  }
}

/** The hook's own counts, summed over CPUs: drops it counted, and drops lost to a full drops hash. */
export function readDropStats(paths: Paths): {counted: number; lost: number} | undefined {
  if (!dropHookAttached(paths)) return undefined
  return withMap(hookMapPath(paths, 'drop_stats'), (map) => {
    const value = map.lookup(u32Key(0))
    const stats = {counted: 0, lost: 0}
    if (!value) return stats
    const stride = map.valueBytes / numPossibleCpus()
    for (let cpu = 0; cpu < numPossibleCpus(); cpu++) {
      stats.lost += Number(value.readBigUInt64LE(cpu * stride + DROP_STATS.fields.lostPackets.offset))
      stats.counted += Number(value.readBigUInt64LE(cpu * stride + DROP_STATS.fields.countedPackets.offset))
    }
    return stats
  })
}
