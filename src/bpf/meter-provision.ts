/**
 * Provisioning the meter set of one namespace for an attach: creating it, loading a changed
 * program onto its maps (with --force), or moving a layout-1 set aside so that a new one takes its
 * place and its flows are carried over once the filters run the new programs.
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
import {legacyCapacity, legacyDir, legacyFlowsAtMost, moveLegacyAside} from './migrate.js'
import {claimMeterSet, sameNetns, type AttachState} from './state.js'

export interface ProvisionRequest {
  /** Flows per flow map; undefined keeps an existing meter set's, or the default for a new one. */
  capacity?: number
  /** Load a changed program onto an existing set, and carry a layout-1 set over. */
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
  if (set.exists() && request.force && set.layoutVersion() === 1) {
    capacity = await moveLayout1Aside(set, request.capacity)
    migrating = true
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
    const existing = set.capacity()
    if (request.capacity !== undefined && request.capacity !== existing) {
      throw new InvalidInputError(
        `the meter of ${describeNetns(netns)} holds ${existing} flows per map; to use --capacity ${request.capacity}, detach all its interfaces first`,
      )
    }
    capacity = existing
  }
  // A meter set made with another snapshot chunk size keeps it (its pending map is reused).
  const compiled = await compileMeter({capacity, pendingChunkBytes: set.exists() ? set.pendingChunkBytes() : undefined}, paths.cacheDir)

  if (!set.exists()) {
    await set.create(compiled.objectPath, capacity)
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
  } else if (request.force && record?.digest !== compiled.digest) {
    // A different program (new flowctl or clang): load it onto the same maps.
    await set.reloadPrograms(compiled.objectPath)
    reloaded = true
    if (record) record.digest = compiled.digest
  }
  const digest = state.meterSets.find((m) => sameNetns(m.netns, netns))?.digest ?? compiled.digest
  return {set, digest, reloaded, migrationLock}
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
