/**
 * `flowctl ipfix dump`: one forced drain of every meter the config names, sent as IPFIX to its
 * collectors, then exit (the older tool's one-shot export). It is the daemon's own start and stop
 * (the same recovery, templates, sequence numbers and state file), with no timer in between. It
 * never races a running daemon: two exporters of the same maps would split every flow in two.
 */
import {describeDaemon, runningDaemon} from '../bpf/state.js'
import type {Config} from '../config/config.js'
import {FlowctlError} from '../errors.js'
import type {Paths} from '../paths.js'
import {requireRoot} from '../sys/privileges.js'
import {Daemon} from './daemon.js'
import {createLogger, type Logger} from './log.js'

export interface ExportOnceReport {
  /** Flows exported, over every meter set. */
  exported: number
  /** What each collector was sent. */
  collectors: Record<string, unknown>[]
}

export async function exportOnce(paths: Paths, config: Config, options: {log?: Logger} = {}): Promise<ExportOnceReport> {
  requireRoot('flowctl ipfix dump')
  const running = runningDaemon(paths)
  if (running) {
    throw new FlowctlError(`${describeDaemon(running)} is exporting these flows: \`ipfix dump\` would race it; stop it first, or let it export them`)
  }
  const base = options.log ?? createLogger()
  const report: ExportOnceReport = {exported: 0, collectors: []}
  const log: Logger = {
    log(level, event, fields = {}) {
      if (event === 'stopped') {
        report.exported = Number(fields.exported ?? 0)
        report.collectors = (fields.collectors as Record<string, unknown>[] | undefined) ?? []
      }
      base.log(level, event, fields)
    },
    limited: (...args) => base.limited(...args),
  }
  // The collectors only: the config's flow logs belong to the daemon.
  const daemon = new Daemon(paths, config, {log, outputs: []})
  await daemon.start()
  await daemon.stop()
  return report
}
