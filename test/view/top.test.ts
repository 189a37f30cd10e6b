/**
 * How `flowctl top` follows the daemon's swaps, on a real meter set: counts added to a live map
 * that a drain then swaps out are read from that map once more, and the new live map's counts
 * are all new, so that no packet is missed or counted twice; a map that came and went unseen is
 * read from its pin while the drain that took it out has not committed, and counted as missed
 * once it is gone.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {rmSync} from 'node:fs'

import {compileMeter} from '../../src/bpf/compile.js'
import {FlowStore} from '../../src/bpf/flow-store.js'
import {KEY} from '../../src/bpf/layout.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {SlotHistory} from '../../src/bpf/slot-history.js'
import {FAMILIES} from '../../src/flow/record.js'
import {pathsFromEnv} from '../../src/paths.js'
import {LiveMapFollower} from '../../src/view/top.js'
import {requireE2e} from '../helpers/e2e.js'
import {flowKey4, flowValue4} from '../helpers/kernel-flows.js'

const key = (sport: number) => flowKey4(sport, {proto: 17, dport: 53, src: [198, 18, 60, 1], dst: [198, 18, 60, 2]})

describe('view/top: following the live map across swaps @e2e', function () {
  let pinRoot: string
  let set: MeterSet
  let store: FlowStore
  let history: SlotHistory
  let follower: LiveMapFollower

  before(function () {
    requireE2e(this)
  })

  beforeEach(async function () {
    pinRoot = `/sys/fs/bpf/fct-test-${randomBytes(3).toString('hex')}`
    const paths = {...pathsFromEnv(), pinRoot}
    set = MeterSet.for(paths, 'fct-top')
    await set.create((await compileMeter({capacity: 16}, paths.cacheDir)).objectPath, 16)
    store = FlowStore.open(set)
    history = new SlotHistory(set)
    follower = new LiveMapFollower(set.openFamily(4), 4, history)
  })

  afterEach(function () {
    follower?.close()
    history?.close()
    store?.close()
    rmSync(pinRoot, {recursive: true, force: true})
  })

  /** Sets a flow's counts in the live IPv4 map, as the program would have counted them. */
  function count(sport: number, packets: number, bytes: number): void {
    const maps = set.openFamily(4)
    const live = maps.openLive()
    try {
      const now = Number(process.hrtime.bigint())
      live.update(key(sport), flowValue4({packets, bytes, first: now, last: now}))
    } finally {
      live.close()
      maps.close()
    }
  }

  /**
   * One drain as the daemon makes it (src/daemon/drain.ts): each family's live map taken out and
   * pinned, then, with `commit`, drain_state written and the pins removed. The drained maps'
   * flows are dropped: only what top sees matters here.
   */
  function drain(commit = true): void {
    const gen = store.gen + 1
    const taken = FAMILIES.map((f) => store.swapOut(f, gen))
    if (commit) store.commit(gen, store.newCaches())
    for (const m of taken) m.close()
  }

  /** What top would take now: each flow's growth by source port, and the swaps followed and missed. */
  function sample(): {growth: Map<number, [number, number]>; followed: number; missed: number} {
    follower.watch()
    follower.settle()
    follower.readLive()
    const growth = new Map<number, [number, number]>()
    const swaps = follower.take((raw, packets, bytes) => {
      const sport = raw.readUInt16BE(KEY.sport.offset)
      const [p, b] = growth.get(sport) ?? [0, 0]
      growth.set(sport, [p + packets, b + bytes])
    })
    return {growth, ...swaps}
  }

  it('reads a swapped-out map to its end and the new one from zero: the growth between samples is exact', function () {
    count(1000, 5, 500)
    assert.deepEqual(sample(), {growth: new Map([[1000, [5, 500]]]), followed: 0, missed: 0})
    // Within one interval: flow 1000 grows by 3 packets in the old map, the daemon drains
    // (swaps), and flows 1000 and 2000 count on in the new map.
    count(1000, 8, 800)
    drain()
    count(1000, 2, 200)
    count(2000, 4, 400)
    assert.deepEqual(sample(), {
      growth: new Map([
        [1000, [3 + 2, 300 + 200]],
        [2000, [4, 400]],
      ]),
      followed: 1,
      missed: 0,
    })
    // No swap: only the growth since the previous sample.
    count(2000, 10, 1000)
    assert.deepEqual(sample(), {growth: new Map([[2000, [6, 600]]]), followed: 0, missed: 0})
  })

  it('holds every live map it saw swapped in: three drains between two samples, each map read to its end', function () {
    count(1000, 1, 100)
    sample()
    for (let i = 0; i < 3; i++) {
      count(1000, 1 + i, 100 * (1 + i)) // the live map of the moment (the first one already held 1)
      follower.watch()
      drain()
    }
    count(1000, 7, 700)
    follower.watch()
    // The first map grew by 0 since the first sample, then 2, 3 and 7 in the next three.
    assert.deepEqual(sample(), {growth: new Map([[1000, [12, 1200]]]), followed: 3, missed: 0})
  })

  it('reads the map a drain in progress took out, unseen while live, from its pin', function () {
    sample()
    drain()
    count(3000, 9, 900) // in a map top never sees live
    drain(false) // taken out and pinned, not committed yet
    count(3000, 1, 100)
    assert.deepEqual(sample(), {growth: new Map([[3000, [10, 1000]]]), followed: 2, missed: 0})
  })

  it('counts the maps that came and went unseen as missed', function () {
    count(1000, 1, 100)
    sample()
    count(1000, 2, 200)
    drain()
    count(4000, 5, 500) // lost to top: its map is gone by the next look
    drain()
    drain()
    count(5000, 1, 100)
    // The first map is read to its end; the maps of the first two drains are gone.
    assert.deepEqual(sample(), {
      growth: new Map([
        [1000, [1, 100]],
        [5000, [1, 100]],
      ]),
      followed: 1,
      missed: 2,
    })
  })
})
