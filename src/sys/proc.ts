/**
 * Finding the processes a program started, however far they went: a program we run gets a tag
 * in its environment (FLOWCTL_RUN_TAG=<random>), which every process it starts inherits unless it
 * clears its environment on purpose. A child that left the process group (`setsid cmd &`) or
 * double-forked is still found by its tag in /proc/PID/environ, and killed with the rest.
 */
import {randomBytes} from 'node:crypto'
import {readdirSync, readFileSync} from 'node:fs'

export const RUN_TAG_VARIABLE = 'FLOWCTL_RUN_TAG'

/** A fresh tag, as an environment entry to give the program. */
export function newRunTag(): {name: string; value: string} {
  return {name: RUN_TAG_VARIABLE, value: randomBytes(12).toString('hex')}
}

/** The pids of every process whose environment carries the tag (our own excepted). */
export function taggedProcesses(tag: {name: string; value: string}): number[] {
  const needle = Buffer.from(`${tag.name}=${tag.value}\0`)
  const found: number[] = []
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return found
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    if (pid === process.pid) continue
    try {
      if (readFileSync(`/proc/${pid}/environ`).includes(needle)) found.push(pid)
    } catch {
      // gone already, or a kernel thread
    }
  }
  return found
}

/**
 * SIGKILLs every process carrying the tag, again until none is left (one may fork while we look),
 * at most `rounds` times; returns how many were killed.
 */
export function killTagged(tag: {name: string; value: string}, rounds = 5): number {
  let killed = 0
  for (let i = 0; i < rounds; i++) {
    const pids = taggedProcesses(tag)
    if (!pids.length) break
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
        killed++
      } catch {
        // it ended on its own
      }
    }
  }
  return killed
}
