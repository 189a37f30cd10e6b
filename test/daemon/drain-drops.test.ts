/**
 * The drain with drops on, on real maps filled directly (no traffic): the drops the hook would
 * have counted are written into the namespace's drops hash, and the drain merges them into the
 * flow they belong to, or, when no flow ever comes, counts them as unmetered.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {rmSync} from 'node:fs'

import {compileMeter} from '../../src/bpf/compile.js'
import {disableDrops, dropHookAttached, enableDrops} from '../../src/bpf/drops.js'
import {DROP_KEY, DROP_VALUE, FLOW_KEY4, FLOW_KEY6} from '../../src/bpf/layout.generated.js'
import {BpfMap, MAP_TYPE} from '../../src/bpf/libbpf.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {MeterSetDrainer, type DrainPolicy} from '../../src/daemon/drain.js'
import type {FlowBatch} from '../../src/flow/batch.js'
import {DROPPED} from '../../src/flow/drop-reasons.js'
import {pathsFromEnv, type Paths} from '../../src/paths.js'
import {run} from '../../src/sys/exec.js'
import {netnsInode} from '../../src/sys/netns.js'
import {requireE2e} from '../helpers/e2e.js'
import {countCreated, flowKey4, flowValue4} from '../helpers/kernel-flows.js'
import {kernelDropReasons} from '../../src/bpf/btf.js'

const SECOND = 1e9
const policy: DrainPolicy = {idleTimeoutNs: 15 * SECOND, activeTimeoutNs: 60 * SECOND}

interface Exported {
  sport: number
  packets: number
  dropped: number
  droppedBytes: number
  reason: string | undefined
  fwdStatus: number
}

describe('drain with drops on @e2e', function () {
  let paths: Paths
  let netns = ''
  let set: MeterSet
  let drainer: MeterSetDrainer | undefined
  let exported: Exported[] = []
  const reasonNumber = (name: string) => [...kernelDropReasons()].find(([, n]) => n === name)![0]

  function sink(batch: FlowBatch): void {
    for (let i = 0; i < batch.length; i++) {
      exported.push({
        sport: batch.sport[i],
        packets: batch.packets[i],
        dropped: batch.drops?.packets[i] ?? 0,
        droppedBytes: batch.drops?.bytes[i] ?? 0,
        reason: batch.drops?.reason[i],
        fwdStatus: batch.fwdStatus[i],
      })
    }
  }

  /** A flow of `packets` packets in the live IPv4 flow map, as the meter would have counted it. */
  function putFlow(sport: number, packets: number): void {
    const maps = set.openFamily(4)
    const live = maps.openLive()
    const now = Number(process.hrtime.bigint())
    try {
      live.update(flowKey4(sport), flowValue4({packets, bytes: packets * 100, first: now, last: now}))
    } finally {
      live.close()
      maps.close()
    }
    countCreated(set, 4, 1)
  }

  /** Drops of the flow of `sport`, as the hook would have counted them, in the namespace's drops hash. */
  function putDrops(sport: number, reason: string, packets: number): void {
    const outer = BpfMap.open(`${paths.pinRoot}/drops/maps/drop_maps`)
    const key = Buffer.alloc(4)
    key.writeUInt32LE(netnsInode(netns))
    const drops = BpfMap.openById(outer.lookup(key, Buffer.alloc(4))!.readUInt32LE(0))
    try {
      const k = Buffer.alloc(DROP_KEY.size)
      const flow = flowKey4(sport)
      // The hook's key is flow_key6-shaped: the IPv4 addresses in the first 4 bytes of each.
      flow.copy(k, 0, 0, FLOW_KEY4.fields.src.offset)
      flow.copy(k, FLOW_KEY6.fields.src.offset, FLOW_KEY4.fields.src.offset, FLOW_KEY4.fields.src.offset + 4)
      flow.copy(k, FLOW_KEY6.fields.dst.offset, FLOW_KEY4.fields.dst.offset, FLOW_KEY4.fields.dst.offset + 4)
      k.writeUInt32LE(reasonNumber(reason), DROP_KEY.fields.reason.offset)
      k[DROP_KEY.fields.family.offset] = 4
      const v = Buffer.alloc(DROP_VALUE.size)
      v.writeBigUInt64LE(BigInt(packets), DROP_VALUE.fields.packets.offset)
      v.writeBigUInt64LE(BigInt(packets * 100), DROP_VALUE.fields.bytes.offset)
      drops.update(k, v)
    } finally {
      drops.close()
      outer.close()
    }
  }

  before(function () {
    requireE2e(this)
  })

  beforeEach(async function () {
    exported = []
    const id = randomBytes(3).toString('hex')
    paths = {...pathsFromEnv(), pinRoot: `/sys/fs/bpf/fct-test-${id}`}
    netns = `fct-${id}`
    await run('ip', ['netns', 'add', netns])
    set = MeterSet.for(paths, netns)
    await set.create((await compileMeter({capacity: 16}, paths.cacheDir)).objectPath, 16)
    await enableDrops(paths, set, netns, 1)
    drainer = MeterSetDrainer.open(set, netns, 7, sink)
  })

  afterEach(async function () {
    drainer?.close()
    drainer = undefined
    await disableDrops(paths, set).catch(() => false)
    rmSync(paths.pinRoot, {recursive: true, force: true})
    await run('ip', ['netns', 'del', netns]).catch(() => undefined)
  })

  it("merges a flow's drops of two drains into its record, with its most frequent reason", async function () {
    putFlow(1000, 10)
    putDrops(1000, 'NETFILTER_DROP', 4)
    const first = await drainer!.drain(policy, sink)
    assert.deepEqual(first.drops, [{reason: 'NETFILTER_DROP', ifindex: 3, packets: 4, bytes: 400}])
    putDrops(1000, 'IP_INNOROUTES', 1)
    putDrops(1000, 'NETFILTER_DROP', 2)
    await drainer!.drain(policy, sink, true)
    assert.deepEqual(exported, [{sport: 1000, packets: 10, dropped: 7, droppedBytes: 700, reason: 'NETFILTER_DROP', fwdStatus: DROPPED.aclDeny}])
  })

  it('gives a flow a forced drain reads (and exports as it reads it) the drops taken with it', async function () {
    putFlow(1500, 5)
    putDrops(1500, 'IP_INNOROUTES', 5)
    await drainer!.drain(policy, sink, true)
    assert.deepEqual(exported, [{sport: 1500, packets: 5, dropped: 5, droppedBytes: 500, reason: 'IP_INNOROUTES', fwdStatus: DROPPED.unroutable}])
  })

  it('waits a drain for the packets of drops taken before them', async function () {
    putDrops(2000, 'PKT_TOO_BIG', 3)
    const first = await drainer!.drain(policy, sink)
    assert.equal(first.unmeteredDrops, undefined)
    putFlow(2000, 3)
    await drainer!.drain(policy, sink, true)
    assert.deepEqual(exported, [{sport: 2000, packets: 3, dropped: 3, droppedBytes: 300, reason: 'PKT_TOO_BIG', fwdStatus: DROPPED.fragmentationAndDfSet}])
  })

  it('counts drops whose flow never comes as unmetered, in no record', async function () {
    putDrops(3000, 'IP_INNOROUTES', 2)
    await drainer!.drain(policy, sink)
    const second = await drainer!.drain(policy, sink)
    assert.deepEqual(second.unmeteredDrops, [{reason: 'IP_INNOROUTES', ifindex: 3, packets: 2, bytes: 200}])
    await drainer!.drain(policy, sink, true)
    assert.deepEqual(exported, [])
  })

  it('drains the flows of a set whose drops cannot be taken out, and says why', async function () {
    // drop_maps replaced by a hash that names a map that does not exist for the namespace.
    const path = `${paths.pinRoot}/drops/maps/drop_maps`
    rmSync(path)
    const bogus = BpfMap.create(MAP_TYPE.hash, 'drop_maps', 4, 4, 1)
    try {
      const key = Buffer.alloc(4)
      key.writeUInt32LE(netnsInode(netns))
      bogus.update(key, Buffer.from([0xf0, 0xff, 0xff, 0xff]))
      bogus.pin(path)
    } finally {
      bogus.close()
    }
    putFlow(4000, 2)
    const report = await drainer!.drain(policy, sink, true)
    assert.match(report.dropsError ?? '', /drops hash/)
    assert.deepEqual(exported, [{sport: 4000, packets: 2, dropped: 0, droppedBytes: 0, reason: undefined, fwdStatus: 0}])
  })

  it('leaves a drops hash nothing was dropped into in place, and swaps one that holds drops', async function () {
    const current = () => {
      const outer = BpfMap.open(`${paths.pinRoot}/drops/maps/drop_maps`)
      try {
        const key = Buffer.alloc(4)
        key.writeUInt32LE(netnsInode(netns))
        return outer.lookup(key, Buffer.alloc(4))!.readUInt32LE(0)
      } finally {
        outer.close()
      }
    }
    const idle = current()
    await drainer!.drain(policy, sink)
    await drainer!.drain(policy, sink)
    assert.equal(current(), idle, 'two drains with nothing dropped kept the same hash')
    putFlow(5000, 1)
    putDrops(5000, 'NETFILTER_DROP', 1)
    const report = await drainer!.drain(policy, sink)
    assert.notEqual(current(), idle, 'a hash with drops in it was swapped out')
    assert.deepEqual(report.drops, [{reason: 'NETFILTER_DROP', ifindex: 3, packets: 1, bytes: 100}])
  })

  it('leaves no hook behind once the last namespace with drops lets it go', async function () {
    assert.ok(dropHookAttached(paths))
    await disableDrops(paths, set)
    assert.equal(dropHookAttached(paths), false)
  })
})
