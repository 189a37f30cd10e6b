/**
 * An exporter to one collector: the export session (sequence numbers, templates, statistics)
 * over its UDP transport. `createExporter` is the one way the daemon, `flowctl ipfix send` and
 * the benchmarks make one.
 */
import type {ExportTemplate, OptionsTemplateIds} from './flow-templates.js'
import type {InterfaceLabels} from './interface-options.js'
import type {MessageTransport} from './message-transport.js'
import {ExportSession, type SequenceStore} from './session.js'
import type {SpoolBudget} from './spool.js'
import type {CollectorTarget} from './target.js'
import {UdpTransport} from './transport.js'

export {CONFIRM_MS} from './transport.js'
export {DEFAULT_REPLAY_BYTES_PER_SECOND, REPLAY_BURST_BYTES} from './pacer.js'
export {ARENA_BYTES, MAX_FREE_ARENAS} from '../wire/message.js'
export {SpoolBudget} from './spool.js'

export {compileTemplate, optionsTemplateIds, type ExportTemplate} from './flow-templates.js'
export {compileBiflowTemplate} from './biflow-templates.js'
export type {InterfaceLabels} from './interface-options.js'
export type {ExporterStats, SequenceStore} from './session.js'
export type {TransportDefaults} from './message-transport.js'

/** An exporter to one collector. */
export type CollectorExporter = ExportSession

export interface ExporterOptions {
  maxMessageSize: number
  templateRefreshMs: number
  statsTemplateId: number
  /**
   * What to tell the collector besides the flows: the sampling rate of each domain's data, in
   * options templates of these ids, and the names of the interfaces they carry (from
   * `interfaceLabels`, the daemon's). The config's exporters always do (export-settings.ts).
   */
  advertise?: {templateIds: OptionsTemplateIds; interfaceLabels?: InterfaceLabels}
  sequences?: SequenceStore
  /** Called on send and resolution errors (the caller rate-limits its logs). */
  onError?: (error: Error) => void
  now?: () => number
  /** Bytes of messages held for a collector that is down, and sent ones not yet confirmed (default DEFAULT_SPOOL_BYTES, 32 MiB). */
  spoolBytes?: number
  /** How fast a spool is replayed when the collector answers again, unless the target says (default DEFAULT_REPLAY_BYTES_PER_SECOND). */
  replayBytesPerSecond?: number
  /** How fast every message may leave, unless the target says (0 or undefined: as fast as the socket takes them; see UdpTransport). */
  sendBytesPerSecond?: number
  /** One bound on what the transports of all the exporters sharing it hold. */
  spoolBudget?: SpoolBudget
  /** The monotonic clock (ms) the replay is paced by (default performance.now). */
  paceClock?: () => number
  /** The collector answers again after it was down; `replayed` spooled messages go out. */
  onResume?: (replayed: number) => void
  /** Replaces the UDP transport (the encoder benchmark counts messages instead of sending them). */
  transport?: (target: CollectorTarget) => MessageTransport
}

/**
 * The transport first, then the session over it; then what the transport tells is wired to the
 * session (a failed send has templates sent again, a drop is counted, a probe or a replay is
 * headed by the templates) and to the caller.
 */
export function createExporter(target: CollectorTarget, templates: ExportTemplate[], options: ExporterOptions): CollectorExporter {
  const transport =
    options.transport?.(target) ??
    new UdpTransport(target, {
      spoolBytes: options.spoolBytes,
      replayBytesPerSecond: options.replayBytesPerSecond,
      sendBytesPerSecond: options.sendBytesPerSecond,
      budget: options.spoolBudget,
      now: options.now,
      paceClock: options.paceClock,
    })
  const session = new ExportSession(target, templates, transport, options)
  transport.subscribe?.({
    onError: (error) => {
      session.noteError()
      options.onError?.(error)
    },
    onDrop: (dropped) => session.countDropped(dropped),
    onResume: options.onResume,
    preamble: (domain, sequence) => session.templateMessages(domain, sequence),
  })
  return session
}
