/**
 * Loads the daemon's config.yaml into a Config. Accepts the new keys and the older
 * linux-flow-exporter's (`maxIpfixMessageLen`, `timer*Seconds`, `outputs: [{collector}, {log}]`,
 * `collectors: [{address}]`, `template: [...]`), rejects anything it does not know, and reports
 * the first problem in the file as one line: `FILE:LINE:COL: KEY: PROBLEM; allowed: WHAT`.
 *
 * In order: the file's size (limits.ts), YAML syntax and every list's length (source.ts,
 * limits.ts), the shape of every value (the valibot schema in schema.ts), then here what needs two
 * keys at once: old and new names of one setting, unique ids, names and files, a collector's
 * templates, address families, timers against each other, and whether each template a collector
 * gets can be sent in maxMessageSize.
 */
import {open} from 'node:fs/promises'
import {isIPv4, isIPv6} from 'node:net'

import {canonicalAddress} from '../util/address.js'
import {elementByName, naturalLength} from '../ipfix/wire/elements.js'
import {DEFAULT_TEMPLATES} from '../ipfix/export/exportable-elements.js'
import {MESSAGE_AND_SET_HEADERS_LENGTH, maxTemplateFields, templateFits} from '../ipfix/wire/message.js'
import {FIELD_SPECIFIER_LENGTH, TEMPLATE_RECORD_HEADER_LENGTH} from '../ipfix/wire/template.js'
import type {CollectorConfig, Config, Endpoint, HookConfig, LogOutputConfig, MeterSelection, TemplateConfig, TemplateFieldConfig} from './config.js'
import {CONFIG_LIMITS, checkCounts, checkFileSize} from './limits.js'
import {
  ADDRESS_ALLOWED,
  checkShape,
  type CollectorInput,
  type ConfigInput,
  type FieldValue,
  type LogInput,
  type ParsedAddress,
  type TemplateInput,
} from './schema.js'
import {ConfigError, ConfigSource, formatPath, problemText, type PathKey} from './source.js'

export {ConfigError, type ConfigErrorLocation} from './source.js'
export {CONFIG_LIMITS} from './limits.js'

const DEFAULT_COLLECTOR = '127.0.0.1:4739'
const DEFAULT_METRICS_LISTEN = '127.0.0.1:9999'
const DEFAULT_HOOK_TIMEOUT_SECONDS = 5

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
    spoolTotalBytes: 64 << 20,
    replayBytesPerSecond: 5_000_000,
    sendBytesPerSecond: 0,
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

/**
 * Reads and parses a config file; a missing, unreadable or too large file is a ConfigError too.
 * Never reads more than the size limit and a byte: a 10 MB file (or /dev/zero) is refused unread.
 */
/**
 * How a config is read. `forFlowFiles`: for `ipfix send`, whose records come from a flow file, so a
 * template may name elements the meter cannot fill (their values are the file's).
 */
export interface LoadOptions {
  forFlowFiles?: boolean
}

export async function loadConfig(path: string, options: LoadOptions = {}): Promise<Config> {
  let text: string
  try {
    const handle = await open(path, 'r')
    try {
      const stat = await handle.stat()
      if (stat.isDirectory()) throw Object.assign(new Error('is a directory'), {code: 'EISDIR'})
      if (stat.isFile()) checkFileSize(stat.size, path)
      const buffer = Buffer.alloc(CONFIG_LIMITS.fileBytes + 1)
      let length = 0
      while (length < buffer.length) {
        const {bytesRead} = await handle.read(buffer, length, buffer.length - length, null)
        if (bytesRead === 0) break
        length += bytesRead
      }
      checkFileSize(length, path)
      text = buffer.toString('utf8', 0, length)
    } finally {
      await handle.close()
    }
  } catch (error) {
    if (error instanceof ConfigError) throw error
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
  return parseConfig(text, path, options)
}

/** Parses config text; `file` names it in messages and in Config.file. */
export function parseConfig(text: string, file: string | null, options: LoadOptions = {}): Config {
  checkFileSize(Buffer.byteLength(text), file)
  const source: ConfigSource = new ConfigSource(file, text)
  checkCounts(source)
  const shape = checkShape(source.toData(), {allowUnfillable: options.forFlowFiles === true})
  if (!shape.ok) {
    // The first problem in the file, whichever part of the schema found it.
    const first = shape.problems
      .map((p, order) => ({p, order, offset: source.offsetOf(p.path, p.anchor)}))
      .sort((a, b) => a.offset - b.offset || a.order - b.order)[0].p
    source.fail(first.path, first.message, first.anchor)
  }
  return new ConfigBuilder(source, file).build(shape.value)
}

// ---------------------------------------------------------------------------------------------

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

/** HOST:PORT, [IPV6]:PORT, as written in a config. */
function formatEndpoint(e: Endpoint): string {
  return `${isIPv6(e.host.split('%')[0]) ? `[${e.host}]` : e.host}:${e.port}`
}

/** One setting found under one of its two names. */
interface Setting<T> {
  key: string
  path: PathKey[]
  value: T
}

interface Placed<T> {
  config: T
  /** The key path problems with it point at. */
  path: PathKey[]
  /** Where a collector's name: is, when it has one. */
  namePath?: PathKey[]
}

/** A collector, and where its source is given. */
interface PlacedCollector extends Placed<CollectorConfig> {
  sourcePath?: PathKey[]
  /** Where the collector sets its own sendBytesPerSecond. */
  sendPath?: PathKey[]
}

/**
 * Whether two collectors' sources would take the same local port: the transport binds a source
 * with a port (src/ipfix/transport.ts), a wildcard one as the wildcard of its collector's family,
 * and the IPv6 wildcard takes IPv4 too. Port 0 (any) never clashes.
 */
function sourcesClash(a: CollectorConfig, b: CollectorConfig): boolean {
  if (!a.source || !b.source || a.source.port === 0 || a.source.port !== b.source.port) return false
  if (endpointKey(a.source) === endpointKey(b.source)) return true
  const bound = (c: CollectorConfig) => {
    const host = c.source!.host
    const wildcard = host === '0.0.0.0' || host === '::'
    return {wildcard, family: wildcard ? familyOf(c.remote.host) : familyOf(host)}
  }
  const [x, y] = [bound(a), bound(b)]
  const covers = (w: typeof x, other: typeof x) => w.wildcard && (w.family === 6 || (w.family === 4 && other.family === 4))
  return covers(x, y) || covers(y, x)
}

/** The checks across keys, on the schema's output, and the Config they build. */
class ConfigBuilder {
  constructor(
    private readonly source: ConfigSource,
    private readonly file: string | null,
  ) {}

  private fail(path: PathKey[], problem: string, allowed?: string, anchor: 'value' | 'key' | 'map' = 'value'): never {
    this.source.fail(path, problemText(problem, allowed), anchor)
  }

  /**
   * One setting with a new and an older name: the one given, never both (presence counts, even
   * with an empty value). `required`: what it may be, when it must be there.
   */
  private either<T>(m: Record<string, unknown>, base: PathKey[], newName: string, oldName: string, required?: string): Setting<NonNullable<T>> | undefined {
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

  build(input: ConfigInput): Config {
    const config = defaultConfig({file: this.file})
    if (input.observationDomainId != null) config.observationDomainId = input.observationDomainId
    const size = this.either<number>(input, [], 'maxMessageSize', 'maxIpfixMessageLen')
    // The older tool's own example used 100: small sizes are fine as long as each template sent fits.
    if (size) config.maxMessageSize = size.value
    const refresh = this.either<number>(input, [], 'templateRefreshSeconds', 'timerTemplateFlushSeconds')
    if (refresh) config.templateRefreshSeconds = refresh.value
    if (input.statsIntervalSeconds != null) config.statsIntervalSeconds = input.statsIntervalSeconds
    if (input.spoolBytes != null) config.spoolBytes = input.spoolBytes
    if (input.spoolTotalBytes != null) config.spoolTotalBytes = input.spoolTotalBytes
    if (input.replayBytesPerSecond != null) config.replayBytesPerSecond = input.replayBytesPerSecond
    if (input.sendBytesPerSecond != null) config.sendBytesPerSecond = input.sendBytesPerSecond
    const drain = this.either<number>(input, [], 'drainIntervalSeconds', 'timerFinishedDrainSeconds')
    if (drain) config.drainIntervalSeconds = drain.value
    if (input.idleTimeoutSeconds != null) config.idleTimeoutSeconds = input.idleTimeoutSeconds
    const active = this.either<number>(input, [], 'activeTimeoutSeconds', 'timerForceDrainSeconds')
    if (active) config.activeTimeoutSeconds = active.value
    this.checkTimeouts(config, drain, input.idleTimeoutSeconds != null, active)

    const templates = input.templates ? this.templates(input.templates) : undefined
    if (templates) {
      config.templates = templates.map((t) => t.config)
      config.templatesDefaulted = false
    }
    const templateIds = config.templates.map((t) => t.id)

    const {collectors, logs} = this.outputs(input, templateIds)
    config.collectors = collectors.map((c) => c.config)
    config.logs = logs.map((l) => l.config)
    this.checkTemplatesFit(config, templates, size)
    this.checkPacedSpool(config, collectors, input.sendBytesPerSecond != null)

    if (input.meters) config.meters = this.meters(input.meters)
    if (input.metrics && 'listen' in input.metrics) {
      const listen = input.metrics.listen
      config.metrics = {listen: listen === null || listen === undefined || listen === '' ? null : listen.text}
    }
    if (input.stateFile != null) config.stateFile = input.stateFile
    return config
  }

  /** Flows leave only at a drain: the idle and active timeouts cannot be shorter than the drain interval. */
  private checkTimeouts(config: Config, drain: Setting<number> | undefined, idleGiven: boolean, active: Setting<number> | undefined): void {
    const drainName = drain?.key ?? 'drainIntervalSeconds'
    const timeouts = [
      {path: idleGiven ? ['idleTimeoutSeconds'] : undefined, value: config.idleTimeoutSeconds, name: 'idleTimeoutSeconds'},
      {path: active?.path, value: config.activeTimeoutSeconds, name: active?.key ?? 'activeTimeoutSeconds'},
    ]
    for (const {path, value, name} of timeouts) {
      if (value >= config.drainIntervalSeconds) continue
      if (path)
        this.fail(
          path,
          `${value} is less than ${drainName} (${config.drainIntervalSeconds}): flows leave only at a drain`,
          `at least ${config.drainIntervalSeconds}`,
        )
      // Only the drain interval was given: it is what is too long.
      this.fail([drainName], `${config.drainIntervalSeconds} is more than ${name} (${value}, the default)`, `at most ${value}, or set ${name} too`)
    }
  }

  /** A paced export waits its turn in the spool: a spool that holds nothing would drop every message. */
  private checkPacedSpool(config: Config, collectors: PlacedCollector[], sendGiven: boolean): void {
    if (config.spoolBytes > 0 && config.spoolTotalBytes > 0) return
    const empty = config.spoolBytes === 0 ? 'spoolBytes' : 'spoolTotalBytes'
    for (const c of collectors) {
      const rate = c.config.sendBytesPerSecond ?? config.sendBytesPerSecond
      if (rate === 0) continue
      const path = c.config.sendBytesPerSecond !== undefined ? c.sendPath : sendGiven ? ['sendBytesPerSecond'] : undefined
      if (!path) continue
      this.fail(
        path,
        `the paced export waits its turn in the spool, and ${empty} is 0: every message would be dropped`,
        `0 (unpaced) while ${empty} is 0, or a ${empty} above 0`,
      )
    }
  }

  // --- templates -----------------------------------------------------------------------------------

  private templates(items: TemplateInput[]): Placed<TemplateConfig>[] {
    const ids = new Map<number, string>()
    return items.map((item, i) => {
      const base: PathKey[] = ['templates', i]
      const other = ids.get(item.id)
      if (other !== undefined) this.fail([...base, 'id'], `${item.id} is already the id of ${other}`, 'a unique template id from 256 to 65535')
      ids.set(item.id, formatPath(base) as string)
      const fieldsAllowed = 'a list of information element names, or {name: NAME, length: BYTES}'
      const list = this.either<FieldValue[]>(item, base, 'fields', 'template', `${fieldsAllowed} (or the older tool's template:)`) as Setting<FieldValue[]>
      const fields: TemplateFieldConfig[] = []
      const seen = new Map<number, string>()
      let family: {family: 4 | 6; name: string; at: string} | undefined
      list.value.forEach((field, j) => {
        const {element} = field
        const at = `${list.key}[${j}]`
        const namePath = field.named ? [...list.path, j, 'name'] : [...list.path, j]
        const again = seen.get(element.id)
        if (again !== undefined) this.fail(namePath, `${element.name} is already ${again} of this template`, 'each element once per template')
        seen.set(element.id, at)
        if (field.family !== undefined) {
          if (family && family.family !== field.family) {
            this.fail(
              namePath,
              `${element.name} is IPv${field.family}-only but the template already has the IPv${family.family}-only ${family.name} (${family.at}); a template cannot mix IPv4-only and IPv6-only fields`,
              'the fields of one address family per template (make one template for IPv4 and one for IPv6)',
            )
          }
          family ??= {family: field.family, name: element.name, at}
        }
        fields.push({name: element.name, id: element.id, length: field.length})
      })
      return {config: {id: item.id, fields}, path: base}
    })
  }

  /**
   * Every template some collector gets must fit in maxMessageSize: announced in one message, and
   * one record in one message. A template no collector gets is never sent (a config of log
   * outputs only, as the older tool's examples/agent_output_hook, sends no template at all).
   */
  private checkTemplatesFit(config: Config, templates: Placed<TemplateConfig>[] | undefined, size: Setting<number> | undefined): void {
    const sent = new Set<number>()
    for (const c of config.collectors) for (const id of c.templateIds ?? config.templates.map((t) => t.id)) sent.add(id)
    const max = config.maxMessageSize
    const headers = MESSAGE_AND_SET_HEADERS_LENGTH
    if (!templates) {
      // The default templates: only maxMessageSize can be wrong.
      const fits = config.templates.filter((t) => sent.has(t.id)).map((t) => templateFits(t.fields, max))
      if (!size || fits.every((f) => f.fits)) return
      const largest = Math.max(...fits.map((f) => Math.max(f.dataRecordBytes, f.templateRecordBytes)))
      this.fail(
        size.path,
        `${max} is too small for the default templates, whose largest record takes ${largest} bytes plus ${headers} of message and set headers`,
        `at least ${largest + headers}, or templates with fewer fields`,
      )
    }
    for (const t of templates) {
      if (!sent.has(t.config.id)) continue
      const fit = templateFits(t.config.fields, max)
      if (fit.dataRecordBytes > fit.room) {
        this.fail(
          t.path,
          `a record of this template takes ${fit.dataRecordBytes} bytes, which with the ${headers} bytes of message and set headers is more than maxMessageSize (${max}), so it could never be sent`,
          `records of at most ${fit.room} bytes (drop fields, give shorter lengths, or raise maxMessageSize)`,
        )
      }
      if (fit.templateRecordBytes > fit.room) {
        this.fail(
          t.path,
          `announcing this template takes ${fit.templateRecordBytes} bytes (${TEMPLATE_RECORD_HEADER_LENGTH} + ${FIELD_SPECIFIER_LENGTH} per field), which with the ${headers} bytes of message and set headers is more than maxMessageSize (${max}), so it could never be sent`,
          `at most ${maxTemplateFields(max)} fields (or raise maxMessageSize)`,
        )
      }
    }
  }

  // --- outputs -------------------------------------------------------------------------------------

  private outputs(input: ConfigInput, templateIds: number[]): {collectors: PlacedCollector[]; logs: Placed<LogOutputConfig>[]} {
    const newForm = (['collectors', 'logs'] as const).filter((k) => k in input)
    if ('outputs' in input && newForm.length > 0) {
      const [first, second] = ['outputs', newForm[0]].sort((a, b) => this.source.offsetOf([a], 'key') - this.source.offsetOf([b], 'key'))
      this.fail(
        [second],
        `outputs are also listed in ${first} (line ${this.source.lineOf([first])})`,
        "either the older tool's outputs: [{collector: ...}, {log: ...}] or collectors: and logs:",
        'key',
      )
    }
    const collectors: PlacedCollector[] = []
    const logs: Placed<LogOutputConfig>[] = []
    input.collectors?.forEach((c, i) => collectors.push(this.collector(c, ['collectors', i], templateIds)))
    input.logs?.forEach((l, i) => logs.push(this.log(l, ['logs', i])))
    input.outputs?.forEach((o, i) => {
      const base: PathKey[] = ['outputs', i]
      if ('collector' in o && 'log' in o)
        this.fail([...base, 'log'], 'an output is a collector or a log, not both', 'one of collector or log per list item', 'key')
      if (o.collector) collectors.push(this.collector(o.collector, [...base, 'collector'], templateIds))
      else if (o.log) logs.push(this.log(o.log, [...base, 'log']))
      else this.fail(base, 'the output is neither a collector nor a log', 'collector: {remoteAddress: HOST:PORT} or log: {file: PATH}')
    })
    if (collectors.length + logs.length === 0) {
      const allowed = "collectors: [{address: HOST:PORT}], logs: [{file: PATH}], or the older tool's outputs: [{collector: {remoteAddress: HOST:PORT}}]"
      const empty = (['outputs', 'collectors', 'logs'] as const).find((k) => input[k] != null)
      if (empty) this.fail([empty], 'no output: at least one collector or log is required', allowed)
      this.fail([], 'no output is configured: at least one collector or log is required', allowed)
    }
    const seenCollectors = new Map<string, string>()
    for (const c of collectors) {
      const key = endpointKey(c.config.remote)
      const other = seenCollectors.get(key)
      if (other) this.fail(c.path, `the same collector as ${other}`, 'each collector once (collectors are named by their address in logs and metrics)')
      seenCollectors.set(key, formatPath(c.path) as string)
    }
    // Two sockets cannot send from one address and port: the daemon would refuse the second.
    collectors.forEach((c, i) => {
      const other = collectors.slice(0, i).find((o) => sourcesClash(o.config, c.config))
      if (!other || !c.sourcePath) return
      const o = other.config
      this.fail(
        c.sourcePath,
        `the collector ${c.config.name} would send from ${o.source!.host === c.config.source!.host ? 'the same address and port' : 'the same port'} as the collector ${o.name} (${formatPath(other.sourcePath!)}: ${formatEndpoint(o.source!)}), and the second socket cannot bind`,
        'a source of its own for each collector (another port), or port 0 (any)',
      )
    })
    // A collector is its name in logs and metrics, and across reloads: no two may share one (a
    // name may be another collector's address as written, the default name).
    const seenNames = new Map<string, string>()
    for (const c of collectors) {
      const path = c.namePath ?? c.path
      const other = seenNames.get(c.config.name)
      if (other)
        this.fail(path, `the name ${c.config.name} is ${other}'s too`, 'a name of its own for each collector (its address as written, unless it has a name:)')
      seenNames.set(c.config.name, formatPath(path) as string)
    }
    const seenFiles = new Map<string, string>()
    for (const l of logs) {
      const other = seenFiles.get(l.config.file)
      if (other) this.fail(l.path, `the same file as ${other}`, 'each file once')
      seenFiles.set(l.config.file, formatPath(l.path) as string)
    }
    return {collectors, logs}
  }

  private collector(input: CollectorInput, base: PathKey[], templateIds: number[]): PlacedCollector {
    const remote = this.either<ParsedAddress>(
      input,
      base,
      'address',
      'remoteAddress',
      `${ADDRESS_ALLOWED.remote} (or the older tool's remoteAddress)`,
    ) as Setting<ParsedAddress>
    const config: CollectorConfig = {name: input.name?.trim() ?? remote.value.text, remote: remote.value.endpoint}
    const source = this.either<ParsedAddress>(input, base, 'source', 'localAddress')
    if (source) {
      const remoteFamily = familyOf(remote.value.endpoint.host)
      const sourceFamily = familyOf(source.value.endpoint.host)
      if (remoteFamily && sourceFamily && remoteFamily !== sourceFamily) {
        this.fail(
          source.path,
          `the source is an IPv${sourceFamily} address but the collector ${remote.value.text} is IPv${remoteFamily}`,
          `an IPv${remoteFamily} source, e.g. ${remoteFamily === 4 ? '0.0.0.0:0' : '[::]:0'}`,
        )
      }
      config.source = source.value.endpoint
    }
    const sourcePath = source?.path
    if (input.templates) {
      const path = [...base, 'templates']
      const allowed = `a list of template ids: ${templateIds.join(', ')}`
      if (input.templates.length === 0) this.fail(path, 'the list is empty: the collector would get nothing', `${allowed}, or leave templates out for all`)
      const ids: number[] = []
      input.templates.forEach((id, i) => {
        if (!templateIds.includes(id)) this.fail([...path, i], `no template has the id ${id}`, allowed)
        if (ids.includes(id)) this.fail([...path, i], `${id} is listed twice`, 'each template id once')
        ids.push(id)
      })
      config.templateIds = ids
    }
    if (input.replayBytesPerSecond != null) config.replayBytesPerSecond = input.replayBytesPerSecond
    if (input.sendBytesPerSecond != null) config.sendBytesPerSecond = input.sendBytesPerSecond
    const sendPath = input.sendBytesPerSecond != null ? [...base, 'sendBytesPerSecond'] : undefined
    return {config, path: remote.path, sourcePath, sendPath, namePath: input.name != null ? [...base, 'name'] : undefined}
  }

  private log(input: LogInput, base: PathKey[]): Placed<LogOutputConfig> {
    const hooks = (input.hooks ?? []).map((hook, i): HookConfig => {
      const path: PathKey[] = [...base, 'hooks', i]
      const oneOf = 'command: PROGRAM (or [PROGRAM, ARG, ...]) or shell: SCRIPT, one per hook'
      const hasCommand = 'command' in hook
      const hasShell = 'shell' in hook
      if (hasCommand && hasShell) {
        const second = this.source.offsetOf([...path, 'command'], 'key') < this.source.offsetOf([...path, 'shell'], 'key') ? 'shell' : 'command'
        this.fail([...path, second], 'a hook runs a command or a shell script, not both', oneOf, 'key')
      }
      if (!hasCommand && !hasShell) this.fail([...path, 'command'], 'missing: a hook needs a command or a shell script', oneOf, 'map')
      const timeoutMs = Math.max(1, Math.round((hook.timeoutSeconds ?? DEFAULT_HOOK_TIMEOUT_SECONDS) * 1000))
      const common = hook.name == null ? {timeoutMs} : {name: hook.name, timeoutMs}
      if (hasShell) {
        if (hook.shell == null) this.fail([...path, 'shell'], 'missing value', 'a shell script')
        return {...common, shell: hook.shell}
      }
      if (hook.command == null) this.fail([...path, 'command'], 'missing value', 'a program, or a list [PROGRAM, ARG, ...]')
      return {...common, command: hook.command}
    })
    return {config: {file: input.file, hooks}, path: [...base, 'file']}
  }

  // --- meters --------------------------------------------------------------------------------------

  private meters(items: NonNullable<ConfigInput['meters']>): MeterSelection[] {
    const seen = new Map<string | null, string>()
    return items.map((item, i) => {
      const other = seen.get(item.netns)
      if (other !== undefined) this.fail(['meters', i, 'netns'], `${item.netns ?? 'root'} is already ${other}`, 'each namespace once')
      seen.set(item.netns, `meters[${i}]`)
      const meter: MeterSelection = {netns: item.netns}
      if (item.observationDomainId != null) meter.observationDomainId = item.observationDomainId
      return meter
    })
  }
}
