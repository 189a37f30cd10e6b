/**
 * What the checks across keys (load.ts, outputs.ts, templates.ts) share: failing at a key path,
 * which the source turns into FILE:LINE:COL, and reading a setting that has a new name and the
 * older tool's (linux-flow-exporter's), under whichever one the file gives.
 */
import {problemText, type Anchor, type ConfigSource, type PathKey} from './source.js'

/** One setting found under one of its two names. */
export interface Setting<T> {
  key: string
  path: PathKey[]
  value: T
}

/** A part of the config as loaded, and where it came from. */
export interface Placed<T> {
  config: T
  /** The key path problems with it point at. */
  path: PathKey[]
  /** Where a collector's name: is, when it has one. */
  namePath?: PathKey[]
}

export class KeyChecks {
  constructor(readonly source: ConfigSource) {}

  /** Throws the ConfigError for `path`: `FILE:LINE:COL: KEY: PROBLEM; allowed: ALLOWED`. */
  fail(path: PathKey[], problem: string, allowed?: string, anchor: Anchor = 'value'): never {
    this.source.fail(path, problemText(problem, allowed), anchor)
  }

  /**
   * One setting with a new and an older name: the one given, never both (presence counts, even
   * with an empty value). `required`: what it may be, when it must be there.
   */
  either<T>(m: Record<string, unknown>, base: PathKey[], newName: string, oldName: string, required?: string): Setting<NonNullable<T>> | undefined {
    const hasNew = newName in m
    const hasOld = oldName in m
    if (hasNew && hasOld) {
      const newFirst = this.source.offsetOf([...base, newName], 'key') < this.source.offsetOf([...base, oldName], 'key')
      const [first, second] = newFirst ? [newName, oldName] : [oldName, newName]
      this.fail(
        [...base, second],
        `the same setting as ${first} (line ${this.source.lineOf([...base, first])})`,
        `only one of ${newName} or ${oldName} (the older tool's name)`,
        'key',
      )
    }
    const key = hasOld ? oldName : newName
    const value = m[key] as T | null | undefined
    if (required !== undefined) {
      if (!hasNew && !hasOld) this.fail([...base, newName], 'missing', required, 'map')
      if (value === null || value === undefined) this.fail([...base, key], 'missing value', required)
    }
    return value === null || value === undefined ? undefined : {key, path: [...base, key], value}
  }
}
