/**
 * What flowctl attached, kept in <run dir>/attachments.json: which filters are ours (namespace,
 * interface, direction, pref, handle, program id), which clsact qdiscs we created, when. It lives
 * on tmpfs like the kernel state it describes, so both vanish together at reboot. Every change
 * happens under a lock (flock on <run dir>/state.lock, which the kernel drops when its holder
 * exits), so concurrent attaches and detaches do not lose each other's work.
 */
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import writeFileAtomic from 'write-file-atomic'

import {FlowctlError, NotFoundError, StateError} from '../errors.js'
import type {Paths} from '../paths.js'
import {makeDirectories} from '../sys/directories.js'
import {heldBy, lockHolder, tryLock, waitLock, type HeldLock, type LockHolder} from '../sys/flock.js'
import {describeNetns, type NetnsName} from '../sys/netns.js'
import type {MeterSet} from './meter-set.js'
import type {DirectionName} from '../flow/record.js'

export interface MeterSetRecord {
  netns: NetnsName
  netnsInode: number
  digest: string
  capacity: number
  layoutVersion: number
  createdAt: string
}

export interface Attachment {
  netns: NetnsName
  interface: string
  ifindex: number
  direction: DirectionName
  pref: number
  handle: number
  /** The tc chain of the filter; absent (0) in states written before chains could be chosen. */
  chain?: number
  progId: number
  digest: string
  attachedAt: string
  /** We added the clsact qdisc, so we remove it once no filter is left on it. */
  qdiscCreated: boolean
}

export interface AttachState {
  version: 1
  meterSets: MeterSetRecord[]
  attachments: Attachment[]
}

function emptyState(): AttachState {
  return {version: 1, meterSets: [], attachments: []}
}

export function attachmentsFile(paths: Paths): string {
  return join(paths.runDir, 'attachments.json')
}

export function readState(paths: Paths): AttachState {
  const file = attachmentsFile(paths)
  if (!existsSync(file)) return emptyState()
  try {
    // Whatever the file holds: checked before it is taken for an AttachState.
    const state = JSON.parse(readFileSync(file, 'utf8')) as Partial<AttachState> | null
    if (state?.version !== 1 || !Array.isArray(state.attachments)) throw new Error(`unknown state version ${String(state?.version)}`)
    return state as AttachState
  } catch (error) {
    throw new StateError(`cannot read ${file} (${(error as Error).message}): remove it and attach again`, {cause: error})
  }
}

async function writeState(paths: Paths, state: AttachState): Promise<void> {
  makeDirectories(paths.runDir)
  await writeFileAtomic(attachmentsFile(paths), `${JSON.stringify(state, null, 2)}\n`)
}

const LOCK_WAIT_MS = 30_000

/** Runs `fn` holding the state lock, with the current state; `fn`'s changes are saved if it returns. */
export async function withStateLock<T>(paths: Paths, fn: (state: AttachState) => Promise<T>): Promise<T> {
  makeDirectories(paths.runDir)
  const file = join(paths.runDir, 'state.lock')
  const lock = await waitLock(file, LOCK_WAIT_MS)
  if (!lock) {
    const holder = lockHolder(file)
    throw new FlowctlError(`another flowctl${holder ? ` (pid ${holder})` : ''} has been changing the meters for 30 s: wait for it, or stop it if it is stuck`)
  }
  try {
    const state = readState(paths)
    const result = await fn(state)
    await writeState(paths, state)
    return result
  } finally {
    lock.release()
  }
}

export function sameNetns(a: NetnsName, b: NetnsName): boolean {
  return (a ?? null) === (b ?? null)
}

/**
 * `daemon.pid` in the run directory: the running daemon's pid, for people and `kill -HUP`. It is
 * information only: whether a daemon runs is the one-daemon lock's to say (a pid file left by a
 * daemon killed with SIGKILL can name any process once its pid is reused).
 */
export function daemonPidFile(paths: Paths): string {
  return join(paths.runDir, 'daemon.pid')
}

/**
 * The `flowctl daemon` that holds the one-daemon lock of these meters (another process than this
 * one), whatever its run directory; undefined when none does.
 */
export function runningDaemon(paths: Paths): LockHolder | undefined {
  const holder = heldBy(paths.pinRoot)
  return holder?.pid === process.pid ? undefined : holder
}

/** "flowctl daemon (pid N)", or without the pid where it cannot be read. */
export function describeDaemon(holder: LockHolder): string {
  return `flowctl daemon${holder.pid ? ` (pid ${holder.pid})` : ''}`
}

/**
 * The one-daemon lock: an flock on the pin root directory in bpffs, held while a daemon runs.
 * It lives beside the maps, so every daemon that can see them sees it, whatever its run
 * directory (bpffs holds no regular files, but a directory can be locked); the kernel drops it
 * when the daemon dies. Throws, naming the holder, when another daemon has it.
 */
export function claimMeterRoot(paths: Paths): HeldLock {
  try {
    makeDirectories(paths.pinRoot)
  } catch (error) {
    throw new FlowctlError(`cannot create ${paths.pinRoot} (${(error as Error).message}): is bpffs mounted on /sys/fs/bpf?`, {cause: error})
  }
  const lock = tryLock(paths.pinRoot, {directory: true})
  if (lock) return lock
  const holder = lockHolder(paths.pinRoot)
  throw new FlowctlError(
    `another flowctl daemon${holder ? ` (pid ${holder})` : ''} drains the meters pinned under ${paths.pinRoot}: stop it first (one daemon exports each meter)`,
  )
}

/**
 * A meter set's lock: an flock on its directory in bpffs, held by whoever writes its flows (the
 * snapshot in `pending`, `drain_state`, the swaps of its live maps): the daemon's drainer for as
 * long as it drains the set, `flush`, and the carrying over of a layout-1 set. One writer at a
 * time: two would each commit a snapshot without the other's flows. Throws, naming the holder,
 * when another process has it. Readers (`dump`, `top`, `meter status`) take no lock.
 */
export function claimMeterSet(set: MeterSet): HeldLock {
  let lock: HeldLock | undefined
  try {
    lock = tryLock(set.dir, {directory: true})
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new NotFoundError(`no meter is attached in ${describeNetns(set.netns)} (${set.dir} does not exist)`, {cause: error})
    throw error
  }
  if (lock) return lock
  const holder = heldBy(set.dir) ?? {}
  const daemon = heldBy(set.root)
  if (daemon && daemon.pid === holder.pid) {
    throw new FlowctlError(
      `${describeDaemon(daemon)} is exporting the flows of ${describeNetns(set.netns)}: stop it first (one process writes a meter's flows at a time)`,
    )
  }
  throw new FlowctlError(
    `another flowctl${holder.pid ? ` (pid ${holder.pid})` : ''} is writing the flows of ${describeNetns(set.netns)} (a flush, or a layout-1 meter carried over): wait for it to finish, then try again`,
  )
}
