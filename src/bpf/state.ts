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

import {FlowctlError, StateError} from '../errors.js'
import type {Paths} from '../paths.js'
import {makeDirectories} from '../sys/directories.js'
import {lockHolder, tryLock, waitLock, type HeldLock} from '../sys/flock.js'
import type {NetnsName} from '../sys/netns.js'
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
    const state = JSON.parse(readFileSync(file, 'utf8')) as AttachState
    if (state.version !== 1 || !Array.isArray(state.attachments)) throw new Error(`unknown state version ${state.version}`)
    return state
  } catch (error) {
    throw new StateError(`cannot read ${file} (${(error as Error).message}): remove it and attach again`, {cause: error})
  }
}

async function writeState(paths: Paths, state: AttachState): Promise<void> {
  makeDirectories(paths.runDir)
  await writeFileAtomic(attachmentsFile(paths), `${JSON.stringify(state, null, 2)}\n`)
}

const LOCK_WAIT_MS = 30_000

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

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

export function daemonPidFile(paths: Paths): string {
  return join(paths.runDir, 'daemon.pid')
}

/** The pid of a running `flowctl daemon`, if one is running. */
export function runningDaemonPid(paths: Paths): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(daemonPidFile(paths), 'utf8'), 10)
    return pid && pid !== process.pid && pidAlive(pid) ? pid : undefined
  } catch {
    return undefined
  }
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
  throw new FlowctlError(`another flowctl daemon${holder ? ` (pid ${holder})` : ''} drains the meters pinned under ${paths.pinRoot}: stop it first (one daemon exports each meter)`)
}
