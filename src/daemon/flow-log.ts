/**
 * Flow logs: every exported flow as one JSON line, in a file or on stdout ('-'), after the output's
 * hooks (see hooks.ts). The keys are the older linux-flow-exporter's (src, dst, proto, sport,
 * dport, ingressIfindex, egressIfindex, pkts, bytes, start, end, finished) and richer ones
 * (netns, interface, direction, ingressInterface and egressInterface by name, ipVersion, vlanId,
 * samplingInterval, tos, tcpFlags, endReason, ...). pkts and bytes are raw: with samplingInterval
 * N > 1 they count 1 packet in N. A TCP flow whose handshake the meter timed has
 * tcpRttClientMicroseconds and tcpRttServerMicroseconds (in its first record).
 *
 * Export never waits for a hook: a batch with hooks goes into a queue that a worker empties, one
 * batch at a time. The queue is bounded (maxQueuedRecords): a batch that does not fit skips the
 * hooks and is written at once, unenriched (counted as `queue_full`). A hook that fails, hangs or
 * prints garbage is logged (rate-limited) and counted, and the records are written as they were.
 *
 * Log rotation: `reopen()` (SIGHUP) opens the file by its name again and sends the next lines
 * there; the lines written before go on to the old file (renamed by logrotate) until it is closed,
 * so no line is lost. Use logrotate's default (rename, then `postrotate kill -HUP`), not
 * `copytruncate`, which loses what is written between the copy and the truncation.
 *
 * A file holds whole lines only, and the counts say what it holds: a write that fails (a full
 * disk) leaves the lines before it, a line it cut short is cut off again (see LineFile), and the
 * records it could not write are counted as lost and logged, not as written.
 */
import {open, type FileHandle} from 'node:fs/promises'

import type {LogOutputConfig} from '../config/config.js'
import {FlowctlError} from '../errors.js'
import {END_REASON, type FlowBatch} from '../flow/batch.js'
import {BIFLOW_DIRECTION} from '../flow/biflow.js'
import {formatAddress} from '../util/address.js'
import {isIcmp, protocolName, TCP_FIN, TCP_RST, tcpFlagsText} from '../flow/protocols.js'
import type {FlowOutput} from './daemon.js'
import {applyHooks, hookLabel, type FlowRecord} from './hooks.js'
import type {InterfaceNames} from './interfaces.js'
import type {Logger} from './log.js'
import type {FlowLogObserver} from './metrics/daemon-metrics.js'

const END_REASON_NAME: Record<number, string> = Object.fromEntries(Object.entries(END_REASON).map(([name, value]) => [value, name]))

/** Records waiting for hooks, per output, before batches skip the hooks. */
const DEFAULT_MAX_QUEUED_RECORDS = 100_000

/** The flows of a batch as log records. */
export function batchToRecords(batch: FlowBatch, names: InterfaceNames): FlowRecord[] {
  const records = new Array<FlowRecord>(batch.length)
  const len = batch.addrLen
  for (let i = 0; i < batch.length; i++) {
    const ifindex = batch.ifindex[i]
    const egress = batch.direction[i] === 1
    const proto = batch.proto[i]
    const flags = batch.tcpFlags[i]
    const record: FlowRecord = {
      src: formatAddress(batch.family, batch.src, i * len),
      dst: formatAddress(batch.family, batch.dst, i * len),
      proto,
      sport: batch.sport[i],
      dport: batch.dport[i],
      // The older tool keyed flows by both interfaces; flowctl meters one interface and direction.
      ingressIfindex: egress ? 0 : ifindex,
      egressIfindex: egress ? ifindex : 0,
      pkts: batch.packets[i],
      bytes: batch.bytes[i],
      // Milliseconds truncated, as IPFIX flowStartMilliseconds and flowEndMilliseconds carry them
      // (src/ipfix/export/exportable-elements.ts: the same columns divided by 1000 and floored): the same flow
      // has the same times in the log and at the collector.
      start: Math.floor(batch.startUs[i] / 1000),
      end: Math.floor(batch.endUs[i] / 1000),
      finished: flags & (TCP_FIN | TCP_RST) ? 1 : 0,
      netns: batch.netns,
      interface: names.name(batch.netns, ifindex),
      direction: egress ? 'egress' : 'ingress',
      ipVersion: batch.family,
      protoName: protocolName(proto),
      vlanId: batch.vlanId[i],
      // Packets and bytes are as the meter counted them: 1 packet in samplingInterval.
      samplingInterval: batch.samplingInterval[i],
      tos: batch.tos[i],
      tcpFlags: flags,
      tcpFlagsText: tcpFlagsText(flags),
      endReason: END_REASON_NAME[batch.endReason[i]] ?? String(batch.endReason[i]),
      observationDomainId: batch.observationDomainId,
    }
    // Both interfaces by name, as IPFIX ingressInterface and egressInterface number them (the
    // metered one and the other); a side with no interface (traffic for or from this host) has none.
    const peer = batch.peerIfindex[i]
    const inIfindex = egress ? peer : ifindex
    const outIfindex = egress ? ifindex : peer
    if (inIfindex) record.ingressInterface = names.name(batch.netns, inIfindex)
    if (outIfindex) record.egressInterface = names.name(batch.netns, outIfindex)
    // A TCP connection whose handshake the meter timed (the first record of each of its flows).
    const rttServerUs = batch.rttServerUs(i)
    if (rttServerUs) {
      record.tcpRttClientMicroseconds = batch.rttClientUs(i)
      record.tcpRttServerMicroseconds = rttServerUs
    }
    if (isIcmp(proto)) {
      record.icmpType = batch.dport[i] >> 8
      record.icmpCode = batch.dport[i] & 0xff
    }
    // A flow with drops (meter attach --drops): what the kernel dropped of it, and why (its most
    // frequent reason, by the kernel's name), with the forwardingStatus IPFIX gets for it.
    const dropReason = batch.drops?.reason[i]
    if (dropReason !== undefined) {
      record.droppedPkts = batch.drops!.packets[i]
      record.droppedBytes = batch.drops!.bytes[i]
      record.dropReason = dropReason
      record.forwardingStatus = batch.fwdStatus[i]
    }
    if (batch.reverse) addReverse(record, batch.reverse, i, batch.biflowDirection![i])
    records[i] = record
  }
  return records
}

const BIFLOW_DIRECTION_NAME: Record<number, string> = Object.fromEntries(Object.entries(BIFLOW_DIRECTION).map(([name, value]) => [value, name]))

/**
 * A biflow's reverse direction (src/flow/biflow.ts), beside the forward one the other keys give:
 * its counts, times and flags (all 0 for a direction seen alone), and which side opened the
 * connection (IPFIX biflowDirection by name: initiator, the forward side; arbitrary, not known).
 */
function addReverse(record: FlowRecord, reverse: FlowBatch, i: number, direction: number): void {
  const flags = reverse.tcpFlags[i]
  record.reversePkts = reverse.packets[i]
  record.reverseBytes = reverse.bytes[i]
  record.reverseStart = Math.floor(reverse.startUs[i] / 1000)
  record.reverseEnd = Math.floor(reverse.endUs[i] / 1000)
  record.reverseTcpFlags = flags
  record.reverseTcpFlagsText = tcpFlagsText(flags)
  record.biflowDirection = BIFLOW_DIRECTION_NAME[direction] ?? String(direction)
}

/** The name an output goes by in logs and metrics. */
function outputName(config: LogOutputConfig): string {
  return config.file === '-' ? 'stdout' : config.file
}

const NO_OBSERVER: FlowLogObserver = {written() {}, lost() {}, hookFailed() {}, queued() {}}

export interface FlowLogOptions {
  log: Logger
  observer?: FlowLogObserver
  names: InterfaceNames
  maxQueuedRecords?: number
  /** Where '-' writes (process.stdout). */
  stdout?: NodeJS.WritableStream
}

const NEWLINE = 0x0a

/**
 * A file that only ever holds whole lines, appended in order by one writer. A write the disk
 * refuses part of the way (ENOSPC) leaves part of a line at the end: it is cut off again, the
 * file truncated back to the last whole line, so a reader never sees a torn line and the next
 * line does not start in the middle of one. Should the truncation fail too, nothing more is
 * appended until it succeeds.
 */
export class LineFile {
  /** The size to cut the file back to before the next append, after a truncation that failed. */
  private cutTo: number | undefined

  private constructor(private readonly handle: FileHandle) {}

  /** Opens `path` for appending, creating it if need be. */
  static async open(path: string): Promise<LineFile> {
    return new LineFile(await open(path, 'a'))
  }

  /**
   * Appends `text`, whole lines each ending in a newline; resolves with how many of them are in
   * the file, and the error that stopped the others.
   */
  async append(text: string): Promise<{lines: number; error?: NodeJS.ErrnoException}> {
    const buf = Buffer.from(text, 'utf8')
    let start: number | undefined
    let done = 0
    try {
      if (this.cutTo !== undefined) {
        await this.handle.truncate(this.cutTo)
        this.cutTo = undefined
      }
      // Opened with O_APPEND: every write lands at the end, and this writer is the file's only one.
      start = (await this.handle.stat()).size
      while (done < buf.length) done += (await this.handle.write(buf, done, buf.length - done)).bytesWritten
      return {lines: countLines(buf, buf.length)}
    } catch (error) {
      const whole = done === 0 ? 0 : buf.lastIndexOf(NEWLINE, done - 1) + 1
      if (start !== undefined && done > whole) {
        this.cutTo = start + whole
        try {
          await this.handle.truncate(this.cutTo)
          this.cutTo = undefined
        } catch {
          // tried again before the next append
        }
      }
      return {lines: countLines(buf, whole), error: error as NodeJS.ErrnoException}
    }
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => {})
  }
}

function countLines(buf: Buffer, end: number): number {
  let n = 0
  for (let i = buf.indexOf(NEWLINE); i >= 0 && i < end; i = buf.indexOf(NEWLINE, i + 1)) n++
  return n
}

export class FlowLogOutput implements FlowOutput {
  readonly config: LogOutputConfig
  readonly name: string
  private readonly log: Logger
  private readonly observer: FlowLogObserver
  private readonly names: InterfaceNames
  private readonly maxQueued: number
  private readonly stdout: NodeJS.WritableStream
  private file?: LineFile
  /** The appends and closes in flight, in order: one at a time, so lines keep their order. */
  private writing: Promise<void> = Promise.resolve()
  private lostRecords = 0
  private readonly queue: FlowRecord[][] = []
  private queuedRecords = 0
  private worker?: Promise<void>
  private closed = false

  private constructor(config: LogOutputConfig, options: FlowLogOptions) {
    this.config = config
    this.name = outputName(config)
    this.log = options.log
    this.observer = options.observer ?? NO_OBSERVER
    this.names = options.names
    this.maxQueued = options.maxQueuedRecords ?? DEFAULT_MAX_QUEUED_RECORDS
    this.stdout = options.stdout ?? process.stdout
  }

  /** Opens the output (creating its file, appending to it if it exists). */
  static async open(config: LogOutputConfig, options: FlowLogOptions, key = 'logs[].file'): Promise<FlowLogOutput> {
    const output = new FlowLogOutput(config, options)
    if (config.file !== '-') {
      try {
        output.file = await LineFile.open(config.file)
      } catch (error) {
        const e = error as NodeJS.ErrnoException
        throw new FlowctlError(
          `${key}: cannot open ${config.file} for appending: ${e.code ?? e.message}${e.code === 'ENOENT' ? ' (its directory does not exist)' : ''}`,
          {cause: error},
        )
      }
    }
    return output
  }

  /** Whether it writes biflows (the config's `biflow: true`). */
  get biflow(): boolean {
    return this.config.biflow === true
  }

  /** Records waiting for the hooks. */
  get queued(): number {
    return this.queuedRecords
  }

  write(batch: FlowBatch): void {
    if (batch.length === 0 || this.closed) return
    // The batch is reused once this returns: the records are made now.
    const records = batchToRecords(batch, this.names)
    if (this.config.hooks.length === 0) return this.writeRecords(records)
    if (this.queuedRecords > 0 && this.queuedRecords + records.length > this.maxQueued) {
      for (const hook of this.config.hooks) this.observer.hookFailed(this.name, hookLabel(hook), 'queue_full')
      this.log.limited(`hook-queue:${this.name}`, 'warn', 'hook-queue-full', {
        output: this.name,
        queued: this.queuedRecords,
        skipped: records.length,
        detail: 'the hooks are slower than the flows: records written without them',
      })
      return this.writeRecords(records)
    }
    this.queue.push(records)
    this.queuedRecords += records.length
    this.observer.queued(this.name, this.queuedRecords)
    this.worker ??= this.work().finally(() => (this.worker = undefined))
  }

  private async work(): Promise<void> {
    while (this.queue.length > 0) {
      const records = this.queue[0]
      const out = await applyHooks(this.config.hooks, records, (hook, failure) => {
        const label = hookLabel(hook)
        this.observer.hookFailed(this.name, label, failure.reason)
        this.log.limited(`hook:${this.name}:${label}:${failure.reason}`, 'warn', 'hook-failed', {
          output: this.name,
          hook: label,
          reason: failure.reason,
          error: failure.message,
        })
      })
      this.writeRecords(out)
      this.queue.shift()
      this.queuedRecords -= records.length
      this.observer.queued(this.name, this.queuedRecords)
    }
  }

  private writeRecords(records: FlowRecord[]): void {
    if (records.length === 0) return
    let text = ''
    for (const r of records) text += `${JSON.stringify(r)}\n`
    if (this.config.file === '-') {
      this.stdout.write(text, (error) => (error ? this.lost(records.length, 0, error) : this.observer.written(this.name, records.length)))
      return
    }
    const file = this.file
    if (!file) return this.lost(records.length, 0, new Error('the output is closed'))
    this.writing = this.writing
      .then(async () => {
        const {lines, error} = await file.append(text)
        if (lines) this.observer.written(this.name, lines)
        if (error) this.lost(records.length - lines, lines, error)
      })
      .catch((error: unknown) => this.log.log('error', 'flow-log-write-failed', {output: this.name, error: (error as Error).message}))
  }

  /** Counts and logs records that could not be written (`written` of the same batch were). */
  private lost(records: number, written: number, error: Error): void {
    this.lostRecords += records
    this.observer.lost(this.name, records)
    this.log.limited(`flow-log-write:${this.name}`, 'error', 'flow-log-write-failed', {
      output: this.name,
      error: error.message,
      lost: records,
      written,
      lostSinceStart: this.lostRecords,
    })
  }

  /** Resolves once every record handed over so far went through its hooks and was written. */
  async idle(): Promise<void> {
    while (this.worker) await this.worker
    await this.writing
  }

  /**
   * Opens the file by its name again (after logrotate renamed it). Lines written until the new
   * file is open go to the old one, which is then flushed and closed: no line is lost. If the file
   * cannot be opened, the old one stays in use.
   */
  async reopen(): Promise<void> {
    if (this.config.file === '-' || this.closed) return
    let next: LineFile
    try {
      next = await LineFile.open(this.config.file)
    } catch (error) {
      this.log.log('error', 'flow-log-reopen-failed', {output: this.name, error: (error as Error).message, detail: 'still writing to the file it had open'})
      return
    }
    const old = this.file
    this.file = next
    // Closed after the appends already handed to it.
    this.writing = this.writing.then(() => old?.close())
    await this.writing
    this.log.log('info', 'flow-log-reopened', {output: this.name})
  }

  /** Waits for the hooks of what is queued (each bounded by its timeout), then flushes and closes. */
  async close(): Promise<void> {
    if (this.closed) return
    await this.idle()
    this.closed = true
    const file = this.file
    this.file = undefined
    await file?.close()
  }
}

/** The flow log outputs of a config, kept across reloads. */
export class FlowLogs {
  private current: FlowLogOutput[]

  private constructor(
    outputs: FlowLogOutput[],
    private readonly options: FlowLogOptions,
  ) {
    this.current = outputs
  }

  static async open(configs: readonly LogOutputConfig[], options: FlowLogOptions): Promise<FlowLogs> {
    const logs = new FlowLogs([], options)
    logs.current = await logs.openAll(configs, [])
    return logs
  }

  get outputs(): readonly FlowLogOutput[] {
    return this.current
  }

  private async openAll(configs: readonly LogOutputConfig[], keep: FlowLogOutput[]): Promise<FlowLogOutput[]> {
    const opened: FlowLogOutput[] = []
    const out: FlowLogOutput[] = []
    try {
      for (const [i, config] of configs.entries()) {
        const same = keep.find((o) => JSON.stringify(o.config) === JSON.stringify(config))
        if (same) {
          out.push(same)
          continue
        }
        const output = await FlowLogOutput.open(config, this.options, `logs[${i}].file`)
        opened.push(output)
        out.push(output)
        this.options.observer?.declareOutput?.(output.name, config.hooks.map(hookLabel))
      }
    } catch (error) {
      for (const o of opened) await o.close()
      throw error
    }
    return out
  }

  /**
   * Prepares the outputs of a new config: unchanged ones are kept, new ones opened (a failure
   * throws and changes nothing). `commit()` makes them current and closes the ones dropped.
   */
  async prepare(configs: readonly LogOutputConfig[]): Promise<{outputs: FlowLogOutput[]; commit(): Promise<void>; discard(): Promise<void>}> {
    const outputs = await this.openAll(configs, this.current)
    let committed = false
    return {
      outputs,
      commit: async () => {
        committed = true
        const dropped = this.current.filter((o) => !outputs.includes(o))
        this.current = outputs
        for (const o of dropped) await o.close()
      },
      /** Closes the outputs prepare() opened (the reload was refused). */
      discard: async () => {
        if (committed) return
        for (const o of outputs) if (!this.current.includes(o)) await o.close()
      },
    }
  }

  /** Reopens every file (SIGHUP). */
  async reopen(): Promise<void> {
    await Promise.all(this.current.map((o) => o.reopen()))
  }
}
