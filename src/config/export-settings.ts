/**
 * What a config decides about exporting: its templates compiled once, every collector's exporter
 * made by createExporter with the config's message size, refresh interval, options template ids
 * (statistics, sampling rate, interface names) and spool settings, and the most memory the collectors' spools may take. The daemon,
 * `flowctl ipfix send` and the benchmarks all go through here.
 */
import {
  ARENA_BYTES,
  compileBiflowTemplate,
  compileTemplate,
  createExporter,
  MAX_FREE_ARENAS,
  optionsTemplateIds,
  type CollectorExporter,
  type ExporterOptions,
  type ExportTemplate,
  type InterfaceLabels,
} from '../ipfix/export/collector-exporter.js'
import type {CollectorConfig, Config} from './config.js'

export function compileTemplates(config: Config): ExportTemplate[] {
  return config.templates.map((t) => compileTemplate(t.id, t.fields))
}

/** The templates of the collectors that ask for biflows: each template's biflow form, under its id. */
export function compileBiflowTemplates(config: Config): ExportTemplate[] {
  return config.templates.map((t) => compileBiflowTemplate(t.id, t.fields))
}

/** What only the caller of exporterFor knows: the sequence store, the error log, where interface names come from. */
type ExporterExtras = Partial<Omit<ExporterOptions, 'advertise'>> & {interfaceLabels?: InterfaceLabels}

/** What the config decides of an exporter, with `extra`. */
function exporterOptions(config: Config, extra: ExporterExtras = {}): ExporterOptions {
  const {interfaceLabels, ...rest} = extra
  const ids = optionsTemplateIds(config.templates)
  return {
    maxMessageSize: config.maxMessageSize,
    templateRefreshMs: config.templateRefreshSeconds * 1000,
    statsTemplateId: ids.stats,
    // Every collector is told the sampling rate of each domain's data (also 1), and the names of
    // its interfaces where the caller knows them (the daemon).
    advertise: {templateIds: ids, interfaceLabels},
    spoolBytes: config.spoolBytes,
    replayBytesPerSecond: config.replayBytesPerSecond,
    sendBytesPerSecond: config.sendBytesPerSecond,
    ...rest,
  }
}

export function exporterFor(config: Config, collector: CollectorConfig, templates: ExportTemplate[], extra: ExporterExtras = {}): CollectorExporter {
  return createExporter(collector, templates, exporterOptions(config, extra))
}

/** The most memory a config lets the collectors' spools and windows take (what `config check` says). */
export interface SpoolMemory {
  /** The messages held, as spoolBytes and spoolTotalBytes count them (their bytes and their bookkeeping): min(spoolTotalBytes, collectors x spoolBytes). */
  held: number
  /**
   * The message memory besides, in arenas of ARENA_BYTES: per collector the two being filled
   * (messages, and templates before a replay) and the oldest, partly let go of; and the arenas
   * kept for reuse (MAX_FREE_ARENAS).
   */
  buffers: number
}

export function spoolMemoryAtMost(config: Config): SpoolMemory {
  const n = config.collectors.length
  if (n === 0) return {held: 0, buffers: 0}
  return {held: Math.min(config.spoolTotalBytes, n * config.spoolBytes), buffers: (n * 3 + MAX_FREE_ARENAS) * ARENA_BYTES}
}
