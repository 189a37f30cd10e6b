/**
 * The drop table: drops taken from the kernel wait beside the flow cache for their flow's export,
 * which takes them with the forwardingStatus of its most frequent reason; drops whose flow never
 * shows up are let go as unmetered after one more drain.
 */
import assert from 'node:assert/strict'

import type {DropEntry} from '../../src/bpf/drops.js'
import {FLOW_KEY4} from '../../src/bpf/layout.js'
import {DropTable} from '../../src/daemon/drop-table.js'
import {FlowBatch} from '../../src/flow/batch.js'
import {DROPPED} from '../../src/flow/drop-reasons.js'

const NAMES = new Map([
  [12, 'NETFILTER_DROP'],
  [15, 'IP_INHDR'],
  [88, 'IP_INNOROUTES'],
])

function key4(sport: number): Buffer {
  const key = Buffer.alloc(FLOW_KEY4.size)
  key.writeUInt32LE(7, FLOW_KEY4.fields.ifindex.offset)
  key[FLOW_KEY4.fields.proto.offset] = 17
  key.writeUInt16BE(sport, FLOW_KEY4.fields.sport.offset)
  key.writeUInt16LE(1, FLOW_KEY4.fields.samplingInterval.offset)
  return key
}

function drop(sport: number, reason: number, packets: number, ttlExpired = false): DropEntry {
  return {family: 4, flowKey: key4(sport), ifindex: 7, direction: 0, reason, ttlExpired, packets, bytes: packets * 100}
}

/** A batch row for the flow of `sport`, as an export writes it, with the table's drops attached. */
function exportRow(table: DropTable, batch: FlowBatch, sport: number): number {
  const j = batch.length++
  batch.fwdStatus[j] = 64
  const keys = Buffer.concat([Buffer.alloc(8), key4(sport)])
  table.attach(batch, j, keys, 8, FLOW_KEY4.size)
  return j
}

describe('drop table', function () {
  it("gives an exported flow its drops, summed over drains, and its most frequent reason's code", function () {
    const table = new DropTable(NAMES)
    const tallies = table.add([drop(1000, 12, 3), drop(1000, 88, 1)], 1)
    assert.deepEqual(
      tallies.map((t) => [t.reason, t.packets, t.bytes]),
      [
        ['NETFILTER_DROP', 3, 300],
        ['IP_INNOROUTES', 1, 100],
      ],
    )
    table.add([drop(1000, 12, 2)], 2)
    const batch = new FlowBatch(4, 4)
    const j = exportRow(table, batch, 1000)
    assert.equal(batch.drops!.packets[j], 6)
    assert.equal(batch.drops!.bytes[j], 600)
    assert.equal(batch.drops!.reason[j], 'NETFILTER_DROP')
    assert.equal(batch.fwdStatus[j], DROPPED.aclDeny)
    assert.equal(table.size, 0, 'the drops went with the flow')
  })

  it('leaves a flow without drops as it was, and makes no drop columns for it', function () {
    const table = new DropTable(NAMES)
    table.add([drop(1000, 12, 1)], 1)
    const batch = new FlowBatch(4, 4)
    exportRow(table, batch, 2000)
    assert.equal(batch.drops, undefined)
    assert.equal(batch.fwdStatus[0], 64)
    exportRow(table, batch, 1000)
    assert.equal(batch.drops!.packets[0], 0, 'the row before has no drops')
    batch.clear()
    assert.equal(batch.drops!.reason[1], undefined, 'a cleared batch forgets its rows')
  })

  it('names an expired TTL, and a reason the kernel did not name by its number', function () {
    const table = new DropTable(NAMES)
    table.add([drop(1000, 15, 2, true), drop(2000, 999, 1)], 1)
    const batch = new FlowBatch(4, 4)
    const ttl = exportRow(table, batch, 1000)
    const other = exportRow(table, batch, 2000)
    assert.equal(batch.drops!.reason[ttl], 'TTL_EXPIRED')
    assert.equal(batch.fwdStatus[ttl], DROPPED.badTtl)
    assert.equal(batch.drops!.reason[other], 'REASON_999')
    assert.equal(batch.fwdStatus[other], DROPPED.unknown)
  })

  it('lets drops without a flow go as unmetered, after waiting one drain for it, and keeps those of held flows', function () {
    const table = new DropTable(NAMES)
    table.add([drop(1000, 88, 4), drop(2000, 12, 1)], 5)
    const held = (_family: number, key: Buffer) => key.readUInt16BE(FLOW_KEY4.fields.sport.offset) === 2000
    assert.deepEqual(table.sweep(5, held), [], 'the drain that took them waits')
    assert.deepEqual(table.sweep(6, held), [{reason: 'IP_INNOROUTES', ifindex: 7, packets: 4, bytes: 400}])
    assert.equal(table.size, 1, 'the held flow keeps its drops')
  })
})
