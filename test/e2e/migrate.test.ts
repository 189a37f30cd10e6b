/**
 * A meter set of layout 1 (flowctl 0.1: per-CPU flow maps, a pending map of records) meets this
 * flowctl: every command refuses it in one line that says how to re-attach, and `meter attach
 * --force` carries every count it holds over into the new layout, keeping its capacity (unless
 * --capacity says otherwise, or what it holds needs more, which attach says). A meter set of
 * layout 2 made with the first, larger snapshot chunks keeps them through `meter attach --force`.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, mkdirSync} from 'node:fs'
import {join} from 'node:path'

import {execa} from 'execa'

import {clangArgs, compileMeter} from '../../src/bpf/compile.js'
import * as V1 from '../../src/bpf/layout-v1.generated.js'
import {BpfMap, numPossibleCpus} from '../../src/bpf/libbpf.js'
import type {MeterStatus} from '../../src/bpf/status.js'
import {FIRST_PENDING_CHUNK_BYTES, MeterSet} from '../../src/bpf/meter-set.js'
import {Lab} from '../../src/lab/lab.js'
import {bpfSourceDir} from '../../src/paths.js'
import type {Flow} from '../../src/view/flow.js'
import {cli, cliJson, cliOk, requireE2e, PrivateDirs} from '../helpers/e2e.js'
import {flowKey4, flowValue4} from '../helpers/kernel-flows.js'

/**
 * What both suites stand on: a private pin root, and namespaces a and b joined by a veth (a0 in
 * a) on `subnet`.1/.2, set up by `setUp` (call it in `before`) and removed after the suite.
 */
function meteredLab(name: string, subnet: string): {privateDirs: PrivateDirs; setUp: () => Promise<string>} {
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
  return {privateDirs, setUp}
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
        /^flowctl: the meter of namespace '.*' has kernel layout 1, this flowctl reads layout 2: carry its flows over with `flowctl meter attach --netns .* --force -n IFACE\.\.\.` \(nothing is lost\), or detach and attach it again$/,
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
    assert.equal(set.layoutVersion(), 2)
    assert.ok(!existsSync(`${set.dir}-v1`), 'the old maps are gone')
    const flows = await cliJson<Flow[]>(['dump', '--netns', a, '-p', 'udp', '-D', '53'])
    const bySport = new Map(flows.map((f) => [f.sport, [f.packets, f.bytes]]))
    assert.deepEqual(
      bySport,
      new Map([
        [1001, [5, 500]],
        [1002, [7, 700]],
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

describe('meter sets of layout 2 with the first snapshot chunk size @e2e', function () {
  const {privateDirs, setUp} = meteredLab('chunks', '198.18.61')
  let a = ''
  let set: MeterSet

  before(async function () {
    requireE2e(this)
    a = await setUp()
    // As the first layout-2 flowctl made it: 32768-byte snapshot chunks (64 KiB in the kernel each).
    set = MeterSet.for(privateDirs.paths, a)
    const compiled = await compileMeter({capacity: 1024, pendingChunkBytes: FIRST_PENDING_CHUNK_BYTES}, privateDirs.paths.cacheDir)
    await set.create(compiled.objectPath, 1024)
    const maps = set.openFamily(4)
    const live = maps.openLive()
    live.update(
      flowKey4(1003, {proto: 17, dport: 53, src: [198, 18, 61, 1], dst: [198, 18, 61, 2]}),
      flowValue4({packets: 4, bytes: 400, first: 1_000_000, last: 2_000_000}),
    )
    live.close()
    maps.close()
  })

  it("meter attach --force loads this flowctl's programs onto its maps, keeping its chunk size and its counts", async function () {
    const pendingId = () => {
      const m = set.openMap('pending')
      try {
        return m.info.id
      } finally {
        m.close()
      }
    }
    const before = pendingId()
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--force'])
    assert.equal(pendingId(), before, 'the same pending map')
    assert.equal(set.pendingChunkBytes(), FIRST_PENDING_CHUNK_BYTES)
    const flows = await cliJson<Flow[]>(['dump', '--netns', a, '-p', 'udp', '-D', '53'])
    assert.deepEqual(
      flows.map((f) => [f.sport, f.packets, f.bytes]),
      [[1003, 4, 400]],
    )
  })
})
