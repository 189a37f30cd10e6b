/**
 * One collector, as the exporting process sees it (RFC 7011 §10.3, UDP): one socket for the
 * daemon's life (templates, options and data share one transport session and a stable source
 * port), a sequence number per observation domain counting the data records sent before,
 * templates sent first, before any data set that needs them, and again on a timer, and
 * statistics in an options record.
 */
import {createSocket, type Socket} from 'node:dgram'
import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'

import type {FlowBatch} from '../flow/batch.js'
import {IE, naturalLength} from './elements.js'
import {bindField, putUint, templateFamily, type BoundField} from './flow-fields.js'
import {MESSAGE_HEADER_LENGTH, MessageBuilder, OPTIONS_TEMPLATE_SET_ID, SET_HEADER_LENGTH, TEMPLATE_SET_ID, templateFits} from './message.js'
import {encodeRecord, recordSize, type RecordFields} from './codec.js'
import type {CollectorTarget} from './target.js'
import {encodeTemplateRecord, templateRecordSize, type Template} from './template.js'

/** A data template ready to encode flows: its fields bound to the FlowBatch columns. */
export interface ExportTemplate {
  template: Template
  fields: BoundField[]
  recordLength: number
  /** The address family its address fields tie it to, if any. */
  family?: 4 | 6
}

export function compileTemplate(id: number, fields: readonly {name: string; length: number}[]): ExportTemplate {
  const bound = fields.map((f) => bindField(f.name, f.length))
  return {
    template: {id, fields: bound.map((b) => ({element: b.element, length: b.length})), scopeFieldCount: 0},
    fields: bound,
    recordLength: bound.reduce((n, b) => n + b.length, 0),
    family: templateFamily(fields.map((f) => f.name)),
  }
}

/**
 * The template a flow of `family` goes out with: among the templates that fit it (no address
 * field of the other family), the one with the most fields; on a tie, the first. So each flow
 * reaches each collector once, in the richest template that can carry it.
 */
export function chooseTemplate(templates: readonly ExportTemplate[], family: 4 | 6): ExportTemplate | undefined {
  let best: ExportTemplate | undefined
  for (const t of templates) {
    if (t.family !== undefined && t.family !== family) continue
    if (!best || t.fields.length > best.fields.length) best = t
  }
  return best
}

/** The options template carrying the exporting process's statistics (RFC 7011 §4.3 style). */
export function statsTemplate(id: number): Template {
  const field = (e: (typeof IE)[keyof typeof IE]) => ({element: e, length: naturalLength(e.type)})
  return {
    id,
    scopeFieldCount: 1,
    fields: [
      field(IE.observationDomainId),
      field(IE.exportedMessageTotalCount),
      field(IE.exportedFlowRecordTotalCount),
      field(IE.exportedOctetTotalCount),
      field(IE.ignoredPacketTotalCount),
      field(IE.ignoredOctetTotalCount),
      field(IE.observationTimeMilliseconds),
    ],
  }
}

export interface ExporterStats {
  messages: number
  records: number
  octets: number
  sendErrors: number
  templateSends: number
  /** Flows this collector has no template for (their family fits none of its templates). */
  unexportable: number
}

export interface SequenceStore {
  get(session: string, domain: number): number | undefined
  set(session: string, domain: number, next: number): void
}

export interface ExporterOptions {
  maxMessageSize: number
  templateRefreshMs: number
  statsTemplateId: number
  sequences?: SequenceStore
  /** Called on send and resolution errors (the caller rate-limits its logs). */
  onError?: (error: Error) => void
  now?: () => number
}

export class CollectorExporter {
  readonly config: CollectorTarget
  readonly stats: ExporterStats = {messages: 0, records: 0, octets: 0, sendErrors: 0, templateSends: 0, unexportable: 0}
  private templates: ExportTemplate[]
  private byFamily: {4?: ExportTemplate; 6?: ExportTemplate}
  private readonly options: ExporterOptions
  private readonly builder: MessageBuilder
  private socket?: Socket
  private address?: string
  private readonly sequence = new Map<number, number>()
  /** When a send last failed (ms): templates sent before then may not have arrived. */
  private lastErrorAt = -Infinity
  private readonly templatesSentAt = new Map<number, number>()
  private inflight = 0
  private idle: (() => void)[] = []
  private opening?: Promise<void>

  constructor(config: CollectorTarget, templates: ExportTemplate[], options: ExporterOptions) {
    this.config = config
    this.options = options
    this.builder = new MessageBuilder(options.maxMessageSize)
    this.templates = []
    this.byFamily = {}
    this.setTemplates(templates)
  }

  /** Changes the templates (config reload): they are sent again before the next data. */
  setTemplates(templates: ExportTemplate[]): void {
    const ids = this.config.templateIds
    const wanted = ids ? templates.filter((t) => ids.includes(t.template.id)) : templates
    // A template that cannot be announced, or whose record cannot fit, in one message with its
    // headers can carry no flow (the builder would write past the message and send an empty
    // one): it is left out, and its flows count as unexportable instead.
    this.templates = wanted.filter((t) => templateFits(t.template.fields, this.options.maxMessageSize).fits)
    this.byFamily = {4: chooseTemplate(this.templates, 4), 6: chooseTemplate(this.templates, 6)}
    this.templatesSentAt.clear()
  }

  templateFor(family: 4 | 6): ExportTemplate | undefined {
    return this.byFamily[family]
  }

  /** "local>remote" when the source port is fixed: the transport session whose numbering survives restarts. */
  get session(): string | undefined {
    const s = this.config.source
    return s && s.port ? `${s.host}:${s.port}>${this.config.remote.host}:${this.config.remote.port}` : undefined
  }

  /** Opens the socket; safe to call again after a failure (a hostname that did not resolve). */
  async open(): Promise<void> {
    if (this.socket) return
    this.opening ??= this.doOpen().finally(() => (this.opening = undefined))
    return this.opening
  }

  private async doOpen(): Promise<void> {
    const {remote, source} = this.config
    const address = isIP(remote.host) ? remote.host : (await lookup(remote.host)).address
    const socket = createSocket({type: isIP(address) === 6 ? 'udp6' : 'udp4', reuseAddr: false})
    socket.on('error', (error) => this.fail(error))
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.bind({address: source?.host && source.host !== '0.0.0.0' && source.host !== '::' ? source.host : undefined, port: source?.port ?? 0}, () => {
        socket.off('error', reject)
        resolve()
      })
    })
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      // A failed connect (no route: ENETUNREACH) comes to this callback, not as an 'error' event.
      socket.connect(remote.port, address, (error?: Error) => {
        socket.off('error', reject)
        if (error) {
          socket.close()
          reject(error)
        } else resolve()
      })
    })
    try {
      socket.setSendBufferSize(4 << 20)
    } catch {
      // the kernel caps it at net.core.wmem_max; what we get is fine
    }
    this.address = address
    this.socket = socket
  }

  get isOpen(): boolean {
    return !!this.socket
  }

  /**
   * The socket's file descriptor, for its socket cookie (the meter skips our own datagrams).
   * Node keeps the libuv handle under a symbol of dgram's (`_handle` is its deprecated alias).
   */
  get fd(): number | undefined {
    const socket = this.socket as unknown as Record<symbol, {handle?: {fd?: number}}> | undefined
    if (!socket) return undefined
    const state = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol')
    const fd = state ? socket[state]?.handle?.fd : undefined
    return typeof fd === 'number' && fd >= 0 ? fd : undefined
  }

  get localPort(): number | undefined {
    return this.socket?.address().port
  }

  private nextSequence(domain: number): number {
    let seq = this.sequence.get(domain)
    if (seq === undefined) {
      const session = this.session
      seq = (session && this.options.sequences?.get(session, domain)) || 0
      this.sequence.set(domain, seq)
    }
    return seq
  }

  private advanceSequence(domain: number, records: number): void {
    const next = (this.nextSequence(domain) + records) % 4_294_967_296
    this.sequence.set(domain, next)
    const session = this.session
    if (session) this.options.sequences?.set(session, domain, next)
  }

  private now(): number {
    return this.options.now?.() ?? Date.now()
  }

  private send(message: Buffer, dataRecords: number): void {
    const socket = this.socket
    if (!socket) return
    this.inflight++
    this.stats.messages++
    this.stats.records += dataRecords
    this.stats.octets += message.length
    socket.send(message, (error) => {
      if (error) {
        this.stats.sendErrors++
        this.fail(error)
      }
      if (--this.inflight === 0) for (const resolve of this.idle.splice(0)) resolve()
    })
  }

  private fail(error: Error): void {
    // The collector may have missed templates too (a down collector's ICMP error even fails the
    // next send, whatever it is): templates go again at the next refresh check or data.
    this.lastErrorAt = this.now()
    this.options.onError?.(error)
  }

  /** Resolves when every message handed to the socket has left. */
  flushed(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  /** Sends this collector's templates and the statistics options template, in as many messages as they need. */
  sendTemplates(domain: number): void {
    if (!this.socket) return
    const all: {template: Template; setId: number}[] = [
      ...this.templates.map((t) => ({template: t.template, setId: TEMPLATE_SET_ID})),
      {template: statsTemplate(this.options.statsTemplateId), setId: OPTIONS_TEMPLATE_SET_ID},
    ]
    const b = this.builder
    b.begin(this.exportTime(), this.nextSequence(domain), domain)
    for (const {template, setId} of all) {
      const size = templateRecordSize(template)
      if (b.openSetId !== setId ? !b.fitsNewSet(size) : b.free < size) {
        this.send(b.finish(), 0)
        b.begin(this.exportTime(), this.nextSequence(domain), domain)
      }
      if (b.openSetId !== setId) b.openSet(setId)
      b.pos = encodeTemplateRecord(template, b.buf, b.pos)
    }
    this.send(b.finish(), 0)
    this.stats.templateSends++
    this.templatesSentAt.set(domain, this.now())
  }

  private templatesDue(domain: number): boolean {
    const at = this.templatesSentAt.get(domain)
    return at === undefined || this.now() - at >= this.options.templateRefreshMs || this.lastErrorAt >= at
  }

  /** Sends templates to every domain already in use whose refresh interval has passed. */
  refreshTemplates(): void {
    for (const domain of this.templatesSentAt.keys()) if (this.templatesDue(domain)) this.sendTemplates(domain)
  }

  private exportTime(): number {
    return Math.floor(this.now() / 1000)
  }

  /** Encodes every flow of the batch as data records and sends them. */
  exportBatch(batch: FlowBatch): void {
    if (batch.length === 0) return
    const t = this.byFamily[batch.family]
    if (!t) {
      this.stats.unexportable += batch.length
      return
    }
    if (!this.socket) return
    const domain = batch.observationDomainId
    if (this.templatesDue(domain)) this.sendTemplates(domain)
    const b = this.builder
    const {fields, recordLength} = t
    const id = t.template.id
    const maxPackets = fields.find((f) => f.counterMax?.packets)?.counterMax?.packets ?? Infinity
    const maxBytes = fields.find((f) => f.counterMax?.bytes)?.counterMax?.bytes ?? Infinity
    let seq = this.nextSequence(domain)
    let inMessage = 0
    const startMessage = () => {
      b.begin(this.exportTime(), seq, domain)
      b.openSet(id)
      inMessage = 0
    }
    const writeRecord = (i: number) => {
      if (b.free < recordLength) {
        this.send(b.finish(), inMessage)
        startMessage()
      }
      let pos = b.pos
      const buf = b.buf
      for (let f = 0; f < fields.length; f++) {
        fields[f].write(batch, i, buf, pos)
        pos += fields[f].length
      }
      b.pos = pos
      inMessage++
      seq++
    }
    startMessage()
    if (maxPackets === Infinity && maxBytes === Infinity) {
      // No counter to split: each message is filled field by field, a column of records at a
      // time (the same bytes as record by record, without a call per field and record).
      for (let i = 0; i < batch.length; ) {
        if (b.free < recordLength) {
          this.send(b.finish(), inMessage)
          startMessage()
        }
        const count = Math.min(batch.length - i, Math.max(1, Math.floor(b.free / recordLength)))
        const buf = b.buf
        let off = b.pos
        for (let f = 0; f < fields.length; f++) {
          fields[f].writeColumn(batch, i, count, buf, off, recordLength)
          off += fields[f].length
        }
        b.pos += count * recordLength
        inMessage += count
        seq += count
        i += count
      }
      this.send(b.finish(), inMessage)
      this.advanceSequence(domain, seq - this.nextSequence(domain))
      return
    }
    for (let i = 0; i < batch.length; i++) {
      const packets = batch.packets[i]
      const bytes = batch.bytes[i]
      if (packets <= maxPackets && bytes <= maxBytes) {
        writeRecord(i)
        continue
      }
      // A counter too large for a reduced-size field goes out as several records whose counts
      // add up exactly: the collector's sums stay right.
      const parts = Math.max(Math.ceil(packets / maxPackets), Math.ceil(bytes / maxBytes))
      for (let k = 0; k < parts; k++) {
        batch.packets[i] = Math.floor(packets / parts) + (k < packets % parts ? 1 : 0)
        batch.bytes[i] = Math.floor(bytes / parts) + (k < bytes % parts ? 1 : 0)
        writeRecord(i)
      }
      batch.packets[i] = packets
      batch.bytes[i] = bytes
    }
    this.send(b.finish(), inMessage)
    this.advanceSequence(domain, seq - this.nextSequence(domain))
  }

  /**
   * Sends records given as values by element name (`flowctl ipfix send`): the generic path, for
   * any field of the template, where exportBatch is the fast one for flows.
   */
  exportRecords(templateId: number, records: RecordFields[], domain: number): void {
    const t = this.templates.find((x) => x.template.id === templateId)?.template
    if (!t) throw new Error(`collector ${this.config.name} has no template ${templateId}`)
    if (!this.socket || records.length === 0) return
    if (this.templatesDue(domain)) this.sendTemplates(domain)
    const b = this.builder
    let seq = this.nextSequence(domain)
    let inMessage = 0
    b.begin(this.exportTime(), seq, domain)
    b.openSet(t.id)
    for (const record of records) {
      if (b.free < recordSize(t, record)) {
        this.send(b.finish(), inMessage)
        b.begin(this.exportTime(), seq, domain)
        b.openSet(t.id)
        inMessage = 0
      }
      b.pos = encodeRecord(b.buf, b.pos, t, record)
      inMessage++
      seq++
    }
    this.send(b.finish(), inMessage)
    this.advanceSequence(domain, records.length)
  }

  /** Sends the statistics options record for `domain`. */
  sendStats(domain: number, ignored: {packets: number; bytes: number}): void {
    if (!this.socket) return
    if (this.templatesDue(domain)) this.sendTemplates(domain)
    const t = statsTemplate(this.options.statsTemplateId)
    const b = this.builder
    b.begin(this.exportTime(), this.nextSequence(domain), domain)
    b.openSet(t.id)
    // The counts include this message (its size is fixed: header, set header, one record).
    const size = MESSAGE_HEADER_LENGTH + SET_HEADER_LENGTH + t.fields.reduce((n, f) => n + f.length, 0)
    const values = [domain, this.stats.messages + 1, this.stats.records + 1, this.stats.octets + size, ignored.packets, ignored.bytes, this.now()]
    t.fields.forEach((f, k) => {
      putUint(b.buf, b.pos, f.length, values[k])
      b.pos += f.length
    })
    this.send(b.finish(), 1)
    this.advanceSequence(domain, 1)
  }

  close(): void {
    this.socket?.close()
    this.socket = undefined
  }
}
