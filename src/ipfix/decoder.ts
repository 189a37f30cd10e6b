/**
 * Decodes whole IPFIX Messages (RFC 7011 §3), keeping the templates of each exporter and
 * Observation Domain, and renders decoded records for printing.
 *
 * A message is decoded all or nothing (§9.1: a malformed message is discarded): the templates it
 * defines take effect, in the order its sets appear (§8.1), only if the whole message decodes.
 * Data sets whose template is unknown are listed in `unknownSets`, not an error (over UDP a
 * template may be lost or the collector may start after the exporter).
 */
import {decodeRecord, keyElementName, semanticName, type FieldValue, type RecordFields} from './codec.js'
import {DecodeError} from './errors.js'
import {elementByName, type AbstractType} from './elements.js'
import {IPFIX_VERSION, MESSAGE_HEADER_LENGTH, OPTIONS_TEMPLATE_SET_ID, SET_HEADER_LENGTH, TEMPLATE_SET_ID} from './message.js'
import {decodeOptionsTemplateSet, decodeTemplateSet, minDataRecordLength, type Template, type TemplateWithdrawal} from './template.js'

export interface MessageHeader {
  version: number
  length: number
  /** Seconds since 1970. */
  exportTime: number
  sequenceNumber: number
  observationDomainId: number
}

export interface SetSummary {
  id: number
  kind: 'template' | 'optionsTemplate' | 'data'
  /** Byte offset of the set header in the message. */
  offset: number
  /** The set length from its header. */
  length: number
  /** Records decoded from the set (templates and withdrawals for template sets); 0 for a data set of unknown template. */
  records: number
  /** Trailing padding bytes (RFC 7011 §3.3.1); unknown (0) for a data set of unknown template. */
  padding: number
  /** Whether the padding bytes are all zero, as they must be. */
  paddingZero: boolean
}

export interface DecodedRecord {
  exporter: string
  observationDomainId: number
  templateId: number
  exportTime: number
  sequenceNumber: number
  /** Whether the record is an Options Data Record (its template has scope fields). */
  options: boolean
  fields: RecordFields
}

export interface UnknownSet {
  templateId: number
  offset: number
  length: number
}

export interface DecodedMessage {
  exporter: string
  header: MessageHeader
  sets: SetSummary[]
  /** Templates and options templates defined in this message, in order. */
  templates: Template[]
  /** Template withdrawals in this message (applied unless the decoder ignores them, as over UDP). */
  withdrawals: TemplateWithdrawal[]
  records: DecodedRecord[]
  unknownSets: UnknownSet[]
}

export interface DecoderOptions {
  /**
   * Apply Template Withdrawals (default true). A UDP collector passes false: RFC 7011 §8.4 says
   * withdrawals MUST be ignored over UDP.
   */
  applyWithdrawals?: boolean
  /** How much the decoder remembers; see DEFAULT_DECODER_LIMITS. */
  limits?: Partial<DecoderLimits>
}

/**
 * What a decoder keeps, so that no sender (a spoofed source address costs nothing over UDP) can
 * make it grow without bound. What goes first is what was used least recently: the template
 * defined longest ago in a domain, the domain or exporter heard from longest ago. A forgotten
 * template is sent again by its exporter at its next refresh (RFC 7011 §8.4); meanwhile its data
 * sets are listed as of unknown template, as at a collector's start.
 */
export interface DecoderLimits {
  /** Templates per exporter and Observation Domain (an exporter has a handful; the ID space holds 65280). */
  templatesPerDomain: number
  /** Templates in all: the memory bound (a 60-field template takes a few kB). */
  templates: number
  /** (exporter, Observation Domain) pairs. */
  domains: number
  /** Exporters (source address and port). */
  exporters: number
}

export const DEFAULT_DECODER_LIMITS: Readonly<DecoderLimits> = Object.freeze({templatesPerDomain: 1024, templates: 16_384, domains: 4096, exporters: 1024})

/** What the decoder holds now and what it had to forget to stay within its limits. */
export interface DecoderStats {
  exporters: number
  domains: number
  templates: number
  evicted: {templates: number; domains: number; exporters: number}
}

interface DomainTemplates {
  exporter: string
  templates: Map<number, Template>
}

/** A hint for a wrong version number: what is likely being sent instead. */
function versionHint(version: number): string {
  if (version === 9) return ' (NetFlow v9, not IPFIX)'
  if (version === 5 || version === 1 || version === 7) return ` (NetFlow v${version}, not IPFIX)`
  return ''
}

export class IpfixDecoder {
  /** By `exporter|domain`, least recently used first. */
  private readonly domains = new Map<string, DomainTemplates>()
  /** The domain keys of each exporter, least recently heard from first. */
  private readonly exporters = new Map<string, Set<string>>()
  private templateCount = 0
  private readonly evicted = {templates: 0, domains: 0, exporters: 0}
  private readonly applyWithdrawals: boolean
  readonly limits: Readonly<DecoderLimits>

  constructor(options: DecoderOptions = {}) {
    this.applyWithdrawals = options.applyWithdrawals ?? true
    this.limits = {...DEFAULT_DECODER_LIMITS, ...options.limits}
  }

  private static key(exporter: string, observationDomainId: number): string {
    return `${exporter}|${observationDomainId}`
  }

  /** The templates now known for an exporter and Observation Domain. */
  templates(exporter: string, observationDomainId: number): Template[] {
    return [...(this.domains.get(IpfixDecoder.key(exporter, observationDomainId))?.templates.values() ?? [])]
  }

  template(exporter: string, observationDomainId: number, templateId: number): Template | undefined {
    return this.domains.get(IpfixDecoder.key(exporter, observationDomainId))?.templates.get(templateId)
  }

  stats(): DecoderStats {
    return {exporters: this.exporters.size, domains: this.domains.size, templates: this.templateCount, evicted: {...this.evicted}}
  }

  /** Forgets the templates of one exporter (all its domains), or of every exporter. */
  reset(exporter?: string): void {
    if (exporter === undefined) {
      this.domains.clear()
      this.exporters.clear()
      this.templateCount = 0
      return
    }
    for (const key of this.exporters.get(exporter) ?? []) this.dropDomain(key)
    this.exporters.delete(exporter)
  }

  private dropDomain(key: string): void {
    const d = this.domains.get(key)
    if (!d) return
    this.templateCount -= d.templates.size
    this.domains.delete(key)
    const keys = this.exporters.get(d.exporter)
    keys?.delete(key)
    if (keys && !keys.size) this.exporters.delete(d.exporter)
  }

  /** Keeps a decoded message's templates (most recently used now), then forgets what is over a limit. */
  private commit(key: string, exporter: string, working: Map<number, Template>): void {
    while (working.size > this.limits.templatesPerDomain) {
      working.delete(working.keys().next().value!)
      this.evicted.templates++
    }
    const known = this.domains.get(key)
    if (known) {
      this.templateCount -= known.templates.size
      this.domains.delete(key)
    } else if (!working.size) {
      return // nothing to remember: no entry for a domain that defined no template
    }
    this.domains.set(key, {exporter, templates: working})
    this.templateCount += working.size
    const keys = this.exporters.get(exporter) ?? new Set<string>()
    this.exporters.delete(exporter)
    this.exporters.set(exporter, keys.add(key))
    while (this.exporters.size > this.limits.exporters) {
      const [oldest, oldestKeys] = this.exporters.entries().next().value!
      for (const k of oldestKeys) this.dropDomain(k)
      this.exporters.delete(oldest)
      this.evicted.exporters++
    }
    while (this.domains.size > this.limits.domains || this.templateCount > this.limits.templates) {
      const oldest = this.domains.keys().next().value!
      if (oldest === key) break // the domain just used stays (its own size is bounded above)
      this.dropDomain(oldest)
      this.evicted.domains++
    }
  }

  /** Decodes one message from `exporter` (e.g. '198.18.0.1:50101'); throws DecodeError if it is malformed. */
  decode(message: Buffer, exporter: string): DecodedMessage {
    const header = readHeader(message)
    const key = IpfixDecoder.key(exporter, header.observationDomainId)
    const working = new Map(this.domains.get(key)?.templates ?? [])
    const lookup = (id: number): Template | undefined => working.get(id)
    const result: DecodedMessage = {exporter, header, sets: [], templates: [], withdrawals: [], records: [], unknownSets: []}

    let p = MESSAGE_HEADER_LENGTH
    while (p < message.length) {
      if (message.length - p < SET_HEADER_LENGTH) throw new DecodeError(`${message.length - p} bytes after the last set are too short for a set header`, p)
      const id = message.readUInt16BE(p)
      const length = message.readUInt16BE(p + 2)
      if (length < SET_HEADER_LENGTH) throw new DecodeError(`set ${id} has length ${length}, shorter than its ${SET_HEADER_LENGTH}-byte header`, p + 2)
      if (p + length > message.length) throw new DecodeError(`set ${id} of ${length} bytes runs past the end of the message (${message.length - p} bytes left)`, p + 2)
      const start = p + SET_HEADER_LENGTH
      const end = p + length
      if (id === 0 || id === 1) throw new DecodeError(`set ID ${id} is not used in IPFIX (RFC 7011 §3.3.2)`, p)
      if (id > OPTIONS_TEMPLATE_SET_ID && id <= 255) throw new DecodeError(`set ID ${id} is reserved (RFC 7011 §3.3.2)`, p)

      if (id === TEMPLATE_SET_ID || id === OPTIONS_TEMPLATE_SET_ID) {
        const decoded = id === TEMPLATE_SET_ID ? decodeTemplateSet(message, start, end) : decodeOptionsTemplateSet(message, start, end)
        // Templates and withdrawals take effect in the order they appear (RFC 7011 §8.1).
        for (const item of decoded.inOrder) {
          if ('fields' in item) {
            working.delete(item.id) // a redefined template is the most recent one
            working.set(item.id, item)
          } else if (!this.applyWithdrawals) {
            continue
          } else if (item.all) {
            for (const [tid, t] of working) if (t.scopeFieldCount > 0 === item.options) working.delete(tid)
          } else {
            working.delete(item.templateId)
          }
        }
        result.templates.push(...decoded.templates)
        result.withdrawals.push(...decoded.withdrawals)
        result.sets.push({
          id,
          kind: id === TEMPLATE_SET_ID ? 'template' : 'optionsTemplate',
          offset: p,
          length,
          records: decoded.templates.length + decoded.withdrawals.length,
          padding: decoded.padding.length,
          paddingZero: decoded.padding.zero,
        })
      } else {
        const t = working.get(id)
        if (!t) {
          result.unknownSets.push({templateId: id, offset: p, length})
          result.sets.push({id, kind: 'data', offset: p, length, records: 0, padding: 0, paddingZero: true})
        } else {
          const min = Math.max(1, minDataRecordLength(t))
          let q = start
          let count = 0
          while (end - q >= min) {
            const r = decodeRecord(message, q, end, t, lookup)
            if (r.next === q) throw new DecodeError(`data record of template ${id} is 0 bytes long`, q)
            result.records.push({
              exporter,
              observationDomainId: header.observationDomainId,
              templateId: id,
              exportTime: header.exportTime,
              sequenceNumber: header.sequenceNumber,
              options: t.scopeFieldCount > 0,
              fields: r.fields,
            })
            count++
            q = r.next
          }
          let zero = true
          for (let i = q; i < end; i++) if (message[i] !== 0) zero = false
          result.sets.push({id, kind: 'data', offset: p, length, records: count, padding: end - q, paddingZero: zero})
        }
      }
      p = end
    }

    this.commit(key, exporter, working)
    return result
  }
}

/** Reads and checks a message header (version 10, length equal to the buffer's). */
export function readHeader(message: Buffer): MessageHeader {
  if (message.length < MESSAGE_HEADER_LENGTH) throw new DecodeError(`message of ${message.length} bytes is shorter than the ${MESSAGE_HEADER_LENGTH}-byte IPFIX message header`, 0)
  const version = message.readUInt16BE(0)
  if (version !== IPFIX_VERSION) throw new DecodeError(`version ${version} is not IPFIX (${IPFIX_VERSION})${versionHint(version)}`, 0)
  const length = message.readUInt16BE(2)
  if (length !== message.length) throw new DecodeError(`message length field says ${length} bytes but the datagram has ${message.length}`, 2)
  return {
    version,
    length,
    exportTime: message.readUInt32BE(4),
    sequenceNumber: message.readUInt32BE(8),
    observationDomainId: message.readUInt32BE(12),
  }
}

/** The number of data records (options data records included) a decoded message carries. */
export function dataRecordCount(message: DecodedMessage): number {
  return message.records.length
}

// -------------------------------------------------------------------------------------------------
// Rendering

/** The abstract type of the element a record key names, if it is a registry element. */
export function keyType(key: string): AbstractType | undefined {
  return elementByName(keyElementName(key))?.type
}

function renderBigint(v: bigint): number | string {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v.toString()
}

/** Epoch nanoseconds as epoch milliseconds with a fraction (exact to about a microsecond for today's dates). */
function nsToMs(ns: bigint): number {
  const whole = ns / 1_000_000n
  return Number(whole) + Number(ns - whole * 1_000_000n) / 1e6
}

/** A field value as JSON can carry it (see renderRecordJson). */
export function renderValue(value: FieldValue, type?: AbstractType): unknown {
  if (typeof value === 'bigint') {
    if (type === 'dateTimeMicroseconds' || type === 'dateTimeNanoseconds') return nsToMs(value)
    return renderBigint(value)
  }
  if (Buffer.isBuffer(value)) return value.toString('hex')
  if (typeof value !== 'object' || value === null) return value
  switch (value.kind) {
    case 'basicList':
      return {
        semantic: semanticName(value.semantic),
        element: value.field.element.name,
        values: value.values.map((v) => renderValue(v, value.field.element.type)),
      }
    case 'subTemplateList':
      return value.raw
        ? {semantic: semanticName(value.semantic), templateId: value.templateId, raw: value.raw.toString('hex')}
        : {semantic: semanticName(value.semantic), templateId: value.templateId, records: value.records.map(renderFields)}
    case 'subTemplateMultiList':
      return {
        semantic: semanticName(value.semantic),
        entries: value.entries.map((e) => (e.raw ? {templateId: e.templateId, raw: e.raw.toString('hex')} : {templateId: e.templateId, records: e.records.map(renderFields)})),
      }
  }
}

export function renderFields(fields: RecordFields): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(fields)) out[key] = renderValue(value, keyType(key))
  return out
}

/**
 * A decoded record as a JSON-ready object: `exporter`, `observationDomainId`, `templateId`,
 * `sequenceNumber`, `exportTime` (seconds since 1970), then the fields in template order.
 * A bigint becomes a number when it is a safe integer, else a decimal string; a Buffer becomes a
 * hex string; a dateTimeMicroseconds/Nanoseconds value (bigint epoch ns) becomes epoch
 * milliseconds with a fraction (e.g. 1700000000123.457), like the millisecond times; lists become
 * objects with their semantic by name and their values or records rendered the same way.
 * Records of options templates also carry `options: true`.
 */
export function renderRecordJson(record: DecodedRecord): Record<string, unknown> {
  const out: Record<string, unknown> = {
    exporter: record.exporter,
    observationDomainId: record.observationDomainId,
    templateId: record.templateId,
    sequenceNumber: record.sequenceNumber,
    exportTime: record.exportTime,
  }
  if (record.options) out.options = true
  Object.assign(out, renderFields(record.fields))
  return out
}

/** One compact human line: `exporter od=N tpl=N seq=N [options] name=value ...`. */
export function formatRecordLine(record: DecodedRecord): string {
  const parts = [`${record.exporter} od=${record.observationDomainId} tpl=${record.templateId} seq=${record.sequenceNumber}`]
  if (record.options) parts.push('options')
  for (const [key, value] of Object.entries(renderFields(record.fields))) {
    parts.push(`${key}=${typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value)}`)
  }
  return parts.join(' ')
}
