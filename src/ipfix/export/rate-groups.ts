/**
 * The flows of a batch by the sampling rate they were counted at: each rate's flows go out in
 * messages of their own, headed by the rate's options record when it is not the one last
 * advertised in the domain (sampling-options.ts). A batch nearly always holds one rate: then
 * the whole batch is one group, and no list of rows is made.
 */
import type {FlowBatch} from '../../flow/batch.js'
import {advertisedInterval} from './sampling-options.js'

/** Flows of a batch counted at one rate. */
export interface RateGroup {
  /** The N of 1-in-N sampling, as advertised (never 0). */
  interval: number
  /** The rows of the batch, in order; undefined: every row of the batch. */
  rows?: Uint32Array
}

/**
 * The batch's flows by rate. The group of `first` (the rate last advertised in the domain, when
 * the batch has it) comes first, so that no record of the rate has to be sent again before it;
 * the others follow in the order their rates first appear.
 */
export function rateGroups(batch: FlowBatch, first?: number): RateGroup[] {
  const n = batch.length
  if (n === 0) return []
  const column = batch.samplingInterval
  const one = column[0]
  let mixed = false
  for (let i = 1; i < n && !mixed; i++) mixed = column[i] !== one
  if (!mixed) return [{interval: advertisedInterval(one)}]
  const byInterval = new Map<number, number[]>()
  for (let i = 0; i < n; i++) {
    const interval = advertisedInterval(column[i])
    let rows = byInterval.get(interval)
    if (!rows) byInterval.set(interval, (rows = []))
    rows.push(i)
  }
  const groups = [...byInterval].map(([interval, rows]) => ({interval, rows: Uint32Array.from(rows)}))
  const at = first === undefined ? -1 : groups.findIndex((g) => g.interval === first)
  if (at > 0) groups.unshift(...groups.splice(at, 1))
  return groups
}
