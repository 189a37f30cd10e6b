/**
 * The one way TypeScript reads a flow map, live or drained: the drain, the other writers
 * (flow-store.ts: `flush`, the flows a detach would lose), `top` and `meter status` all read
 * through forEachFlow, in read batches (one bpf() call each), each value decoded by the layout's
 * reader (layout.ts). `dump` reads the maps through `bpftool -j` instead (flows.ts), as its
 * contract says.
 */
import type {FlowSample} from '../flow/record.js'
import {emptySample, readFlowSample} from './layout.js'
import type {BpfMap} from './libbpf.js'
import {forEachBatchAhead, ReadAhead} from './read-ahead.js'

/** Entries of a read batch unless told otherwise. */
const BATCH_ENTRIES = 8192

/**
 * Sees one flow: its key at `keyAt` of `keys`, its value as a FlowSample (reused: copy what you
 * keep), and its number in its read batch.
 */
export type FlowVisitor = (keys: Buffer, keyAt: number, sample: FlowSample, i: number) => void

export interface FlowMapReadOptions {
  /** Entries per read batch (a batch can outgrow it: a read retries with room for a whole hash bucket). */
  batchEntries?: number
  /** Sees each read batch's keys (`count`, `keySize` apart) before its flows. */
  onBatch?: (keys: Buffer, count: number) => void
  /** Runs after each read batch's flows: a long read lets other work in between. */
  afterBatch?: () => void
  /**
   * Reads the next batches in a thread of their own meanwhile (read-ahead.ts): for a map no
   * program writes any more (a drained one), read to its end.
   */
  readAhead?: boolean
}

/** Reads every entry of a flow map, calling `onFlow` with each; returns the entries read. */
export function forEachFlow(map: BpfMap, onFlow: FlowVisitor, options: FlowMapReadOptions = {}): number {
  const {batchEntries = BATCH_ENTRIES, onBatch, afterBatch, readAhead = false} = options
  const keySize = map.info.keySize
  const valueSize = map.info.valueSize
  const sample = emptySample()
  const handle = (keys: Buffer, values: Buffer, n: number) => {
    onBatch?.(keys, n)
    for (let i = 0; i < n; i++) onFlow(keys, i * keySize, readFlowSample(values, i * valueSize, sample), i)
    afterBatch?.()
  }
  return readAhead ? ReadAhead.shared().forEachBatch(map, handle, batchEntries) : map.forEachBatch(handle, {batchEntries})
}

/**
 * forEachFlow() of a map no program writes any more (a drained one), the next read batch read
 * meanwhile in one of libuv's threads (read-ahead.ts, forEachBatchAhead): resolves with the
 * entries read. The caller's work runs between awaits; nothing else may read with its buffers.
 */
export function forEachFlowAhead(map: BpfMap, onFlow: FlowVisitor, options: Omit<FlowMapReadOptions, 'readAhead'> = {}): Promise<number> {
  const {batchEntries = BATCH_ENTRIES, onBatch, afterBatch} = options
  const keySize = map.info.keySize
  const valueSize = map.info.valueSize
  const sample = emptySample()
  return forEachBatchAhead(
    map,
    (keys, values, n) => {
      onBatch?.(keys, n)
      for (let i = 0; i < n; i++) onFlow(keys, i * keySize, readFlowSample(values, i * valueSize, sample), i)
      afterBatch?.()
    },
    batchEntries,
  )
}
