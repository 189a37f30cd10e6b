/**
 * Provisioning the meter set of one namespace for an attach: creating it, setting its sampling
 * interval, loading a changed program onto its maps (with --force), upgrading a layout-2 set in
 * place (with --force), or moving a layout-1 set aside so that a new one takes its place and its
 * flows are carried over once the filters run the new programs.
 *
 * Every step that makes something is recorded in `undo`, and every lock taken in `locks`, so that
 * the attach can take back what it did if a later step fails, and release the locks when it ends.
 */
import {existsSync} from 'node:fs'

import {InvalidInputError} from '../errors.js'
import type {Paths} from '../paths.js'
import {makeDirectories} from '../sys/directories.js'
import type {HeldLock} from '../sys/flock.js'
import {describeNetns, netnsInode, type NetnsName} from '../sys/netns.js'
import {compileMeter, DEFAULT_CAPACITY, MIN_CAPACITY} from './compile.js'
import {LAYOUT_VERSION} from './layout.js'
import {MeterSet} from './meter-set.js'
import {legacyCapacity, legacyDir, legacyFlowsAtMost, moveLegacyAside, upgradeInPlace, UPGRADED_IN_PLACE} from './migrate.js'
import {readSampling, setSampling} from './sampling.js'
import {claimMeterSet, sameNetns, type AttachState} from './state.js'

export interface ProvisionRequest {
  /** Flows per flow map; undefined keeps an existing meter set's, or the default for a new one. */
  capacity?: number
  /**
   * Count 1 packet in N (1: every packet), on a new set or an existing one (then only its settings
   * are written); undefined keeps an existing set's, or counts every packet in a new one.
   */
  sampling?: number
  /** Load a changed program onto an existing set, and carry a layout-1 or layout-2 set over. */
  force: boolean
}

export interface ProvisionedSet {
  set: MeterSet
  /** The digest of the programs the set runs now. */
  digest: string
  /** The set runs programs its filters do not run yet: every filter of the namespace moves to them. */
  reloaded: boolean
  /** Held while flows of a layout-1 set wait to be carried into this one. */
  migrationLock?: HeldLock
  /** The set's sampling interval now. */
  samplingInterval: number
}

/** What an attach changed so far, taken back in reverse order if a later step fails. */
export type UndoSteps = (() => Promise<void>)[]

export async function provisionMeterSet(
  paths: Paths,
  state: AttachState,
  netns: NetnsName,
  request: ProvisionRequest,
  undo: UndoSteps,
  locks: HeldLock[],
): Promise<ProvisionedSet> {
  const set = MeterSet.for(paths, netns)
  let migrationLock: HeldLock | undefined
  const record = state.meterSets.find((m) => sameNetns(m.netns, netns))
  let capacity = request.capacity ?? DEFAULT_CAPACITY
  let reloaded = false

  let migrating = false
  const layout = set.exists() && request.force ? set.layoutVersion() : LAYOUT_VERSION
  if (layout === 1) {
    capacity = await moveLayout1Aside(set, request.capacity)
    migrating = true
  }
  if (UPGRADED_IN_PLACE.includes(layout)) {
    checkCapacity(set, request.capacity)
    // A layout-2 set had no sampling (1); a layout-3 one keeps its interval unless asked for another.
    await upgradeInPlace(set, (await compileFor(paths, set)).objectPath, request.sampling ?? (layout === 2 ? 1 : undefined))
    reloaded = true
  }
  if (existsSync(legacyDir(set))) {
    // The carried-over flows go into the new set's snapshot: its lock is ours from before
    // it has maps until they are in, so that no daemon starts draining it meanwhile (its
    // commits would drop them).
    makeDirectories(set.dir)
    locks.push((migrationLock = claimMeterSet(set)))
  }
  if (set.exists()) {
    set.verifyLayout()
    capacity = checkCapacity(set, request.capacity)
  }
  const compiled = set.exists() ? await compileFor(paths, set) : await compileMeter({capacity}, paths.cacheDir)

  if (!set.exists()) {
    await set.create(compiled.objectPath, capacity, request.sampling)
    undo.push(() => set.remove())
    state.meterSets = state.meterSets.filter((m) => !sameNetns(m.netns, netns))
    state.meterSets.push({
      netns,
      netnsInode: netnsInode(netns),
      digest: compiled.digest,
      capacity,
      layoutVersion: LAYOUT_VERSION,
      createdAt: new Date().toISOString(),
    })
    if (migrating) reloaded = true
  } else {
    if (request.force && !reloaded && record?.digest !== compiled.digest) {
      // A different program (new flowctl or clang): load it onto the same maps.
      await set.reloadPrograms(compiled.objectPath)
      reloaded = true
    }
    if (reloaded && record) Object.assign(record, {digest: compiled.digest, layoutVersion: LAYOUT_VERSION})
    // One map update, which the programs read at their next packet: no reload, no filter touched.
    if (request.sampling !== undefined && request.sampling !== readSampling(set)) setSampling(set, request.sampling)
  }
  const digest = state.meterSets.find((m) => sameNetns(m.netns, netns))?.digest ?? compiled.digest
  return {set, digest, reloaded, migrationLock, samplingInterval: readSampling(set)}
}

/** An existing set's capacity, which is fixed: one-line error if another is asked. */
function checkCapacity(set: MeterSet, requested: number | undefined): number {
  const existing = set.capacity()
  if (requested !== undefined && requested !== existing) {
    throw new InvalidInputError(
      `the meter of ${describeNetns(set.netns)} holds ${existing} flows per map; to use --capacity ${requested}, detach all its interfaces first`,
    )
  }
  return existing
}

/**
 * This flowctl's program for an existing meter set: at its capacity, and with the snapshot chunk
 * size it was made with (an older set keeps its pending map, and so its chunks).
 */
function compileFor(paths: Paths, set: MeterSet): ReturnType<typeof compileMeter> {
  return compileMeter({capacity: set.capacity(), pendingChunkBytes: set.pendingChunkBytes()}, paths.cacheDir)
}

/**
 * Moves a layout-1 set aside, to be carried over into a new set; returns the new set's capacity:
 * the old one's unless asked, if what it holds fits.
 */
async function moveLayout1Aside(set: MeterSet, requested: number | undefined): Promise<number> {
  const capacity = requested ?? Math.max(MIN_CAPACITY, legacyCapacity(set))
  const flows = legacyFlowsAtMost(set)
  if (flows > 2 * capacity) {
    const needed = Math.max(MIN_CAPACITY, Math.ceil(flows / 2))
    throw new InvalidInputError(
      `the layout-1 meter of ${describeNetns(set.netns)} may hand over up to ${flows} flows of one address family (what its maps hold, and room for new ones), more than a meter of capacity ${capacity} keeps (${2 * capacity}): carry them over with --capacity ${needed} or more`,
    )
  }
  await moveLegacyAside(set)
  return capacity
}
