/**
 * Addresses in a config (a collector's, a source, the metrics listener) and in command-line
 * flags: HOST:PORT, IPV4:PORT or [IPV6]:PORT, split into host and port, with a message that says
 * what is wrong with one that is not.
 */
import {isIPv4, isIPv6} from 'node:net'

import * as v from 'valibot'

import {InvalidInputError} from '../errors.js'
import type {Endpoint} from './config.js'
import {isMap, text} from './schema-values.js'
import {problemText} from './source.js'

const HOSTNAME_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/i

export type AddressKind = 'remote' | 'source' | 'listen'

export const ADDRESS_ALLOWED: Record<AddressKind, string> = {
  remote: 'HOST:PORT, IPV4:PORT or [IPV6]:PORT with a port from 1 to 65535',
  source: 'IPV4:PORT or [IPV6]:PORT (or HOST:PORT) with a port from 0 (any) to 65535',
  listen: 'HOST:PORT, IPV4:PORT or [IPV6]:PORT with a port from 0 to 65535',
}

const EXAMPLE_PORT: Record<AddressKind, number> = {remote: 4739, source: 0, listen: 9999}

/** An address as written and as host and port. */
export interface ParsedAddress {
  text: string
  endpoint: Endpoint
}

/** Splits HOST:PORT, IPV4:PORT or [IPV6]:PORT; a string that is none of them is the problem returned. */
function parseAddress(text: string, kind: AddressKind): ParsedAddress | {problem: string} {
  const allowed = ADDRESS_ALLOWED[kind]
  const fail = (problem: string, allowedText = allowed) => ({problem: problemText(problem, allowedText)})
  let host: string
  let portText: string
  if (text.startsWith('[')) {
    const m = /^\[([^\]]*)\](?::(.*))?$/.exec(text)
    if (!m) return fail(`'${text}' is not an address`)
    host = m[1]
    if (!isIPv6(host)) return fail(`'${host}' in brackets is not an IPv6 address`)
    const port = m.at(2)
    if (port === undefined) return fail(`'${text}' has no port`, `${allowed}, e.g. ${text}:${EXAMPLE_PORT[kind]}`)
    portText = port
  } else {
    const colons = text.split(':').length - 1
    if (colons === 0) return fail(`'${text}' has no port`, `${allowed}, e.g. ${text}:${EXAMPLE_PORT[kind]}`)
    if (colons > 1) {
      if (isIPv6(text)) return fail(`the IPv6 address '${text}' needs brackets and a port`, `[IPV6]:PORT, e.g. [${text}]:${EXAMPLE_PORT[kind]}`)
      return fail(`'${text}' is not an address`)
    }
    const at = text.lastIndexOf(':')
    host = text.slice(0, at)
    portText = text.slice(at + 1)
    if (host === '') return fail(`'${text}' has no host`, kind === 'remote' ? allowed : `${allowed}, e.g. 0.0.0.0${text} or [::]${text}`)
    if (!isIPv4(host)) {
      if (/^[\d.]+$/.test(host)) return fail(`'${host}' is not a valid IPv4 address`)
      const labels = (host.endsWith('.') ? host.slice(0, -1) : host).split('.')
      if (host.length > 253 || !labels.every((l) => HOSTNAME_LABEL.test(l)) || /^\d+$/.test(labels[labels.length - 1])) {
        return fail(`'${host}' is not an IPv4 address or a hostname`)
      }
    }
  }
  if (!/^\d+$/.test(portText)) return fail(`'${portText}' is not a port`)
  const port = Number(portText)
  if (port < (kind === 'remote' ? 1 : 0) || port > 65535) return fail(`port ${port} is out of range`)
  return {text, endpoint: {host, port}}
}

/** An address a command-line flag gives (`flag` names it in the message): its host and port, or an InvalidInputError. */
export function parseAddressFlag(flag: string, text: string, kind: AddressKind): Endpoint {
  const parsed = parseAddress(text.trim(), kind)
  if ('problem' in parsed) throw new InvalidInputError(`${flag}: ${parsed.problem}`)
  return parsed.endpoint
}

export function address(kind: AddressKind) {
  return v.pipe(
    v.unknown(),
    // `address: [2001:db8::1]` is a YAML list of one string, not an address.
    v.rawCheck(({dataset, addIssue}) => {
      const value = dataset.value
      if (Array.isArray(value) && value.length === 1 && !isMap(value[0]) && !Array.isArray(value[0])) {
        const inner = String(value[0])
        addIssue({message: problemText(`[${inner}] was read as a YAML list`, `a quoted address: "[${inner}]:${EXAMPLE_PORT[kind]}"`)})
      }
    }),
    text(ADDRESS_ALLOWED[kind]),
    v.rawTransform(({dataset, addIssue, NEVER}) => {
      const parsed = parseAddress(dataset.value.trim(), kind)
      if ('problem' in parsed) {
        addIssue({message: parsed.problem})
        return NEVER
      }
      return parsed
    }),
  )
}
