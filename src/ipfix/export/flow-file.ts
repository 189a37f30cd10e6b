/**
 * Flows written in YAML, sent as IPFIX by `flowctl ipfix send` (the older tool's `ipfix file`):
 *
 *   flowsets:
 *   - templateId: 1001
 *     flows:
 *     - SourceIPv4Address: 0x0a010001     # an IPv4 address as a number, or '10.1.0.1'
 *       DestinationIPv4Address: 10.1.0.2
 *       ProtocolIdentifier: 6
 *       PacketDeltaCount: 100
 *
 * Element names match the registry without regard to case; a field of the template a flow does
 * not give is sent as zero, and a field a flow gives that its template lacks is left out (both as
 * the older tool did; the caller says which were left out). Any registry element may be given,
 * including those the meter cannot fill (BGP AS numbers, prefix lengths...): a flow file says
 * what to send, and `ipfix send` sends it in a template that names the element.
 */
import {readFile} from 'node:fs/promises'

import {parse} from 'yaml'

import {InvalidInputError} from '../../errors.js'
import {formatIPv4, parseAddress} from '../../util/address.js'
import {fieldKeys} from '../wire/codec.js'
import type {FieldValue, RecordFields} from '../wire/field-values.js'
import type {AbstractType} from '../wire/elements.js'
import {elementByName, similarNames} from '../wire/elements.js'
import {compileTemplate, type ExportTemplate} from './flow-templates.js'
import {bindField, type BoundField} from './flow-fields.js'
import {exportableElement} from './exportable-elements.js'
import type {TemplateSpec} from './target.js'

export interface FlowSet {
  templateId: number
  records: RecordFields[]
  /** Elements some flow of the set gave that its template lacks: not sent. */
  ignored: string[]
}

/**
 * A template for records written out by name (a flow file): the elements the meter fills are bound
 * as for the daemon; any other registry element is carried with the value the file gives, never
 * from a flow of the kernel (its column writer refuses).
 */
export function flowFileTemplate(id: number, fields: readonly {name: string; length: number}[]): ExportTemplate {
  if (fields.every((f) => exportableElement(f.name))) return compileTemplate(id, fields)
  const bound: BoundField[] = fields.map((f) => {
    if (exportableElement(f.name)) return bindField(f.name, f.length)
    const element = elementByName(f.name)
    if (!element) throw new InvalidInputError(`template ${id}: unknown information element '${f.name}'`)
    const refuse = (): never => {
      throw new Error(`template ${id}: flowctl has no value for ${element.name} in a flow of the kernel`)
    }
    return {element, length: f.length, write: refuse, writeColumn: refuse}
  })
  const exportable = compileTemplate(
    id,
    fields.filter((f) => exportableElement(f.name)),
  )
  return {
    template: {id, fields: bound.map((b) => ({element: b.element, length: b.length})), scopeFieldCount: 0},
    fields: bound,
    recordLength: bound.reduce((n, b) => n + b.length, 0),
    family: exportable.family,
  }
}

function zero(type: AbstractType): FieldValue {
  switch (type) {
    case 'ipv4Address':
      return '0.0.0.0'
    case 'ipv6Address':
      return '::'
    case 'macAddress':
      return '00:00:00:00:00:00'
    case 'string':
      return ''
    case 'octetArray':
      return Buffer.alloc(0)
    case 'boolean':
      return false
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds':
    case 'unsigned64':
    case 'signed64':
      return 0n
    // A number; a list given one is refused by the codec, which says why.
    case 'unsigned8':
    case 'unsigned16':
    case 'unsigned32':
    case 'signed8':
    case 'signed16':
    case 'signed32':
    case 'float32':
    case 'float64':
    case 'dateTimeSeconds':
    case 'dateTimeMilliseconds':
    case 'basicList':
    case 'subTemplateList':
    case 'subTemplateMultiList':
      return 0
  }
}

function convert(type: AbstractType, value: unknown, where: string): FieldValue {
  const bad = () => new InvalidInputError(`${where}: ${JSON.stringify(value)} is not a valid ${type}`)
  switch (type) {
    case 'ipv4Address':
      if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xffffffff) {
        const b = Buffer.alloc(4)
        b.writeUInt32BE(value)
        return formatIPv4(b)
      }
      if (typeof value === 'string' && parseAddress(value, where).family === 4) return value
      throw bad()
    case 'ipv6Address':
      if (typeof value === 'string' && parseAddress(value, where).family === 6) return value
      throw bad()
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds':
    case 'unsigned64':
    case 'signed64':
      if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value)
      if (typeof value === 'string' && /^-?\d+$/.test(value)) return BigInt(value)
      throw bad()
    case 'boolean':
      if (typeof value === 'boolean') return value
      throw bad()
    case 'string':
    case 'macAddress':
      if (typeof value === 'string') return value
      throw bad()
    case 'octetArray':
      if (typeof value === 'string' && /^([0-9a-f]{2})*$/i.test(value)) return Buffer.from(value, 'hex')
      throw bad()
    // A number; a list given one is refused by the codec, which says why.
    case 'unsigned8':
    case 'unsigned16':
    case 'unsigned32':
    case 'signed8':
    case 'signed16':
    case 'signed32':
    case 'float32':
    case 'float64':
    case 'dateTimeSeconds':
    case 'dateTimeMilliseconds':
    case 'basicList':
    case 'subTemplateList':
    case 'subTemplateMultiList':
      if (typeof value === 'number' && Number.isFinite(value)) return value
      throw bad()
  }
}

export function parseFlowFile(text: string, file: string, templateSpecs: readonly TemplateSpec[]): FlowSet[] {
  let doc: unknown
  try {
    doc = parse(text, {intAsBigInt: false})
  } catch (error) {
    throw new InvalidInputError(`${file}: not valid YAML: ${(error as Error).message.split('\n')[0]}`)
  }
  const sets = (doc as {flowsets?: unknown} | null | undefined)?.flowsets
  if (!Array.isArray(sets)) throw new InvalidInputError(`${file}: expected a top-level 'flowsets:' list`)
  const templates = new Map<number, ExportTemplate>(templateSpecs.map((t) => [t.id, flowFileTemplate(t.id, t.fields)]))
  return sets.map((set, s) => {
    const where = `${file}: flowsets[${s}]`
    const {templateId, flows} = set as {templateId?: unknown; flows?: unknown}
    const t = typeof templateId === 'number' ? templates.get(templateId) : undefined
    if (!t)
      throw new InvalidInputError(
        `${where}.templateId: ${JSON.stringify(templateId)} is not a template of the config (it has ${[...templates.keys()].join(', ')})`,
      )
    if (!Array.isArray(flows)) throw new InvalidInputError(`${where}.flows: expected a list of flows`)
    const keys = fieldKeys(t.template.fields)
    const ignored = new Set<string>()
    const records = flows.map((flow, f) => {
      const given = new Map(Object.entries((flow ?? {}) as Record<string, unknown>).map(([k, v]) => [k.toLowerCase(), {k, v}]))
      const record: RecordFields = {}
      t.template.fields.forEach((field, i) => {
        const entry = given.get(keys[i].toLowerCase())
        given.delete(keys[i].toLowerCase())
        record[keys[i]] = entry ? convert(field.element.type, entry.v, `${where}.flows[${f}].${entry.k}`) : zero(field.element.type)
      })
      for (const extra of given.values()) {
        const element = elementByName(extra.k)
        if (!element) {
          const near = similarNames(extra.k, 1)
          throw new InvalidInputError(`${where}.flows[${f}].${extra.k}: unknown information element${near.length ? `; did you mean ${near[0]}?` : ''}`)
        }
        ignored.add(element.name)
      }
      return record
    })
    return {templateId: t.template.id, records, ignored: [...ignored]}
  })
}

export async function loadFlowFile(path: string, templateSpecs: readonly TemplateSpec[]): Promise<FlowSet[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    throw new InvalidInputError(`cannot read flows file ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }
  return parseFlowFile(text, path, templateSpecs)
}
