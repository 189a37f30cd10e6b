/**
 * A running daemon's claim on its meters: the one-daemon lock, which says whether another daemon
 * runs (the kernel drops it with its holder), and daemon.pid, which only tells people which
 * process this is: a stale one, its pid reused by any process after a SIGKILL, never stops a
 * daemon from starting.
 */
import {existsSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {dirname} from 'node:path'

import {claimMeterRoot, daemonPidFile} from '../bpf/state.js'
import type {Paths} from '../paths.js'
import {makeDirectories} from '../sys/directories.js'
import type {HeldLock} from '../sys/flock.js'

export class PidFile {
  /** Held while running: no second daemon drains the same pinned maps. */
  private meterRootLock?: HeldLock

  constructor(private readonly paths: Paths) {}

  /** Takes the one-daemon lock (throws, naming the holder, when another daemon has it), then writes daemon.pid. */
  claim(): void {
    this.meterRootLock = claimMeterRoot(this.paths)
    try {
      const file = daemonPidFile(this.paths)
      makeDirectories(dirname(file))
      writeFileSync(file, `${process.pid}\n`)
    } catch (error) {
      this.meterRootLock.release()
      throw error
    }
  }

  /** Lets go of the lock, and removes daemon.pid if it is still ours. */
  release(): void {
    this.meterRootLock?.release()
    const file = daemonPidFile(this.paths)
    if (existsSync(file) && readFileSync(file, 'utf8').trim() === String(process.pid)) rmSync(file, {force: true})
  }
}
