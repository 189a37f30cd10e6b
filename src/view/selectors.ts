/**
 * Flow selectors, as given on the command line (-p -s -S -d -D, --netns, -n): parsed and checked
 * once, then matched against flows.
 */
import {InvalidInputError} from '../errors.js'
import type {FlowKey} from '../flow/record.js'
import {canonicalAddress} from '../util/address.js'
import {parseProtocol} from '../flow/protocols.js'

export interface FlowSelector {
  proto?: number
  src?: string
  sport?: number
  dst?: string
  dport?: number
  /** ifindexes allowed (resolved from interface names by the caller) */
  ifindexes?: number[]
  direction?: 'ingress' | 'egress'
}

export interface SelectorFlags {
  proto?: string
  src?: string
  sport?: number | string
  dst?: string
  dport?: number | string
  direction?: string
}

export function parsePort(value: number | string, flag: string): number {
  const n = typeof value === 'number' ? value : /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidInputError(`invalid port '${value}' for ${flag}: expected 0-65535`)
  return n
}

export function parseSelector(flags: SelectorFlags): FlowSelector {
  const s: FlowSelector = {}
  if (flags.proto !== undefined) s.proto = parseProtocol(flags.proto)
  if (flags.src !== undefined) s.src = canonicalAddress(flags.src, 'source address (--src)')
  if (flags.dst !== undefined) s.dst = canonicalAddress(flags.dst, 'destination address (--dst)')
  if (flags.sport !== undefined) s.sport = parsePort(flags.sport, '--sport')
  if (flags.dport !== undefined) s.dport = parsePort(flags.dport, '--dport')
  if (flags.direction !== undefined && flags.direction !== 'both') {
    if (flags.direction !== 'ingress' && flags.direction !== 'egress') {
      throw new InvalidInputError(`invalid direction '${flags.direction}': expected ingress, egress or both`)
    }
    s.direction = flags.direction
  }
  return s
}

export function isEmptySelector(s: FlowSelector): boolean {
  return s.proto === undefined && s.src === undefined && s.dst === undefined && s.sport === undefined && s.dport === undefined && !s.ifindexes && !s.direction
}

export function matchesSelector(s: FlowSelector, key: FlowKey): boolean {
  return (
    (s.proto === undefined || key.proto === s.proto) &&
    (s.src === undefined || key.src === s.src) &&
    (s.dst === undefined || key.dst === s.dst) &&
    (s.sport === undefined || key.sport === s.sport) &&
    (s.dport === undefined || key.dport === s.dport) &&
    (s.ifindexes === undefined || s.ifindexes.includes(key.ifindex)) &&
    (s.direction === undefined || key.direction === s.direction)
  )
}
