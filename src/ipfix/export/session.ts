/**
 * One collector's export session, as the exporting process sees it (RFC 7011 §10.3, UDP): a
 * sequence number per observation domain counting the data records sent before (§3.1),
 * templates sent first, before any data set that needs them, and again on a timer (§8.4),
 * statistics in an options record, and in front of the data what collectors need to read it (its
 * sampling rate, the names of its interfaces: domain-advertisements.ts). Every message is built
 * by the one encode loop (encode.ts) and handed to the transport.
 */
import type {FlowBatch} from '../../flow/batch.js'
import type {RecordFields} from '../wire/field-values.js'
import {MESSAGE_HEADER_LENGTH, MessageBuilder, OPTIONS_TEMPLATE_SET_ID, SET_HEADER_LENGTH, TEMPLATE_SET_ID, templateFits} from '../wire/message.js'
import {packRecords, type RecordRun} from './encode.js'
import {DomainAdvertisements} from './domain-advertisements.js'
import {dropsTemplate, dropsTemplateIds, optionsTemplateIdList, splitByDrops} from './drops-templates.js'
import {chooseTemplate, statsTemplate, type ExportTemplate, type OptionsTemplateIds} from './flow-templates.js'
import type {InterfaceLabels} from './interface-options.js'
import type {MessageTransport, TransportDefaults} from './message-transport.js'
import {fieldsRun, flowRun, templateRun, valuesRun} from './record-runs.js'
import {sameEndpoints, type CollectorTarget} from './target.js'

export interface ExporterStats {
  messages: number
  records: number
  octets: number
  sendErrors: number
  templateSends: number
  /** Flows this collector has no template for (their family fits none of its templates). */
  unexportable: number
  /** Messages held for this collector while it is down, and their bytes. */
  spooledMessages: number
  spooledBytes: number
  /** What the spool dropped, oldest first, to stay within its size. */
  spoolDroppedMessages: number
  spoolDroppedRecords: number
  spoolDroppedPackets: number
  spoolDroppedOctets: number
}

export interface SequenceStore {
  get(session: string, domain: number): number | undefined
  set(session: string, domain: number, next: number): void
}

/** Messages that never reached a collector, and the data records, packets and octets in them. */
export interface LostMessages {
  messages: number
  bytes: number
  records: number
  packets: number
  octets: number
}

export interface SessionOptions {
  maxMessageSize: number
  templateRefreshMs: number
  statsTemplateId: number
  /**
   * What to tell the collector besides the flows (domain-advertisements.ts): the sampling rate of
   * each domain's data (with these options template ids), and the names of its interfaces (from
   * `interfaceLabels`, when given). Without it, the flows and statistics alone (a flow file).
   */
  advertise?: {templateIds: OptionsTemplateIds; interfaceLabels?: InterfaceLabels}
  sequences?: SequenceStore
  now?: () => number
}

const TWO_32 = 4_294_967_296

export class ExportSession {
  private target: CollectorTarget
  private readonly counts = {messages: 0, records: 0, octets: 0, templateSends: 0, unexportable: 0}
  private readonly dropped = {spoolDroppedMessages: 0, spoolDroppedRecords: 0, spoolDroppedPackets: 0, spoolDroppedOctets: 0}
  private templates: ExportTemplate[] = []
  private byFamily: {4?: ExportTemplate; 6?: ExportTemplate} = {}
  /** Each template's drops template (drops-templates.ts), by the template's id: for the flows with drops. */
  private dropsTemplates = new Map<number, ExportTemplate>()
  /** The drops templates a record has gone out under: announced with the others from then on. */
  private readonly announcedDrops = new Set<number>()
  /** The drops templates each domain was sent since its templates last went. */
  private readonly dropsSentTo = new Map<number, Set<number>>()
  private readonly options: SessionOptions
  private readonly builder: MessageBuilder
  private readonly preambleBuilder: MessageBuilder
  private readonly transport: MessageTransport
  private readonly sequence = new Map<number, number>()
  /** When a send last failed (ms): templates sent before then may not have arrived. */
  private lastErrorAt = -Infinity
  private readonly templatesSentAt = new Map<number, number>()
  private readonly advertisements?: DomainAdvertisements
  private readonly emit = (message: Buffer, dataRecords: number) => this.send(message, dataRecords)

  constructor(config: CollectorTarget, templates: ExportTemplate[], transport: MessageTransport, options: SessionOptions) {
    this.target = config
    this.options = options
    this.transport = transport
    if (options.advertise) this.advertisements = new DomainAdvertisements(options.advertise.templateIds, options.advertise.interfaceLabels)
    this.builder = new MessageBuilder(options.maxMessageSize)
    this.preambleBuilder = new MessageBuilder(options.maxMessageSize)
    this.setTemplates(templates)
  }

  /** The collector as the config gives it now (a reload may change all but its name). */
  get config(): CollectorTarget {
    return this.target
  }

  get stats(): ExporterStats {
    const spool = this.transport.spool
    return {...this.counts, sendErrors: this.transport.sendErrors, spooledMessages: spool?.length ?? 0, spooledBytes: spool?.bytes ?? 0, ...this.dropped}
  }

  /** Counts what the spool dropped: messages, data records, and the packets and octets of the flows in them. */
  countDropped(messages: {message: Buffer; dataRecords: number}[]): void {
    const d = this.dropped
    for (const {message, dataRecords} of messages) {
      d.spoolDroppedMessages++
      d.spoolDroppedRecords += dataRecords
      const {packets, octets} = this.flowTotals(message)
      d.spoolDroppedPackets += packets
      d.spoolDroppedOctets += octets
    }
  }

  /** What these messages (never sent) held: their data records, and the packets and octets of the flows in them. */
  lostIn(messages: {message: Buffer; dataRecords: number}[]): LostMessages {
    const lost = {messages: 0, bytes: 0, records: 0, packets: 0, octets: 0}
    for (const {message, dataRecords} of messages) {
      const {packets, octets} = this.flowTotals(message)
      lost.messages++
      lost.bytes += message.length
      lost.records += dataRecords
      lost.packets += packets
      lost.octets += octets
    }
    return lost
  }

  /**
   * Gives up on what the spool holds (the daemon stops, or the collector left the config): it
   * counts as dropped (spoolDropped*), and what it held is returned for the log.
   */
  discardSpool(): LostMessages {
    const items = this.transport.discard?.() ?? []
    this.countDropped(items)
    return this.lostIn(items)
  }

  /** The collector left the config: stop sending, give what was sent CONFIRM_MS to be refused, close; then discardSpool(). */
  async retire(): Promise<void> {
    if (this.transport.retire) await this.transport.retire()
    else {
      await this.transport.flushed()
      this.transport.close()
    }
  }

  /**
   * The same collector (its name) with new settings, from a config reload. Another address or
   * source: the transport moves, and what it holds (spool, the unconfirmed and the unsent) goes
   * to the new address with its own sequence numbers, which go on from there: the same
   * sequence domain. `defaults` are the daemon-wide settings, for a target without its own.
   * Throws if the new address cannot be opened (the spool waits for open()).
   */
  async reconfigure(target: CollectorTarget, defaults: TransportDefaults = {}): Promise<void> {
    const moved = !sameEndpoints(this.target, target)
    if (defaults.spoolBytes !== undefined) this.transport.setSpoolBytes?.(defaults.spoolBytes)
    this.transport.setDefaultRates?.(defaults)
    this.target = target
    if (!moved) return this.transport.retarget?.(target)
    if (!this.transport.moveTo) throw new Error(`collector ${target.name}: its transport cannot move`)
    // The numbering in memory goes on (and is stored under the new session's key from now).
    await this.transport.moveTo(target)
    // Templates before any data at the new address.
    this.templatesSentAt.clear()
  }

  /** The packetDeltaCount and octetDeltaCount sums of the data records of a message this session built. */
  private flowTotals(message: Buffer): {packets: number; octets: number} {
    let packets = 0
    let octets = 0
    const length = Math.min(message.length, message.readUInt16BE(2))
    for (let off = MESSAGE_HEADER_LENGTH; off + SET_HEADER_LENGTH <= length;) {
      const setId = message.readUInt16BE(off)
      const setLength = message.readUInt16BE(off + 2)
      if (setLength < SET_HEADER_LENGTH) break
      const t = setId >= 256 ? this.dataTemplate(setId) : undefined
      if (t) {
        let at = 0
        const offsets: {at: number; length: number; packets: boolean}[] = []
        for (const f of t.fields) {
          if (f.element.name === 'packetDeltaCount' || f.element.name === 'octetDeltaCount')
            offsets.push({at, length: f.length, packets: f.element.name === 'packetDeltaCount'})
          at += f.length
        }
        for (let r = off + SET_HEADER_LENGTH; r + t.recordLength <= off + setLength; r += t.recordLength) {
          for (const o of offsets) {
            const v = o.length === 8 ? Number(message.readBigUInt64BE(r + o.at)) : message.readUIntBE(r + o.at, o.length)
            if (o.packets) packets += v
            else octets += v
          }
        }
      }
      off += setLength
    }
    return {packets, octets}
  }

  /** Called at every drain: lets the transport probe a collector that is down and replay its spool. */
  service(): void {
    this.transport.service?.()
  }

  /** Template messages for `domain` headed with `sequence` (before a probe or a replay); counts nothing. */
  templateMessages(domain: number, sequence: number): Buffer[] {
    const out: Buffer[] = []
    packRecords(this.preambleBuilder, this.templatesRun(), {exportTimeSeconds: Math.floor(this.now() / 1000), sequence, domain}, (m) => out.push(m))
    return out
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
    // Drops template ids are chosen among every template of the config (not only this
    // collector's) and the options templates, so `config check` can say them.
    const advertised = this.options.advertise?.templateIds
    const reserved = [this.options.statsTemplateId, ...(advertised ? optionsTemplateIdList(advertised) : [])]
    const dropsIds = dropsTemplateIds(
      templates.map((t) => ({id: t.template.id, fields: t.fields.map((f) => ({name: f.enterpriseNumber === undefined ? f.element.name : ''}))})),
      reserved,
    )
    this.dropsTemplates = new Map()
    for (const t of this.templates) {
      const id = dropsIds.get(t.template.id)
      const d = id === undefined ? undefined : dropsTemplate(t, id)
      if (d && templateFits(d.template.fields, this.options.maxMessageSize).fits) this.dropsTemplates.set(t.template.id, d)
    }
    this.announcedDrops.clear()
    this.dropsSentTo.clear()
    this.templatesSentAt.clear()
  }

  /** The drops template the flows with drops of template `t` go out under (undefined: under `t`). */
  dropsTemplateFor(t: ExportTemplate): ExportTemplate | undefined {
    return this.dropsTemplates.get(t.template.id)
  }

  /** A data template this session sends, a drops template included. */
  private dataTemplate(id: number): ExportTemplate | undefined {
    return this.templates.find((x) => x.template.id === id) ?? [...this.dropsTemplates.values()].find((x) => x.template.id === id)
  }

  templateFor(family: 4 | 6): ExportTemplate | undefined {
    return this.byFamily[family]
  }

  /** "local>remote" when the source port is fixed: the transport session whose numbering survives restarts. */
  get session(): string | undefined {
    const s = this.config.source
    return s?.port ? `${s.host}:${s.port}>${this.config.remote.host}:${this.config.remote.port}` : undefined
  }

  open(): Promise<void> {
    return this.transport.open()
  }

  get isOpen(): boolean {
    return this.transport.isOpen
  }

  /** Whether the collector refused, and what is sent to it is spooled. */
  get isDown(): boolean {
    return !!this.transport.isDown
  }

  /** Whether the collector answers and its spool is being replayed (or paced messages wait their turn). */
  get isReplaying(): boolean {
    return !!this.transport.isBacklogged && !this.transport.isDown
  }

  get localPort(): number | undefined {
    return this.transport.localPort
  }

  /** The socket's cookie, once open (the meter skips our own datagrams). */
  cookie(): bigint | undefined {
    return this.transport.cookie?.()
  }

  /** Resolves when every message handed to the transport has left. */
  flushed(): Promise<void> {
    return this.transport.flushed()
  }

  close(): void {
    this.transport.close()
  }

  /** A send failed: templates sent before may not have arrived, so they go again. */
  noteError(): void {
    this.lastErrorAt = this.now()
  }

  private nextSequence(domain: number): number {
    let seq = this.sequence.get(domain)
    if (seq === undefined) {
      const session = this.session
      seq = (session ? this.options.sequences?.get(session, domain) : undefined) ?? 0
      this.sequence.set(domain, seq)
    }
    return seq
  }

  private advanceSequence(domain: number, records: number): void {
    if (records === 0) return
    const next = (this.nextSequence(domain) + records) % TWO_32
    this.sequence.set(domain, next)
    const session = this.session
    if (session) this.options.sequences?.set(session, domain, next)
  }

  private now(): number {
    return this.options.now?.() ?? Date.now()
  }

  private send(message: Buffer, dataRecords: number): void {
    this.counts.messages++
    this.counts.records += dataRecords
    this.counts.octets += message.length
    this.transport.send(message, dataRecords)
  }

  /** Packs runs for `domain`, in messages of their own, at its next sequence number, and advances it. */
  private pack(run: RecordRun | RecordRun[], domain: number): void {
    const written = packRecords(this.builder, run, {exportTimeSeconds: Math.floor(this.now() / 1000), sequence: this.nextSequence(domain), domain}, this.emit)
    this.advanceSequence(domain, written)
    this.transport.flush()
  }

  /**
   * Sends this collector's templates and the options templates (statistics, sampling rate,
   * interface names), in as many messages as they need; the rate and the names go again before
   * the domain's next data.
   */
  sendTemplates(domain: number): void {
    if (!this.transport.isOpen) return
    this.pack(this.templatesRun(), domain)
    this.counts.templateSends++
    this.templatesSentAt.set(domain, this.now())
    this.dropsSentTo.set(domain, new Set(this.announcedDrops))
    this.advertisements?.forget(domain)
  }

  /**
   * A drops template goes to `domain` before the first record under it (and with the others
   * from then on, at every refresh).
   */
  private announceDrops(d: ExportTemplate, domain: number): void {
    const id = d.template.id
    this.announcedDrops.add(id)
    let sent = this.dropsSentTo.get(domain)
    if (!sent) this.dropsSentTo.set(domain, (sent = new Set()))
    if (sent.has(id)) return
    this.pack(templateRun([d.template], TEMPLATE_SET_ID), domain)
    sent.add(id)
  }

  /** This collector's templates (and the drops templates announced), then the options templates, each of those in a set of its own. */
  private templatesRun(): RecordRun[] {
    const drops = [...this.dropsTemplates.values()].filter((d) => this.announcedDrops.has(d.template.id))
    return [
      templateRun(
        [...this.templates, ...drops].map((t) => t.template),
        TEMPLATE_SET_ID,
      ),
      templateRun([statsTemplate(this.options.statsTemplateId), ...(this.advertisements?.templates ?? [])], OPTIONS_TEMPLATE_SET_ID),
    ]
  }

  private templatesDue(domain: number): boolean {
    const at = this.templatesSentAt.get(domain)
    return at === undefined || this.now() - at >= this.options.templateRefreshMs || this.lastErrorAt >= at
  }

  /** Sends templates to every domain already in use whose refresh interval has passed. */
  refreshTemplates(): void {
    for (const domain of this.templatesSentAt.keys()) if (this.templatesDue(domain)) this.sendTemplates(domain)
  }

  /** Encodes every flow of the batch as data records and sends them. */
  exportBatch(batch: FlowBatch): void {
    if (batch.length === 0) return
    const t = this.byFamily[batch.family]
    if (!t) {
      this.counts.unexportable += batch.length
      return
    }
    if (!this.transport.isOpen) return
    const domain = batch.observationDomainId
    if (this.templatesDue(domain)) this.sendTemplates(domain)
    // The flows with drops go under the drops template, those without under `t` as ever.
    const split = splitByDrops(batch)
    const d = split && this.dropsTemplateFor(t)
    if (d) this.announceDrops(d, domain)
    if (!this.advertisements) {
      if (!split || !d) return this.pack(flowRun(t, batch), domain)
      return this.pack([...(split.without.length > 0 ? [flowRun(t, batch, split.without)] : []), flowRun(d, batch, split.withDrops)], domain)
    }
    // Each rate's flows in messages of their own, headed by what the domain was not told yet.
    for (const runs of this.advertisements.batchRuns(t, batch, d)) this.pack(runs, domain)
  }

  /**
   * Sends records given as values by element name (`flowctl ipfix send`): the generic path, for
   * any field of the template, where exportBatch is the fast one for flows.
   */
  exportRecords(templateId: number, records: RecordFields[], domain: number): void {
    const t = this.templates.find((x) => x.template.id === templateId)?.template
    if (!t) throw new Error(`collector ${this.config.name} has no template ${templateId}`)
    if (!this.transport.isOpen || records.length === 0) return
    if (this.templatesDue(domain)) this.sendTemplates(domain)
    this.pack(fieldsRun(t, records), domain)
  }

  /** Sends the statistics options record for `domain`. */
  sendStats(domain: number, ignored: {packets: number; bytes: number}): void {
    if (!this.transport.isOpen) return
    if (this.templatesDue(domain)) this.sendTemplates(domain)
    const t = statsTemplate(this.options.statsTemplateId)
    // The counts include this message (its size is fixed: header, set header, one record).
    const size = MESSAGE_HEADER_LENGTH + SET_HEADER_LENGTH + t.fields.reduce((n, f) => n + f.length, 0)
    const c = this.counts
    this.pack(
      valuesRun(t, [domain, c.messages + 1, c.records + 1, c.octets + size, ignored.packets, ignored.bytes, this.dropped.spoolDroppedRecords, this.now()]),
      domain,
    )
  }
}
