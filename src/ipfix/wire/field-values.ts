/**
 * What a field value is in TypeScript, for every RFC 7012 §3.1 abstract type: what `readValue`
 * returns and what `writeValue` accepts (codec.ts). Each kind of value is encoded in a module of
 * its own: number-values.ts, address-values.ts, octet-values.ts, time-values.ts, list-values.ts.
 *
 * | abstract type                               | value                                                        |
 * | ------------------------------------------- | ------------------------------------------------------------ |
 * | unsigned8/16/32, signed8/16/32              | number (encode also accepts a bigint)                        |
 * | unsigned64, signed64                        | bigint when decoding, at any (reduced) length; encode takes number or bigint |
 * | float32, float64                            | number (float64 in 4 bytes is sent as float32, §6.2)         |
 * | boolean                                     | boolean: true = 1, false = 2 on the wire (§6.1.5); other octets are a DecodeError |
 * | macAddress                                  | 'aa:bb:cc:dd:ee:ff', lower case (encode also takes '-' separators or a 6-byte Buffer) |
 * | string                                      | string (UTF-8). A fixed-length field is padded with zero bytes when encoding and its trailing zero bytes are dropped when decoding; ill-formed UTF-8 decodes with U+FFFD (RFC 7011 §6.1.6: detect and ignore) |
 * | octetArray                                  | Buffer (a copy, never a view of the message)                 |
 * | dateTimeSeconds                             | number, seconds since 1970 (encoded modulo 2^32, §5.2)       |
 * | dateTimeMilliseconds                        | number, milliseconds since 1970 (encode also takes a bigint) |
 * | dateTimeMicroseconds, dateTimeNanoseconds   | bigint NANOseconds since 1970, sent as an NTP timestamp (§6.1.9, §6.1.10); microseconds are rounded to the microsecond and have the 11 low fraction bits zero |
 * | ipv4Address, ipv6Address                    | canonical text (RFC 5952 for IPv6), as src/util/address.ts writes it |
 * | basicList                                   | {@link BasicList}                                            |
 * | subTemplateList                             | {@link SubTemplateList}                                      |
 * | subTemplateMultiList                        | {@link SubTemplateMultiList}                                 |
 */
import type {Template, TemplateField} from './template.js'

/** A data record's values keyed by element name (a name repeated in the template gets '#2', '#3'...). */
export type RecordFields = Record<string, FieldValue>

/** RFC 6313 §4.5.1: a list of values of one Information Element. */
export interface BasicList {
  readonly kind: 'basicList'
  semantic: number
  /** The element of every value, its length in the list (65535 = each value variable-length) and its PEN. */
  field: TemplateField
  values: FieldValue[]
}

/** RFC 6313 §4.5.2: a list of data records of one template. */
export interface SubTemplateList {
  readonly kind: 'subTemplateList'
  semantic: number
  templateId: number
  records: RecordFields[]
  /** The undecoded records, when the template was not known at decoding (then `records` is empty). */
  raw?: Buffer
}

export interface SubTemplateMultiListEntry {
  templateId: number
  records: RecordFields[]
  /** The undecoded records, when the template was not known at decoding (then `records` is empty). */
  raw?: Buffer
}

/** RFC 6313 §4.5.3: blocks of data records, each block of one template. */
export interface SubTemplateMultiList {
  readonly kind: 'subTemplateMultiList'
  semantic: number
  entries: SubTemplateMultiListEntry[]
}

export type FieldValue = number | bigint | boolean | string | Buffer | BasicList | SubTemplateList | SubTemplateMultiList

/** Finds the template a subTemplateList or subTemplateMultiList names. */
export type TemplateLookup = (templateId: number) => Template | undefined

/** A value as an error message names it: 'a 4-byte Buffer', "the string 'abc'", 'number 1.5'. */
export function describeValue(value: unknown): string {
  if (Buffer.isBuffer(value)) return `a ${value.length}-byte Buffer`
  if (value && typeof value === 'object' && 'kind' in value) return `a ${String(value.kind)}`
  return typeof value === 'string' ? `the string '${value.length > 40 ? `${value.slice(0, 40)}...` : value}'` : `${typeof value} ${String(value)}`
}
