/**
 * Decoded records for people and scripts: as JSON-ready objects (`ipfix listen --json`, the demo,
 * the tests' sinks) and as one line of text each (`ipfix listen`).
 */
import {keyElementName} from '../wire/codec.js'
import type {FieldValue, RecordFields} from '../wire/field-values.js'
import {semanticName} from '../wire/list-values.js'
import {elementByName, FLOWCTL_ELEMENTS, type AbstractType} from '../wire/elements.js'
import type {DecodedRecord} from './decoder.js'

/** The abstract type of the element a record key names, if it is a registry element. */
function keyType(key: string): AbstractType | undefined {
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
function renderValue(value: FieldValue, type?: AbstractType): unknown {
  if (typeof value === 'bigint') {
    if (type === 'dateTimeMicroseconds' || type === 'dateTimeNanoseconds') return nsToMs(value)
    return renderBigint(value)
  }
  if (Buffer.isBuffer(value)) return value.toString('hex')
  if (typeof value !== 'object') return value
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
        : {semantic: semanticName(value.semantic), templateId: value.templateId, records: value.records.map((r) => renderFields(r))}
    case 'subTemplateMultiList':
      return {
        semantic: semanticName(value.semantic),
        entries: value.entries.map((e) =>
          e.raw ? {templateId: e.templateId, raw: e.raw.toString('hex')} : {templateId: e.templateId, records: e.records.map((r) => renderFields(r))},
        ),
      }
  }
}

/** What rendering knows beyond the registry. */
export interface RenderOptions {
  /**
   * The PEN flowctl's own elements (FLOWCTL_ELEMENTS) come under: their fields are shown by name,
   * as numbers. Without it (or under another PEN) an enterprise field is `e<PEN>.ie<ID>`, its value hex.
   */
  enterpriseNumber?: number
}

const OWN_BY_ID = new Map<number, {name: string}>(Object.values(FLOWCTL_ELEMENTS).map((e) => [e.id, e]))

/** `e<PEN>.ie<ID>` of one of flowctl's own elements under `pen`, by name, with its unsigned value; else undefined. */
function ownElement(key: string, value: FieldValue, pen: number | undefined): [string, number] | undefined {
  if (pen === undefined || !Buffer.isBuffer(value) || value.length === 0 || value.length > 6) return undefined
  const m = /^e(\d+)\.ie(\d+)$/.exec(key)
  if (!m || Number(m[1]) !== pen) return undefined
  const own = OWN_BY_ID.get(Number(m[2]))
  return own && [own.name, value.readUIntBE(0, value.length)]
}

export function renderFields(fields: RecordFields, options: RenderOptions = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(fields)) {
    const own = ownElement(key, value, options.enterpriseNumber)
    if (own) out[own[0]] = own[1]
    else out[key] = renderValue(value, keyType(key))
  }
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
export function renderRecordJson(record: DecodedRecord, options: RenderOptions = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {
    exporter: record.exporter,
    observationDomainId: record.observationDomainId,
    templateId: record.templateId,
    sequenceNumber: record.sequenceNumber,
    exportTime: record.exportTime,
  }
  if (record.options) out.options = true
  Object.assign(out, renderFields(record.fields, options))
  return out
}

/** One compact human line: `exporter od=N tpl=N seq=N [options] name=value ...`. */
export function formatRecordLine(record: DecodedRecord, options: RenderOptions = {}): string {
  const parts = [`${record.exporter} od=${record.observationDomainId} tpl=${record.templateId} seq=${record.sequenceNumber}`]
  if (record.options) parts.push('options')
  for (const [key, value] of Object.entries(renderFields(record.fields, options))) {
    parts.push(`${key}=${typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value)}`)
  }
  return parts.join(' ')
}
