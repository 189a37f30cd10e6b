/**
 * Meter sets of older layouts meet this flowctl: every command refuses them in one line that says
 * how to carry them over, and `meter attach --force` does, losing no count.
 *
 * Layout 1 (flowctl 0.1: per-CPU flow maps, a pending map of records): its counts are carried
 * into a new set, which keeps its capacity (unless --capacity says otherwise, or what it holds
 * needs more, which attach says). Layout 2 (the program of bpf/legacy/meter-v2.bpf.c) is upgraded
 * in place while its filters count real traffic, and one made with the first, larger snapshot
 * chunks keeps them.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, mkdirSync, unlinkSync} from 'node:fs'
import {join} from 'node:path'

import {execa} from 'execa'

import {clangArgs} from '../../src/bpf/compile.js'
import {FRAG_PORTS, HANDSHAKE_KEY, HANDSHAKE_TIMES, writeMeterMeta, writeMeterSettings} from '../../src/bpf/layout.js'
import * as V1 from '../../src/bpf/layout-v1.generated.js'
import {BpfMap, innerMapId, numPossibleCpus} from '../../src/bpf/libbpf.js'
import {readMeterStats} from '../../src/bpf/meter-stats.js'
import type {MeterStatus} from '../../src/bpf/status.js'
import {FIRST_PENDING_CHUNK_BYTES, MeterSet} from '../../src/bpf/meter-set.js'
import {withStateLock} from '../../src/bpf/state.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent, type RunningAgent} from '../../src/lab/traffic.js'
import {bpfSourceDir} from '../../src/paths.js'
import {listLinks, netnsInode} from '../../src/sys/netns.js'
import {attachBpfFilter, ensureClsact, listFilters} from '../../src/sys/tc.js'
import type {Flow} from '../../src/view/flow.js'
import {cli, cliJson, cliOk, requireE2e, PrivateDirs, sleep} from '../helpers/e2e.js'
import {flowKey4, flowValue4} from '../helpers/kernel-flows.js'

/**
 * What both suites stand on: a private pin root, and namespaces a and b joined by a veth (a0 in
 * a) on `subnet`.1/.2, set up by `setUp` (call it in `before`) and removed after the suite.
 */
function meteredLab(name: string, subnet: string): {privateDirs: PrivateDirs; lab: Lab; setUp: () => Promise<string>} {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`${name}-${id}`)
  const lab = new Lab(`${name[0]}${id}`)
  let a = ''
  after(async function () {
    if (a) await cli(['meter', 'detach', '--all'])
    await lab.destroy()
    privateDirs.remove()
  })
  const setUp = async () => {
    privateDirs.apply()
    a = await lab.namespace('a')
    const b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: [`${subnet}.1/24`, `${subnet}.2/24`], quiet: true})
    return a
  }
  return {privateDirs, lab, setUp}
}

/**
 * Pins a layout-2 (or `layout` 3) meter set of `capacity` as the flowctl of that layout made it:
 * the frozen program of bpf/legacy/meter-v<layout>.bpf.c, loaded with its maps, meta saying that
 * layout, no pins of the live maps.
 */
async function pinLayout2Set(set: MeterSet, cacheDir: string, capacity: number, pendingChunkBytes?: number, layout: 2 | 3 = 2): Promise<void> {
  mkdirSync(set.dir, {recursive: true})
  mkdirSync(cacheDir, {recursive: true})
  const object = join(cacheDir, `meter-v${layout}-${randomBytes(3).toString('hex')}.o`)
  await execa('clang', clangArgs(join(bpfSourceDir(), 'legacy', `meter-v${layout}.bpf.c`), object, {capacity, pendingChunkBytes}))
  await execa('bpftool', ['prog', 'loadall', object, set.progDir, 'type', 'classifier', 'pinmaps', set.mapDir])
  const meta = set.openMap('meta')
  writeMeterMeta(meta, {layoutVersion: layout, capacity})
  meta.close()
  for (const family of [4, 6]) unlinkSync(set.mapPath(`flows${family}_live`))
}

/** The kernel id of one of a set's pinned maps. */
function mapId(set: MeterSet, name: string): number {
  const map = set.openMap(name)
  map.close()
  return map.info.id
}

/** A layout-1 IPv4 key of a UDP flow to port 53 on ifindex 2, egress, from `sport`. */
function v1Key(sport: number, subnet: number[]): Buffer {
  const k = Buffer.alloc(V1.FLOW_KEY4.size)
  k.writeUInt32LE(2, V1.FLOW_KEY4.fields.ifindex.offset)
  k[V1.FLOW_KEY4.fields.direction.offset] = 1
  k[V1.FLOW_KEY4.fields.proto.offset] = 17
  k.writeUInt16BE(sport, V1.FLOW_KEY4.fields.sport.offset)
  k.writeUInt16BE(53, V1.FLOW_KEY4.fields.dport.offset)
  k.set([...subnet, 1], V1.FLOW_KEY4.fields.src.offset)
  k.set([...subnet, 2], V1.FLOW_KEY4.fields.dst.offset)
  return k
}

/**
 * Pins a layout-1 meter set of `capacity` as flowctl 0.1 did, holding counts in both of its
 * places: flows (sport, packets) in its IPv4 flow map A, which its programs write, and in its
 * pending map, each flow of n packets of 100 bytes.
 */
async function pinLayout1Set(
  set: MeterSet,
  cacheDir: string,
  capacity: number,
  counts: {flows: [number, number][]; pending: [number, number][]; subnet: number[]},
): Promise<void> {
  mkdirSync(set.dir, {recursive: true})
  const object = join(cacheDir, `meter-v1-${randomBytes(3).toString('hex')}.o`)
  mkdirSync(cacheDir, {recursive: true})
  await execa('clang', clangArgs(join(bpfSourceDir(), 'legacy', 'meter-v1.bpf.c'), object, {capacity}))
  await execa('bpftool', ['prog', 'loadall', object, set.progDir, 'type', 'classifier', 'pinmaps', set.mapDir])
  const flows = BpfMap.open(set.mapPath('flows4_a'))
  const perCpu = Buffer.alloc(Math.ceil(V1.FLOW_COUNTERS.size / 8) * 8 * numPossibleCpus())
  const c = V1.FLOW_COUNTERS.fields
  for (const [sport, packets] of counts.flows) {
    perCpu.writeBigUInt64LE(BigInt(packets), c.packets.offset)
    perCpu.writeBigUInt64LE(BigInt(packets * 100), c.bytes.offset)
    perCpu.writeBigUInt64LE(1_000_000n, c.firstSeenNs.offset)
    perCpu.writeBigUInt64LE(2_000_000n, c.lastSeenNs.offset)
    flows.update(v1Key(sport, counts.subnet), perCpu)
  }
  flows.close()
  const pending = BpfMap.open(set.mapPath('pending4'))
  const record = Buffer.alloc(V1.FLOW_RECORD.size)
  const r = V1.FLOW_RECORD.fields
  for (const [sport, packets] of counts.pending) {
    record.writeBigUInt64LE(BigInt(packets), r.packets.offset)
    record.writeBigUInt64LE(BigInt(packets * 100), r.bytes.offset)
    record.writeBigUInt64LE(1_000_000n, r.firstSeenNs.offset)
    record.writeBigUInt64LE(3_000_000n, r.lastSeenNs.offset)
    pending.update(v1Key(sport, counts.subnet), record)
  }
  pending.close()
}

describe('meter sets of layout 1 @e2e', function () {
  const {privateDirs, setUp} = meteredLab('migrate', '198.18.60')
  let a = ''
  let set: MeterSet

  before(async function () {
    requireE2e(this)
    a = await setUp()
    set = MeterSet.for(privateDirs.paths, a)
    await pinLayout1Set(set, privateDirs.paths.cacheDir, 1024, {flows: [[1001, 5]], pending: [[1002, 7]], subnet: [198, 18, 60]})
  })

  it('is refused by every reader in one line that says how to carry it over', async function () {
    for (const args of [
      ['dump', '--netns', a],
      ['meter', 'attach', '--netns', a, '-n', 'a0'],
      ['meter', 'status', '--netns', a],
      ['meter', 'status'],
    ]) {
      const r = await cli(args)
      assert.notEqual(r.exitCode, 0, args.join(' '))
      assert.match(
        r.stderr.trim(),
        /^flowctl: the meter of namespace '.*' has kernel layout 1, this flowctl reads layout 4: carry its flows over with `flowctl meter attach --netns .* --force -n IFACE\.\.\.` \(nothing is lost\), or detach and attach it again$/,
      )
    }
    // meter status --json: what it can read on stdout (nothing here), the line on stderr.
    const r = await cli(['meter', 'status', '--netns', a, '--json'])
    assert.equal(r.exitCode, 1)
    assert.deepEqual(JSON.parse(r.stdout), [])
    assert.match(r.stderr.trim(), /^flowctl: the meter of namespace '.*' has kernel layout 1, [^\n]*$/)
  })

  it('meter attach --force carries every count over into the new layout, keeping the capacity', async function () {
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--force'])
    assert.equal(set.layoutVersion(), 4)
    assert.ok(!existsSync(`${set.dir}-v1`), 'the old maps are gone')
    const flows = await cliJson<Flow[]>(['dump', '--netns', a, '-p', 'udp', '-D', '53'])
    // Layout 1 counted every packet: its flows are carried over at sampling interval 1.
    const bySport = new Map(flows.map((f) => [f.sport, [f.packets, f.bytes, f.samplingInterval]]))
    assert.deepEqual(
      bySport,
      new Map([
        [1001, [5, 500, 1]],
        [1002, [7, 700, 1]],
      ]),
    )
    const status = await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a])
    assert.deepEqual(
      status.map((s) => [s.interface, s.capacity]),
      [
        ['a0', 1024],
        ['a0', 1024],
      ],
    )
  })
})

describe('a layout-1 meter set that holds more than its capacity keeps @e2e', function () {
  const {privateDirs, setUp} = meteredLab('migfull', '198.18.62')
  let a = ''
  let set: MeterSet
  // 4 flows in flow map A (room for 12 more) and 20 others in the pending map: up to 36 flows, more
  // than the 32 a meter set of capacity 16 keeps.
  const live: [number, number][] = [1, 2, 3, 4].map((i) => [2000 + i, i])
  const pending: [number, number][] = Array.from({length: 20}, (_, i) => [3000 + i, 10 + i])

  before(async function () {
    requireE2e(this)
    a = await setUp()
    set = MeterSet.for(privateDirs.paths, a)
    await pinLayout1Set(set, privateDirs.paths.cacheDir, 16, {flows: live, pending, subnet: [198, 18, 62]})
  })

  it('meter attach --force refuses, naming the --capacity that holds it, and changes nothing', async function () {
    const r = await cli(['meter', 'attach', '--netns', a, '-n', 'a0', '--force'])
    assert.equal(r.exitCode, 2, r.stderr)
    assert.match(
      r.stderr.trim(),
      /^flowctl: the layout-1 meter of namespace '.*' may hand over up to 36 flows of one address family \(what its maps hold, and room for new ones\), more than a meter of capacity 16 keeps \(32\): carry them over with --capacity 18 or more$/,
    )
    assert.equal(set.layoutVersion(), 1)
  })

  it('meter attach --force --capacity 18 carries every count over, at that capacity', async function () {
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--force', '--capacity', '18'])
    const flows = await cliJson<Flow[]>(['dump', '--netns', a, '-p', 'udp', '-D', '53'])
    assert.deepEqual(new Map(flows.map((f) => [f.sport, f.packets])), new Map([...live, ...pending]))
    const status = await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a])
    assert.deepEqual([...new Set(status.map((s) => s.capacity))], [18])
  })
})

describe('meter sets of layout 2 @e2e', function () {
  const {privateDirs, lab, setUp} = meteredLab('layout2', '198.18.63')
  const PORT = 7200
  let a = ''
  let set: MeterSet
  /** Datagrams sent from a to b so far: all of them cross a0 egress, which the layout-2 program meters. */
  let sent = 0
  let sink: RunningAgent<unknown> | undefined

  after(function () {
    sink?.stop()
  })

  before(async function () {
    requireE2e(this)
    a = await setUp()
    set = MeterSet.for(privateDirs.paths, a)
    await pinLayout2Set(set, privateDirs.paths.cacheDir, 1024)
    // Attached as the layout-2 flowctl attached it: a filter running the set's program, recorded as ours.
    await withStateLock(privateDirs.paths, async (state) => {
      const qdiscCreated = await ensureClsact(a, 'a0')
      await attachBpfFilter(a, 'a0', 'egress', 1, 1, set.progPath('egress'))
      const link = (await listLinks(a)).find((l) => l.ifname === 'a0')!
      const at = new Date().toISOString()
      state.meterSets.push({netns: a, netnsInode: netnsInode(a), digest: 'layout-2', capacity: 1024, layoutVersion: 2, createdAt: at})
      const progId = set.progId('egress')
      state.attachments.push({
        netns: a,
        interface: 'a0',
        ifindex: link.ifindex,
        direction: 'egress',
        pref: 1,
        handle: 1,
        chain: 0,
        progId,
        digest: 'layout-2',
        attachedAt: at,
        qdiscCreated,
      })
    })
    sink = await startAgent(lab.namespaces[1], {mode: 'udp-sink', host: '0.0.0.0', port: PORT})
    sent += (await runAgent<{packets: number}>(a, {mode: 'udp-rounds', host: '198.18.63.2', port: PORT, flows: 20, count: 50, size: 30})).packets
  })

  it('is refused by every reader in one line that says how to carry it over', async function () {
    for (const args of [
      ['dump', '--netns', a],
      ['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress'],
      ['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--sampling', '10'],
      ['meter', 'status', '--netns', a],
      ['flush', '--netns', a, '--all'],
    ]) {
      const r = await cli(args)
      assert.notEqual(r.exitCode, 0, args.join(' '))
      assert.match(
        r.stderr.trim(),
        /^flowctl: the meter of namespace '.*' has kernel layout 2, this flowctl reads layout 4: carry its flows over with `flowctl meter attach --netns .* --force -n IFACE\.\.\.` \(nothing is lost\), or detach and attach it again$/,
        args.join(' '),
      )
    }
    assert.equal(set.layoutVersion(), 2)
  })

  it('meter attach --force upgrades it in place under traffic, its filters moved to the new programs, every count kept', async function () {
    const kept = ['flows4', 'flows6', 'overflow', 'pending', 'drain_state', 'meta'].map((name) => [name, mapId(set, name)])
    const linkBefore = (await lab.linkStats(a, 'a0')).txPackets
    const stream = await startAgent<{packets: number}>(a, {
      mode: 'udp-rounds',
      host: '198.18.63.2',
      port: PORT,
      flows: 20,
      count: 1_000_000,
      size: 30,
      gapMs: 5,
    })
    for (let i = 0; i < 6000 && (await lab.linkStats(a, 'a0')).txPackets - linkBefore < 500; i++) await sleep(10)
    const out = await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--force'])
    assert.match(out, /a0:egress re-attached/)
    // The new program has made its own record of each flow (at interval 1) before the stream stops.
    for (let i = 0; i < 6000 && readMeterStats(set)!.flowsCreated[4] < 20; i++) await sleep(10)
    stream.stop()
    sent += (await stream.result).packets

    assert.equal(set.layoutVersion(), 4)
    assert.deepEqual(
      ['flows4', 'flows6', 'overflow', 'pending', 'drain_state', 'meta'].map((name) => [name, mapId(set, name)]),
      kept,
      'the maps that hold counts are the same maps',
    )
    const frags = set.openMap('frags')
    frags.close()
    assert.equal(frags.info.valueSize, FRAG_PORTS.size)
    const [filter] = await listFilters(a, 'a0', 'egress')
    assert.equal(filter.progId, set.progId('egress'), 'the filter runs the new program')

    const flows = (await cliJson<Flow[]>(['dump', '--netns', a])).filter((f) => f.direction === 'egress' && f.dport === PORT)
    assert.equal(
      flows.reduce((sum, f) => sum + f.packets, 0),
      sent,
      'every datagram sent is counted once: by the old program or by the new one',
    )
    assert.deepEqual([...new Set(flows.map((f) => f.samplingInterval))], [1])
    // The first 20 flows, counted by the old program; the stream's 20, each in two records: the
    // old program's (its key holds 0 where layout 3 keeps the rate) and the new one's.
    assert.equal(new Set(flows.map((f) => f.sport)).size, 40)
    assert.equal(flows.length, 60)
    const status = await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a])
    assert.deepEqual(
      status.map((s) => [s.interface, s.direction, s.state, s.capacity, s.samplingInterval]),
      [['a0', 'egress', 'attached', 1024, 1]],
    )
  })
})

describe('meter sets of layout 2 with the first snapshot chunk size @e2e', function () {
  const {privateDirs, setUp} = meteredLab('chunks', '198.18.61')
  let a = ''
  let set: MeterSet

  before(async function () {
    requireE2e(this)
    a = await setUp()
    // As the first layout-2 flowctl made it: 32768-byte snapshot chunks (64 KiB in the kernel each).
    set = MeterSet.for(privateDirs.paths, a)
    await pinLayout2Set(set, privateDirs.paths.cacheDir, 1024, FIRST_PENDING_CHUNK_BYTES)
    const outer = set.openMap('flows4')
    const live = BpfMap.openById(innerMapId(outer)!)
    outer.close()
    // A layout-2 key: 0 where layout 3 keeps the sampling interval.
    live.update(
      flowKey4(1003, {proto: 17, dport: 53, src: [198, 18, 61, 1], dst: [198, 18, 61, 2], samplingInterval: 0}),
      flowValue4({packets: 4, bytes: 400, first: 1_000_000, last: 2_000_000}),
    )
    live.close()
  })

  it("meter attach --force --sampling 5 loads this flowctl's programs onto its maps, keeping its chunk size and its counts", async function () {
    const before = mapId(set, 'pending')
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--force', '--sampling', '5'])
    assert.equal(mapId(set, 'pending'), before, 'the same pending map')
    assert.equal(set.pendingChunkBytes(), FIRST_PENDING_CHUNK_BYTES)
    const flows = await cliJson<Flow[]>(['dump', '--netns', a, '-p', 'udp', '-D', '53'])
    assert.deepEqual(
      flows.map((f) => [f.sport, f.packets, f.bytes, f.samplingInterval]),
      [[1003, 4, 400, 1]],
    )
    const status = await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a])
    assert.deepEqual([...new Set(status.map((s) => s.samplingInterval))], [5])
  })
})

describe('meter sets of layout 3 @e2e', function () {
  const {privateDirs, lab, setUp} = meteredLab('layout3', '198.18.59')
  const PORT = 7300
  let a = ''
  let set: MeterSet
  let sink: RunningAgent<unknown> | undefined

  after(function () {
    sink?.stop()
  })

  before(async function () {
    requireE2e(this)
    a = await setUp()
    set = MeterSet.for(privateDirs.paths, a)
    await pinLayout2Set(set, privateDirs.paths.cacheDir, 1024, undefined, 3)
    await withStateLock(privateDirs.paths, async (state) => {
      const qdiscCreated = await ensureClsact(a, 'a0')
      await attachBpfFilter(a, 'a0', 'egress', 1, 1, set.progPath('egress'))
      const link = (await listLinks(a)).find((l) => l.ifname === 'a0')!
      const at = new Date().toISOString()
      state.meterSets.push({netns: a, netnsInode: netnsInode(a), digest: 'layout-3', capacity: 1024, layoutVersion: 3, createdAt: at})
      state.attachments.push({
        netns: a,
        interface: 'a0',
        ifindex: link.ifindex,
        direction: 'egress',
        pref: 1,
        handle: 1,
        chain: 0,
        progId: set.progId('egress'),
        digest: 'layout-3',
        attachedAt: at,
        qdiscCreated,
      })
    })
  })

  it('is refused by every reader in one line that says how to carry it over', async function () {
    const r = await cli(['dump', '--netns', a])
    assert.notEqual(r.exitCode, 0)
    assert.match(
      r.stderr.trim(),
      /^flowctl: the meter of namespace '.*' has kernel layout 3, this flowctl reads layout 4: carry its flows over with `flowctl meter attach --netns .* --force -n IFACE\.\.\.` \(nothing is lost\), or detach and attach it again$/,
    )
    assert.equal(set.layoutVersion(), 3)
  })

  it('meter attach --force upgrades it in place: every count and map kept, its sampling interval kept, a handshake map added', async function () {
    sink = await startAgent(lab.namespaces[1], {mode: 'udp-sink', host: '0.0.0.0', port: PORT})
    const sent = (await runAgent<{packets: number}>(a, {mode: 'udp-rounds', host: '198.18.59.2', port: PORT, flows: 10, count: 30, size: 30})).packets
    // Set as the layout-3 flowctl set it (after the traffic, so that every datagram was counted).
    const settings = set.openMap('settings')
    writeMeterSettings(settings, {samplingInterval: 7})
    settings.close()
    const names = ['flows4', 'flows6', 'overflow', 'pending', 'drain_state', 'meta', 'frags', 'settings', 'meter_stats']
    const kept = names.map((name) => [name, mapId(set, name)])
    assert.equal(BpfMap.openIfPinned(set.mapPath('handshakes')), undefined)

    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--force'])
    assert.equal(set.layoutVersion(), 4)
    assert.deepEqual(
      names.map((name) => [name, mapId(set, name)]),
      kept,
      'every map of layout 3 is the same map',
    )
    const handshakes = set.openMap('handshakes')
    handshakes.close()
    assert.deepEqual([handshakes.info.keySize, handshakes.info.valueSize], [HANDSHAKE_KEY.size, HANDSHAKE_TIMES.size])
    const [filter] = await listFilters(a, 'a0', 'egress')
    assert.equal(filter.progId, set.progId('egress'), 'the filter runs the new program')
    const flows = (await cliJson<Flow[]>(['dump', '--netns', a])).filter((f) => f.direction === 'egress' && f.dport === PORT)
    assert.equal(
      flows.reduce((sum, f) => sum + f.packets, 0),
      sent,
    )
    const status = await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a])
    assert.deepEqual(
      status.map((s) => [s.interface, s.state, s.samplingInterval]),
      [['a0', 'attached', 7]],
    )
  })
})
