/**
 * How `flowctl top` follows the daemon's swaps, on a real meter set: counts added to a live map
 * that the daemon then swaps out are read from that map once more, and the new live map's counts
 * are all new, so that no packet is missed or counted twice between two samples.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {rmSync} from 'node:fs'

import {compileMeter} from '../../src/bpf/compile.js'
import {KEY} from '../../src/bpf/layout.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {MeterSetDrainer} from '../../src/daemon/drain.js'
import {pathsFromEnv} from '../../src/paths.js'
import {LiveMapFollower} from '../../src/view/top.js'
import {requireE2e} from '../helpers/e2e.js'
import {flowKey4, flowValue4} from '../helpers/kernel-flows.js'

const key = (sport: number) => flowKey4(sport, {proto: 17, dport: 53, src: [198, 18, 60, 1], dst: [198, 18, 60, 2]})

describe('view/top: following the live map across swaps @e2e', function () {
  let pinRoot: string
  let set: MeterSet

  before(function () {
    requireE2e(this)
  })

  beforeEach(async function () {
    pinRoot = `/sys/fs/bpf/fct-test-${randomBytes(3).toString('hex')}`
    const paths = {...pathsFromEnv(), pinRoot}
    set = MeterSet.for(paths, 'fct-top')
    await set.create((await compileMeter({capacity: 16}, paths.cacheDir)).objectPath, 16)
  })

  afterEach(function () {
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

  /** One sample: each flow's growth by source port, and whether a swap was followed. */
  function sample(follower: LiveMapFollower): {growth: Map<number, [number, number]>; swapped: boolean} {
    const growth = new Map<number, [number, number]>()
    const swapped = follower.sample((raw, packets, bytes) => {
      const sport = raw.readUInt16BE(KEY.sport.offset)
      const [p, b] = growth.get(sport) ?? [0, 0]
      growth.set(sport, [p + packets, b + bytes])
    })
    return {growth, swapped}
  }

  it('reads a swapped-out map to its end and the new one from zero: the growth between samples is exact', function () {
    const follower = new LiveMapFollower(set.openFamily(4), 4)
    const drainer = MeterSetDrainer.open(set, 'fct-top', 1, () => {})
    try {
      count(1000, 5, 500)
      assert.deepEqual(sample(follower), {growth: new Map([[1000, [5, 500]]]), swapped: false})
      // Within one interval: flow 1000 grows by 3 packets in the old map, the daemon drains
      // (swaps), and flows 1000 and 2000 count on in the new map.
      count(1000, 8, 800)
      drainer.drain({idleTimeoutNs: 3600e9, activeTimeoutNs: 3600e9}, () => {})
      count(1000, 2, 200)
      count(2000, 4, 400)
      const second = sample(follower)
      assert.equal(second.swapped, true)
      assert.deepEqual(second.growth, new Map([[1000, [3 + 2, 300 + 200]], [2000, [4, 400]]]))
      // No swap: only the growth since the previous sample.
      count(2000, 10, 1000)
      assert.deepEqual(sample(follower), {growth: new Map([[2000, [6, 600]]]), swapped: false})
    } finally {
      drainer.close()
      follower.close()
    }
  })
})
