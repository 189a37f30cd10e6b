/**
 * The shape of config.yaml as a valibot schema: which keys each map may have, the type and range
 * of each value, and the values that parse into something (addresses, element names, namespace
 * names). Every message is written for the key it belongs to (`expected an integer, got the
 * string '300' (write it without quotes); allowed: ...`); the issue's key path is turned into a
 * FILE:LINE:COL by source.ts. What needs two keys at once (ids that must be unique, a collector
 * naming a template, old and new names of one setting) is load.ts's.
 */
import {isIPv4, isIPv6} from 'node:net'

import {distance} from 'fastest-levenshtein'
import * as v from 'valibot'

import {InvalidInputError} from '../errors.js'
import {allowedLengths, defaultLength, elementByName, similarNames, VARIABLE_LENGTH, type InformationElement} from '../ipfix/wire/elements.js'
import {EXPORTABLE_ELEMENTS, exportableElement, unfillableReason} from '../ipfix/export/exportable-elements.js'
import {validateNetnsName} from '../sys/netns.js'
import type {Endpoint} from './config.js'
import {problemText, type PathKey} from './source.js'

/** setTimeout's longest delay (2^31-1 ms): a longer interval would fire at once. */
export const MAX_SECONDS = 2_147_483
/** Room for the statistics options record flowctl sends (16 + 4 + 60 bytes). */
export const MIN_MESSAGE_SIZE = 80
export const MAX_MESSAGE_SIZE = 65_507

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

function join(names: readonly string[], last = 'or'): string {
  if (names.length <= 1) return names.join('')
  return `${names.slice(0, -1).join(', ')} ${last} ${names[names.length - 1]}`
}

/** `expected KIND, got WHAT; allowed: ALLOWED`, with a hint when a number was quoted. */
function expected(kind: string, allowed: string): (issue: Issue) => string {
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

function isMap(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * A map with only these keys. `required` gives, for each key that must be there, what it may be
 * (for the "missing" message); every other key may be left out or left empty (`key:` alone).
 */
function map<const E extends v.ObjectEntries>(entries: E, required: {[K in keyof E]?: string} = {}) {
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
function list<const T extends v.GenericSchema>(item: T, allowed: string, whenEmpty?: string) {
  const array = v.array(item, expected('a list', allowed))
  return whenEmpty === undefined ? array : v.pipe(array, v.minLength(1, whenEmpty))
}

function text(allowed: string, options: {empty?: boolean} = {}) {
  const string = v.string(expected('a string', allowed))
  if (options.empty) return v.pipe(string)
  return v.pipe(
    string,
    v.check((s) => s.trim() !== '', problemText('empty string', allowed)),
  )
}

/** A file path: a string no file name refuses (the kernel ends a path at a NUL byte, and Node refuses one). */
function filePath(allowed: string) {
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

function integer(min: number, max: number, allowed = `an integer from ${min} to ${max}`) {
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
function seconds(floor?: Floor) {
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

// --- addresses ---------------------------------------------------------------------------------------

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
    if (m[2] === undefined) return fail(`'${text}' has no port`, `${allowed}, e.g. ${text}:${EXAMPLE_PORT[kind]}`)
    portText = m[2]
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

function address(kind: AddressKind) {
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

// --- information elements ---------------------------------------------------------------------------

/**
 * The registry names closest to an unknown element name: those flowctl can export if any is close,
 * and of those only the closest (a typo of sourceIPv4Address suggests that, not sourceIPv6Address too).
 */
function elementSuggestions(name: string): string[] {
  const near = similarNames(name, 10).map((n) => ({name: n, d: distance(name.toLowerCase(), n.toLowerCase())}))
  const exportable = near.filter((n) => exportableElement(n.name))
  const pool = exportable.length > 0 ? exportable : near
  const best = Math.min(...pool.map((n) => n.d))
  return pool
    .filter((n) => n.d === best)
    .slice(0, 3)
    .map((n) => n.name)
}

/** An element a template may name: in the registry, and one flowctl has a value for. */
export interface ExportElement {
  element: InformationElement
  /** The address family it ties a template to, if any. */
  family?: 4 | 6
}

const EXPORTABLE_LIST = `an element flowctl can export: ${Object.keys(EXPORTABLE_ELEMENTS).join(', ')}`

const elementName = v.pipe(
  text('an information element name'),
  v.rawTransform(({dataset, addIssue, NEVER}): ExportElement => {
    const name = dataset.value.trim()
    const element = elementByName(name)
    if (!element) {
      const suggestions = elementSuggestions(name)
      addIssue({
        message:
          suggestions.length > 0
            ? `unknown information element '${name}'; did you mean ${join(suggestions)}?`
            : problemText(`unknown information element '${name}'`, EXPORTABLE_LIST),
      })
      return NEVER
    }
    const exportable = exportableElement(element.name)
    if (!exportable) {
      const reason = unfillableReason(element.name)
      if (reason && parsing.allowUnfillable) return {element, family: undefined}
      addIssue({
        message: problemText(`flowctl has no value for information element ${element.name} (${element.id})${reason ? `: ${reason}` : ''}`, EXPORTABLE_LIST),
      })
      return NEVER
    }
    return {element, family: exportable.family}
  }),
)

function lengthsText(element: InformationElement): string {
  const allowed = allowedLengths(element.type)
  if (allowed === 'any') return `1 to ${VARIABLE_LENGTH} (${VARIABLE_LENGTH} = variable length)`
  if (allowed.length === 1) return `${allowed[0]}`
  return `${join(allowed.map(String))} (reduced-size encoding, RFC 7011 §6.2)`
}

/** A template field as loaded: the element, and the length it is encoded in. */
export interface FieldValue extends ExportElement {
  length: number
  /** Whether it was written {name: ..., length: ...} (problems with the name then point at `name`). */
  named: boolean
}

const fieldMap = v.pipe(
  map(
    {name: elementName, length: v.nullish(integer(1, VARIABLE_LENGTH, `a field length from 1 to ${VARIABLE_LENGTH}`))},
    {name: 'an information element name'},
  ),
  v.rawTransform(({dataset, addIssue, NEVER}): FieldValue => {
    const {name, length} = dataset.value
    if (length === null || length === undefined) return {...name, length: defaultLength(name.element), named: true}
    const allowed = allowedLengths(name.element.type)
    if (allowed !== 'any' && !allowed.includes(length)) {
      const step = {type: 'object', origin: 'value', input: dataset.value, key: 'length', value: length} as const
      addIssue({message: problemText(`${length} is not a length for ${name.element.name} (${name.element.type})`, lengthsText(name.element)), path: [step]})
      return NEVER
    }
    return {...name, length, named: true}
  }),
)

const fieldName = v.pipe(
  elementName,
  v.transform((e): FieldValue => ({...e, length: defaultLength(e.element), named: false})),
)

const FIELD_FORM = 'an information element name, or {name: NAME, length: BYTES}'

const fieldOther = v.custom<never>(
  () => false,
  (issue) => problemText(`expected an element name, got ${describe(issue.input)}`, FIELD_FORM),
)

/** `sourceIPv4Address` or `{name: octetDeltaCount, length: 4}`. */
const field = v.lazy((input) => (isMap(input) ? fieldMap : Array.isArray(input) ? fieldOther : fieldName))

const FIELDS_ALLOWED = 'a list of information element names, or {name: NAME, length: BYTES}'
const fieldList = list(field, FIELDS_ALLOWED, problemText('a template needs at least one field', FIELDS_ALLOWED))

// --- the sections ---------------------------------------------------------------------------------------

const TEMPLATE_ID = 'a template id from 256 to 65535'

const template = map(
  {
    id: integer(256, 65535, `${TEMPLATE_ID} (0-255 are set ids)`),
    fields: v.nullish(fieldList),
    template: v.nullish(fieldList),
  },
  {id: TEMPLATE_ID},
)

const COLLECTOR_NAME = 'a name of 1 to 128 characters, no control characters (the collector in logs and metrics)'
const collectorName = v.pipe(
  text(COLLECTOR_NAME),
  v.check((s) => s.length <= 128, problemText('longer than 128 characters', COLLECTOR_NAME)),
  v.check((s) => !/[\u0000-\u001f\u007f]/.test(s), problemText('a control character', COLLECTOR_NAME)),
)

const REPLAY_RATE = 'an integer from 10000 to 2^40 (bytes a second)'
const replayRate = integer(10_000, 2 ** 40, REPLAY_RATE)
const SEND_RATE = 'an integer from 10000 to 2^40 (bytes a second), or 0 (unpaced)'
/** 0 (unpaced) or a rate a timer can pace: below 10 kB/s one message would wait a tenth of a second. */
const sendRate = v.pipe(
  integer(0, 2 ** 40, SEND_RATE),
  v.check(
    (n) => n === 0 || n >= 10_000,
    (issue) => problemText(`${String(issue.input)} is out of range`, SEND_RATE),
  ),
)

const collector = map({
  name: v.nullish(collectorName),
  address: v.nullish(address('remote')),
  remoteAddress: v.nullish(address('remote')),
  source: v.nullish(address('source')),
  localAddress: v.nullish(address('source')),
  templates: v.nullish(list(integer(0, 65535, 'a list of template ids'), 'a list of template ids')),
  replayBytesPerSecond: v.nullish(replayRate),
  sendBytesPerSecond: v.nullish(sendRate),
})

const ARGV = 'a list [PROGRAM, ARG, ...]'
const argv = v.pipe(
  list(v.string(expected('a string', 'a string')), ARGV, problemText('the list is empty', ARGV)),
  v.rawCheck(({dataset, addIssue}) => {
    if (dataset.typed && dataset.value[0].trim() === '') {
      addIssue({
        message: problemText('empty string', 'a string'),
        path: [{type: 'array', origin: 'value', input: dataset.value, key: 0, value: dataset.value[0]}],
      })
    }
  }),
)
const PROGRAM = `a program, or ${ARGV}`
/** As the older tool did, a string is the whole program, run without a shell. */
const programText = v.pipe(
  text(PROGRAM),
  v.transform((s) => [s]),
)
const command = v.lazy((input) => (Array.isArray(input) ? argv : programText))

const hook = map({
  name: v.nullish(text('a name for logs')),
  command: v.nullish(command),
  shell: v.nullish(text('a shell script')),
  timeoutSeconds: v.nullish(seconds(FLOORS.hookTimeoutSeconds)),
})

const LOG_FILE = "a file path, or '-' for stdout"
const log = map(
  {
    file: filePath(LOG_FILE),
    hooks: v.nullish(list(hook, 'a list of hooks: {command: PROGRAM} or {shell: SCRIPT}')),
  },
  {file: LOG_FILE},
)

const output = map({collector: v.nullish(collector), log: v.nullish(log)})

const NETNS = 'a namespace name from `ip netns list`, or root'
const netnsName = v.pipe(
  text(NETNS),
  v.rawTransform(({dataset, addIssue, NEVER}): string | null => {
    const name = dataset.value.trim()
    if (name === 'root') return null
    try {
      return validateNetnsName(name)
    } catch (error) {
      if (!(error instanceof InvalidInputError)) throw error
      addIssue({message: problemText(`'${name}' is not a namespace name`, 'a namespace name from `ip netns list` (no /), or root')})
      return NEVER
    }
  }),
)

const meter = map({netns: netnsName, observationDomainId: v.nullish(integer(0, 0xffffffff))}, {netns: NETNS})

const listen = v.lazy((input) => (input === '' ? v.literal('') : address('listen')))

const MESSAGE_SIZE = `an integer from ${MIN_MESSAGE_SIZE} to ${MAX_MESSAGE_SIZE} (bytes of UDP payload)`

/** The whole file. Every key may be left out or left empty. */
export const CONFIG_SCHEMA = map({
  observationDomainId: v.nullish(integer(0, 0xffffffff)),
  maxMessageSize: v.nullish(integer(MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE, MESSAGE_SIZE)),
  maxIpfixMessageLen: v.nullish(integer(MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE, MESSAGE_SIZE)),
  templateRefreshSeconds: v.nullish(seconds(FLOORS.templateRefreshSeconds)),
  timerTemplateFlushSeconds: v.nullish(seconds(FLOORS.templateRefreshSeconds)),
  statsIntervalSeconds: v.nullish(seconds()),
  spoolBytes: v.nullish(integer(0, 2 ** 40, 'an integer from 0 (no spool) to 2^40 (bytes held per collector while it is down)')),
  spoolTotalBytes: v.nullish(integer(0, 2 ** 40, 'an integer from 0 (no spool) to 2^40 (bytes held for all collectors together)')),
  replayBytesPerSecond: v.nullish(replayRate),
  sendBytesPerSecond: v.nullish(sendRate),
  drainIntervalSeconds: v.nullish(seconds(FLOORS.drainIntervalSeconds)),
  timerFinishedDrainSeconds: v.nullish(seconds(FLOORS.drainIntervalSeconds)),
  idleTimeoutSeconds: v.nullish(seconds()),
  activeTimeoutSeconds: v.nullish(seconds()),
  timerForceDrainSeconds: v.nullish(seconds()),
  collectors: v.nullish(list(collector, 'a list of collectors: {address: HOST:PORT}')),
  logs: v.nullish(list(log, 'a list of log outputs: {file: PATH, hooks: [...]}')),
  outputs: v.nullish(list(output, 'a list of {collector: {remoteAddress: HOST:PORT}} or {log: {file: PATH}}')),
  templates: v.nullish(
    list(
      template,
      'a list of templates: {id: 256..65535, fields: [NAME, ...]}',
      problemText('the list is empty', 'at least one template, or leave templates out for the default templates'),
    ),
  ),
  meters: v.nullish(
    list(
      meter,
      'a list of {netns: NAME or root, observationDomainId: ID}',
      problemText('the list is empty', 'at least one {netns: NAME or root}, or leave meters out for every attached meter'),
    ),
  ),
  metrics: v.nullish(map({listen: v.nullish(listen)})),
  stateFile: v.nullish(text('a file path')),
})

export type ConfigInput = v.InferOutput<typeof CONFIG_SCHEMA>
export type CollectorInput = v.InferOutput<typeof collector>
export type LogInput = v.InferOutput<typeof log>
export type HookInput = v.InferOutput<typeof hook>
export type TemplateInput = v.InferOutput<typeof template>

/** A problem the schema found: where (a key path and which of its nodes) and what, as one line. */
export interface SchemaProblem {
  path: PathKey[]
  anchor: 'value' | 'key' | 'map'
  message: string
}

/** Checks `data` (the document as plain data) against the schema: the output, or every problem found. */
/**
 * What the parse in progress allows beyond the schema's defaults. valibot passes no context to a
 * transform, and parsing is synchronous, so checkShape sets it for the one parse it runs.
 */
const parsing = {allowUnfillable: false}

export function checkShape(data: unknown, options: {allowUnfillable?: boolean} = {}): {ok: true; value: ConfigInput} | {ok: false; problems: SchemaProblem[]} {
  parsing.allowUnfillable = options.allowUnfillable === true
  let result
  try {
    result = v.safeParse(CONFIG_SCHEMA, data ?? {}, {abortPipeEarly: true})
  } finally {
    parsing.allowUnfillable = false
  }
  if (result.success) return {ok: true, value: result.output}
  return {
    ok: false,
    problems: result.issues.map((issue) => {
      const path = (issue.path ?? []).map((step) => step.key as PathKey)
      const last = issue.path?.at(-1)
      const anchor = last?.origin === 'key' ? (issue.expected === 'never' ? 'key' : 'map') : 'value'
      return {path, anchor, message: issue.message}
    }),
  }
}
