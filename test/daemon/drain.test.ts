/**
 * The drain engine on real pinned maps, filled directly (no traffic): what it holds, what it
 * exports and why, and how it resumes a pass a crash interrupted.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {rmSync} from 'node:fs'

import {compileMeter} from '../../src/bpf/compile.js'
import {pathsFromEnv} from '../../src/paths.js'
import {C, FLOW_COUNTERS, FLOW_RECORD, K, R} from '../../src/bpf/layout.js'
import {BpfMap, numPossibleCpus} from '../../src/bpf/libbpf.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {MeterSetDrainer, type DrainPolicy} from '../../src/daemon/drain.js'
import type {FlowBatch} from '../../src/flow/batch.js'
import {requireE2e} from '../helpers/e2e.js'

interface Exported {
  sport: number
  dst: string
  packets: number
  bytes: number
  reason: number
  flags: number
  startUs: number
  endUs: number
}

const SECOND = 1e9
const policy: DrainPolicy = {idleTimeoutNs: 15 * SECOND, activeTimeoutNs: 60 * SECOND}

function nowNs(): number {
  return Number(process.hrtime.bigint())
}

describe('drain engine @e2e', function () {
  const pinRoot = `/sys/fs/bpf/fct-test-${randomBytes(3).toString('hex')}`
  let set: MeterSet
  let drainer: MeterSetDrainer | undefined
  let exported: Exported[]
  const cpus = () => numPossibleCpus()

  function sink(batch: FlowBatch): void {
    for (let i = 0; i < batch.length; i++) {
      exported.push({
        sport: batch.sport[i],
        dst: [...batch.dst.subarray(i * 4, i * 4 + 4)].join('.'),
        packets: batch.packets[i],
        bytes: batch.bytes[i],
        reason: batch.endReason[i],
        flags: batch.tcpFlags[i],
        startUs: batch.startUs[i],
        endUs: batch.endUs[i],
      })
    }
  }

  function key(sport: number): Buffer {
    const k = Buffer.alloc(20)
    k.writeUInt32LE(3, K.ifindex)
    k[K.proto] = 6
    k.writeUInt16BE(sport, K.sport)
    k.writeUInt16BE(80, K.dport)
    k.set([198, 18, 50, 1], K.src)
    k.set([198, 18, 50, 2], 16)
    return k
  }

  /** Writes flows into one of the flow maps, counted on CPU 0 (and `packets` more on the last CPU). */
  function put(mapName: string, flows: {sport: number; packets: number; bytes: number; first: number; last: number; flags?: number}[]): void {
    const map = BpfMap.open(set.mapPath(mapName))
    try {
      for (const f of flows) {
        const value = Buffer.alloc(FLOW_COUNTERS.size * cpus())
        const slot = (cpu: number, packets: number, bytes: number) => {
          const o = cpu * FLOW_COUNTERS.size
          value.writeBigUInt64LE(BigInt(packets), o + C.packets)
          value.writeBigUInt64LE(BigInt(bytes), o + C.bytes)
          value.writeBigUInt64LE(BigInt(f.first), o + C.firstSeen)
          value.writeBigUInt64LE(BigInt(f.last), o + C.lastSeen)
          value[o + C.tcpFlags] = f.flags ?? 0
        }
        slot(0, f.packets, f.bytes)
        if (cpus() > 1) slot(cpus() - 1, 1, 100)
        map.update(key(f.sport), value)
      }
    } finally {
      map.close()
    }
  }

  function liveName(): string {
    const maps = set.openFamily(4)
    try {
      return maps.live() === maps.a ? 'flows4_a' : 'flows4_b'
    } finally {
      maps.close()
    }
  }

  function count(mapName: string): number {
    const map = BpfMap.open(set.mapPath(mapName))
    try {
      return map.count()
    } finally {
      map.close()
    }
  }

  before(async function () {
    requireE2e(this)
    const paths = {...pathsFromEnv(), pinRoot}
    set = MeterSet.for(paths, 'fct-drain')
    await set.create((await compileMeter({capacity: 16}, paths.cacheDir)).objectPath)
  })

  beforeEach(function () {
    exported = []
  })

  after(function () {
    drainer?.close()
    rmSync(pinRoot, {recursive: true, force: true})
  })

  it('holds new flows in the pending map and empties the flow maps', function () {
    drainer = MeterSetDrainer.open(set, 'fct-drain', 7, sink)
    const now = nowNs()
    put(liveName(), [1, 2, 3].map((sport) => ({sport, packets: 10, bytes: 1000, first: now, last: now})))
    const report = drainer.drain(policy, sink)
    assert.equal(report.taken, 3)
    assert.equal(exported.length, 0)
    assert.equal(report.pending, 3)
    assert.equal(count('pending4'), 3)
    assert.equal(count('flows4_a') + count('flows4_b'), 0)
  })

  it('adds the next counts of a flow to what it holds', function () {
    const now = nowNs()
    put(liveName(), [{sport: 1, packets: 5, bytes: 500, first: now, last: now}])
    drainer!.drain(policy, sink)
    const pending = BpfMap.open(set.mapPath('pending4'))
    const record = pending.lookup(key(1))!
    pending.close()
    const extra = cpus() > 1 ? 2 : 0 // the last CPU's slot counted 1 packet each time
    assert.equal(Number(record.readBigUInt64LE(R.packets)), 15 + extra)
    assert.equal(Number(record.readBigUInt64LE(R.bytes)), 1500 + extra * 100)
  })

  it('exports idle flows (reason 1), FIN flows gone quiet (3) and old flows (2), each once', function () {
    const now = nowNs()
    put(liveName(), [
      {sport: 2, packets: 1, bytes: 40, first: now - 30 * SECOND, last: now - 20 * SECOND}, // idle
      {sport: 4, packets: 3, bytes: 120, first: now, last: now, flags: 0x11}, // FIN, new this drain
      {sport: 5, packets: 7, bytes: 700, first: now - 70 * SECOND, last: now}, // older than the active timeout
    ])
    drainer!.drain(policy, sink)
    const bySport = new Map(exported.map((e) => [e.sport, e]))
    assert.equal(bySport.get(5)?.reason, 2)
    assert.equal(bySport.get(4), undefined, 'a FIN flow that just had packets waits one drain')
    // Flow 2 was held with recent times; the new idle entry's last-seen does not move it back.
    assert.equal(bySport.get(2), undefined)
    exported = []
    drainer!.drain(policy, sink)
    assert.deepEqual(exported.map((e) => [e.sport, e.reason]), [[4, 3]])
  })

  it('converts kernel times to wall-clock microseconds', function () {
    const wallBefore = Date.now() * 1000
    const now = nowNs()
    put(liveName(), [{sport: 9, packets: 1, bytes: 60, first: now - 20 * SECOND, last: now - 16 * SECOND}])
    drainer!.drain(policy, sink)
    const e = exported.find((x) => x.sport === 9)!
    assert.equal(e.reason, 1)
    assert.ok(Math.abs(e.endUs - (wallBefore - 16e6)) < 50_000, `end ${e.endUs} vs ${wallBefore - 16e6}`)
    assert.ok(Math.abs(e.endUs - e.startUs - 4e6) < 1, 'duration kept exactly')
  })

  it('exports what found the cache full at once (reason 5)', function () {
    const now = nowNs()
    const held = drainer!.pending
    const room = 32 - held // pending capacity is twice the flow capacity of 16
    const flows = Array.from({length: room + 5}, (_, i) => ({sport: 1000 + i, packets: 1, bytes: 50, first: now, last: now}))
    // Two drains of 16 (the flow map's capacity) and one of the rest.
    for (let start = 0; start < flows.length; start += 16) {
      put(liveName(), flows.slice(start, start + 16))
      drainer!.drain(policy, sink)
    }
    assert.equal(drainer!.pending, 32)
    assert.deepEqual(exported.map((e) => e.reason), [5, 5, 5, 5, 5])
  })

  it('exports everything with the reason that applies at shutdown (4 when none other)', function () {
    const now = nowNs()
    put(liveName(), [{sport: 2000, packets: 2, bytes: 80, first: now, last: now, flags: 0x04}])
    const report = drainer!.drain(policy, sink, true)
    assert.equal(report.pending, 0)
    assert.equal(count('pending4'), 0)
    const reasons = new Map(exported.map((e) => [e.sport, e.reason]))
    assert.equal(reasons.get(2000), 3, 'RST seen')
    assert.equal(reasons.get(1), 4)
    assert.equal(exported.length, 32 + 1)
  })

  it('resumes a pass a crash interrupted without counting twice', function () {
    drainer!.close()
    drainer = undefined
    const now = nowNs()
    // The crash: pass 500 had merged flow 1 (pending record stamped 500) but not yet deleted it
    // from the map it was reading, now the idle one; flow 2 was not merged yet.
    const idleName = liveName() === 'flows4_a' ? 'flows4_b' : 'flows4_a'
    put(idleName, [
      {sport: 1, packets: 4, bytes: 400, first: now, last: now},
      {sport: 2, packets: 6, bytes: 600, first: now, last: now},
    ])
    const pending = BpfMap.open(set.mapPath('pending4'))
    const record = Buffer.alloc(FLOW_RECORD.size)
    record.writeBigUInt64LE(4n + (cpus() > 1 ? 1n : 0n), R.packets)
    record.writeBigUInt64LE(400n, R.bytes)
    record.writeBigUInt64LE(BigInt(now), R.firstSeen)
    record.writeBigUInt64LE(BigInt(now), R.lastSeen)
    record.writeBigUInt64LE(500n, R.drainGen)
    pending.update(key(1), record)
    pending.close()
    const journal = BpfMap.open(set.mapPath('drain_state'))
    const state = Buffer.alloc(16)
    state.writeBigUInt64LE(500n, 0)
    state.writeUInt32LE(1, 8)
    journal.update(Buffer.alloc(4), state)
    journal.close()

    drainer = MeterSetDrainer.open(set, 'fct-drain', 7, sink)
    assert.equal(count(idleName), 0, 'the interrupted pass finished')
    drainer.drain(policy, sink, true)
    const packets = new Map(exported.map((e) => [e.sport, e.packets]))
    const extra = cpus() > 1 ? 1 : 0
    assert.equal(packets.get(1), 4 + extra, 'flow 1 once')
    assert.equal(packets.get(2), 6 + extra)
  })
})
