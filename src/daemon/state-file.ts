/**
 * What the daemon keeps across restarts: the next IPFIX sequence number of each transport session
 * with a fixed source address and port, per observation domain. A restarted daemon (even after
 * SIGKILL) continues the numbering, so collectors see no loss. Written atomically.
 */
import {existsSync, mkdirSync, readFileSync, renameSync, writeFileSync} from 'node:fs'
import {dirname} from 'node:path'

import type {SequenceStore} from '../ipfix/exporter.js'

interface StateJson {
  version: 1
  sequences: Record<string, Record<string, number>>
}

export class DaemonStateFile implements SequenceStore {
  readonly path: string
  private state: StateJson = {version: 1, sequences: {}}
  private changed = false

  constructor(path: string) {
    this.path = path
    if (existsSync(path)) {
      try {
        const parsed = JSON.parse(readFileSync(path, 'utf8')) as StateJson
        if (parsed.version === 1 && parsed.sequences) this.state = parsed
      } catch {
        // A damaged file costs only the numbering: collectors see one gap.
      }
    }
  }

  get(session: string, domain: number): number | undefined {
    return this.state.sequences[session]?.[domain]
  }

  set(session: string, domain: number, next: number): void {
    ;(this.state.sequences[session] ??= {})[domain] = next
    this.changed = true
  }

  save(): void {
    if (!this.changed) return
    mkdirSync(dirname(this.path), {recursive: true})
    const tmp = `${this.path}.${process.pid}.tmp`
    writeFileSync(tmp, `${JSON.stringify(this.state)}\n`)
    renameSync(tmp, this.path)
    this.changed = false
  }
}
