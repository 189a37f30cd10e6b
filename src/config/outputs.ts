/**
 * The outputs of a config as load.ts reads them: collectors (their address, source, templates
 * and rates) and log outputs (their file and hooks), and the checks across them.
 */
import {isIPv4, isIPv6} from 'node:net'

import {canonicalAddress} from '../util/address.js'
import type {CollectorConfig, Endpoint, HookConfig, LogOutputConfig} from './config.js'
import type {KeyChecks, Placed, Setting} from './key-checks.js'
import {ADDRESS_ALLOWED, type CollectorInput, type ConfigInput, type LogInput, type ParsedAddress} from './schema.js'
import {formatPath, type PathKey} from './source.js'

const DEFAULT_HOOK_TIMEOUT_SECONDS = 5

/** A collector, and where its source is given. */
export interface PlacedCollector extends Placed<CollectorConfig> {
  sourcePath?: PathKey[]
  /** Where the collector sets its own sendBytesPerSecond. */
  sendPath?: PathKey[]
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
    const [address, zone] = e.host.split('%') as [string, string?]
    host = `[${canonicalAddress(address)}${zone === undefined ? '' : `%${zone}`}]`
  }
  return `${host}:${e.port}`
}

/** HOST:PORT, [IPV6]:PORT, as written in a config. */
function formatEndpoint(e: Endpoint): string {
  return `${isIPv6(e.host.split('%')[0]) ? `[${e.host}]` : e.host}:${e.port}`
}

/**
 * Whether two collectors' sources would take the same local port: the transport binds a source
 * with a port (connectCollector in src/ipfix/export/collector-socket.ts), a wildcard one as the wildcard of its collector's family,
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

/**
 * The collectors and log outputs, from collectors: and logs: or the older tool's outputs: (never
 * both), checked against each other: at least one, each collector once, by address and by name,
 * no two sending from the same local port, each log file once.
 */
export function readOutputs(checks: KeyChecks, input: ConfigInput, templateIds: number[]): {collectors: PlacedCollector[]; logs: Placed<LogOutputConfig>[]} {
  const newForm = (['collectors', 'logs'] as const).filter((k) => k in input)
  if ('outputs' in input && newForm.length > 0) {
    const [first, second] = ['outputs', newForm[0]].sort((a, b) => checks.source.offsetOf([a], 'key') - checks.source.offsetOf([b], 'key'))
    checks.fail(
      [second],
      `outputs are also listed in ${first} (line ${checks.source.lineOf([first])})`,
      "either the older tool's outputs: [{collector: ...}, {log: ...}] or collectors: and logs:",
      'key',
    )
  }
  const collectors: PlacedCollector[] = []
  const logs: Placed<LogOutputConfig>[] = []
  input.collectors?.forEach((c, i) => collectors.push(readCollector(checks, c, ['collectors', i], templateIds)))
  input.logs?.forEach((l, i) => logs.push(readLog(checks, l, ['logs', i])))
  input.outputs?.forEach((o, i) => {
    const base: PathKey[] = ['outputs', i]
    if ('collector' in o && 'log' in o)
      checks.fail([...base, 'log'], 'an output is a collector or a log, not both', 'one of collector or log per list item', 'key')
    if (o.collector) collectors.push(readCollector(checks, o.collector, [...base, 'collector'], templateIds))
    else if (o.log) logs.push(readLog(checks, o.log, [...base, 'log']))
    else checks.fail(base, 'the output is neither a collector nor a log', 'collector: {remoteAddress: HOST:PORT} or log: {file: PATH}')
  })
  if (collectors.length + logs.length === 0) {
    const allowed = "collectors: [{address: HOST:PORT}], logs: [{file: PATH}], or the older tool's outputs: [{collector: {remoteAddress: HOST:PORT}}]"
    const empty = (['outputs', 'collectors', 'logs'] as const).find((k) => input[k] != null)
    if (empty) checks.fail([empty], 'no output: at least one collector or log is required', allowed)
    checks.fail([], 'no output is configured: at least one collector or log is required', allowed)
  }
  const seenCollectors = new Map<string, string>()
  for (const c of collectors) {
    const key = endpointKey(c.config.remote)
    const other = seenCollectors.get(key)
    if (other) checks.fail(c.path, `the same collector as ${other}`, 'each collector once (collectors are named by their address in logs and metrics)')
    seenCollectors.set(key, formatPath(c.path) as string)
  }
  // Two sockets cannot send from one address and port: the daemon would refuse the second.
  collectors.forEach((c, i) => {
    const other = collectors.slice(0, i).find((o) => sourcesClash(o.config, c.config))
    if (!other || !c.sourcePath) return
    const o = other.config
    checks.fail(
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
      checks.fail(path, `the name ${c.config.name} is ${other}'s too`, 'a name of its own for each collector (its address as written, unless it has a name:)')
    seenNames.set(c.config.name, formatPath(path) as string)
  }
  const seenFiles = new Map<string, string>()
  for (const l of logs) {
    const other = seenFiles.get(l.config.file)
    if (other) checks.fail(l.path, `the same file as ${other}`, 'each file once')
    seenFiles.set(l.config.file, formatPath(l.path) as string)
  }
  return {collectors, logs}
}

function readCollector(checks: KeyChecks, input: CollectorInput, base: PathKey[], templateIds: number[]): PlacedCollector {
  const remote = checks.either<ParsedAddress>(
    input,
    base,
    'address',
    'remoteAddress',
    `${ADDRESS_ALLOWED.remote} (or the older tool's remoteAddress)`,
  ) as Setting<ParsedAddress>
  const config: CollectorConfig = {name: input.name?.trim() ?? remote.value.text, remote: remote.value.endpoint}
  const source = checks.either<ParsedAddress>(input, base, 'source', 'localAddress')
  if (source) {
    const remoteFamily = familyOf(remote.value.endpoint.host)
    const sourceFamily = familyOf(source.value.endpoint.host)
    if (remoteFamily && sourceFamily && remoteFamily !== sourceFamily) {
      checks.fail(
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
    if (input.templates.length === 0) checks.fail(path, 'the list is empty: the collector would get nothing', `${allowed}, or leave templates out for all`)
    const ids: number[] = []
    input.templates.forEach((id, i) => {
      if (!templateIds.includes(id)) checks.fail([...path, i], `no template has the id ${id}`, allowed)
      if (ids.includes(id)) checks.fail([...path, i], `${id} is listed twice`, 'each template id once')
      ids.push(id)
    })
    config.templateIds = ids
  }
  if (input.replayBytesPerSecond != null) config.replayBytesPerSecond = input.replayBytesPerSecond
  if (input.sendBytesPerSecond != null) config.sendBytesPerSecond = input.sendBytesPerSecond
  if (input.biflow) config.biflow = true
  const sendPath = input.sendBytesPerSecond != null ? [...base, 'sendBytesPerSecond'] : undefined
  return {config, path: remote.path, sourcePath, sendPath, namePath: input.name != null ? [...base, 'name'] : undefined}
}

function readLog(checks: KeyChecks, input: LogInput, base: PathKey[]): Placed<LogOutputConfig> {
  const hooks = (input.hooks ?? []).map((hook, i): HookConfig => {
    const path: PathKey[] = [...base, 'hooks', i]
    const oneOf = 'command: PROGRAM (or [PROGRAM, ARG, ...]) or shell: SCRIPT, one per hook'
    const hasCommand = 'command' in hook
    const hasShell = 'shell' in hook
    if (hasCommand && hasShell) {
      const second = checks.source.offsetOf([...path, 'command'], 'key') < checks.source.offsetOf([...path, 'shell'], 'key') ? 'shell' : 'command'
      checks.fail([...path, second], 'a hook runs a command or a shell script, not both', oneOf, 'key')
    }
    if (!hasCommand && !hasShell) checks.fail([...path, 'command'], 'missing: a hook needs a command or a shell script', oneOf, 'map')
    const timeoutMs = Math.max(1, Math.round((hook.timeoutSeconds ?? DEFAULT_HOOK_TIMEOUT_SECONDS) * 1000))
    const common = hook.name == null ? {timeoutMs} : {name: hook.name, timeoutMs}
    if (hasShell) {
      if (hook.shell == null) checks.fail([...path, 'shell'], 'missing value', 'a shell script')
      return {...common, shell: hook.shell}
    }
    if (hook.command == null) checks.fail([...path, 'command'], 'missing value', 'a program, or a list [PROGRAM, ARG, ...]')
    return {...common, command: hook.command}
  })
  const config: LogOutputConfig = {file: input.file, hooks}
  if (input.biflow) config.biflow = true
  return {config, path: [...base, 'file']}
}
