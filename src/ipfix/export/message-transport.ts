/**
 * What an export session needs of the transport it hands its messages to (UdpTransport, or the
 * encoder benchmark's counter), and what a transport tells about the messages it holds.
 */
import type {SpooledMessage} from './spool.js'
import type {CollectorTarget} from './target.js'

/** What a session needs of its transport. */
export interface MessageTransport {
  readonly isOpen: boolean
  readonly sendErrors: number
  /** Queues a message holding `dataRecords` data records. */
  send(message: Buffer, dataRecords: number): void
  /** Sends what is queued. */
  flush(): void
  open(): Promise<void>
  flushed(): Promise<void>
  close(): void
  readonly localPort: number | undefined
  /** The socket's cookie (the meter skips our own datagrams). */
  cookie?(): bigint | undefined
  /** Called at every drain: reads errors, probes a collector that is down, replays its spool. */
  service?(): void
  /** What is spooled now. */
  readonly spool?: {readonly length: number; readonly bytes: number}
  /** Whether a replay (or the paced export) is under way or the collector is down (what is sent waits behind what is spooled). */
  readonly isBacklogged?: boolean
  /** Whether the collector refused (or has not answered at a new address yet). */
  readonly isDown?: boolean
  /** The same collector elsewhere (config reload): what it holds goes there. */
  moveTo?(target: CollectorTarget): Promise<void>
  /** The same collector at the same address, with other settings (config reload). */
  retarget?(target: CollectorTarget): void
  /** Stops sending and closes, leaving in the spool what the collector never took. */
  retire?(): Promise<void>
  /** Takes (and lets go of) what the spool holds: it will never be sent. */
  discard?(): {message: Buffer; dataRecords: number}[]
  /** A new bound on what is held for this collector (config reload). */
  setSpoolBytes?(bytes: number): void
  /** New default replay and send rates, for a collector without its own (config reload). */
  setDefaultRates?(rates: {replayBytesPerSecond?: number; sendBytesPerSecond?: number}): void
  /** Where the transport tells what becomes of the messages it holds (createExporter wires it to the session, once). */
  subscribe?(events: TransportEvents): void
}

/** The daemon-wide settings of a collector's transport that a config reload may change. */
export interface TransportDefaults {
  spoolBytes?: number
  replayBytesPerSecond?: number
  sendBytesPerSecond?: number
}

export interface TransportEvents {
  /** A send failed (a collector that is down shows as ECONNREFUSED on a later send). */
  onError?: (error: Error) => void
  /** These messages were dropped (oldest first) to keep the spool within its bounds. */
  onDrop?: (dropped: SpooledMessage[]) => void
  /** The collector answers again; `replayed` spooled messages are on their way. */
  onResume?: (replayed: number) => void
  /** Template messages for `domain` headed with `sequence`: sent before a probe or a replay. */
  preamble?: (domain: number, sequence: number) => Buffer[]
}
