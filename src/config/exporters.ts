/**
 * Exporters as a config asks for them: its templates compiled once, and every collector's
 * exporter made by createExporter with the config's message size, refresh interval and the
 * statistics template id. The daemon, `flowctl ipfix send` and the benchmarks all go through here.
 */
import {compileTemplate, createExporter, statsTemplateId, type CollectorExporter, type ExporterOptions, type ExportTemplate} from '../ipfix/exporter.js'
import type {CollectorConfig, Config} from './config.js'

export function compileTemplates(config: Config): ExportTemplate[] {
  return config.templates.map((t) => compileTemplate(t.id, t.fields))
}

/** What the config decides of an exporter; `extra` adds what only the caller knows (sequence store, error log). */
export function exporterOptions(config: Config, extra: Partial<ExporterOptions> = {}): ExporterOptions {
  return {
    maxMessageSize: config.maxMessageSize,
    templateRefreshMs: config.templateRefreshSeconds * 1000,
    statsTemplateId: statsTemplateId(config.templates),
    spoolBytes: config.spoolBytes,
    ...extra,
  }
}

export function exporterFor(config: Config, collector: CollectorConfig, templates: ExportTemplate[], extra: Partial<ExporterOptions> = {}): CollectorExporter {
  return createExporter(collector, templates, exporterOptions(config, extra))
}
