/**
 * Loads the daemon's config.yaml into a Config. Accepts the new keys and the older
 * linux-flow-exporter's (`maxIpfixMessageLen`, `timer*Seconds`, `outputs: [{collector}, {log}]`,
 * `collectors: [{address}]`, `template: [...]`), rejects anything it does not know, and reports
 * the first problem in the file as one line: `FILE:LINE:COL: KEY: PROBLEM; allowed: WHAT`.
 *
 * In order: the file's size (limits.ts), YAML syntax and every list's length (source.ts,
 * limits.ts), the shape of every value (the valibot schema in schema.ts), then what needs two
 * keys at once: old and new names of one setting (key-checks.ts), unique template ids and each
 * template's fields (templates.ts), the outputs against each other: unique collectors, names,
 * sources and files, a collector's templates and address families (outputs.ts), here the timers
 * against each other and the spool a paced export needs, and whether each template a collector
 * gets can be sent in maxMessageSize (templates.ts).
 */
import {open} from 'node:fs/promises'

import type {Config, MeterSelection} from './config.js'
import {KeyChecks, type Setting} from './key-checks.js'
import {CONFIG_LIMITS, checkCounts, checkFileSize} from './limits.js'
import {readOutputs, type PlacedCollector} from './outputs.js'
import {checkShape, type ConfigInput} from './schema.js'
import {ConfigError, ConfigSource} from './source.js'
import {checkTemplatesFit, defaultTemplates, readTemplates} from './templates.js'

export {ConfigError} from './source.js'
export {CONFIG_LIMITS} from './limits.js'

const DEFAULT_COLLECTOR = '127.0.0.1:4739'
const DEFAULT_METRICS_LISTEN = '127.0.0.1:9999'

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
 * How a config is read. `forFlowFiles`: for `ipfix send`, whose records come from a flow file, so a
 * template may name elements the meter cannot fill (their values are the file's).
 */
export interface LoadOptions {
  forFlowFiles?: boolean
}

/**
 * Reads and parses a config file; a missing, unreadable or too large file is a ConfigError too.
 * Never reads more than the size limit and a byte: a 10 MB file (or /dev/zero) is refused unread.
 */
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
  return new ConfigBuilder(new KeyChecks(source), file).build(shape.value)
}

/** The checks across keys, on the schema's output, and the Config they build. */
class ConfigBuilder {
  constructor(
    private readonly checks: KeyChecks,
    private readonly file: string | null,
  ) {}

  build(input: ConfigInput): Config {
    const config = defaultConfig({file: this.file})
    if (input.observationDomainId != null) config.observationDomainId = input.observationDomainId
    if (input.enterpriseNumber != null) config.enterpriseNumber = input.enterpriseNumber
    const size = this.checks.either<number>(input, [], 'maxMessageSize', 'maxIpfixMessageLen')
    // The older tool's own example used 100: small sizes are fine as long as each template sent fits.
    if (size) config.maxMessageSize = size.value
    const refresh = this.checks.either<number>(input, [], 'templateRefreshSeconds', 'timerTemplateFlushSeconds')
    if (refresh) config.templateRefreshSeconds = refresh.value
    if (input.statsIntervalSeconds != null) config.statsIntervalSeconds = input.statsIntervalSeconds
    if (input.spoolBytes != null) config.spoolBytes = input.spoolBytes
    if (input.spoolTotalBytes != null) config.spoolTotalBytes = input.spoolTotalBytes
    if (input.replayBytesPerSecond != null) config.replayBytesPerSecond = input.replayBytesPerSecond
    if (input.sendBytesPerSecond != null) config.sendBytesPerSecond = input.sendBytesPerSecond
    const drain = this.checks.either<number>(input, [], 'drainIntervalSeconds', 'timerFinishedDrainSeconds')
    if (drain) config.drainIntervalSeconds = drain.value
    if (input.idleTimeoutSeconds != null) config.idleTimeoutSeconds = input.idleTimeoutSeconds
    const active = this.checks.either<number>(input, [], 'activeTimeoutSeconds', 'timerForceDrainSeconds')
    if (active) config.activeTimeoutSeconds = active.value
    this.checkTimeouts(config, drain, input.idleTimeoutSeconds != null, active)

    const templates = input.templates ? readTemplates(this.checks, input.templates, config.enterpriseNumber) : undefined
    if (templates) {
      config.templates = templates.map((t) => t.config)
      config.templatesDefaulted = false
    }
    const templateIds = config.templates.map((t) => t.id)

    const {collectors, logs} = readOutputs(this.checks, input, templateIds)
    config.collectors = collectors.map((c) => c.config)
    config.logs = logs.map((l) => l.config)
    checkTemplatesFit(this.checks, config, templates, size)
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
        this.checks.fail(
          path,
          `${value} is less than ${drainName} (${config.drainIntervalSeconds}): flows leave only at a drain`,
          `at least ${config.drainIntervalSeconds}`,
        )
      // Only the drain interval was given: it is what is too long.
      this.checks.fail([drainName], `${config.drainIntervalSeconds} is more than ${name} (${value}, the default)`, `at most ${value}, or set ${name} too`)
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
      this.checks.fail(
        path,
        `the paced export waits its turn in the spool, and ${empty} is 0: every message would be dropped`,
        `0 (unpaced) while ${empty} is 0, or a ${empty} above 0`,
      )
    }
  }

  // --- meters --------------------------------------------------------------------------------------

  private meters(items: NonNullable<ConfigInput['meters']>): MeterSelection[] {
    const seen = new Map<string, string>()
    return items.map((item, i) => {
      const other = seen.get(item.netns.text)
      if (other !== undefined) this.checks.fail(['meters', i, 'netns'], `${item.netns.text} is already ${other}`, 'each namespace once')
      seen.set(item.netns.text, `meters[${i}]`)
      const meter: MeterSelection = {netns: item.netns.kind === 'root' ? null : item.netns.text}
      if (item.observationDomainId != null) meter.observationDomainId = item.observationDomainId
      if (item.interfaces != null) meter.interfaces = item.interfaces
      // direction and capacity say how the daemon attaches: without interfaces it attaches nothing.
      for (const key of ['direction', 'capacity'] as const) {
        if (item[key] != null && item.interfaces == null)
          this.checks.fail(
            ['meters', i, key],
            `${key} applies only to a meter the daemon attaches itself`,
            `interfaces: [GLOB, ...] beside it, or leave ${key} out`,
          )
      }
      if (item.direction != null) meter.direction = item.direction
      if (item.capacity != null) meter.capacity = item.capacity
      if (item.sampling != null) meter.sampling = item.sampling
      if (item.drops != null) meter.drops = item.drops
      return meter
    })
  }
}
