/**
 * The drops templates (issue 23): a flow with drops (`meter attach --drops`) goes out under a
 * template derived from its collector's template for the family: the same fields, then whichever
 * of forwardingStatus (1 byte), droppedPacketDeltaCount and droppedOctetDeltaCount (8 bytes each)
 * it lacks, in that order. A flow without drops keeps the collector's template, record for record
 * as before: a collector that never sees a drop pays nothing, and one that does learns of the new
 * template only with its first such record. A template that already names all three needs none.
 *
 * Its id: the lowest id from the template's own + 1000 up (to 65535, then from 256 up) that no
 * configured template, no options template and no other drops template uses; the same config
 * gives the same ids, for the daemon and for `config check`.
 */
import type {FlowBatch} from '../../flow/batch.js'
import {bindField} from './flow-fields.js'
import {boundTemplate, type ExportTemplate, type OptionsTemplateIds} from './flow-templates.js'

/** The fields a drops template carries, in the order they are appended, and their lengths. */
const DROP_FIELDS: readonly {name: string; length: number}[] = [
  {name: 'forwardingStatus', length: 1},
  {name: 'droppedPacketDeltaCount', length: 8},
  {name: 'droppedOctetDeltaCount', length: 8},
]

/** How far above its template's id a drops template's id starts. */
const DROPS_TEMPLATE_ID_OFFSET = 1000

const BIFLOW_DIRECTION = 239

/** The options templates' ids, which no drops template may take. */
export function optionsTemplateIdList(ids: OptionsTemplateIds): number[] {
  return [ids.stats, ids.sampling, ids.interfaceNames, ids.nfdumpInterfaceNames]
}

/** The drop fields a template of these element names lacks (none: it needs no drops template). */
export function missingDropFields(fieldNames: readonly string[]): {name: string; length: number}[] {
  const have = new Set(fieldNames.map((n) => n.toLowerCase()))
  return DROP_FIELDS.filter((f) => !have.has(f.name.toLowerCase()))
}

/**
 * The id of each template's drops template, by the template's id: for every template that lacks a
 * drop field, in the order given. `reserved`: the ids of the options templates.
 */
export function dropsTemplateIds(templates: readonly {id: number; fields: readonly {name: string}[]}[], reserved: readonly number[]): Map<number, number> {
  const used = new Set([...templates.map((t) => t.id), ...reserved])
  const out = new Map<number, number>()
  for (const t of templates) {
    if (missingDropFields(t.fields.map((f) => f.name)).length === 0) continue
    let id = t.id + DROPS_TEMPLATE_ID_OFFSET
    while (id <= 65535 && used.has(id)) id++
    if (id > 65535) for (id = 256; used.has(id); id++);
    used.add(id)
    out.set(t.id, id)
  }
  return out
}

/**
 * Template `t`'s drops template under `id`; undefined when it needs none: it names all three drop
 * fields, or it is a biflow template (RFC 5103: whose direction the drops were of is not said).
 */
export function dropsTemplate(t: ExportTemplate, id: number): ExportTemplate | undefined {
  if (t.fields.some((f) => f.element.id === BIFLOW_DIRECTION && f.enterpriseNumber === undefined)) return undefined
  const missing = missingDropFields(t.fields.map((f) => (f.enterpriseNumber === undefined ? f.element.name : '')))
  if (missing.length === 0) return undefined
  return boundTemplate(id, [...t.fields, ...missing.map((f) => bindField(f.name, f.length))], t.family)
}

/**
 * The rows of the batch (all of them, or those of `rows`) split by whether the flow had drops:
 * undefined when none had (the common case: no list is made).
 */
export function splitByDrops(batch: FlowBatch, rows?: Uint32Array): {without: Uint32Array; withDrops: Uint32Array} | undefined {
  const dropped = batch.drops?.packets
  if (!dropped) return undefined
  const count = rows ? rows.length : batch.length
  let any = false
  for (let r = 0; r < count && !any; r++) any = dropped[rows ? rows[r] : r] > 0
  if (!any) return undefined
  const without: number[] = []
  const withDrops: number[] = []
  for (let r = 0; r < count; r++) {
    const i = rows ? rows[r] : r
    if (dropped[i] > 0) withDrops.push(i)
    else without.push(i)
  }
  return {without: Uint32Array.from(without), withDrops: Uint32Array.from(withDrops)}
}
