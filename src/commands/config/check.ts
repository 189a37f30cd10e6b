import {Flags} from '@oclif/core'

import {FlowctlCommand} from '../../cli/command.js'
import type {Config, TemplateConfig} from '../../config/config.js'
import {spoolMemoryAtMost} from '../../config/export-settings.js'
import {loadConfig} from '../../config/load.js'
import {describeMeter} from '../../config/meter-selection.js'
import {checkConfigOnMachine} from '../../config/machine.js'
import {meterEntriesMatchingNothing} from '../../daemon/follow/matches.js'
import {elementByName, naturalLength} from '../../ipfix/wire/elements.js'
import {exportableElement} from '../../ipfix/export/exportable-elements.js'
import {dropsTemplateIds, missingDropFields, optionsTemplateIdList} from '../../ipfix/export/drops-templates.js'
import {optionsTemplateIds} from '../../ipfix/export/flow-templates.js'
import {jsonFlag} from '../../cli/flags.js'

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

/** 32 MiB, 1.5 MiB, 600 KiB, 100 B. */
function sizeText(bytes: number): string {
  const units = [
    [1 << 30, 'GiB'],
    [1 << 20, 'MiB'],
    [1 << 10, 'KiB'],
  ] as const
  for (const [size, unit] of units) if (bytes >= size) return `${Math.round((bytes / size) * 10) / 10} ${unit}`
  return `${bytes} B`
}

/** 10 MB/s, 2.5 MB/s, 500 kB/s (network units: powers of ten). */
function rateText(bytesPerSecond: number): string {
  if (bytesPerSecond >= 1e6) return `${Math.round(bytesPerSecond / 1e5) / 10} MB/s`
  return `${Math.round(bytesPerSecond / 100) / 10} kB/s`
}

function endpointText(e: {host: string; port: number}): string {
  return `${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`
}

function templateFamily(t: TemplateConfig): string {
  for (const f of t.fields) {
    const family = exportableElement(f.name)?.family
    if (family) return `IPv${family}`
  }
  return 'any family'
}

function naturalLengthOf(name: string): number | undefined {
  const element = exportableElement(name)?.enterprise ?? elementByName(name)
  return element && naturalLength(element.type)
}

/** The human summary printed after the ok line. */
function describeConfig(config: Config): string[] {
  const lines: string[] = []
  const metrics = config.metrics.listen ?? 'off'
  lines.push(
    `settings: drain ${config.drainIntervalSeconds}s, idle ${config.idleTimeoutSeconds}s, active ${config.activeTimeoutSeconds}s, ` +
      `template refresh ${config.templateRefreshSeconds}s, stats ${config.statsIntervalSeconds}s, max message ${config.maxMessageSize} B, ` +
      `observation domain ${config.observationDomainId}, metrics ${metrics}`,
  )
  lines.push(`templates${config.templatesDefaulted ? ' (default)' : ''}:`)
  // The flows with drops of a collector's template go under its drops template (biflow collectors: none).
  const dropsIds = config.collectors.some((c) => !c.biflow)
    ? dropsTemplateIds(config.templates, optionsTemplateIdList(optionsTemplateIds(config.templates)))
    : new Map<number, number>()
  for (const t of config.templates) {
    const bytes = t.fields.reduce((sum, f) => sum + f.length, 0)
    // A field encoded in a reduced size shows its length: octetDeltaCount/4.
    const fields = t.fields.map((f) => {
      const name = f.enterpriseNumber === undefined ? f.name : `${f.name} (PEN ${f.enterpriseNumber}, id ${f.id})`
      return f.length === naturalLengthOf(f.name) ? name : `${name}/${f.length}`
    })
    lines.push(`  ${t.id} (${templateFamily(t)}, ${bytes} B per record): ${fields.join(', ')}`)
    const dropsId = dropsIds.get(t.id)
    if (dropsId !== undefined)
      lines.push(
        `    flows with drops: template ${dropsId} (+ ${missingDropFields(t.fields.map((f) => f.name))
          .map((f) => f.name)
          .join(', ')})`,
      )
  }
  if (config.collectors.length > 0) lines.push('collectors:')
  for (const c of config.collectors) {
    const at = endpointText(c.remote)
    // A collector with a name of its own shows its address too.
    const name = c.name === at || c.name === `${c.remote.host}:${c.remote.port}` ? c.name : `${c.name} at ${at}`
    const from = c.source ? ` from ${endpointText(c.source)}` : ''
    const which = [c.templateIds ? `templates ${c.templateIds.join(', ')}` : 'all templates']
    if (c.replayBytesPerSecond !== undefined) which.push(`replayed at ${rateText(c.replayBytesPerSecond)}`)
    if (c.sendBytesPerSecond !== undefined) which.push(c.sendBytesPerSecond ? `sent at most ${rateText(c.sendBytesPerSecond)}` : 'sent unpaced')
    if (c.biflow) which.push('biflows')
    lines.push(`  ${name}${from} (${which.join(', ')})`)
  }
  if (config.collectors.length > 0) {
    const worst = spoolMemoryAtMost(config)
    lines.push(
      `spool: up to ${sizeText(config.spoolBytes)} a collector, ${sizeText(config.spoolTotalBytes)} in all; worst case for ${plural(config.collectors.length, 'collector')}: ` +
        `${sizeText(worst.held)} held and ${sizeText(worst.buffers)} of message buffers (${sizeText(worst.held + worst.buffers)}); replayed at ${rateText(config.replayBytesPerSecond)}` +
        (config.sendBytesPerSecond ? `; sent at most ${rateText(config.sendBytesPerSecond)}` : ''),
    )
  }
  if (config.logs.length > 0) lines.push('logs:')
  for (const l of config.logs) {
    const hooks = l.hooks.map((h) => h.name ?? ('command' in h ? h.command.join(' ') : 'shell script'))
    const what = [...(hooks.length ? [`${plural(hooks.length, 'hook')}: ${hooks.join(', ')}`] : []), ...(l.biflow ? ['biflows'] : [])]
    lines.push(`  ${l.file === '-' ? 'stdout' : l.file}${what.length ? ` (${what.join('; ')})` : ''}`)
  }
  lines.push(`meters: ${config.meters ? config.meters.map((m) => describeMeter(m)).join(', ') : 'every attached meter'}`)
  return lines
}

export default class ConfigCheckCommand extends FlowctlCommand {
  static override summary = 'Check a daemon configuration without starting anything'
  static override description = `Loads the config file as the daemon would, the older linux-flow-exporter's keys included, and prints a summary of its templates and outputs, and the most memory the collectors' spools can take (spoolBytes, spoolTotalBytes), or the first problem as FILE:LINE:COL: KEY: PROBLEM (exit 2).

Then checks, as the daemon does at start and reload, what the config needs of this machine: the directory of each log file exists, the state file's directory exists or can be created, the metrics host resolves, and a config that names hooks (which run as the daemon's user, root) is writable by its owner only; and warns (on stderr, exit 0) of a meters entry with interfaces that takes no interface now. --no-machine skips that, e.g. for a config meant for another machine.

With --json, prints the normalized configuration instead of the summary.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> -c /etc/flowctl/config.yaml',
    '<%= config.bin %> <%= command.id %> -c config.yaml --json',
  ]

  static override flags = {
    config: Flags.string({char: 'c', description: 'the config file', default: './config.yaml', helpValue: 'FILE'}),
    json: jsonFlag,
    machine: Flags.boolean({
      description:
        "check what the config needs of this machine too (log directories, the state file's directory, the metrics host, the file's mode when it names hooks)",
      default: true,
      allowNo: true,
    }),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(ConfigCheckCommand)
    const config = await loadConfig(flags.config)
    if (flags.machine) await checkConfigOnMachine(config)
    // A pattern that takes nothing yet is a warning, not an error: the interface may come later.
    if (flags.machine) {
      for (const i of await meterEntriesMatchingNothing(config)) {
        process.stderr.write(
          `flowctl: warning: meters[${i}] (${describeMeter(config.meters![i])}) takes no interface now; the daemon attaches one when it appears\n`,
        )
      }
    }
    if (flags.json) return this.printJson(config)
    const parts = [plural(config.collectors.length, 'collector'), plural(config.templates.length, 'template')]
    if (config.templatesDefaulted) parts.push('default templates')
    parts.push(plural(config.logs.length, 'log output'))
    this.log(`${flags.config}: ok (${parts.join(', ')})`)
    for (const line of describeConfig(config)) this.log(line)
  }
}
