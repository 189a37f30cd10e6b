/**
 * flock(2) locks, for "one at a time" across processes. The kernel holds such a lock for the open
 * file and drops it when the holder exits, however it exits (SIGKILL included): no lock is ever
 * left behind to be guessed stale and broken, which is where lock files that hold a pid go wrong
 * (a dead holder's pid reused, two processes breaking the same stale lock). A directory can be
 * locked too, which is what bpffs needs: it holds directories and pins, never regular files.
 * Node has no flock, so libc's is called through koffi (as libbpf is). Who holds a lock is read
 * from /proc/locks, to name them in a message.
 */
import {closeSync, openSync, readFileSync, statSync} from 'node:fs'

import koffi from 'koffi'

import {errnoName, FlowctlError} from '../errors.js'

const LOCK_EX = 2
const LOCK_NB = 4
const EWOULDBLOCK = 11
const EINTR = 4

let flockFn: ((fd: number, operation: number) => number) | undefined

function flock(fd: number, operation: number): number {
  flockFn ??= koffi.load('libc.so.6').func('int flock(int fd, int operation)') as (fd: number, operation: number) => number
  return flockFn(fd, operation)
}

/** A lock held through an open file; `release()` closes it, which lets the lock go. */
export class HeldLock {
  constructor(
    readonly path: string,
    private fd: number | undefined,
  ) {}

  release(): void {
    if (this.fd === undefined) return
    closeSync(this.fd)
    this.fd = undefined
  }
}

/**
 * Takes an exclusive lock on `path` (a file, created if missing, or a directory) without waiting:
 * undefined if another open file holds it. Node opens files close-on-exec, so the programs we
 * start do not inherit the lock.
 */
export function tryLock(path: string, options: {directory?: boolean} = {}): HeldLock | undefined {
  const fd = openSync(path, options.directory ? 'r' : 'a')
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) === 0) return new HeldLock(path, fd)
    const errno = koffi.errno()
    if (errno === EINTR) continue
    closeSync(fd)
    if (errno === EWOULDBLOCK) return undefined
    throw new FlowctlError(`cannot lock ${path}: flock failed: ${errnoName(errno)}`)
  }
}

/** Waits up to `timeoutMs` for the lock on `path`; undefined if it is still held then. */
export async function waitLock(path: string, timeoutMs: number, pollMs = 50): Promise<HeldLock | undefined> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const held = tryLock(path)
    if (held || Date.now() >= deadline) return held
    await new Promise((r) => setTimeout(r, pollMs))
  }
}

/** Who holds a lock: the pid, when /proc/locks shows it (a holder in another pid namespace shows none). */
export interface LockHolder {
  pid?: number
}

/**
 * Whether an open file (this process's too) holds a flock on `path`, and whose, read from
 * /proc/locks: undefined if none does. It takes nothing, so it never gets in the way of a process
 * about to take the lock. Where /proc/locks cannot be read, the lock is tried and let go at once.
 * Only taking the lock is sure (a holder in another pid namespace may not be shown): a writer does.
 */
export function heldBy(path: string): LockHolder | undefined {
  let dev: number
  let ino: number
  try {
    ;({dev, ino} = statSync(path))
  } catch {
    return undefined
  }
  let locks: string
  try {
    locks = readFileSync('/proc/locks', 'utf8')
  } catch {
    const probe = tryLock(path, {directory: statSync(path).isDirectory()})
    probe?.release()
    return probe ? undefined : {}
  }
  const major = ((dev >> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff)
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00)
  // "1: FLOCK  ADVISORY  WRITE 8424 00:27:18187 0 EOF"; waiters ("1: -> FLOCK ...") hold nothing.
  for (const line of locks.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f[1] !== 'FLOCK') continue
    const [maj, min, inode] = (f[5] ?? '').split(':')
    if (Number.parseInt(maj, 16) === major && Number.parseInt(min, 16) === minor && Number(inode) === ino) {
      const pid = Number(f[4])
      return pid > 0 ? {pid} : {}
    }
  }
  return undefined
}

/** The pid of a process holding a flock on `path` (from /proc/locks), if one does. */
export function lockHolder(path: string): number | undefined {
  return heldBy(path)?.pid
}
