/**
 * The building blocks of the config schema (schema.ts): maps with only known keys, lists,
 * strings, file paths, integers and seconds, each with the one-line message its key gets when a
 * value is wrong (`expected an integer, got the string '300' (write it without quotes); allowed:
 * ...`), and the floors of the settings that cannot work below them.
 */
import {distance} from 'fastest-levenshtein'
import * as v from 'valibot'

import {problemText} from './source.js'

/** setTimeout's longest delay (2^31-1 ms): a longer interval would fire at once. */
const MAX_SECONDS = 2_147_483

type Issue = v.BaseIssue<unknown>

// --- messages --------------------------------------------------------------------------------------

/** What a value is, in words: `the string '60s'`, `a list`, `nothing (an empty value)`. */
export function describe(value: unknown): string {
  if (value === null || value === undefined) return 'nothing (an empty value)'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'string') return `the string '${value.length > 40 ? `${value.slice(0, 40)}...` : value}'`
  if (typeof value === 'number' || typeof value === 'boolean') return `the ${typeof value} ${value}`
  if (typeof value === 'object') return 'a map'
  return `a ${typeof value}`
}

export function join(names: readonly string[], last = 'or'): string {
  if (names.length <= 1) return names.join('')
  return `${names.slice(0, -1).join(', ')} ${last} ${names[names.length - 1]}`
}

/** `expected KIND, got WHAT; allowed: ALLOWED`, with a hint when a number was quoted. */
export function expected(kind: string, allowed: string): (issue: Issue) => string {
  return (issue) => {
    const input = issue.input
    const quoted = kind !== 'a string' && typeof input === 'string' && input.trim() !== '' && Number.isFinite(Number(input))
    return problemText(`expected ${kind}, got ${describe(input)}${quoted ? ' (write it without quotes)' : ''}`, allowed)
  }
}

const outOfRange = (allowed: string) => (issue: Issue) => problemText(`${String(issue.input)} is out of range`, allowed)

/** The allowed key closest to an unknown one, if it is close enough to be a typo. */
function closestKey(key: string, allowed: readonly string[]): string | undefined {
  const lower = key.toLowerCase()
  let best: {name: string; d: number} | undefined
  for (const name of allowed) {
    const d = distance(lower, name.toLowerCase())
    if (!best || d < best.d) best = {name, d}
  }
  return best && best.d <= Math.max(1, Math.min(3, Math.floor(key.length / 4))) ? best.name : undefined
}

// --- building blocks -------------------------------------------------------------------------------

export function isMap(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * A map with only these keys. `required` gives, for each key that must be there, what it may be
 * (for the "missing" message); every other key may be left out or left empty (`key:` alone).
 */
export function map<const E extends v.ObjectEntries>(entries: E, required: {[K in keyof E]?: string} = {}) {
  const keys = Object.keys(entries)
  const message = (issue: Issue): string => {
    const step = issue.path?.at(-1)
    if (issue.expected === 'never') {
      const key = String(step?.key)
      const close = closestKey(key, keys)
      return problemText(`unknown key${close ? ` (did you mean ${close}?)` : ''}`, keys.join(', '))
    }
    if (step?.origin === 'key') return problemText('missing', required[String(step.key)])
    return problemText(`expected a map, got ${describe(issue.input)}`, `a map with the keys ${keys.join(', ')}`)
  }
  // strictObject takes a list for a map: a list is refused first.
  return v.pipe(v.custom<Record<string, unknown>>(isMap, message), v.strictObject(entries, message))
}

/** A list of `item`s. */
export function list<const T extends v.GenericSchema>(item: T, allowed: string, whenEmpty?: string) {
  const array = v.array(item, expected('a list', allowed))
  return whenEmpty === undefined ? array : v.pipe(array, v.minLength(1, whenEmpty))
}

export function text(allowed: string, options: {empty?: boolean} = {}) {
  const string = v.string(expected('a string', allowed))
  if (options.empty) return v.pipe(string)
  return v.pipe(
    string,
    v.check((s) => s.trim() !== '', problemText('empty string', allowed)),
  )
}

/** A file path: a string no file name refuses (the kernel ends a path at a NUL byte, and Node refuses one). */
export function filePath(allowed: string) {
  return v.pipe(
    text(allowed),
    v.check((s) => !s.includes('\0'), problemText('the path holds a NUL byte (\\0), which no file name can', allowed)),
  )
}

function number(kind: string, allowed: string) {
  return v.pipe(
    v.number(expected(kind, allowed)),
    v.finite((issue) => problemText(`${String(issue.input)} is not a finite number`, allowed)),
  )
}

export function integer(min: number, max: number, allowed = `an integer from ${min} to ${max}`) {
  return v.pipe(
    number('an integer', allowed),
    v.integer((issue) => problemText(`${String(issue.input)} is not an integer`, allowed)),
    v.minValue(min, outOfRange(allowed)),
    v.maxValue(max, outOfRange(allowed)),
  )
}

/** A setting's least sensible value, and why a smaller one cannot work. */
export interface Floor {
  seconds: number
  why: string
}

/** Seconds: more than 0 (or at least `floor`) and at most what a timer can wait. */
export function seconds(floor?: Floor) {
  const allowed = floor ? `a number of seconds from ${floor.seconds} to ${MAX_SECONDS}` : `a number of seconds greater than 0 and at most ${MAX_SECONDS}`
  return v.pipe(
    number('a number of seconds', allowed),
    v.gtValue(0, outOfRange(allowed)),
    v.minValue(floor?.seconds ?? 0, (issue) => problemText(`${String(issue.input)} is less than ${floor?.seconds}: ${floor?.why}`, allowed)),
    v.maxValue(MAX_SECONDS, outOfRange(allowed)),
  )
}

/** The floors of settings that cannot work below them (issue 13: 0.001 s drains took 20 % of a core while idle). */
export const FLOORS = {
  drainIntervalSeconds: {seconds: 0.1, why: 'every drain walks the kernel maps, so draining more often costs CPU while idle and exports nothing sooner'},
  templateRefreshSeconds: {seconds: 1, why: 'templates are sent again to every collector that often, which more often only floods the collectors'},
  hookTimeoutSeconds: {seconds: 0.1, why: 'starting a hook takes that long already, so a shorter timeout would kill every hook before it ran'},
} as const satisfies Record<string, Floor>
