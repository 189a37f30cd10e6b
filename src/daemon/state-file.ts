/**
 * What the daemon keeps across restarts: the next IPFIX sequence number of each transport session
 * with a fixed source address and port, per observation domain. A restarted daemon (even after
 * SIGKILL) continues the numbering, so collectors see no loss. Written atomically
 * (write-file-atomic: a temporary file renamed over the old one).
 *
 * Nothing else depends on it: a file that cannot be read or has the wrong shape costs only the
 * numbering (collectors see one gap) and is reported once; a file that cannot be written
 * (read-only directory, the path is a directory, disk full) makes `save()` return the error,
 * and the daemon goes on exporting, refreshing templates and stopping as it would without it.
 */
import {existsSync, readFileSync} from 'node:fs'
import {dirname} from 'node:path'

import writeFileAtomic from 'write-file-atomic'

import type {SequenceStore} from '../ipfix/export/collector-exporter.js'
import {makeDirectories} from '../sys/directories.js'

interface StateJson {
  version: 1
  sequences: Record<string, Record<string, number> | undefined>
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * Checks a parsed state file: the state, or why it cannot be used (one line naming the first
 * wrong key). Sequence numbers are 32-bit unsigned integers (RFC 7011 §3.1); domains are too.
 */
export function parseDaemonState(parsed: unknown): {state: StateJson} | {problem: string} {
  if (!isPlainObject(parsed)) return {problem: 'not a JSON object'}
  if (parsed.version !== 1) return {problem: `version is ${JSON.stringify(parsed.version)}, expected 1`}
  if (!isPlainObject(parsed.sequences)) return {problem: 'sequences is not an object of sessions'}
  for (const [session, domains] of Object.entries(parsed.sequences)) {
    if (!isPlainObject(domains)) return {problem: `sequences.${session} is not an object of observation domains`}
    for (const [domain, next] of Object.entries(domains)) {
      if (!/^\d+$/.test(domain) || Number(domain) > 0xffff_ffff)
        return {problem: `sequences.${session}: ${JSON.stringify(domain)} is not an observation domain id (0-4294967295)`}
      if (typeof next !== 'number' || !Number.isInteger(next) || next < 0 || next > 0xffff_ffff) {
        return {problem: `sequences.${session}.${domain} is ${JSON.stringify(next)}, not a sequence number (an integer 0-4294967295)`}
      }
    }
  }
  return {state: parsed as unknown as StateJson}
}

export class DaemonStateFile implements SequenceStore {
  readonly path: string
  /** Why the file on disk was not used (it is replaced at the next save), if it was not. */
  readonly problem: string | undefined
  private readonly state: StateJson = {version: 1, sequences: {}}
  private changed = false

  constructor(path: string) {
    this.path = path
    if (!existsSync(path)) return
    let parsed: unknown
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'))
    } catch (error) {
      this.problem = `cannot read it: ${(error as Error).message}`
      return
    }
    const checked = parseDaemonState(parsed)
    if ('problem' in checked) this.problem = checked.problem
    else this.state = checked.state
  }

  get(session: string, domain: number): number | undefined {
    return this.state.sequences[session]?.[domain]
  }

  set(session: string, domain: number, next: number): void {
    ;(this.state.sequences[session] ??= {})[domain] = next
    this.changed = true
  }

  /**
   * Writes the numbers if they changed; returns the error instead of throwing when the file cannot
   * be written (the numbers stay in memory and the next save tries again). No fsync: the file
   * survives the daemon's death without it, and a power loss costs one gap in the numbering, not
   * worth a disk flush every drain.
   */
  save(): Error | undefined {
    if (!this.changed) return undefined
    try {
      // Not mkdirSync's recursive mode: under a missing /proc path it never returns.
      makeDirectories(dirname(this.path))
      writeFileAtomic.sync(this.path, `${JSON.stringify(this.state)}\n`, {fsync: false})
    } catch (error) {
      return error as Error
    }
    this.changed = false
    return undefined
  }
}
