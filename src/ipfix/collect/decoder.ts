/**
 * Decodes whole IPFIX Messages (RFC 7011 §3), keeping the templates of each exporter and
 * Observation Domain (render.ts renders the decoded records for printing).
 *
 * A message is decoded all or nothing (§9.1: a malformed message is discarded): the templates it
 * defines take effect, in the order its sets appear (§8.1), only if the whole message decodes.
 * Data sets whose template is unknown are listed in `unknownSets`, not an error (over UDP a
 * template may be lost or the collector may start after the exporter).
 */
import {decodeRecord} from '../wire/codec.js'
import type {RecordFields} from '../wire/field-values.js'
import {DecodeError} from '../wire/errors.js'
import {isSharedElement} from '../wire/elements.js'
import {IPFIX_VERSION, MESSAGE_HEADER_LENGTH, OPTIONS_TEMPLATE_SET_ID, SET_HEADER_LENGTH, TEMPLATE_SET_ID} from '../wire/message.js'
import {decodeOptionsTemplateSet, decodeTemplateSet, minDataRecordLength, type Template, type TemplateWithdrawal} from '../wire/template.js'

export interface MessageHeader {
  version: number
  length: number
  /** Seconds since 1970. */
  exportTime: number
  sequenceNumber: number
  observationDomainId: number
}

interface SetSummary {
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

interface UnknownSet {
  templateId: number
  offset: number
  length: number
}

/** A template the decoder would not keep (see DecoderLimits): its data sets stay of unknown template. */
export interface RefusedTemplate {
  templateId: number
  fields: number
  /** Why, for people: 'has 2000 fields, more than the 1024 ...'. */
  reason: string
}

export interface DecodedMessage {
  exporter: string
  header: MessageHeader
  sets: SetSummary[]
  /** Templates and options templates defined in this message and kept, in order. */
  templates: Template[]
  /** Templates defined in this message that the decoder refused to keep (a previous definition of the ID is forgotten). */
  refused: RefusedTemplate[]
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
 *
 * The templates are bounded by the memory they take (templateMemory()), not by their number: a
 * template's cost grows with its fields, from a few hundred bytes to about 4 MB for the 16,000
 * fields a 64 KiB message can define, so a bound in templates alone let a flood of large ones
 * take gigabytes.
 */
export interface DecoderLimits {
  /** Templates per exporter and Observation Domain (an exporter has a handful; the ID space holds 65280). */
  templatesPerDomain: number
  /** Memory all the templates kept may take, in bytes, as templateMemory() counts it. */
  templateBytes: number
  /** Fields a template may have: a template with more is refused (exporters' templates have tens). */
  templateFields: number
  /** (exporter, Observation Domain) pairs. */
  domains: number
  /** Exporters (source address and port). */
  exporters: number
}

export const DEFAULT_DECODER_LIMITS: Readonly<DecoderLimits> = Object.freeze({
  templatesPerDomain: 1024,
  templateBytes: 32 * 1024 * 1024,
  templateFields: 1024,
  domains: 4096,
  exporters: 1024,
})

/*
 * What a kept template takes on the V8 heap, measured with Node 20 (test/ipfix/collect/limits.test.ts
 * measures it again against templateMemory()), rounded up: the Template object, its fields array
 * and Map entry, about 500 bytes; per field its TemplateField object, array slot and, once a data
 * record was decoded, the slot of its record key (codec's fieldKeys()), 59-69 bytes; 12 more with
 * an enterprise number, 16 more again when that number is above 2^31 (not a small integer); an
 * element made for the field alone (synthetic, once the shared cache is full: resolveElement())
 * 40-80 more, as its name is short or long; the key string of a repeated element ('e32473.ie1#2')
 * 20-47 more.
 */
const TEMPLATE_BYTES = 512
const FIELD_BYTES = 72
const ENTERPRISE_FIELD_BYTES = 16
const LARGE_ENTERPRISE_NUMBER_BYTES = 16
const OWN_ELEMENT_BYTES = 96
const REPEATED_KEY_BYTES = 56

/** The memory a decoded template takes while a decoder keeps it, in bytes (an upper bound). */
export function templateMemory(t: Template): number {
  let bytes = TEMPLATE_BYTES + FIELD_BYTES * t.fields.length
  const names = new Set<string>()
  for (const f of t.fields) {
    if (f.enterpriseNumber !== undefined) bytes += ENTERPRISE_FIELD_BYTES + (f.enterpriseNumber > 0x7fffffff ? LARGE_ENTERPRISE_NUMBER_BYTES : 0)
    if (!isSharedElement(f.element)) bytes += OWN_ELEMENT_BYTES
    if (names.has(f.element.name)) bytes += REPEATED_KEY_BYTES
    else names.add(f.element.name)
  }
  return bytes
}

/** What the decoder holds now and what it had to forget or refuse to stay within its limits. */
export interface DecoderStats {
  exporters: number
  domains: number
  templates: number
  /** Memory the templates kept take (templateMemory()). */
  templateBytes: number
  evicted: {templates: number; domains: number; exporters: number}
  /** Templates refused (too many fields, a field of length 0, or larger than all templates may be). */
  refused: number
}

interface DomainTemplates {
  exporter: string
  templates: Map<number, Template>
  /** templateMemory() of its templates, summed. */
  bytes: number
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
  private templateBytes = 0
  private refusedCount = 0
  private readonly evicted = {templates: 0, domains: 0, exporters: 0}
  /** templateMemory() of each template kept, computed once when it arrives. */
  private readonly cost = new WeakMap<Template, number>()
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
    return {
      exporters: this.exporters.size,
      domains: this.domains.size,
      templates: this.templateCount,
      templateBytes: this.templateBytes,
      evicted: {...this.evicted},
      refused: this.refusedCount,
    }
  }

  /** Forgets the templates of one exporter (all its domains), or of every exporter. */
  reset(exporter?: string): void {
    if (exporter === undefined) {
      this.domains.clear()
      this.exporters.clear()
      this.templateCount = 0
      this.templateBytes = 0
      return
    }
    for (const key of this.exporters.get(exporter) ?? []) this.dropDomain(key)
    this.exporters.delete(exporter)
  }

  private dropDomain(key: string): void {
    const d = this.domains.get(key)
    if (!d) return
    this.templateCount -= d.templates.size
    this.templateBytes -= d.bytes
    this.domains.delete(key)
    const keys = this.exporters.get(d.exporter)
    keys?.delete(key)
    if (keys && !keys.size) this.exporters.delete(d.exporter)
  }

  /** Why a template will not be kept, or undefined if it may be. */
  private refusal(t: Template): string | undefined {
    const {templateFields, templateBytes} = this.limits
    if (t.fields.length > templateFields) return `has ${t.fields.length} fields, more than the ${templateFields} a template may have here`
    // Each field of a data record takes at least one byte, except a fixed-length field of length
    // 0: with those, one 64 KiB data set decodes to billions of values.
    const empty = t.fields.findIndex((f) => f.length === 0)
    if (empty >= 0) return `field ${empty + 1} (${t.fields[empty].element.name}) has length 0: its records could decode to more values than they have bytes`
    const bytes = this.costOf(t)
    if (bytes > templateBytes) return `would take ${bytes} bytes of memory, more than all templates may take (${templateBytes})`
    return undefined
  }

  private costOf(t: Template): number {
    let bytes = this.cost.get(t)
    if (bytes === undefined) {
      bytes = templateMemory(t)
      this.cost.set(t, bytes)
    }
    return bytes
  }

  /** Marks a domain (and its exporter) as used now. */
  private touch(key: string, d: DomainTemplates): void {
    this.domains.delete(key)
    this.domains.set(key, d)
    const keys = this.exporters.get(d.exporter)
    if (keys) {
      this.exporters.delete(d.exporter)
      this.exporters.set(d.exporter, keys)
    }
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
      this.templateBytes -= known.bytes
      this.domains.delete(key)
    } else if (!working.size) {
      return // nothing to remember: no entry for a domain that defined no template
    }
    let bytes = 0
    for (const t of working.values()) bytes += this.costOf(t)
    const domain: DomainTemplates = {exporter, templates: working, bytes}
    this.domains.set(key, domain)
    this.templateCount += working.size
    this.templateBytes += bytes
    const keys = this.exporters.get(exporter) ?? new Set<string>()
    this.exporters.delete(exporter)
    this.exporters.set(exporter, keys.add(key))
    while (this.exporters.size > this.limits.exporters) {
      const [oldest, oldestKeys] = this.exporters.entries().next().value!
      for (const k of oldestKeys) this.dropDomain(k)
      this.exporters.delete(oldest)
      this.evicted.exporters++
    }
    while (this.domains.size > this.limits.domains || this.templateBytes > this.limits.templateBytes) {
      const oldest = this.domains.keys().next().value!
      if (oldest !== key) {
        this.dropDomain(oldest)
        this.evicted.domains++
        continue
      }
      // Only the domain just used is left: it loses its own oldest templates.
      if (this.templateBytes <= this.limits.templateBytes || !working.size) break
      const [id, t] = working.entries().next().value!
      working.delete(id)
      const cost = this.costOf(t)
      domain.bytes -= cost
      this.templateBytes -= cost
      this.templateCount--
      this.evicted.templates++
    }
  }

  /** Decodes one message from `exporter` (e.g. '198.18.0.1:50101'); throws DecodeError if it is malformed. */
  decode(message: Buffer, exporter: string): DecodedMessage {
    const header = readHeader(message)
    const key = IpfixDecoder.key(exporter, header.observationDomainId)
    const known = this.domains.get(key)
    // The domain's templates as this message leaves them: copied only when it defines or withdraws one.
    let working: Map<number, Template> = known?.templates ?? new Map<number, Template>()
    let changed = false
    const lookup = (id: number): Template | undefined => working.get(id)
    const result: DecodedMessage = {exporter, header, sets: [], templates: [], refused: [], withdrawals: [], records: [], unknownSets: []}

    let p = MESSAGE_HEADER_LENGTH
    while (p < message.length) {
      if (message.length - p < SET_HEADER_LENGTH) throw new DecodeError(`${message.length - p} bytes after the last set are too short for a set header`, p)
      const id = message.readUInt16BE(p)
      const length = message.readUInt16BE(p + 2)
      if (length < SET_HEADER_LENGTH) throw new DecodeError(`set ${id} has length ${length}, shorter than its ${SET_HEADER_LENGTH}-byte header`, p + 2)
      if (p + length > message.length)
        throw new DecodeError(`set ${id} of ${length} bytes runs past the end of the message (${message.length - p} bytes left)`, p + 2)
      const start = p + SET_HEADER_LENGTH
      const end = p + length
      if (id === 0 || id === 1) throw new DecodeError(`set ID ${id} is not used in IPFIX (RFC 7011 §3.3.2)`, p)
      if (id > OPTIONS_TEMPLATE_SET_ID && id <= 255) throw new DecodeError(`set ID ${id} is reserved (RFC 7011 §3.3.2)`, p)

      if (id === TEMPLATE_SET_ID || id === OPTIONS_TEMPLATE_SET_ID) {
        const decoded = id === TEMPLATE_SET_ID ? decodeTemplateSet(message, start, end) : decodeOptionsTemplateSet(message, start, end)
        if (!changed) {
          working = new Map(working)
          changed = true
        }
        // Templates and withdrawals take effect in the order they appear (RFC 7011 §8.1).
        for (const item of decoded.inOrder) {
          if ('fields' in item) {
            working.delete(item.id) // a redefined template is the most recent one; a refused one replaces none
            const reason = this.refusal(item)
            if (reason) result.refused.push({templateId: item.id, fields: item.fields.length, reason})
            else {
              working.set(item.id, item)
              result.templates.push(item)
            }
          } else if (!this.applyWithdrawals) {
            continue
          } else if (item.all) {
            for (const [tid, t] of working) if (t.scopeFieldCount > 0 === item.options) working.delete(tid)
          } else {
            working.delete(item.templateId)
          }
        }
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

    if (changed) this.commit(key, exporter, working)
    else if (known) this.touch(key, known)
    this.refusedCount += result.refused.length
    return result
  }
}

/** Reads and checks a message header (version 10, length equal to the buffer's). */
export function readHeader(message: Buffer): MessageHeader {
  if (message.length < MESSAGE_HEADER_LENGTH)
    throw new DecodeError(`message of ${message.length} bytes is shorter than the ${MESSAGE_HEADER_LENGTH}-byte IPFIX message header`, 0)
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
