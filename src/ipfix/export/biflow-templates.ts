/**
 * Biflow templates (RFC 5103): a collector that asks for biflows gets each of its templates with
 * the reverse counterpart of every per-direction field it has, then biflowDirection (IE 239). A
 * reverse field is the same element, of the same length, marked enterprise-specific with the
 * reverse PEN 29305 (RFC 5103 §6.1); it is written from the batch's reverse direction
 * (FlowBatch.reverse, src/flow/biflow.ts), and holds 0 for a direction seen alone.
 */
import {elementByName} from '../wire/elements.js'
import type {FlowBatch} from '../../flow/batch.js'
import {bindField, templateFamily, type BoundField, type ColumnWriter, type FieldWriter} from './flow-fields.js'
import {boundTemplate, type ExportTemplate} from './flow-templates.js'

/** The Private Enterprise Number of reverse information elements (RFC 5103 §6.1). */
export const REVERSE_PEN = 29305

/**
 * The elements that have a value per direction (RFC 5103 §6: the non-key fields): counts, times,
 * flags, TTL range and class of service. The key fields (addresses, ports, protocol, VLAN) and
 * those of the record (interfaces, direction, end reason, next hop) are the forward's.
 */
const REVERSIBLE_ELEMENTS: readonly string[] = [
  'packetDeltaCount',
  'octetDeltaCount',
  'flowStartSeconds',
  'flowEndSeconds',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'flowStartMicroseconds',
  'flowEndMicroseconds',
  'flowStartNanoseconds',
  'flowEndNanoseconds',
  'flowDurationMilliseconds',
  'flowDurationMicroseconds',
  'tcpControlBits',
  'minimumTTL',
  'maximumTTL',
  'ipClassOfService',
  'ipDiffServCodePoint',
  'ipPrecedence',
]
const reversible = new Set(REVERSIBLE_ELEMENTS.map((n) => n.toLowerCase()))

/** A field's reverse counterpart: the same bytes, from the reverse direction (zeros in a batch of uniflows). */
function reverseField(forward: BoundField): BoundField {
  const len = forward.length
  const write: FieldWriter = (b, i, buf, off) => (b.reverse ? forward.write(b.reverse, i, buf, off) : void buf.fill(0, off, off + len))
  const writeColumn: ColumnWriter = (b, from, count, buf, off, stride) => {
    if (b.reverse) return forward.writeColumn(b.reverse, from, count, buf, off, stride)
    for (let r = 0; r < count; r++) buf.fill(0, off + r * stride, off + r * stride + len)
  }
  return {element: forward.element, length: len, enterpriseNumber: REVERSE_PEN, write, writeColumn}
}

const BIFLOW_DIRECTION = elementByName('biflowDirection')!

function directionOf(b: FlowBatch, i: number): number {
  return b.biflowDirection ? b.biflowDirection[i] : 0
}

/** biflowDirection (IE 239), one byte: the batch's own, 0 (arbitrary) in a batch of uniflows. */
function directionField(): BoundField {
  return {
    element: BIFLOW_DIRECTION,
    length: 1,
    write: (b, i, buf, off) => void (buf[off] = directionOf(b, i)),
    writeColumn: (b, from, count, buf, off, stride) => {
      for (let r = 0; r < count; r++) buf[off + r * stride] = directionOf(b, from + r)
    },
  }
}

/** A template's biflow form: its fields, the reverse ones, and biflowDirection, under the same id. */
export function compileBiflowTemplate(id: number, fields: readonly {name: string; length: number}[]): ExportTemplate {
  const forward = fields.map((f) => bindField(f.name, f.length))
  const reverse = forward.filter((f) => reversible.has(f.element.name.toLowerCase())).map(reverseField)
  return boundTemplate(id, [...forward, ...reverse, directionField()], templateFamily(fields.map((f) => f.name)))
}
