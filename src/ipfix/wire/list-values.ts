/**
 * The structured types of RFC 6313 on the wire: basicList (values of one element),
 * subTemplateList (records of one template) and subTemplateMultiList (blocks of records, each of
 * one template). A list is a field value like any other (variable-length, §7, or of a fixed length
 * its content fills exactly), framed by the codec.
 *
 * A list holds values and records of any type, lists included: it is encoded through the codec of
 * every type, which the codec hands in (`ListCodec`), since the codec dispatches to this module
 * and an import of it here would close a circle.
 */
import {isValidLength, lengthProblem, resolveElement, type AbstractType} from './elements.js'
import {CodecError, DecodeError} from './errors.js'
import {describeValue, type BasicList, type FieldValue, type RecordFields, type SubTemplateMultiListEntry, type TemplateLookup} from './field-values.js'
import type {Template, TemplateField} from './template.js'

export type ListType = 'basicList' | 'subTemplateList' | 'subTemplateMultiList'

/** RFC 6313 §4.4 list semantics. */
export const ListSemantic = {
  noneOf: 0,
  exactlyOneOf: 1,
  oneOrMoreOf: 2,
  allOf: 3,
  ordered: 4,
  undefined: 255,
} as const

const SEMANTIC_NAMES = new Map<number, string>(Object.entries(ListSemantic).map(([name, n]) => [n, name]))

/** The name of a list semantic ('allOf'), or its number in text when unassigned. */
export function semanticName(semantic: number): string {
  return SEMANTIC_NAMES.get(semantic) ?? String(semantic)
}

/** What a list needs of the codec to encode and decode its values and records (codec.ts). */
export interface ListCodec {
  valueSize(type: AbstractType, length: number, value: FieldValue, templates?: TemplateLookup): number
  writeValue(buf: Buffer, off: number, type: AbstractType, length: number, value: FieldValue, templates?: TemplateLookup): number
  readValue(buf: Buffer, off: number, end: number, type: AbstractType, length: number, templates?: TemplateLookup): {value: FieldValue; next: number}
  recordSize(t: Template, fields: RecordFields, templates?: TemplateLookup): number
  encodeRecord(buf: Buffer, off: number, t: Template, fields: RecordFields, templates?: TemplateLookup): number
  decodeRecord(buf: Buffer, off: number, end: number, t: Template, templates?: TemplateLookup): {fields: RecordFields; next: number}
}

function asList<K extends ListType>(value: FieldValue, kind: K): Extract<FieldValue, {kind: K}> {
  if (value && typeof value === 'object' && !Buffer.isBuffer(value) && value.kind === kind) {
    return value as Extract<FieldValue, {kind: K}>
  }
  throw new CodecError(`${kind} value must be a ${kind} object, not ${describeValue(value)}`)
}

function checkSemantic(semantic: number, kind: string): void {
  if (!Number.isInteger(semantic) || semantic < 0 || semantic > 255) throw new CodecError(`${kind} semantic ${semantic} is not an octet`)
}

function listTemplate(templateId: number, templates: TemplateLookup | undefined, kind: string): Template | undefined {
  if (!Number.isInteger(templateId) || templateId < 256 || templateId > 65535) throw new CodecError(`${kind} template ID ${templateId} is not in 256-65535`)
  return templates?.(templateId)
}

/** The bytes of a list's content: its header and its values or records. */
export function listContentSize(type: ListType, value: FieldValue, templates: TemplateLookup | undefined, codec: ListCodec): number {
  switch (type) {
    case 'basicList': {
      const list = asList(value, 'basicList')
      let n = 5 + (list.field.enterpriseNumber === undefined ? 0 : 4)
      for (const v of list.values) n += codec.valueSize(list.field.element.type, list.field.length, v, templates)
      return n
    }
    case 'subTemplateList': {
      const list = asList(value, 'subTemplateList')
      return 3 + recordsSize(list.templateId, list.records, list.raw, templates, 'subTemplateList', codec)
    }
    case 'subTemplateMultiList': {
      const list = asList(value, 'subTemplateMultiList')
      let n = 1
      for (const e of list.entries) n += 4 + recordsSize(e.templateId, e.records, e.raw, templates, 'subTemplateMultiList', codec)
      return n
    }
  }
}

function recordsSize(
  templateId: number,
  records: RecordFields[],
  raw: Buffer | undefined,
  templates: TemplateLookup | undefined,
  kind: string,
  codec: ListCodec,
): number {
  const t = listTemplate(templateId, templates, kind)
  if (!t) {
    if (raw && records.length === 0) return raw.length
    throw new CodecError(`${kind} names template ${templateId}, which is not known`)
  }
  let n = 0
  for (const r of records) n += codec.recordSize(t, r, templates)
  return n
}

/** Writes a list's content at `off` (the buffer is known to hold listContentSize bytes there). */
export function writeList(buf: Buffer, off: number, type: ListType, value: FieldValue, templates: TemplateLookup | undefined, codec: ListCodec): void {
  switch (type) {
    case 'basicList': {
      const list = asList(value, 'basicList')
      checkSemantic(list.semantic, 'basicList')
      const {element, length: elementLength, enterpriseNumber} = list.field
      if (!Number.isInteger(element.id) || element.id < 0 || element.id > 0x7fff) throw new CodecError(`basicList element id ${element.id} is not in 0-32767`)
      if (!isValidLength(element.type, elementLength)) throw new CodecError(`basicList of ${element.name}: ${lengthProblem(element.type, elementLength)}`)
      let p = off
      buf[p++] = list.semantic
      buf.writeUInt16BE(element.id | (enterpriseNumber === undefined ? 0 : 0x8000), p)
      buf.writeUInt16BE(elementLength, p + 2)
      p += 4
      if (enterpriseNumber !== undefined) {
        buf.writeUInt32BE(enterpriseNumber, p)
        p += 4
      }
      for (const v of list.values) p = codec.writeValue(buf, p, element.type, elementLength, v, templates)
      return
    }
    case 'subTemplateList': {
      const list = asList(value, 'subTemplateList')
      checkSemantic(list.semantic, 'subTemplateList')
      buf[off] = list.semantic
      buf.writeUInt16BE(list.templateId, off + 1)
      writeRecords(buf, off + 3, list.templateId, list.records, list.raw, templates, 'subTemplateList', codec)
      return
    }
    case 'subTemplateMultiList': {
      const list = asList(value, 'subTemplateMultiList')
      checkSemantic(list.semantic, 'subTemplateMultiList')
      let p = off
      buf[p++] = list.semantic
      for (const e of list.entries) {
        const end = writeRecords(buf, p + 4, e.templateId, e.records, e.raw, templates, 'subTemplateMultiList', codec)
        if (end - p > 65535) throw new CodecError(`subTemplateMultiList block of template ${e.templateId} is longer than 65535 bytes`)
        buf.writeUInt16BE(e.templateId, p)
        buf.writeUInt16BE(end - p, p + 2)
        p = end
      }
    }
  }
}

function writeRecords(
  buf: Buffer,
  off: number,
  templateId: number,
  records: RecordFields[],
  raw: Buffer | undefined,
  templates: TemplateLookup | undefined,
  kind: string,
  codec: ListCodec,
): number {
  const t = listTemplate(templateId, templates, kind)
  if (!t) {
    if (raw && records.length === 0) return off + raw.copy(buf, off)
    throw new CodecError(`${kind} names template ${templateId}, which is not known`)
  }
  let p = off
  for (const r of records) p = codec.encodeRecord(buf, p, t, r, templates)
  return p
}

/**
 * Reads a list of `n` bytes at `off`. The records of a template `templates` does not know are
 * kept undecoded (`raw`), as a collector that has not seen the template yet must.
 */
export function readList(buf: Buffer, off: number, n: number, type: ListType, templates: TemplateLookup | undefined, codec: ListCodec): FieldValue {
  switch (type) {
    case 'basicList':
      return readBasicList(buf, off, off + n, codec)
    case 'subTemplateList': {
      if (n < 3) throw new DecodeError(`subTemplateList of ${n} bytes is shorter than its 3-byte header`, off)
      const templateId = buf.readUInt16BE(off + 1)
      const {records, raw} = readRecords(buf, off + 3, off + n, templateId, templates, 'subTemplateList', codec)
      return raw ? {kind: 'subTemplateList', semantic: buf[off], templateId, records, raw} : {kind: 'subTemplateList', semantic: buf[off], templateId, records}
    }
    case 'subTemplateMultiList': {
      if (n < 1) throw new DecodeError('subTemplateMultiList of 0 bytes lacks its semantic octet', off)
      const entries: SubTemplateMultiListEntry[] = []
      const end = off + n
      let p = off + 1
      while (p < end) {
        if (p + 4 > end) throw new DecodeError(`subTemplateMultiList block header cut short (${end - p} bytes left)`, p)
        const templateId = buf.readUInt16BE(p)
        const blockLength = buf.readUInt16BE(p + 2)
        if (blockLength < 4) throw new DecodeError(`subTemplateMultiList block length ${blockLength} is shorter than its 4-byte header`, p)
        if (p + blockLength > end) throw new DecodeError(`subTemplateMultiList block of ${blockLength} bytes runs past the list (${end - p} bytes left)`, p)
        const {records, raw} = readRecords(buf, p + 4, p + blockLength, templateId, templates, 'subTemplateMultiList', codec)
        entries.push(raw ? {templateId, records, raw} : {templateId, records})
        p += blockLength
      }
      return {kind: 'subTemplateMultiList', semantic: buf[off], entries}
    }
  }
}

function readBasicList(buf: Buffer, off: number, end: number, codec: ListCodec): BasicList {
  if (end - off < 5) throw new DecodeError(`basicList of ${end - off} bytes is shorter than its 5-byte header`, off)
  const semantic = buf[off]
  const rawId = buf.readUInt16BE(off + 1)
  const elementLength = buf.readUInt16BE(off + 3)
  let p = off + 5
  let enterpriseNumber: number | undefined
  if (rawId & 0x8000) {
    if (end - p < 4) throw new DecodeError('basicList enterprise number cut short', p)
    enterpriseNumber = buf.readUInt32BE(p)
    p += 4
  }
  const element = resolveElement(rawId & 0x7fff, enterpriseNumber)
  if (!isValidLength(element.type, elementLength)) throw new DecodeError(`basicList of ${element.name}: ${lengthProblem(element.type, elementLength)}`, off + 3)
  if (elementLength === 0 && p < end) throw new DecodeError(`basicList of ${element.name} has element length 0 but ${end - p} bytes of content`, off + 3)
  const values: FieldValue[] = []
  while (p < end) {
    const r = codec.readValue(buf, p, end, element.type, elementLength)
    values.push(r.value)
    p = r.next
  }
  const field: TemplateField = enterpriseNumber === undefined ? {element, length: elementLength} : {element, length: elementLength, enterpriseNumber}
  return {kind: 'basicList', semantic, field, values}
}

function readRecords(
  buf: Buffer,
  off: number,
  end: number,
  templateId: number,
  templates: TemplateLookup | undefined,
  kind: string,
  codec: ListCodec,
): {records: RecordFields[]; raw?: Buffer} {
  const t = templates?.(templateId)
  if (!t) return {records: [], raw: Buffer.from(buf.subarray(off, end))}
  const records: RecordFields[] = []
  let p = off
  while (p < end) {
    const r = codec.decodeRecord(buf, p, end, t, templates)
    if (r.next === p) throw new DecodeError(`${kind} of template ${templateId}: its records are 0 bytes long`, p)
    records.push(r.fields)
    p = r.next
  }
  return {records}
}
