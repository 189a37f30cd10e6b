/**
 * Loads the daemon's config.yaml into a Config. Accepts the new keys and the older
 * linux-flow-exporter's (`maxIpfixMessageLen`, `timer*Seconds`, `outputs: [{collector}, {log}]`,
 * `collectors: [{address}]`, `template: [...]`), rejects anything it does not know, and reports
 * the first problem as one line: `FILE:LINE:COL: KEY: PROBLEM; allowed: WHAT`.
 */
import {readFile} from 'node:fs/promises'
import {isIPv4, isIPv6} from 'node:net'

import {isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Scalar, type YAMLError, type YAMLMap} from 'yaml'

import {InvalidInputError} from '../errors.js'
import {canonicalAddress} from '../util/address.js'
import {allowedLengths, elementByName, naturalLength, similarNames, VARIABLE_LENGTH, editDistance} from '../ipfix/elements.js'
import {DEFAULT_TEMPLATES, EXPORTABLE_ELEMENTS, exportableElement} from '../ipfix/exportable.js'
import {validateNetnsName} from '../sys/netns.js'
import type {CollectorConfig, Config, Endpoint, HookConfig, LogOutputConfig, MeterSelection, TemplateConfig, TemplateFieldConfig} from './config.js'

/** Where a config problem is: the file (null for text without one), its position, the key path. */
export interface ConfigErrorLocation {
  file: string | null
  line?: number | null
  column?: number | null
  key?: string | null
}

/**
 * A config that cannot be used, as one line: `FILE:LINE:COL: KEY: PROBLEM; allowed: WHAT`.
 * A missing or unreadable file has no position (`FILE: PROBLEM`); a YAML syntax error no key.
 */
export class ConfigError extends InvalidInputError {
  /** The file as given; null for text without a file. */
  readonly file: string | null
  /** 1-based; null when the problem has no position (e.g. the file is missing). */
  readonly line: number | null
  /** 1-based; null when the problem has no position. */
  readonly column: number | null
  /** The key path, e.g. `templates[1].template[2].name`; null for the file or document as a whole. */
  readonly key: string | null
  /** What is wrong (and what is allowed), without the location. */
  readonly problem: string

  constructor(problem: string, where: ConfigErrorLocation, options: {cause?: unknown} = {}) {
    const line = where.line ?? null
    const column = where.column ?? null
    const key = where.key ?? null
    const position = line === null ? '' : `:${line}:${column ?? 1}`
    super(`${where.file ?? NO_FILE}${position}: ${key === null ? '' : `${key}: `}${problem}`, options)
    this.file = where.file
    this.line = line
    this.column = column
    this.key = key
    this.problem = problem
  }
}

/** The name that stands for the file in messages about config text that has none. */
const NO_FILE = '<config>'

/** setTimeout's longest delay (2^31-1 ms): a longer interval would fire at once. */
const MAX_SECONDS = 2_147_483
/** Room for the statistics options record flowctl sends (16 + 4 + 60 bytes). */
const MIN_MESSAGE_SIZE = 80
const MAX_MESSAGE_SIZE = 65_507
/** IPFIX message header (16) and set header (4), RFC 7011 §3.1 and §3.3.2. */
const MESSAGE_AND_SET_HEADERS = 20
const DEFAULT_COLLECTOR = '127.0.0.1:4739'
const DEFAULT_METRICS_LISTEN = '127.0.0.1:9999'
const DEFAULT_HOOK_TIMEOUT_SECONDS = 5

const TOP_KEYS = [
  'observationDomainId',
  'maxMessageSize',
  'maxIpfixMessageLen',
  'templateRefreshSeconds',
  'timerTemplateFlushSeconds',
  'statsIntervalSeconds',
  'spoolBytes',
  'drainIntervalSeconds',
  'timerFinishedDrainSeconds',
  'idleTimeoutSeconds',
  'activeTimeoutSeconds',
  'timerForceDrainSeconds',
  'collectors',
  'logs',
  'outputs',
  'templates',
  'meters',
  'metrics',
  'stateFile',
] as const
const COLLECTOR_KEYS = ['address', 'remoteAddress', 'source', 'localAddress', 'templates'] as const
const TEMPLATE_KEYS = ['id', 'fields', 'template'] as const
const FIELD_KEYS = ['name', 'length'] as const
const OUTPUT_KEYS = ['collector', 'log'] as const
const LOG_KEYS = ['file', 'hooks'] as const
const HOOK_KEYS = ['name', 'command', 'shell', 'timeoutSeconds'] as const
const METER_KEYS = ['netns', 'observationDomainId'] as const
const METRICS_KEYS = ['listen'] as const

/** The default templates with their registry ids and natural lengths. */
function defaultTemplates(): TemplateConfig[] {
  return DEFAULT_TEMPLATES.map((t) => ({
    id: t.id,
    fields: t.fields.map((name) => {
      const element = elementByName(name)
      if (!element) throw new Error(`default template ${t.id} names ${name}, which the IANA registry lacks`)
      return {name: element.name, id: element.id, length: naturalLength(element.type)}
    }),
  }))
}

/** The embedded default: one collector at 127.0.0.1:4739, the default templates, every default setting. */
export function defaultConfig(overrides: Partial<Config> = {}): Config {
  return {
    file: null,
    observationDomainId: 1,
    maxMessageSize: 1400,
    templateRefreshSeconds: 60,
    statsIntervalSeconds: 60,
    spoolBytes: 32 << 20,
    drainIntervalSeconds: 1,
    idleTimeoutSeconds: 15,
    activeTimeoutSeconds: 60,
    collectors: [{name: DEFAULT_COLLECTOR, remote: {host: '127.0.0.1', port: 4739}}],
    templates: defaultTemplates(),
    templatesDefaulted: true,
    logs: [],
    metrics: {listen: DEFAULT_METRICS_LISTEN},
    stateFile: null,
    ...overrides,
  }
}

/** Reads and parses a config file; a missing or unreadable file is a ConfigError too. */
export async function loadConfig(path: string): Promise<Config> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const problem =
      code === 'ENOENT'
        ? 'no such file (name the config with -c FILE)'
        : code === 'EACCES' || code === 'EPERM'
          ? 'cannot read the file: permission denied'
          : code === 'EISDIR'
            ? 'is a directory, not a config file'
            : `cannot read the file: ${(error as Error).message}`
    throw new ConfigError(problem, {file: path}, {cause: error})
  }
  return parseConfig(text, path)
}

/** Parses config text; `file` names it in messages and in Config.file. */
export function parseConfig(text: string, file: string | null): Config {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, {lineCounter, prettyErrors: false})
  const reader = new Reader(file, lineCounter, doc, text)
  if (doc.errors.length > 0) reader.syntaxError(doc.errors[0])
  const config = reader.config()
  return config
}

// ---------------------------------------------------------------------------------------------

/** A node of the parsed document, as the yaml library gives it (Scalar, YAMLMap, YAMLSeq, Alias, Pair) or nothing. */
type YNode = unknown

interface Entry {
  key: string
  keyNode: Scalar
  value: YNode
  /** The key path, e.g. `outputs[0].collector.remoteAddress`. */
  path: string
}

interface MapValue {
  node: YAMLMap
  path: string
  entries: Map<string, Entry>
}

function rangeOf(node: YNode): [number, number, number] | undefined {
  const range = (node as {range?: [number, number, number] | null} | null | undefined)?.range
  return range ?? undefined
}

function isNothing(node: YNode): boolean {
  return node === null || node === undefined || (isScalar(node) && node.value === null)
}

function describe(node: YNode): string {
  if (isNothing(node)) return 'nothing (an empty value)'
  if (isMap(node)) return 'a map'
  if (isSeq(node)) return 'a list'
  if (isScalar(node)) {
    const v = node.value
    if (typeof v === 'string') return `the string '${v.length > 40 ? `${v.slice(0, 40)}...` : v}'`
    if (typeof v === 'number') return `the number ${v}`
    if (typeof v === 'boolean') return `the boolean ${v}`
    return `a ${typeof v}`
  }
  return 'something else'
}

function join(names: readonly string[], last = 'or'): string {
  if (names.length <= 1) return names.join('')
  return `${names.slice(0, -1).join(', ')} ${last} ${names[names.length - 1]}`
}


/** The allowed key closest to an unknown one, if it is close enough to be a typo. */
function closestKey(key: string, allowed: readonly string[]): string | undefined {
  const lower = key.toLowerCase()
  let best: {name: string; d: number} | undefined
  for (const name of allowed) {
    const d = editDistance(lower, name.toLowerCase())
    if (!best || d < best.d) best = {name, d}
  }
  return best && best.d <= Math.max(1, Math.min(3, Math.floor(key.length / 4))) ? best.name : undefined
}

/**
 * The registry names closest to an unknown element name: those flowctl can export if any is close,
 * and of those only the closest (a typo of sourceIPv4Address suggests that, not sourceIPv6Address too).
 */
function elementSuggestions(name: string): string[] {
  const near = similarNames(name, 10).map((n) => ({name: n, d: editDistance(name.toLowerCase(), n.toLowerCase())}))
  const exportable = near.filter((n) => exportableElement(n.name))
  const pool = exportable.length > 0 ? exportable : near
  const best = Math.min(...pool.map((n) => n.d))
  return pool.filter((n) => n.d === best).slice(0, 3).map((n) => n.name)
}

function familyOf(host: string): 4 | 6 | undefined {
  if (isIPv4(host)) return 4
  if (isIPv6(host)) return 6
  return undefined
}

/** A key for telling two endpoints apart: IPv6 in canonical form, hostnames in lower case. */
function endpointKey(e: Endpoint): string {
  let host = e.host.toLowerCase()
  if (isIPv6(e.host)) {
    const [address, zone] = e.host.split('%')
    host = `[${canonicalAddress(address)}${zone === undefined ? '' : `%${zone}`}]`
  }
  return `${host}:${e.port}`
}

const HOSTNAME_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/i

type AddressKind = 'remote' | 'source' | 'listen'

const ADDRESS_ALLOWED: Record<AddressKind, string> = {
  remote: 'HOST:PORT, IPV4:PORT or [IPV6]:PORT with a port from 1 to 65535',
  source: 'IPV4:PORT or [IPV6]:PORT (or HOST:PORT) with a port from 0 (any) to 65535',
  listen: 'HOST:PORT, IPV4:PORT or [IPV6]:PORT with a port from 0 to 65535',
}

const EXAMPLE_PORT: Record<AddressKind, number> = {remote: 4739, source: 0, listen: 9999}

class Reader {

  constructor(
    private readonly file: string | null,
    private readonly lineCounter: LineCounter,
    private readonly doc: Document,
    private readonly text: string,
  ) {}

  // --- positions and errors --------------------------------------------------------------------

  private position(node: YNode, fallback?: YNode): {line: number; column: number} {
    const range = rangeOf(node) ?? rangeOf(fallback)
    if (!range) return {line: 1, column: 1}
    const {line, col} = this.lineCounter.linePos(range[0])
    return {line, column: col}
  }

  /** Throws the ConfigError for `node` (or `fallback`'s position when the node has none). */
  fail(node: YNode, key: string | null, problem: string, allowed?: string, fallback?: YNode): never {
    throw new ConfigError(allowed === undefined ? problem : `${problem}; allowed: ${allowed}`, {
      file: this.file,
      ...this.position(node, fallback),
      key,
    })
  }

  private label(node: YNode): string {
    const {line, column} = this.position(node)
    return `${this.file ?? NO_FILE}:${line}:${column}`
  }

  syntaxError(error: YAMLError): never {
    const {line, col} = this.lineCounter.linePos(error.pos[0])
    let message = error.message.replace(/\.$/, '')
    if (/^[A-Z][a-z]/.test(message)) message = message[0].toLowerCase() + message.slice(1)
    // An unquoted [IPv6]:PORT is a YAML flow list followed by junk.
    const lineText = this.text.split('\n')[line - 1] ?? ''
    const hint = /(^|[^'"\w])\[[\w:.%]*:[\w:.%]*\]:\d+/.test(lineText)
      ? ' (an address in brackets must be quoted in YAML: "[2001:db8::1]:4739")'
      : ''
    throw new ConfigError(`invalid YAML: ${message}${hint}`, {file: this.file, line, column: col})
  }

  // --- structure -------------------------------------------------------------------------------

  private resolve(node: YNode, path: string): YNode {
    if (!isAlias(node)) return node
    const target = node.resolve(this.doc)
    if (target === undefined) this.fail(node, path, `the alias *${node.source} names no anchor`)
    return target
  }

  /** A map with only `allowed` keys (an unknown key is an error listing them). */
  map(node: YNode, path: string, allowed: readonly string[], fallback?: YNode): MapValue {
    const value = this.resolve(node, path)
    const keyName = path === '' ? null : path
    if (!isMap(value)) {
      this.fail(value, keyName, `expected a map, got ${describe(value)}`, `a map with the keys ${allowed.join(', ')}`, fallback)
    }
    const entries = new Map<string, Entry>()
    for (const pair of value.items) {
      const keyNode = this.resolve(pair.key, path)
      if (!isScalar(keyNode) || typeof keyNode.value !== 'string') {
        this.fail(keyNode, keyName, `a key must be a name, got ${describe(keyNode)}`, allowed.join(', '), value)
      }
      const key = keyNode.value
      const keyPath = path === '' ? key : `${path}.${key}`
      if (!allowed.includes(key)) {
        const close = closestKey(key, allowed)
        this.fail(keyNode, keyPath, `unknown key${close ? ` (did you mean ${close}?)` : ''}`, allowed.join(', '))
      }
      entries.set(key, {key, keyNode, value: this.resolve(pair.value, keyPath), path: keyPath})
    }
    return {node: value, path, entries}
  }

  /** The items of a list. */
  seq(node: YNode, path: string, allowed: string): {node: YNode; path: string}[] {
    if (!isSeq(node)) this.fail(node, path, `expected a list, got ${describe(node)}`, allowed)
    return node.items.map((item, i) => ({node: this.resolve(item, `${path}[${i}]`), path: `${path}[${i}]`}))
  }

  /** The entry if it is there with a value; a key with an empty value counts as left out. */
  private opt(m: MapValue, key: string): Entry | undefined {
    const entry = m.entries.get(key)
    return entry && !isNothing(entry.value) ? entry : undefined
  }

  private req(m: MapValue, key: string, allowed: string): Entry {
    const entry = m.entries.get(key)
    const path = m.path === '' ? key : `${m.path}.${key}`
    if (!entry) this.fail(m.node, path, 'missing', allowed)
    if (isNothing(entry.value)) this.fail(entry.value, path, 'missing value', allowed, entry.keyNode)
    return entry
  }

  /**
   * One setting with a new and an older name: the entry given (either), never both.
   * Presence counts, even with an empty value.
   */
  private either(m: MapValue, newName: string, oldName: string, required?: string): Entry | undefined {
    const a = m.entries.get(newName)
    const b = m.entries.get(oldName)
    if (a && b) {
      const [first, second] = (rangeOf(a.keyNode)?.[0] ?? 0) < (rangeOf(b.keyNode)?.[0] ?? 0) ? [a, b] : [b, a]
      this.fail(
        second.keyNode,
        second.path,
        `the same setting as ${first.key} (line ${this.position(first.keyNode).line})`,
        `only one of ${newName} or ${oldName} (the older tool's name)`,
      )
    }
    const entry = a ?? b
    if (required !== undefined) {
      if (!entry) this.fail(m.node, m.path === '' ? newName : `${m.path}.${newName}`, 'missing', required)
      if (isNothing(entry.value)) this.fail(entry.value, entry.path, 'missing value', required, entry.keyNode)
    }
    return entry && !isNothing(entry.value) ? entry : undefined
  }

  // --- scalars ---------------------------------------------------------------------------------

  private string(entry: {value: YNode; path: string}, allowed: string, options: {empty?: boolean} = {}): string {
    const node = entry.value
    if (!isScalar(node) || typeof node.value !== 'string') this.fail(node, entry.path, `expected a string, got ${describe(node)}`, allowed)
    if (!options.empty && node.value.trim() === '') this.fail(node, entry.path, 'empty string', allowed)
    return node.value
  }

  private number(entry: {value: YNode; path: string}, kind: string, allowed: string): number {
    const node = entry.value
    if (!isScalar(node) || typeof node.value !== 'number') {
      const quoted = isScalar(node) && typeof node.value === 'string' && node.value.trim() !== '' && Number.isFinite(Number(node.value))
      this.fail(node, entry.path, `expected ${kind}, got ${describe(node)}${quoted ? ' (write it without quotes)' : ''}`, allowed)
    }
    if (!Number.isFinite(node.value)) this.fail(node, entry.path, `${node.value} is not a finite number`, allowed)
    return node.value
  }

  private integer(entry: {value: YNode; path: string}, min: number, max: number, allowed?: string): number {
    const allowedText = allowed ?? `an integer from ${min} to ${max}`
    const value = this.number(entry, 'an integer', allowedText)
    if (!Number.isInteger(value)) this.fail(entry.value, entry.path, `${value} is not an integer`, allowedText)
    if (value < min || value > max) this.fail(entry.value, entry.path, `${value} is out of range`, allowedText)
    return value
  }

  private seconds(entry: {value: YNode; path: string}): number {
    const allowed = `a number of seconds greater than 0 and at most ${MAX_SECONDS}`
    const value = this.number(entry, 'a number of seconds', allowed)
    if (value <= 0 || value > MAX_SECONDS) this.fail(entry.value, entry.path, `${value} is out of range`, allowed)
    return value
  }

  private endpoint(entry: Entry | {value: YNode; path: string}, kind: AddressKind): {text: string; endpoint: Endpoint} {
    const node = entry.value
    const allowed = ADDRESS_ALLOWED[kind]
    if (isSeq(node) && node.items.length === 1 && isScalar(node.items[0])) {
      const inner = String(node.items[0].value)
      this.fail(node, entry.path, `[${inner}] was read as a YAML list`, `a quoted address: "[${inner}]:${EXAMPLE_PORT[kind]}"`)
    }
    const text = this.string(entry, allowed).trim()
    const fail = (problem: string, allowedText = allowed): never => this.fail(node, entry.path, problem, allowedText)
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
    const minPort = kind === 'remote' ? 1 : 0
    if (!/^\d+$/.test(portText)) return fail(`'${portText}' is not a port`)
    const port = Number(portText)
    if (port < minPort || port > 65535) return fail(`port ${port} is out of range`)
    return {text, endpoint: {host, port}}
  }

  // --- the config ------------------------------------------------------------------------------

  config(): Config {
    const contents = this.doc.contents
    // An empty file is an empty map (and then lacks an output).
    const root: MapValue = isNothing(contents) ? {node: contents as unknown as YAMLMap, path: '', entries: new Map()} : this.map(contents, '', TOP_KEYS)

    const config = defaultConfig({file: this.file})

    const domain = this.opt(root, 'observationDomainId')
    if (domain) config.observationDomainId = this.integer(domain, 0, 0xffffffff)

    const size = this.either(root, 'maxMessageSize', 'maxIpfixMessageLen')
    if (size) {
      // The older tool's own example used 100: small sizes are fine as long as each template fits.
      config.maxMessageSize = this.integer(size, MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE, `an integer from ${MIN_MESSAGE_SIZE} to ${MAX_MESSAGE_SIZE} (bytes of UDP payload)`)
    }

    const refresh = this.either(root, 'templateRefreshSeconds', 'timerTemplateFlushSeconds')
    if (refresh) config.templateRefreshSeconds = this.seconds(refresh)
    const stats = this.opt(root, 'statsIntervalSeconds')
    if (stats) config.statsIntervalSeconds = this.seconds(stats)
    const spool = this.opt(root, 'spoolBytes')
    if (spool) config.spoolBytes = this.integer(spool, 0, 2 ** 40, 'an integer from 0 (no spool) to 2^40 (bytes held per collector while it is down)')
    const drain = this.either(root, 'drainIntervalSeconds', 'timerFinishedDrainSeconds')
    if (drain) config.drainIntervalSeconds = this.seconds(drain)
    const idle = this.opt(root, 'idleTimeoutSeconds')
    if (idle) config.idleTimeoutSeconds = this.seconds(idle)
    const active = this.either(root, 'activeTimeoutSeconds', 'timerForceDrainSeconds')
    if (active) config.activeTimeoutSeconds = this.seconds(active)
    for (const [entry, value, name] of [
      [idle, config.idleTimeoutSeconds, 'idleTimeoutSeconds'],
      [active, config.activeTimeoutSeconds, active?.key ?? 'activeTimeoutSeconds'],
    ] as const) {
      if (value >= config.drainIntervalSeconds) continue
      const drainName = drain?.key ?? 'drainIntervalSeconds'
      if (entry) {
        this.fail(entry.value, entry.path, `${value} is less than ${drainName} (${config.drainIntervalSeconds}): flows leave only at a drain`, `at least ${config.drainIntervalSeconds}`)
      }
      // Only the drain interval was given: it is what is too long.
      this.fail(drain?.value, drainName, `${config.drainIntervalSeconds} is more than ${name} (${value}, the default)`, `at most ${value}, or set ${name} too`)
    }

    const templates = this.templates(root, config.maxMessageSize)
    if (templates) {
      config.templates = templates
      config.templatesDefaulted = false
    } else if (size) {
      // The default templates must fit too: one record of the largest, with the headers.
      const largest = Math.max(...config.templates.map((t) => t.fields.reduce((sum, f) => sum + f.length, 0)))
      const needed = largest + MESSAGE_AND_SET_HEADERS
      if (needed > config.maxMessageSize) {
        this.fail(
          size.value,
          size.key,
          `${config.maxMessageSize} is too small for the default templates, whose largest record takes ${largest} bytes plus ${MESSAGE_AND_SET_HEADERS} of message and set headers`,
          `at least ${needed}, or templates with fewer fields`,
        )
      }
    }
    const templateIds = config.templates.map((t) => t.id)

    const outputsEntry = root.entries.get('outputs')
    const newOutputs = [root.entries.get('collectors'), root.entries.get('logs')].filter((e): e is Entry => e !== undefined)
    if (outputsEntry && newOutputs.length > 0) {
      const [first, second] = [outputsEntry, newOutputs[0]].sort((a, b) => (rangeOf(a.keyNode)?.[0] ?? 0) - (rangeOf(b.keyNode)?.[0] ?? 0))
      this.fail(
        second.keyNode,
        second.path,
        `outputs are also listed in ${first.key} (line ${this.position(first.keyNode).line})`,
        "either the older tool's outputs: [{collector: ...}, {log: ...}] or collectors: and logs:",
      )
    }

    const collectors: {config: CollectorConfig; node: YNode; path: string}[] = []
    const logs: {config: LogOutputConfig; node: YNode; path: string}[] = []
    const collectorsEntry = this.opt(root, 'collectors')
    if (collectorsEntry) {
      for (const item of this.seq(collectorsEntry.value, collectorsEntry.path, 'a list of collectors: {address: HOST:PORT}')) {
        collectors.push(this.collector(item.node, item.path, templateIds))
      }
    }
    const logsEntry = this.opt(root, 'logs')
    if (logsEntry) {
      for (const item of this.seq(logsEntry.value, logsEntry.path, 'a list of log outputs: {file: PATH, hooks: [...]}')) {
        logs.push(this.log(item.node, item.path))
      }
    }
    const outputs = this.opt(root, 'outputs')
    if (outputs) {
      for (const item of this.seq(outputs.value, outputs.path, 'a list of {collector: {remoteAddress: HOST:PORT}} or {log: {file: PATH}}')) {
        const m = this.map(item.node, item.path, OUTPUT_KEYS)
        const collector = m.entries.get('collector')
        const log = m.entries.get('log')
        if (collector && log) this.fail(log.keyNode, log.path, 'an output is a collector or a log, not both', 'one of collector or log per list item')
        if (collector) collectors.push(this.collector(collector.value, collector.path, templateIds, collector.keyNode))
        else if (log) logs.push(this.log(log.value, log.path, log.keyNode))
        else this.fail(m.node, item.path, 'the output is neither a collector nor a log', 'collector: {remoteAddress: HOST:PORT} or log: {file: PATH}')
      }
    }
    if (collectors.length + logs.length === 0) {
      const empty = outputs ?? collectorsEntry ?? logsEntry
      const allowed = 'collectors: [{address: HOST:PORT}], logs: [{file: PATH}], or the older tool\'s outputs: [{collector: {remoteAddress: HOST:PORT}}]'
      if (empty) this.fail(empty.value, empty.path, 'no output: at least one collector or log is required', allowed)
      this.fail(contents, null, 'no output is configured: at least one collector or log is required', allowed)
    }
    const seenCollectors = new Map<string, string>()
    for (const c of collectors) {
      const key = endpointKey(c.config.remote)
      const other = seenCollectors.get(key)
      if (other) this.fail(c.node, c.path, `the same collector as ${other}`, 'each collector once (collectors are named by their address in logs and metrics)')
      seenCollectors.set(key, c.path)
    }
    const seenFiles = new Map<string, string>()
    for (const l of logs) {
      const other = seenFiles.get(l.config.file)
      if (other) this.fail(l.node, l.path, `the same file as ${other}`, 'each file once')
      seenFiles.set(l.config.file, l.path)
    }
    config.collectors = collectors.map((c) => c.config)
    config.logs = logs.map((l) => l.config)

    const meters = this.opt(root, 'meters')
    if (meters) config.meters = this.meters(meters)

    const metricsEntry = this.opt(root, 'metrics')
    if (metricsEntry) {
      const m = this.map(metricsEntry.value, metricsEntry.path, METRICS_KEYS)
      const listen = m.entries.get('listen')
      if (listen) {
        if (isNothing(listen.value) || (isScalar(listen.value) && listen.value.value === '')) config.metrics = {listen: null}
        else config.metrics = {listen: this.endpoint(listen, 'listen').text}
      }
    }

    const stateFile = this.opt(root, 'stateFile')
    if (stateFile) config.stateFile = this.string(stateFile, 'a file path')

    return config
  }

  private templates(root: MapValue, maxMessageSize: number): TemplateConfig[] | undefined {
    const entry = this.opt(root, 'templates')
    if (!entry) return undefined
    const items = this.seq(entry.value, entry.path, 'a list of templates: {id: 256..65535, fields: [NAME, ...]}')
    if (items.length === 0) this.fail(entry.value, entry.path, 'the list is empty', 'at least one template, or leave templates out for the default templates')
    const ids = new Map<number, string>()
    const templates: TemplateConfig[] = []
    for (const item of items) {
      const m = this.map(item.node, item.path, TEMPLATE_KEYS)
      const idEntry = this.req(m, 'id', 'a template id from 256 to 65535')
      const id = this.integer(idEntry, 256, 65535, 'a template id from 256 to 65535 (0-255 are set ids)')
      const other = ids.get(id)
      if (other !== undefined) this.fail(idEntry.value, idEntry.path, `${id} is already the id of ${other}`, 'a unique template id from 256 to 65535')
      ids.set(id, item.path)

      const fieldsAllowed = 'a list of information element names, or {name: NAME, length: BYTES}'
      const fieldsEntry = this.either(m, 'fields', 'template', `${fieldsAllowed} (or the older tool's template:)`) as Entry
      const fieldItems = this.seq(fieldsEntry.value, fieldsEntry.path, fieldsAllowed)
      if (fieldItems.length === 0) this.fail(fieldsEntry.value, fieldsEntry.path, 'a template needs at least one field', fieldsAllowed)

      const fields: TemplateFieldConfig[] = []
      const seen = new Map<number, string>()
      let family: {family: 4 | 6; name: string; path: string} | undefined
      for (const fieldItem of fieldItems) {
        const {field, nameNode, namePath, family: fieldFamily} = this.field(fieldItem.node, fieldItem.path)
        const again = seen.get(field.id)
        if (again !== undefined) this.fail(nameNode, namePath, `${field.name} is already ${again} of this template`, 'each element once per template')
        seen.set(field.id, fieldItem.path.slice(item.path.length + 1))
        if (fieldFamily !== undefined) {
          if (family && family.family !== fieldFamily) {
            this.fail(
              nameNode,
              namePath,
              `${field.name} is IPv${fieldFamily}-only but the template already has the IPv${family.family}-only ${family.name} (${family.path}); a template cannot mix IPv4-only and IPv6-only fields`,
              'the fields of one address family per template (make one template for IPv4 and one for IPv6)',
            )
          }
          family ??= {family: fieldFamily, name: field.name, path: fieldItem.path.slice(item.path.length + 1)}
        }
        fields.push(field)
      }

      const recordBytes = fields.reduce((sum, f) => sum + (f.length === VARIABLE_LENGTH ? 1 : f.length), 0)
      if (recordBytes + MESSAGE_AND_SET_HEADERS > maxMessageSize) {
        this.fail(
          m.node,
          item.path,
          `a record of this template takes ${recordBytes} bytes, which with the ${MESSAGE_AND_SET_HEADERS} bytes of message and set headers is more than maxMessageSize (${maxMessageSize}), so it could never be sent`,
          `records of at most ${maxMessageSize - MESSAGE_AND_SET_HEADERS} bytes (drop fields, give shorter lengths, or raise maxMessageSize)`,
        )
      }
      // The template record itself: a 4-byte header and 4 bytes per field.
      const templateBytes = 4 + 4 * fields.length
      if (templateBytes + MESSAGE_AND_SET_HEADERS > maxMessageSize) {
        this.fail(
          m.node,
          item.path,
          `announcing this template takes ${templateBytes} bytes (4 + 4 per field), which with the ${MESSAGE_AND_SET_HEADERS} bytes of message and set headers is more than maxMessageSize (${maxMessageSize}), so it could never be sent`,
          `at most ${Math.floor((maxMessageSize - MESSAGE_AND_SET_HEADERS - 4) / 4)} fields (or raise maxMessageSize)`,
        )
      }
      templates.push({id, fields})
    }
    return templates
  }

  private field(node: YNode, path: string): {field: TemplateFieldConfig; nameNode: YNode; namePath: string; family?: 4 | 6} {
    const allowedForm = 'an information element name, or {name: NAME, length: BYTES}'
    let nameEntry: {value: YNode; path: string}
    let lengthEntry: Entry | undefined
    if (isScalar(node)) {
      nameEntry = {value: node, path}
    } else if (isMap(node)) {
      const m = this.map(node, path, FIELD_KEYS)
      nameEntry = this.req(m, 'name', 'an information element name')
      lengthEntry = this.opt(m, 'length')
    } else {
      this.fail(node, path, `expected an element name, got ${describe(node)}`, allowedForm)
    }
    const name = this.string(nameEntry, 'an information element name').trim()
    const element = elementByName(name)
    if (!element) {
      const suggestions = elementSuggestions(name)
      if (suggestions.length > 0) this.fail(nameEntry.value, nameEntry.path, `unknown information element '${name}'; did you mean ${join(suggestions)}?`)
      this.fail(nameEntry.value, nameEntry.path, `unknown information element '${name}'`, `an element flowctl can export: ${Object.keys(EXPORTABLE_ELEMENTS).join(', ')}`)
    }
    const exportable = exportableElement(element.name)
    if (!exportable) {
      this.fail(
        nameEntry.value,
        nameEntry.path,
        `flowctl has no value for information element ${element.name} (${element.id})`,
        `an element flowctl can export: ${Object.keys(EXPORTABLE_ELEMENTS).join(', ')}`,
      )
    }
    let length = naturalLength(element.type)
    if (lengthEntry) {
      const allowed = allowedLengths(element.type)
      const allowedText =
        allowed === 'any'
          ? `1 to ${VARIABLE_LENGTH} (${VARIABLE_LENGTH} = variable length)`
          : allowed.length === 1
            ? `${allowed[0]}`
            : `${join(allowed.map(String))} (reduced-size encoding, RFC 7011 §6.2)`
      length = this.integer(lengthEntry, 1, VARIABLE_LENGTH, allowedText)
      if (allowed !== 'any' && !allowed.includes(length)) {
        this.fail(lengthEntry.value, lengthEntry.path, `${length} is not a length for ${element.name} (${element.type})`, allowedText)
      }
    }
    return {field: {name: element.name, id: element.id, length}, nameNode: nameEntry.value, namePath: nameEntry.path, family: exportable.family}
  }

  private collector(node: YNode, path: string, templateIds: number[], fallback?: YNode): {config: CollectorConfig; node: YNode; path: string} {
    const m = this.map(node, path, COLLECTOR_KEYS, fallback)
    const remoteEntry = this.either(m, 'address', 'remoteAddress', `${ADDRESS_ALLOWED.remote} (or the older tool's remoteAddress)`) as Entry
    const remote = this.endpoint(remoteEntry, 'remote')
    const config: CollectorConfig = {name: remote.text, remote: remote.endpoint}
    const sourceEntry = this.either(m, 'source', 'localAddress')
    if (sourceEntry) {
      const source = this.endpoint(sourceEntry, 'source').endpoint
      const remoteFamily = familyOf(remote.endpoint.host)
      const sourceFamily = familyOf(source.host)
      if (remoteFamily && sourceFamily && remoteFamily !== sourceFamily) {
        this.fail(
          sourceEntry.value,
          sourceEntry.path,
          `the source is an IPv${sourceFamily} address but the collector ${remote.text} is IPv${remoteFamily}`,
          `an IPv${remoteFamily} source, e.g. ${remoteFamily === 4 ? '0.0.0.0:0' : '[::]:0'}`,
        )
      }
      config.source = source
    }
    const templatesEntry = this.opt(m, 'templates')
    if (templatesEntry) {
      const allowed = `a list of template ids: ${templateIds.join(', ')}`
      const items = this.seq(templatesEntry.value, templatesEntry.path, allowed)
      if (items.length === 0) this.fail(templatesEntry.value, templatesEntry.path, 'the list is empty: the collector would get nothing', `${allowed}, or leave templates out for all`)
      const ids: number[] = []
      for (const item of items) {
        const id = this.integer({value: item.node, path: item.path}, 0, 65535, allowed)
        if (!templateIds.includes(id)) this.fail(item.node, item.path, `no template has the id ${id}`, allowed)
        if (ids.includes(id)) this.fail(item.node, item.path, `${id} is listed twice`, 'each template id once')
        ids.push(id)
      }
      config.templateIds = ids
    }
    return {config, node: remoteEntry.value, path: remoteEntry.path}
  }

  private log(node: YNode, path: string, fallback?: YNode): {config: LogOutputConfig; node: YNode; path: string} {
    const m = this.map(node, path, LOG_KEYS, fallback)
    const fileEntry = this.req(m, 'file', "a file path, or '-' for stdout")
    const file = this.string(fileEntry, "a file path, or '-' for stdout")
    const hooks: HookConfig[] = []
    const hooksEntry = this.opt(m, 'hooks')
    if (hooksEntry) {
      for (const item of this.seq(hooksEntry.value, hooksEntry.path, 'a list of hooks: {command: PROGRAM} or {shell: SCRIPT}')) {
        hooks.push(this.hook(item.node, item.path))
      }
    }
    return {config: {file, hooks}, node: fileEntry.value, path: fileEntry.path}
  }

  private hook(node: YNode, path: string): HookConfig {
    const m = this.map(node, path, HOOK_KEYS)
    const oneOf = 'command: PROGRAM (or [PROGRAM, ARG, ...]) or shell: SCRIPT, one per hook'
    const command = m.entries.get('command')
    const shell = m.entries.get('shell')
    if (command && shell) {
      const second = (rangeOf(command.keyNode)?.[0] ?? 0) < (rangeOf(shell.keyNode)?.[0] ?? 0) ? shell : command
      this.fail(second.keyNode, second.path, 'a hook runs a command or a shell script, not both', oneOf)
    }
    if (!command && !shell) this.fail(m.node, `${path}.command`, 'missing: a hook needs a command or a shell script', oneOf)
    const nameEntry = this.opt(m, 'name')
    const name = nameEntry ? this.string(nameEntry, 'a name for logs') : undefined
    const timeoutEntry = this.opt(m, 'timeoutSeconds')
    const timeoutMs = Math.max(1, Math.round((timeoutEntry ? this.seconds(timeoutEntry) : DEFAULT_HOOK_TIMEOUT_SECONDS) * 1000))
    const base = name === undefined ? {timeoutMs} : {name, timeoutMs}
    if (shell) {
      if (isNothing(shell.value)) this.fail(shell.value, shell.path, 'missing value', 'a shell script', shell.keyNode)
      return {...base, shell: this.string(shell, 'a shell script')}
    }
    const entry = command as Entry
    if (isNothing(entry.value)) this.fail(entry.value, entry.path, 'missing value', 'a program, or a list [PROGRAM, ARG, ...]', entry.keyNode)
    if (isSeq(entry.value)) {
      const items = this.seq(entry.value, entry.path, 'a list [PROGRAM, ARG, ...]')
      if (items.length === 0) this.fail(entry.value, entry.path, 'the list is empty', 'a list [PROGRAM, ARG, ...]')
      const argv = items.map((item, i) => this.string({value: item.node, path: item.path}, 'a string', {empty: i > 0}))
      return {...base, command: argv}
    }
    // As the older tool did: the whole string is the program, run without a shell.
    return {...base, command: [this.string(entry, 'a program, or a list [PROGRAM, ARG, ...]')]}
  }

  private meters(entry: Entry): MeterSelection[] {
    const items = this.seq(entry.value, entry.path, 'a list of {netns: NAME or root, observationDomainId: ID}')
    if (items.length === 0) this.fail(entry.value, entry.path, 'the list is empty', 'at least one {netns: NAME or root}, or leave meters out for every attached meter')
    const meters: MeterSelection[] = []
    const seen = new Map<string, string>()
    for (const item of items) {
      const m = this.map(item.node, item.path, METER_KEYS)
      const netnsEntry = this.req(m, 'netns', 'a namespace name from `ip netns list`, or root')
      const name = this.string(netnsEntry, 'a namespace name from `ip netns list`, or root').trim()
      let netns: string | null = null
      if (name !== 'root') {
        try {
          netns = validateNetnsName(name)
        } catch (error) {
          if (!(error instanceof InvalidInputError)) throw error
          this.fail(netnsEntry.value, netnsEntry.path, `'${name}' is not a namespace name`, 'a namespace name from `ip netns list` (no /), or root')
        }
      }
      const key = netns ?? '\0root'
      const other = seen.get(key)
      if (other !== undefined) this.fail(netnsEntry.value, netnsEntry.path, `${name} is already ${other}`, 'each namespace once')
      seen.set(key, item.path)
      const meter: MeterSelection = {netns}
      const domain = this.opt(m, 'observationDomainId')
      if (domain) meter.observationDomainId = this.integer(domain, 0, 0xffffffff)
      meters.push(meter)
    }
    return meters
  }
}
