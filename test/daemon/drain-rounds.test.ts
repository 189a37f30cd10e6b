import assert from 'node:assert/strict'

import type {DrainReport} from '../../src/daemon/drain.js'
import {QUIET_AFTER_MS, QuietMeters} from '../../src/daemon/drain-rounds.js'

function report(swapped: boolean, exported: Record<number, number> = {}, taken = swapped ? 10 : 0): DrainReport {
  return {
    taken,
    exported,
    pending: 0,
    ms: 1,
    phases: {swapMs: 0, mergeMs: 0, expireMs: 0, commitMs: 0},
    seen: new Map(),
    takenByFamily: {4: 0, 6: 0},
    swapped,
    liveEntries: {4: 4096, 6: 4096},
  }
}

describe('daemon/drain-rounds QuietMeters', function () {
  let now = 0
  const quiet = () => new QuietMeters(() => now)

  beforeEach(function () {
    now = 1_000_000
  })

  it('tells every drain that swapped or exported', function () {
    const q = quiet()
    for (let i = 0; i < 5; i++, now += 1000) assert.equal(q.worthTelling('a', report(true)), true)
    assert.equal(q.worthTelling('a', report(false, {2: 3})), true)
  })

  it('tells only the first idle drain of a set that never had traffic', function () {
    const q = quiet()
    assert.equal(q.worthTelling('a', report(false)), true)
    for (let i = 0; i < 10; i++) {
      now += 1000
      assert.equal(q.worthTelling('a', report(false)), false)
    }
  })

  it("keeps telling idle drains until QUIET_AFTER_MS after the last active one (the accuracy check's reading after the last packets), then none", function () {
    const q = quiet()
    q.worthTelling('a', report(true))
    const told: boolean[] = []
    for (let t = 1000; t <= QUIET_AFTER_MS + 3000; t += 1000) {
      now = 1_000_000 + t
      told.push(q.worthTelling('a', report(false)))
    }
    const last = told.lastIndexOf(true)
    assert.equal((last + 1) * 1000, QUIET_AFTER_MS, `told ${JSON.stringify(told)}`)
    assert.ok(told.slice(0, last + 1).every(Boolean))
    assert.ok(told.slice(last + 1).every((t) => !t))
    // Traffic again: told again, and quiet again after the same time.
    now += 1000
    assert.equal(q.worthTelling('a', report(true)), true)
    now += 1000
    assert.equal(q.worthTelling('a', report(false)), true)
  })

  it('starts no such run after a swap that took nothing (the maps resized to the demand): an idle set stays quiet', function () {
    const q = quiet()
    assert.equal(q.worthTelling('a', report(true, {}, 0)), true)
    now += 1000
    assert.equal(q.worthTelling('a', report(false)), true)
    now += 1000
    assert.equal(q.worthTelling('a', report(false)), false)
  })

  it('keeps each set apart', function () {
    const q = quiet()
    q.worthTelling('a', report(false))
    assert.equal(q.worthTelling('b', report(false)), true)
    now += 1000
    assert.equal(q.worthTelling('a', report(false)), false)
    assert.equal(q.worthTelling('b', report(false)), false)
  })
})
