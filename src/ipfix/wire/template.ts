/**
 * Template Records and Options Template Records (RFC 7011 §3.4.1, §3.4.2): their encoding, and the
 * decoding of Template Sets and Options Template Sets, withdrawals included (§8.1).
 *
 * A field specifier (§3.2) is 2 octets of E bit and element id, 2 of field length, and, with the E
 * bit, 4 of enterprise number. Fields of an id the IANA registry lacks, and enterprise-specific
 * fields, decode to a synthetic octetArray element named `ie<ID>` or `e<PEN>.ie<ID>`; those of the
 * reverse PEN 29305 (RFC 5103 biflows) to the reverse of the IANA element, e.g. reversePacketDeltaCount.
 */
import {isValidLength, resolveElement, VARIABLE_LENGTH, type InformationElement} from './elements.js'
import {CodecError, DecodeError} from './errors.js'

export interface TemplateField {
  element: InformationElement
  /** The field length in the template; VARIABLE_LENGTH (65535) for variable-length encoding. */
  length: number
  /** The enterprise number (PEN) of an enterprise-specific element; absent for IANA elements. */
  enterpriseNumber?: number
}

export interface Template {
  id: number
  fields: TemplateField[]
  /** 0 for a (data) Template; the number of leading scope fields (> 0) for an Options Template. */
  scopeFieldCount: number
}

/** A Template Withdrawal (RFC 7011 §8.1): a record with field count 0. */
export interface TemplateWithdrawal {
  /** The template withdrawn; 2 (in a Template Set) or 3 (in an Options Template Set) for all of them. */
  templateId: number
  /** Whether it came in an Options Template Set. */
  options: boolean
  /** An All (Options) Templates Withdrawal (§8.1, Figures U and V). */
  all: boolean
  /** Byte offset of the withdrawal record. */
  offset: number
}

export interface DecodedTemplateSet {
  templates: Template[]
  withdrawals: TemplateWithdrawal[]
  /** Templates and withdrawals in the order they appear, the order they take effect in (§8.1). */
  inOrder: (Template | TemplateWithdrawal)[]
  /** Trailing bytes too short to be a record: padding (§3.3.1), which must be zero. */
  padding: {offset: number; length: number; zero: boolean}
}

/** A Template Record's header: template id and field count (RFC 7011 §3.4.1). */
export const TEMPLATE_RECORD_HEADER_LENGTH = 4
/** An Options Template Record's header: template id, field count and scope field count (§3.4.2). */
const OPTIONS_TEMPLATE_RECORD_HEADER_LENGTH = 6
/** A field specifier of an IANA element: element id and field length (§3.2). */
export const FIELD_SPECIFIER_LENGTH = 4
/** A field specifier of an enterprise-specific element: 4 more bytes of enterprise number. */
const ENTERPRISE_FIELD_SPECIFIER_LENGTH = 8

function fieldSpecSize(f: {enterpriseNumber?: number}): number {
  return f.enterpriseNumber === undefined ? FIELD_SPECIFIER_LENGTH : ENTERPRISE_FIELD_SPECIFIER_LENGTH
}

/** The encoded size of a Template Record (or Options Template Record when scopeFieldCount > 0). */
export function templateRecordSize(t: {scopeFieldCount?: number; fields: readonly {enterpriseNumber?: number}[]}): number {
  let n = (t.scopeFieldCount ?? 0) > 0 ? OPTIONS_TEMPLATE_RECORD_HEADER_LENGTH : TEMPLATE_RECORD_HEADER_LENGTH
  for (const f of t.fields) n += fieldSpecSize(f)
  return n
}

/**
 * Writes a Template Record, or an Options Template Record when `t.scopeFieldCount` > 0 (for an
 * Options Template Set, set ID 3); returns the new offset.
 */
export function encodeTemplateRecord(t: Template, buf: Buffer, off: number): number {
  if (!Number.isInteger(t.id) || t.id < 256 || t.id > 65535) throw new CodecError(`template ID ${t.id} is not in 256-65535`)
  if (t.fields.length === 0) throw new CodecError(`template ${t.id} has no fields`)
  if (t.fields.length > 65535) throw new CodecError(`template ${t.id} has more than 65535 fields`)
  if (!Number.isInteger(t.scopeFieldCount) || t.scopeFieldCount < 0 || t.scopeFieldCount > t.fields.length) {
    throw new CodecError(`template ${t.id}: scope field count ${t.scopeFieldCount} is not between 0 and its ${t.fields.length} fields`)
  }
  const size = templateRecordSize(t)
  if (off < 0 || off + size > buf.length) throw new CodecError(`buffer too small for template ${t.id}: ${size} bytes at offset ${off} of ${buf.length}`)
  buf.writeUInt16BE(t.id, off)
  buf.writeUInt16BE(t.fields.length, off + 2)
  let p = off + 4
  if (t.scopeFieldCount > 0) {
    buf.writeUInt16BE(t.scopeFieldCount, p)
    p += 2
  }
  for (const f of t.fields) {
    const {element, length, enterpriseNumber} = f
    if (!Number.isInteger(element.id) || element.id < 0 || element.id > 0x7fff)
      throw new CodecError(`template ${t.id}: element id ${element.id} of ${element.name} is not in 0-32767`)
    if (!isValidLength(element.type, length))
      throw new CodecError(`template ${t.id}: ${element.name} cannot have field length ${length} (type ${element.type})`)
    const enterprise = enterpriseNumber !== undefined
    if (enterprise && (!Number.isInteger(enterpriseNumber) || enterpriseNumber < 0 || enterpriseNumber > 0xffffffff)) {
      throw new CodecError(`template ${t.id}: enterprise number ${enterpriseNumber} of ${element.name} is not a 32-bit number`)
    }
    buf.writeUInt16BE(element.id | (enterprise ? 0x8000 : 0), p)
    buf.writeUInt16BE(length, p + 2)
    p += 4
    if (enterprise) {
      buf.writeUInt32BE(enterpriseNumber, p)
      p += 4
    }
  }
  return p
}

/** The shortest data record of the template: variable-length fields count as 1 byte. */
export function minDataRecordLength(t: {fields: readonly {length: number}[]}): number {
  let n = 0
  for (const f of t.fields) n += f.length === VARIABLE_LENGTH ? 1 : f.length
  return n
}

/** The length of every data record of the template, or undefined if a field is variable-length. */
export function fixedDataRecordLength(t: Template): number | undefined {
  let n = 0
  for (const f of t.fields) {
    if (f.length === VARIABLE_LENGTH) return undefined
    n += f.length
  }
  return n
}

/** Whether two templates describe the same records (same ID, scope and field specifiers). */
export function sameTemplate(a: Template, b: Template): boolean {
  return (
    a.id === b.id &&
    a.scopeFieldCount === b.scopeFieldCount &&
    a.fields.length === b.fields.length &&
    a.fields.every((f, i) => {
      const g = b.fields[i]
      return f.element.id === g.element.id && f.length === g.length && f.enterpriseNumber === g.enterpriseNumber
    })
  )
}

function readFields(buf: Buffer, p: number, end: number, id: number, count: number, what: string): {fields: TemplateField[]; next: number} {
  const fields: TemplateField[] = []
  for (let i = 0; i < count; i++) {
    if (p + 4 > end) throw new DecodeError(`${what} ${id} is cut short: field specifier ${i + 1} of ${count} needs 4 bytes, ${end - p} left in the set`, p)
    const raw = buf.readUInt16BE(p)
    const length = buf.readUInt16BE(p + 2)
    let enterpriseNumber: number | undefined
    if (raw & 0x8000) {
      if (p + 8 > end) throw new DecodeError(`${what} ${id} is cut short: the enterprise number of field ${i + 1} of ${count} runs past the set`, p)
      enterpriseNumber = buf.readUInt32BE(p + 4)
    }
    const element = resolveElement(raw & 0x7fff, enterpriseNumber)
    if (!isValidLength(element.type, length)) {
      throw new DecodeError(`${what} ${id}, field ${i + 1} (${element.name}): field length ${length} is not valid for ${element.type}`, p)
    }
    fields.push(enterpriseNumber === undefined ? {element, length} : {element, length, enterpriseNumber})
    p += enterpriseNumber === undefined ? 4 : 8
  }
  return {fields, next: p}
}

function paddingAt(buf: Buffer, p: number, end: number): DecodedTemplateSet['padding'] {
  let zero = true
  for (let i = p; i < end; i++) if (buf[i] !== 0) zero = false
  return {offset: p, length: end - p, zero}
}

/**
 * Zero bytes from `p` to the end of the set, 4 or more of them, are padding that is too long
 * (RFC 7011 §3.3.1: shorter than any record) rather than a withdrawal of template 0: say so.
 */
function tooMuchPadding(buf: Buffer, p: number, end: number, what: string): void {
  for (let i = p; i < end; i++) if (buf[i] !== 0) return
  throw new DecodeError(`${what} set ends in ${end - p} zero bytes: too many for padding, which must be shorter than the smallest record (RFC 7011 §3.3.1)`, p)
}

/**
 * Decodes the records of a Template Set (set ID 2) from `start` (just after the set header) to
 * `end` (the end of the set). Fewer than 4 trailing bytes are padding; anything else that is not a
 * whole record is a DecodeError.
 */
export function decodeTemplateSet(buf: Buffer, start: number, end: number): DecodedTemplateSet {
  return decodeTemplateRecords(buf, start, end, false)
}

/**
 * Decodes the records of an Options Template Set (set ID 3) from `start` (just after the set
 * header) to `end`. A withdrawal is 4 bytes (template ID, field count 0); fewer than 4 trailing
 * bytes are padding.
 */
export function decodeOptionsTemplateSet(buf: Buffer, start: number, end: number): DecodedTemplateSet {
  return decodeTemplateRecords(buf, start, end, true)
}

/**
 * The walk both set kinds share: withdrawals (field count 0) and template records, until fewer
 * than 4 bytes are left. An options template record has one more header field, its scope count;
 * a withdrawal of all templates names the set's own ID (2 or 3).
 */
function decodeTemplateRecords(buf: Buffer, start: number, end: number, options: boolean): DecodedTemplateSet {
  const what = options ? 'options template' : 'template'
  const setId = options ? 3 : 2
  const templates: Template[] = []
  const withdrawals: TemplateWithdrawal[] = []
  const inOrder: (Template | TemplateWithdrawal)[] = []
  let p = start
  while (end - p >= 4) {
    const id = buf.readUInt16BE(p)
    const count = buf.readUInt16BE(p + 2)
    if (count === 0) {
      tooMuchPadding(buf, p, end, what)
      if (id !== setId && id < 256) throw new DecodeError(`${what} withdrawal names template ID ${id}: only ${setId} (all) or 256-65535 are valid`, p)
      const w = {templateId: id, options, all: id === setId, offset: p}
      withdrawals.push(w)
      inOrder.push(w)
      p += 4
      continue
    }
    if (id < 256) throw new DecodeError(`${what} record has template ID ${id}: IDs 0-255 are reserved`, p)
    let scopeFieldCount = 0
    let header = 4
    if (options) {
      if (end - p < 6) throw new DecodeError(`options template ${id} is cut short: its header needs 6 bytes, ${end - p} left in the set`, p)
      scopeFieldCount = buf.readUInt16BE(p + 4)
      if (scopeFieldCount === 0) throw new DecodeError(`options template ${id} has scope field count 0 (RFC 7011 §3.4.2.2: it must not be zero)`, p + 4)
      if (scopeFieldCount > count) throw new DecodeError(`options template ${id} has scope field count ${scopeFieldCount} but only ${count} fields`, p + 4)
      header = 6
    }
    const {fields, next} = readFields(buf, p + header, end, id, count, what)
    const t = {id, fields, scopeFieldCount}
    templates.push(t)
    inOrder.push(t)
    p = next
  }
  return {templates, withdrawals, inOrder, padding: paddingAt(buf, p, end)}
}
