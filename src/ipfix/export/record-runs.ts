/**
 * The runs of records a session hands the encode loop (encode.ts): the flows of a batch in one
 * template (a counter too large for a reduced-size field split over several records; all of the
 * batch, or the rows counted at one sampling rate), records given as values by element name,
 * template records, and the one statistics record.
 */
import type {FlowBatch} from '../../flow/batch.js'
import {encodeRecord, recordSize} from '../wire/codec.js'
import type {RecordFields} from '../wire/field-values.js'
import {OPTIONS_TEMPLATE_SET_ID} from '../wire/message.js'
import {encodeTemplateRecord, templateRecordSize, type Template} from '../wire/template.js'
import type {RecordRun} from './encode.js'
import {putUint} from './flow-fields.js'
import type {ExportTemplate} from './flow-templates.js'

/**
 * Flows of a batch in one template, all of them or the `rows` given (in order); a counter too
 * large for a reduced-size field is split.
 */
export function flowRun(t: ExportTemplate, batch: FlowBatch, rows?: Uint32Array): RecordRun {
  const {fields, recordLength} = t
  const setId = t.template.id
  const maxPackets = fields.find((f) => f.counterMax?.packets)?.counterMax?.packets ?? Infinity
  const maxBytes = fields.find((f) => f.counterMax?.bytes)?.counterMax?.bytes ?? Infinity
  const parts = maxPackets === Infinity && maxBytes === Infinity ? undefined : splitParts(batch, rows, maxPackets, maxBytes)
  if (!parts && rows) {
    // Some rows of the batch (those of one sampling rate, beside others): record by record.
    return {
      count: rows.length,
      data: true,
      fixedLength: recordLength,
      setId: () => setId,
      length: () => recordLength,
      write(r, n, buf, pos) {
        for (let k = r; k < r + n; k++) {
          const i = rows[k]
          for (let f = 0; f < fields.length; f++) {
            fields[f].write(batch, i, buf, pos)
            pos += fields[f].length
          }
        }
        return pos
      },
    }
  }
  if (!parts) {
    // Each message is filled field by field, a column of records at a time (the same bytes as
    // record by record, without a call per field and record).
    return {
      count: batch.length,
      data: true,
      fixedLength: recordLength,
      setId: () => setId,
      length: () => recordLength,
      write(i, n, buf, pos) {
        let off = pos
        for (let f = 0; f < fields.length; f++) {
          fields[f].writeColumn(batch, i, n, buf, off, recordLength)
          off += fields[f].length
        }
        return pos + n * recordLength
      },
    }
  }
  // A counter too large for a reduced-size field goes out as several records whose counts add
  // up exactly: the collector's sums stay right.
  const {flow, part, of} = parts
  return {
    count: flow.length,
    data: true,
    setId: () => setId,
    length: () => recordLength,
    write(r, _n, buf, pos) {
      const i = flow[r]
      const packets = batch.packets[i]
      const bytes = batch.bytes[i]
      const k = part[r]
      const n = of[r]
      batch.packets[i] = Math.floor(packets / n) + (k < packets % n ? 1 : 0)
      batch.bytes[i] = Math.floor(bytes / n) + (k < bytes % n ? 1 : 0)
      // A biflow's reverse counts (fields of the same lengths) are split the same way.
      const reverse = batch.reverse
      const reversePackets = reverse ? reverse.packets[i] : 0
      const reverseBytes = reverse ? reverse.bytes[i] : 0
      if (reverse) {
        reverse.packets[i] = Math.floor(reversePackets / n) + (k < reversePackets % n ? 1 : 0)
        reverse.bytes[i] = Math.floor(reverseBytes / n) + (k < reverseBytes % n ? 1 : 0)
      }
      // So are the drop counts (a drops template's): each part carries its share, not all of them.
      const drops = batch.drops
      const droppedPackets = drops ? drops.packets[i] : 0
      const droppedBytes = drops ? drops.bytes[i] : 0
      if (drops) {
        drops.packets[i] = Math.floor(droppedPackets / n) + (k < droppedPackets % n ? 1 : 0)
        drops.bytes[i] = Math.floor(droppedBytes / n) + (k < droppedBytes % n ? 1 : 0)
      }
      for (let f = 0; f < fields.length; f++) {
        fields[f].write(batch, i, buf, pos)
        pos += fields[f].length
      }
      batch.packets[i] = packets
      batch.bytes[i] = bytes
      if (reverse) {
        reverse.packets[i] = reversePackets
        reverse.bytes[i] = reverseBytes
      }
      if (drops) {
        drops.packets[i] = droppedPackets
        drops.bytes[i] = droppedBytes
      }
      return pos
    },
  }
}

/**
 * Record r is part part[r] of of[r] of flow flow[r] (a row of the batch: every row, or those of
 * `rows`); undefined when no flow needs splitting.
 */
function splitParts(
  batch: FlowBatch,
  rows: Uint32Array | undefined,
  maxPackets: number,
  maxBytes: number,
): {flow: number[]; part: number[]; of: number[]} | undefined {
  const count = rows ? rows.length : batch.length
  const row = rows ? (r: number) => rows[r] : (r: number) => r
  // A biflow's reverse counts are in fields as long as the forward's: the larger of the two decides.
  const reverse = batch.reverse
  const packetsOf = reverse ? (i: number) => Math.max(batch.packets[i], reverse.packets[i]) : (i: number) => batch.packets[i]
  const bytesOf = reverse ? (i: number) => Math.max(batch.bytes[i], reverse.bytes[i]) : (i: number) => batch.bytes[i]
  let any = false
  for (let r = 0; r < count && !any; r++) any = packetsOf(row(r)) > maxPackets || bytesOf(row(r)) > maxBytes
  if (!any) return undefined
  const flow: number[] = []
  const part: number[] = []
  const of: number[] = []
  for (let r = 0; r < count; r++) {
    const i = row(r)
    const n = Math.max(1, Math.ceil(packetsOf(i) / maxPackets), Math.ceil(bytesOf(i) / maxBytes))
    for (let k = 0; k < n; k++) {
      flow.push(i)
      part.push(k)
      of.push(n)
    }
  }
  return {flow, part, of}
}

/** Records given as values by element name, in one template. */
export function fieldsRun(t: Template, records: RecordFields[]): RecordRun {
  return {
    count: records.length,
    data: true,
    setId: () => t.id,
    length: (i) => recordSize(t, records[i]),
    write: (i, _n, buf, pos) => encodeRecord(buf, pos, t, records[i]),
  }
}

/**
 * Template records, in a template set (`setId` 2), or Options Template records, each in an
 * options template set of its own (`setId` 3: nfdump reads only the first of a set).
 */
export function templateRun(templates: readonly Template[], setId: number): RecordRun {
  return {
    count: templates.length,
    data: false,
    setPerRecord: setId === OPTIONS_TEMPLATE_SET_ID,
    setId: () => setId,
    length: (i) => templateRecordSize(templates[i]),
    write: (i, _n, buf, pos) => encodeTemplateRecord(templates[i], buf, pos),
  }
}

/** One record of fixed-size unsigned fields. */
export function valuesRun(t: Template, values: number[]): RecordRun {
  return {
    count: 1,
    data: true,
    setId: () => t.id,
    length: () => t.fields.reduce((n, f) => n + f.length, 0),
    write(_i, _n, buf, pos) {
      t.fields.forEach((f, k) => {
        putUint(buf, pos, f.length, values[k])
        pos += f.length
      })
      return pos
    },
  }
}
