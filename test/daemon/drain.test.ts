/**
 * The drain engine on real pinned maps, filled directly (no traffic): what it holds, what it
 * exports and why, and how a daemon killed at any step of a drain loses nothing. Each test has a
 * meter set of its own.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, rmSync} from 'node:fs'

import {compileMeter} from '../../src/bpf/compile.js'
import {FlowStore} from '../../src/bpf/flow-store.js'
import {readDrainState} from '../../src/bpf/layout.js'
import {BpfMap} from '../../src/bpf/libbpf.js'
import {FIRST_PENDING_CHUNK_BYTES, MeterSet} from '../../src/bpf/meter-set.js'
import {MeterSetDrainer, type DrainPolicy} from '../../src/daemon/drain.js'
import {FLOOR_ENTRIES, HISTORY} from '../../src/daemon/live-maps.js'
import type {FlowBatch} from '../../src/flow/batch.js'
import {pathsFromEnv} from '../../src/paths.js'
import {requireE2e} from '../helpers/e2e.js'
import {countCreated, flowKey4, flowValue4, type FlowCounts} from '../helpers/kernel-flows.js'

interface Exported {
  sport: number
  packets: number
  bytes: number
  reason: number
  startUs: number
  endUs: number
  peer: number
  minTtl: number
  maxTtl: number
  samplingInterval: number
}

interface TestFlow extends FlowCounts {
  sport: number
}

const SECOND = 1e9
const policy: DrainPolicy = {idleTimeoutNs: 15 * SECOND, activeTimeoutNs: 60 * SECOND}

function nowNs(): number {
  return Number(process.hrtime.bigint())
}

const key = (sport: number) => flowKey4(sport)

const value = (f: TestFlow) => flowValue4(f)

describe('drain engine @e2e', function () {
  let pinRoot: string
  let set: MeterSet
  let drainer: MeterSetDrainer | undefined
  let exported: Exported[]

  function sink(batch: FlowBatch): void {
    for (let i = 0; i < batch.length; i++) {
      exported.push({
        sport: batch.sport[i],
        packets: batch.packets[i],
        bytes: batch.bytes[i],
        reason: batch.endReason[i],
        startUs: batch.startUs[i],
        endUs: batch.endUs[i],
        peer: batch.peerIfindex[i],
        minTtl: batch.minTtl[i],
        maxTtl: batch.maxTtl[i],
        samplingInterval: batch.samplingInterval[i],
      })
    }
  }

  /** Writes flows into the live IPv4 flow map, and counts them as created, as the program would. */
  function put(flows: TestFlow[]): void {
    const maps = set.openFamily(4)
    const live = maps.openLive()
    try {
      for (const f of flows) live.update(key(f.sport), value(f))
    } finally {
      live.close()
      maps.close()
    }
    countCreated(set, 4, flows.length)
  }

  function liveCount(): number {
    const maps = set.openFamily(4)
    const live = maps.openLive()
    try {
      return live.count()
    } finally {
      live.close()
      maps.close()
    }
  }

  function committed(): ReturnType<typeof readDrainState> {
    const map = set.openMap('drain_state')
    try {
      return readDrainState(map)
    } finally {
      map.close()
    }
  }

  function open(): MeterSetDrainer {
    drainer?.close()
    drainer = MeterSetDrainer.open(set, 'fct-drain', 7, sink)
    return drainer
  }

  before(function () {
    requireE2e(this)
  })

  beforeEach(async function () {
    exported = []
    pinRoot = `/sys/fs/bpf/fct-test-${randomBytes(3).toString('hex')}`
    const paths = {...pathsFromEnv(), pinRoot}
    set = MeterSet.for(paths, 'fct-drain')
    await set.create((await compileMeter({capacity: 16}, paths.cacheDir)).objectPath, 16)
  })

  afterEach(function () {
    drainer?.close()
    drainer = undefined
    rmSync(pinRoot, {recursive: true, force: true})
  })

  it('holds new flows in its snapshot, leaves the live map empty and no drained map pinned', async function () {
    const now = nowNs()
    put([1, 2, 3].map((sport) => ({sport, packets: 10, bytes: 1000, first: now, last: now})))
    const report = await open().drain(policy, sink)
    assert.equal(report.taken, 3)
    assert.equal(exported.length, 0)
    assert.equal(report.pending, 3)
    assert.deepEqual({gen: committed().gen, flows4: committed().flows4}, {gen: 1, flows4: 3})
    assert.equal(liveCount(), 0)
    assert.deepEqual(set.drainMaps(), [])
  })

  it('exports each flow with the sampling interval its key carries (0, in a key of a layout-2 set: 1), as distinct flows', async function () {
    const now = nowNs()
    const maps = set.openFamily(4)
    const live = maps.openLive()
    try {
      for (const [samplingInterval, packets] of [
        [10, 3],
        [1, 5],
        [0, 7],
      ]) {
        live.update(flowKey4(1, {samplingInterval}), value({sport: 1, packets, bytes: 100 * packets, first: now, last: now}))
      }
    } finally {
      live.close()
      maps.close()
    }
    await open().drain(policy, sink, true)
    assert.deepEqual(exported.map((e) => [e.samplingInterval, e.packets]).sort(), [
      [1, 5],
      [1, 7],
      [10, 3],
    ])
  })

  it('keeps the snapshot in the chunk size the meter set was made with (older sets: 32768 B)', async function () {
    // Replace this test's set with one made as the first layout-2 flowctl made it.
    rmSync(pinRoot, {recursive: true, force: true})
    const paths = {...pathsFromEnv(), pinRoot}
    set = MeterSet.for(paths, 'fct-drain')
    await set.create((await compileMeter({capacity: 16, pendingChunkBytes: FIRST_PENDING_CHUNK_BYTES}, paths.cacheDir)).objectPath, 16)
    assert.equal(set.pendingChunkBytes(), FIRST_PENDING_CHUNK_BYTES)
    set.verifyLayout()
    const now = nowNs()
    put([1, 2, 3].map((sport) => ({sport, packets: 10, bytes: 1000, first: now, last: now})))
    await open().drain(policy, sink)
    // A new daemon reads that snapshot back, adds the next counts, and exports the sums.
    put([{sport: 2, packets: 1, bytes: 100, first: now + 1000, last: now + 1000}])
    const d = open()
    await d.drain(policy, sink)
    await d.drain(policy, sink, true)
    assert.deepEqual(
      exported.map((e) => [e.sport, e.packets, e.bytes]).sort((a, b) => a[0] - b[0]),
      [
        [1, 10, 1000],
        [2, 11, 1100],
        [3, 10, 1000],
      ],
    )
  })

  it('adds the next counts of a flow to what it holds, and keeps the first packet fields and the TTL range', async function () {
    const now = nowNs()
    const d = open()
    put([{sport: 1, packets: 5, bytes: 500, first: now, last: now, peer: 7, ttl: [60, 61]}])
    await d.drain(policy, sink)
    put([{sport: 1, packets: 10, bytes: 1000, first: now + 1000, last: now + 2000, peer: 9, ttl: [50, 58]}])
    await d.drain(policy, sink)
    await d.drain(policy, sink, true)
    assert.deepEqual(
      exported.map((e) => [e.sport, e.packets, e.bytes, e.peer, e.minTtl, e.maxTtl]),
      [[1, 15, 1500, 7, 50, 61]],
    )
  })

  it('exports idle flows (reason 1), FIN flows gone quiet (3) and old flows (2), each once', async function () {
    const now = nowNs()
    const d = open()
    put([
      {sport: 2, packets: 1, bytes: 40, first: now - 30 * SECOND, last: now - 20 * SECOND}, // idle
      {sport: 4, packets: 3, bytes: 120, first: now, last: now, flags: 0x11}, // FIN, new this drain
      {sport: 5, packets: 7, bytes: 700, first: now - 70 * SECOND, last: now}, // older than the active timeout
    ])
    await d.drain(policy, sink)
    assert.deepEqual(exported.map((e) => [e.sport, e.reason]).sort(), [
      [2, 1],
      [5, 2],
    ])
    exported = []
    await d.drain(policy, sink)
    assert.deepEqual(
      exported.map((e) => [e.sport, e.reason]),
      [[4, 3]],
      'a FIN flow that just had packets waits one drain',
    )
  })

  it('converts kernel times to wall-clock microseconds', async function () {
    const wallBefore = Date.now() * 1000
    const now = nowNs()
    put([{sport: 9, packets: 1, bytes: 60, first: now - 20 * SECOND, last: now - 16 * SECOND}])
    await open().drain(policy, sink)
    const e = exported.find((x) => x.sport === 9)!
    assert.equal(e.reason, 1)
    assert.ok(Math.abs(e.endUs - (wallBefore - 16e6)) < 50_000, `end ${e.endUs} vs ${wallBefore - 16e6}`)
    assert.ok(Math.abs(e.endUs - e.startUs - 4e6) < 1, 'duration kept exactly')
  })

  it('exports what finds the cache full at once (reason 5)', async function () {
    const now = nowNs()
    const d = open()
    // The cache holds twice the flow map's capacity of 16: three drains of 16, 16 and 5.
    const flows = Array.from({length: 37}, (_, i) => ({sport: 1000 + i, packets: 1, bytes: 50, first: now, last: now}))
    for (let start = 0; start < flows.length; start += 16) {
      put(flows.slice(start, start + 16))
      await d.drain(policy, sink)
    }
    assert.equal(d.pending, 32)
    assert.deepEqual(
      exported.map((e) => e.reason),
      [5, 5, 5, 5, 5],
    )
  })

  it('exports everything at shutdown, with the reason that applies (4 when none other)', async function () {
    const now = nowNs()
    const d = open()
    put([{sport: 1, packets: 1, bytes: 40, first: now, last: now}])
    await d.drain(policy, sink)
    put([{sport: 2000, packets: 2, bytes: 80, first: now, last: now, flags: 0x04}])
    const report = await d.drain(policy, sink, true)
    assert.equal(report.pending, 0)
    assert.equal(committed().flows4, 0)
    assert.deepEqual(
      new Map(exported.map((e) => [e.sport, e.reason])),
      new Map([
        [1, 4],
        [2000, 3],
      ]),
    )
  })

  it('lets one writer at a time open the meter set (a reader is never in the way), and the next once it closes', async function () {
    const d = open()
    assert.throws(() => FlowStore.open(set), {
      message: `another flowctl (pid ${process.pid}) is writing the flows of namespace 'fct-drain' (a flush, or a layout-1 meter carried over): wait for it to finish, then try again`,
    })
    const reader = FlowStore.openReader(set)
    try {
      await d.drain(policy, sink) // the writer commits beside the reader
      assert.equal(reader.readCommitted().gen, 1)
      assert.throws(() => reader.commit(2, reader.newCaches()), /opened to read: it cannot be written/)
    } finally {
      reader.close()
    }
    d.close()
    drainer = undefined
    FlowStore.open(set).close()
  })

  it('a daemon killed after the swap, before the commit: the next one merges the drained map once', async function () {
    const now = nowNs()
    await open().drain(policy, sink) // a committed drain (gen 1), empty
    // Killed: the kernel lets its lock on the meter set go.
    drainer!.close()
    drainer = undefined
    put([{sport: 1, packets: 4, bytes: 400, first: now, last: now}])
    // The cut-short drain 2: live map swapped out and pinned, never committed.
    const store = FlowStore.open(set)
    store.swapOut(4, 2).close()
    store.close()
    assert.equal(set.drainMaps().length, 1)
    put([{sport: 1, packets: 6, bytes: 600, first: now, last: now}])
    const d = open()
    assert.equal(set.drainMaps().length, 0, 'merged and committed at start')
    assert.equal(committed().gen, 2)
    await d.drain(policy, sink, true)
    assert.deepEqual(
      exported.map((e) => [e.sport, e.packets]),
      [[1, 10]],
    )
  })

  it('a daemon killed after pinning the live map, before the swap: the map is counted once, when it is drained', async function () {
    const now = nowNs()
    await open().drain(policy, sink)
    put([{sport: 1, packets: 4, bytes: 400, first: now, last: now}])
    const maps = set.openFamily(4)
    const live = maps.openLive()
    live.pin(set.drainMapPath(4, 2))
    live.close()
    maps.close()
    const d = open()
    assert.equal(set.drainMaps().length, 0, 'unpinned, left live')
    await d.drain(policy, sink, true)
    assert.deepEqual(
      exported.map((e) => [e.sport, e.packets]),
      [[1, 4]],
    )
  })

  it('a daemon killed after its commit, before the clean-up: old chunks and pins go, nothing is counted twice', async function () {
    const now = nowNs()
    const d = open()
    put([{sport: 1, packets: 4, bytes: 400, first: now, last: now}])
    await d.drain(policy, sink)
    put([{sport: 2, packets: 6, bytes: 600, first: now, last: now}])
    await d.drain(policy, sink)
    // Simulate a stale pin of an already committed drain.
    const maps = set.openFamily(4)
    const stale = BpfMap.createLike(maps.openLive().info)
    maps.close()
    stale.pin(set.drainMapPath(4, 1))
    stale.update(key(1), value({sport: 1, packets: 100, bytes: 1, first: now, last: now}))
    stale.close()
    const again = open()
    assert.ok(!existsSync(set.drainMapPath(4, 1)))
    await again.drain(policy, sink, true)
    assert.deepEqual(exported.map((e) => [e.sport, e.packets]).sort(), [
      [1, 4],
      [2, 6],
    ])
  })

  describe("idle meter sets and the live maps' sizes", function () {
    /** The ids of both families' live maps now. */
    function liveIds(): number[] {
      return ([4, 6] as const).map((family) => {
        const maps = set.openFamily(family)
        try {
          return maps.liveId()
        } finally {
          maps.close()
        }
      })
    }

    function liveSize(): number {
      const maps = set.openFamily(4)
      const live = maps.openLive()
      try {
        return live.info.maxEntries
      } finally {
        live.close()
        maps.close()
      }
    }

    it('leaves the live maps of a set with no new flow in place: no swap, no fresh map, no commit', async function () {
      const now = nowNs()
      const d = open()
      put([1, 2, 3].map((sport) => ({sport, packets: 1, bytes: 100, first: now, last: now})))
      assert.equal((await d.drain(policy, sink)).swapped, true)
      const ids = liveIds()
      for (let i = 0; i < 3; i++) {
        const report = await d.drain(policy, sink)
        assert.deepEqual([report.swapped, report.taken, report.pending], [false, 0, 3])
      }
      assert.deepEqual(liveIds(), ids, 'the same live maps')
      assert.equal(committed().gen, 1, 'nothing committed')
      assert.deepEqual(set.drainMaps(), [])
    })

    it('takes a flow whose count the drain did not see yet at the next drain that sees it, once', async function () {
      const now = nowNs()
      const d = open()
      await d.drain(policy, sink)
      // The program inserted a flow and is about to count it when the drain reads the counters.
      const maps = set.openFamily(4)
      const live = maps.openLive()
      live.update(key(7), value({sport: 7, packets: 2, bytes: 200, first: now, last: now}))
      live.close()
      maps.close()
      const quiet = await d.drain(policy, sink)
      assert.deepEqual([quiet.swapped, quiet.taken], [false, 0])
      assert.equal(liveCount(), 1, 'the flow stays in the live map')
      countCreated(set, 4, 1)
      const next = await d.drain(policy, sink)
      assert.deepEqual([next.swapped, next.taken], [true, 1])
      await d.drain(policy, sink, true)
      assert.deepEqual(
        exported.map((e) => [e.sport, e.packets, e.bytes]),
        [[7, 2, 200]],
      )
    })

    it('exports the flows an idle set holds as they end, and commits that under a drain number that swaps both maps', async function () {
      const now = nowNs()
      const d = open()
      put([{sport: 1, packets: 1, bytes: 100, first: now, last: now}])
      await d.drain(policy, sink)
      const ids = liveIds()
      const report = await d.drain({idleTimeoutNs: 1, activeTimeoutNs: 60 * SECOND}, sink)
      assert.deepEqual(
        exported.map((e) => [e.sport, e.reason]),
        [[1, 1]],
      )
      assert.deepEqual([report.swapped, report.pending], [true, 0])
      assert.deepEqual({gen: committed().gen, flows4: committed().flows4}, {gen: 2, flows4: 0})
      assert.ok(
        liveIds().every((id, i) => id !== ids[i]),
        'both live maps swapped',
      )
      assert.deepEqual(set.drainMaps(), [])
    })

    it('sizes the fresh maps to the traffic: kept at first, the floor once quiet, twice to four times what a drain took', async function () {
      this.timeout(120_000)
      rmSync(pinRoot, {recursive: true, force: true})
      const paths = {...pathsFromEnv(), pinRoot}
      set = MeterSet.for(paths, 'fct-drain')
      await set.create((await compileMeter({capacity: 65_536}, paths.cacheDir)).objectPath, 65_536)
      const now = nowNs()
      // (An interval of 1 ms: drains a few ms apart count as whole intervals, as the daemon's are.)
      drainer = MeterSetDrainer.open(set, 'fct-drain', 7, sink, {intervalMs: 1})
      const d = drainer
      put([{sport: 1, packets: 1, bytes: 100, first: now, last: now}])
      await d.drain(policy, sink)
      assert.equal(liveSize(), 65_536, "a daemon's first swap keeps the size in place (it does not know the traffic yet)")
      for (let i = 0; i < HISTORY + 1; i++) await d.drain(policy, sink)
      assert.equal(liveSize(), FLOOR_ENTRIES, 'quiet: swapped for the floor')
      const flows = Array.from({length: 3000}, (_, i) => ({sport: 10_000 + i, packets: 1, bytes: 60, first: now, last: now}))
      put(flows)
      assert.equal(d.filling(), true, 'past half of 4096')
      const report = await d.drain(policy, sink)
      assert.equal(report.taken, 3000)
      assert.deepEqual(report.liveEntries, {4: 8192, 6: FLOOR_ENTRIES}, 'IPv4: a power of two >= 2 x 3000; IPv6 took nothing')
      assert.equal(liveSize(), 8192)
      assert.equal(d.filling(), false)
    })
  })
})
