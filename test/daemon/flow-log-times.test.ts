/**
 * A flow's times in the flow log and in IPFIX are the same milliseconds: the log's `start` and
 * `end` and flowStartMilliseconds / flowEndMilliseconds of the same FlowBatch row, for times
 * whose microseconds round up (where rounding and truncating part).
 */
import assert from 'node:assert/strict'

import {batchToRecords} from '../../src/daemon/flow-log.js'
import {InterfaceNames} from '../../src/daemon/interfaces.js'
import {FlowBatch} from '../../src/flow/batch.js'
import {bindField} from '../../src/ipfix/export/flow-fields.js'
import {pathsFromEnv} from '../../src/paths.js'

/** Epoch microseconds of each row: .6, .5 and .4 of a millisecond past it, and a whole one. */
const TIMES: [number, number][] = [
  [1_700_000_000_123_600, 1_700_000_000_456_500],
  [1_700_000_000_999_999, 1_700_000_001_000_400],
  [1_700_000_002_000_000, 1_700_000_002_000_001],
]

/** dateTimeMilliseconds (RFC 7011 §6.1.9): the milliseconds of the time, a fraction dropped. */
const millis = (us: number) => (us - (us % 1000)) / 1000

describe('flow log and IPFIX times', function () {
  const batch = new FlowBatch(4, TIMES.length)
  TIMES.forEach(([start, end], i) => {
    batch.startUs[i] = start
    batch.endUs[i] = end
    batch.proto[i] = 17
  })
  batch.length = TIMES.length

  /** The field's 8-byte value for each row, as the exporter writes it (one record at a time, and a column at a time). */
  function ipfix(name: string): {records: number[]; column: number[]} {
    const field = bindField(name)
    assert.equal(field.length, 8)
    const records = TIMES.map((_, i) => {
      const buf = Buffer.alloc(8)
      field.write(batch, i, buf, 0)
      return Number(buf.readBigUInt64BE(0))
    })
    const columns = Buffer.alloc(8 * TIMES.length)
    field.writeColumn(batch, 0, TIMES.length, columns, 0, 8)
    return {records, column: TIMES.map((_, i) => Number(columns.readBigUInt64BE(8 * i)))}
  }

  it('are the same truncated milliseconds in the log as in flowStartMilliseconds and flowEndMilliseconds', function () {
    const log = batchToRecords(batch, new InterfaceNames(pathsFromEnv({})))
    const starts = TIMES.map(([start]) => millis(start))
    const ends = TIMES.map(([, end]) => millis(end))
    assert.deepEqual(starts, [1_700_000_000_123, 1_700_000_000_999, 1_700_000_002_000])
    assert.deepEqual(
      log.map((r) => [r.start, r.end]),
      starts.map((s, i) => [s, ends[i]]),
    )
    assert.deepEqual(ipfix('flowStartMilliseconds'), {records: starts, column: starts})
    assert.deepEqual(ipfix('flowEndMilliseconds'), {records: ends, column: ends})
  })
})
