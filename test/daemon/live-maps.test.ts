/**
 * LiveMaps: when a meter set's live maps may hold flows, how big the fresh ones get, and when one
 * is filling up, from the program's counters alone (no kernel here: the counters are numbers).
 * An interval of 1 ms makes every swap a whole interval's demand, whatever the time between calls.
 */
import assert from 'node:assert/strict'

import {FILL_MARK, FLOOR_ENTRIES, HISTORY, LiveMaps} from '../../src/daemon/live-maps.js'

const created = (v4: number, v6 = 0) => ({4: v4, 6: v6})

describe('daemon/live-maps', function () {
  it('says a live map may hold flows until a swap, and then only once its counter moved', function () {
    const live = new LiveMaps(1 << 20, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES}, 1)
    assert.equal(live.mayHoldFlows(created(5, 5)), true, 'never swapped by this daemon')
    live.swapped(created(5, 5), 0, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES})
    assert.equal(live.mayHoldFlows(created(5, 5)), false)
    assert.equal(live.mayHoldFlows(created(5, 6)), true, 'an IPv6 flow')
    assert.equal(live.mayHoldFlows(created(6, 5)), true, 'an IPv4 flow')
  })

  it('sizes a fresh map at a power of two from twice the demand, within the floor and the capacity', function () {
    const live = new LiveMaps(1 << 20, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES}, 1)
    live.swapped(created(0), 0, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES})
    assert.deepEqual(live.freshEntries(created(100), 0), {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES})
    assert.deepEqual(live.freshEntries(created(3000), 0), {4: 8192, 6: FLOOR_ENTRIES})
    assert.deepEqual(live.freshEntries(created(5_000_000), 0), {4: 1 << 20, 6: FLOOR_ENTRIES}, 'the capacity is the ceiling')
    const small = new LiveMaps(16, {4: 16, 6: 16}, 1)
    assert.deepEqual(small.freshEntries(created(0), 0), {4: 16, 6: 16}, 'a capacity under the floor is the size')
  })

  it('keeps the size in place at the first swap, and the largest demand of the last drains', function () {
    const live = new LiveMaps(1 << 20, {4: 65_536, 6: FLOOR_ENTRIES}, 1)
    assert.deepEqual(live.freshEntries(created(1), 0), {4: 65_536, 6: FLOOR_ENTRIES})
    live.swapped(created(1), 0, {4: 65_536, 6: FLOOR_ENTRIES})
    let count = 1
    for (let i = 0; i < HISTORY; i++) {
      assert.equal(live.oversized(), false, `drain ${i}: the first demand is still among the last ${HISTORY}`)
      live.swapped(created(++count), 0, live.freshEntries(created(count), 0))
    }
    assert.equal(live.oversized(), true)
    assert.deepEqual(live.freshEntries(created(count), 0), {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES})
  })

  it('counts a map that filled while packets overflowed as twice its size', function () {
    const live = new LiveMaps(1 << 20, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES}, 1)
    live.swapped(created(0), 10, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES})
    assert.equal(live.freshEntries(created(FLOOR_ENTRIES), 10)[4], 2 * FLOOR_ENTRIES, 'full, nothing overflowed: twice what it took')
    assert.equal(live.freshEntries(created(FLOOR_ENTRIES), 500)[4], 4 * FLOOR_ENTRIES, 'full and overflowing: twice of twice its size')
  })

  it('says a live map is filling once past the mark, and never one that is at the capacity', function () {
    const live = new LiveMaps(1 << 20, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES}, 1)
    assert.equal(live.filling(created(1 << 30)), false, 'not before the first swap (its counter is not known)')
    live.swapped(created(100, 100), 0, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES})
    const mark = FILL_MARK * FLOOR_ENTRIES
    assert.equal(live.filling(created(100 + mark - 1, 100)), false)
    assert.equal(live.filling(created(100 + mark, 100)), true)
    assert.equal(live.filling(created(100, 100 + mark)), true, 'IPv6 too')
    const full = new LiveMaps(FLOOR_ENTRIES, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES}, 1)
    full.swapped(created(0), 0, {4: FLOOR_ENTRIES, 6: FLOOR_ENTRIES})
    assert.equal(full.filling(created(FLOOR_ENTRIES)), false, 'no larger map to give it')
  })
})
