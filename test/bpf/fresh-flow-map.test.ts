/**
 * A drain may put a fresh live flow map of any size up to the meter set's capacity in the slot
 * (FlowStore.swapOut's `entries`), and the program treats a full small map as it treats a full
 * big one: the packets of a flow that does not fit are counted in the overflow map and in
 * meter_stats, never lost, and the flows that fit go on counting. Real meter sets in a private
 * pin root, packets through BPF_PROG_TEST_RUN.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {compileMeter} from '../../src/bpf/compile.js'
import {FlowStore} from '../../src/bpf/flow-store.js'
import {decodeFlowKey, decodeFlowValue} from '../../src/bpf/layout.js'
import type {BpfMap} from '../../src/bpf/libbpf.js'
import {readMeterStats} from '../../src/bpf/meter-stats.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {readOverflow} from '../../src/bpf/overflow.js'
import {pathsFromEnv} from '../../src/paths.js'
import {requireE2e} from '../helpers/e2e.js'
import * as P from '../helpers/packets.js'

const CAPACITY = 1024

describe('fresh live flow maps of any size @e2e', function () {
  let pinRoot: string
  let tmp: string
  let set: MeterSet
  let store: FlowStore | undefined

  before(function () {
    requireE2e(this)
  })

  beforeEach(async function () {
    pinRoot = `/sys/fs/bpf/fct-test-${randomBytes(3).toString('hex')}`
    tmp = mkdtempSync(join(tmpdir(), 'fct-fresh-'))
    const paths = {...pathsFromEnv(), pinRoot}
    set = MeterSet.for(paths, 'fct-fresh')
    await set.create((await compileMeter({capacity: CAPACITY}, paths.cacheDir)).objectPath, CAPACITY)
    store = FlowStore.open(set)
  })

  afterEach(function () {
    store?.close()
    store = undefined
    if (pinRoot) rmSync(pinRoot, {recursive: true, force: true})
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  /** One UDP packet of 20 + 8 + 10 IP bytes from `sport`, through the set's ingress program, `repeat` times. */
  async function send(sport: number, repeat = 1): Promise<void> {
    const file = join(tmp, 'frame.bin')
    writeFileSync(file, P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(sport, 53, Buffer.alloc(10)))))
    await execa('bpftool', ['prog', 'run', 'pinned', set.progPath('ingress'), 'data_in', file, 'repeat', String(repeat)])
  }

  function packetsBySport(map: BpfMap): Map<number, number> {
    const out = new Map<number, number>()
    const {keySize, valueSize} = map.info
    map.forEachBatch((keys, values, n) => {
      for (let i = 0; i < n; i++) out.set(decodeFlowKey(4, keys, i * keySize).sport, decodeFlowValue(4, values, i * valueSize).packets)
    })
    return out
  }

  it('swaps a fresh map of 4 flows in; the flows beyond it are counted as overflow, those in it go on counting', async function () {
    store!.swapOut(4, undefined, 4).close()
    const live = store!.families[4].openLive()
    try {
      assert.equal(live.info.maxEntries, 4)
      for (const sport of [1, 2, 3, 4, 5, 6]) await send(sport)
      await send(1, 9) // a flow that fits, 9 more packets
      await send(6, 2) // one that does not, 2 more
      assert.deepEqual(
        packetsBySport(live),
        new Map([
          [1, 10],
          [2, 1],
          [3, 1],
          [4, 1],
        ]),
      )
    } finally {
      live.close()
    }
    const overflow = readOverflow(set)!
    assert.deepEqual(
      overflow.map((o) => [o.direction, o.packets, o.bytes]),
      [['ingress', 4, 4 * 38]],
    )
    const stats = readMeterStats(set)!
    assert.deepEqual([stats.flowsCreated[4], stats.packetsOverflowed], [4, 4])
  })

  it('takes a small map out whole, and puts a map of the capacity in by default', async function () {
    store!.swapOut(4, undefined, 16).close()
    for (const sport of [1, 2, 3]) await send(sport)
    const drained = store!.swapOut(4)
    try {
      assert.equal(drained.info.maxEntries, 16)
      assert.deepEqual([...packetsBySport(drained).keys()].sort(), [1, 2, 3])
    } finally {
      drained.close()
    }
    const live = store!.families[4].openLive()
    try {
      assert.equal(live.info.maxEntries, CAPACITY)
      assert.equal(live.count(), 0)
    } finally {
      live.close()
    }
  })

  it('refuses a fresh map of no flows or of more than the capacity, and leaves the live map in place', function () {
    const id = store!.families[4].liveId()
    for (const entries of [0, CAPACITY + 1, 1.5]) assert.throws(() => store!.swapOut(4, undefined, entries), RangeError)
    assert.equal(store!.families[4].liveId(), id)
  })
})
