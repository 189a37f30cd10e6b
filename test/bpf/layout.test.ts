/**
 * src/bpf/layout.ts against bpf/flowctl.h, through the BTF of the compiled meter: clang compiles
 * the real object, bpftool dumps its BTF, and every struct layout.ts mirrors must match it member
 * for member. Changing either side alone fails here.
 */
import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import {clangArgs} from '../../src/bpf/compile.js'
import {ALL_STRUCTS, C, K, LAYOUT_VERSION, R, decodeFlowKey, decodeFlowRecord, decodePerCpuCounters, decodePerCpuOverflow, dstOffset, encodeFlowKey, encodeFlowRecord, keySpec, perCpuStride, type StructSpec} from '../../src/bpf/layout.js'
import {addressLength, emptyCounters, mergeCounters} from '../../src/flow/record.js'
import {REPO_ROOT} from '../helpers/unit.js'

const execFileP = promisify(execFile)

interface BtfMember {
  name: string
  type_id: number
  bits_offset: number
  bitfield_size?: number
}

interface BtfType {
  id: number
  kind: string
  name: string
  size?: number
  nr_bits?: number
  type_id?: number
  nr_elems?: number
  members?: BtfMember[]
}

interface ResolvedMember {
  name: string
  offset: number
  size: number
}

interface ResolvedStruct {
  name: string
  size: number
  fields: ResolvedMember[]
}

async function toolPresent(file: string, args: string[]): Promise<boolean> {
  try {
    await execFileP(file, args)
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw error
  }
}

/** Byte size of a BTF type, following typedefs and qualifiers. */
function btfSize(types: Map<number, BtfType>, id: number): number {
  const t = types.get(id)
  assert.ok(t, `BTF type id ${id} does not exist`)
  switch (t.kind) {
    case 'TYPEDEF':
    case 'VOLATILE':
    case 'CONST':
    case 'RESTRICT':
    case 'TYPE_TAG':
      return btfSize(types, t.type_id!)
    case 'INT':
      // INT carries its byte size; nr_bits only narrows the value inside it.
      assert.ok(t.size !== undefined || t.nr_bits !== undefined, `INT ${t.name} without size`)
      return t.size ?? Math.ceil(t.nr_bits! / 8)
    case 'ARRAY':
      return t.nr_elems! * btfSize(types, t.type_id!)
    case 'STRUCT':
    case 'UNION':
    case 'ENUM':
    case 'ENUM64':
    case 'FLOAT':
      return t.size!
    case 'PTR':
      return 8 // BPF is a 64-bit target
    default:
      throw new Error(`unexpected BTF kind ${t.kind} (type id ${id})`)
  }
}

function resolveStruct(types: Map<number, BtfType>, name: string): ResolvedStruct {
  const candidates = [...types.values()].filter((t) => t.kind === 'STRUCT' && t.name === name)
  assert.equal(candidates.length, 1, `expected exactly one BTF struct ${name}, found ${candidates.length}`)
  const s = candidates[0]
  return {
    name,
    size: s.size!,
    fields: s.members!.map((m) => {
      assert.ok(!m.bitfield_size, `${name}.${m.name} is a bitfield, which layout.ts cannot describe`)
      assert.equal(m.bits_offset % 8, 0, `${name}.${m.name} does not start on a byte`)
      return {name: m.name, offset: m.bits_offset / 8, size: btfSize(types, m.type_id)}
    }),
  }
}

function specOf(s: StructSpec): ResolvedStruct {
  return {name: s.name, size: s.size, fields: s.fields.map((f) => ({name: f.name, offset: f.offset, size: f.size}))}
}

describe('bpf/layout.ts matches bpf/flowctl.h (through BTF)', function () {
  let dir: string | undefined
  let types: Map<number, BtfType>
  let header: string

  before(async function () {
    this.timeout(120_000)
    header = await readFile(join(REPO_ROOT, 'bpf', 'flowctl.h'), 'utf8')
    const haveClang = await toolPresent('clang', ['--version'])
    const haveBpftool = await toolPresent('bpftool', ['version'])
    if (!haveClang || !haveBpftool) {
      const missing = [haveClang ? '' : 'clang', haveBpftool ? '' : 'bpftool'].filter(Boolean).join(' and ')
      if (process.env.CI === 'true') throw new Error(`${missing} not installed: the layout test cannot run, and in CI that is a failure`)
      this.skip()
    }
    dir = await mkdtemp(join(tmpdir(), 'flowctl-layout-'))
    const object = join(dir, 'meter.o')
    await execFileP('clang', clangArgs(join(REPO_ROOT, 'bpf', 'meter.bpf.c'), object, {capacity: 1024}))
    const {stdout} = await execFileP('bpftool', ['btf', 'dump', 'file', object, '-j'], {maxBuffer: 64 * 1024 * 1024})
    const dump = JSON.parse(stdout) as {types: BtfType[]}
    types = new Map(dump.types.map((t) => [t.id, t]))
  })

  after(async function () {
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  for (const spec of ALL_STRUCTS) {
    it(`struct ${spec.name}: same members, order, offsets, sizes and total size`, function () {
      const btf = resolveStruct(types, spec.name)
      assert.deepEqual(specOf(spec), btf)
    })
  }

  it('ALL_STRUCTS covers every struct flowctl.h defines, once', function () {
    const defined = [...header.matchAll(/^\s*struct\s+(\w+)\s*\{/gm)].map((m) => m[1]).sort()
    assert.ok(defined.length > 0, 'no struct found in flowctl.h')
    const mirrored = ALL_STRUCTS.map((s) => s.name).sort()
    assert.deepEqual(mirrored, defined)
  })

  it('LAYOUT_VERSION equals FLOWCTL_LAYOUT_VERSION in flowctl.h', function () {
    const m = header.match(/^\s*#\s*define\s+FLOWCTL_LAYOUT_VERSION\s+(\d+)\s*$/m)
    assert.ok(m, 'FLOWCTL_LAYOUT_VERSION not defined in bpf/flowctl.h')
    assert.equal(LAYOUT_VERSION, Number(m[1]))
  })

  it('the hot-path offsets K, C and R agree with the BTF', function () {
    const offsets = (s: ResolvedStruct) => Object.fromEntries(s.fields.map((f) => [f.name, f.offset]))
    const keyNames = {ifindex: 'ifindex', direction: 'direction', proto: 'proto', vlanId: 'vlan_id', sport: 'sport', dport: 'dport', src: 'src'}
    for (const family of [4, 6] as const) {
      const key = resolveStruct(types, `flow_key${family}`)
      const o = offsets(key)
      assert.deepEqual(Object.keys(K).sort(), Object.keys(keyNames).sort())
      for (const [k, field] of Object.entries(keyNames)) assert.equal(K[k as keyof typeof K], o[field], `K.${k} in flow_key${family}`)
      assert.equal(dstOffset(family), o.dst, `dstOffset(${family})`)
      assert.equal(addressLength(family), key.fields.find((f) => f.name === 'src')!.size, `addressLength(${family})`)
      assert.equal(keySpec(family).name, `flow_key${family}`)
    }
    const counterNames = {packets: 'packets', bytes: 'bytes', firstSeen: 'first_seen_ns', lastSeen: 'last_seen_ns', tcpFlags: 'tcp_flags', ipTos: 'ip_tos'}
    const co = offsets(resolveStruct(types, 'flow_counters'))
    assert.deepEqual(Object.keys(C).sort(), Object.keys(counterNames).sort())
    for (const [k, field] of Object.entries(counterNames)) assert.equal(C[k as keyof typeof C], co[field], `C.${k}`)
    const recordNames = {...counterNames, drainGen: 'drain_gen'}
    const ro = offsets(resolveStruct(types, 'flow_record'))
    assert.deepEqual(Object.keys(R).sort(), Object.keys(recordNames).sort())
    for (const [k, field] of Object.entries(recordNames)) assert.equal(R[k as keyof typeof R], ro[field], `R.${k}`)
  })
})

/*
 * The decoders, against bytes laid out by hand from the C structs in bpf/flowctl.h (x86/arm64
 * BPF is little-endian: host-order fields are LE; addresses and ports are network order).
 */
describe('bpf/layout.ts decoders and encoders', function () {
  /** struct flow_key4 / flow_key6, byte by byte. */
  function key(parts: {ifindex: number[]; direction: number; proto: number; vlan: number[]; sport: number[]; dport: number[]; src: number[]; dst: number[]}): Buffer {
    return Buffer.from([...parts.ifindex, parts.direction, parts.proto, ...parts.vlan, ...parts.sport, ...parts.dport, ...parts.src, ...parts.dst])
  }

  const V4_BYTES = key({
    ifindex: [0x04, 0x03, 0x02, 0x01], // 0x01020304 little-endian
    direction: 1,
    proto: 6,
    vlan: [0x64, 0x00], // 100, host order (LE)
    sport: [0x01, 0xbb], // 443, network order
    dport: [0xc8, 0x22], // 51234
    src: [192, 0, 2, 1],
    dst: [198, 51, 100, 7],
  })
  const V4_KEY = {
    family: 4,
    ifindex: 16909060,
    direction: 'egress',
    proto: 6,
    vlanId: 100,
    sport: 443,
    dport: 51234,
    src: '192.0.2.1',
    dst: '198.51.100.7',
  }

  const V6_BYTES = key({
    ifindex: [0x02, 0x00, 0x00, 0x00],
    direction: 0,
    proto: 17,
    vlan: [0xfe, 0x0f], // 4094
    sport: [0x00, 0x35], // 53
    dport: [0xff, 0xff], // 65535
    src: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
    dst: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55],
  })
  const V6_KEY = {
    family: 6,
    ifindex: 2,
    direction: 'ingress',
    proto: 17,
    vlanId: 4094,
    sport: 53,
    dport: 65535,
    src: '2001:db8::1',
    dst: 'fe80::211:22ff:fe33:4455',
  }

  it('hand-built keys are 20 and 44 bytes (sanity of the fixtures)', function () {
    assert.equal(V4_BYTES.length, 20)
    assert.equal(V6_BYTES.length, 44)
  })

  it('decodeFlowKey decodes an IPv4 key', function () {
    assert.deepEqual(decodeFlowKey(4, V4_BYTES), V4_KEY)
  })

  it('decodeFlowKey decodes an IPv4 key at an offset', function () {
    const buf = Buffer.concat([Buffer.from([0xaa, 0xbb, 0xcc]), V4_BYTES, Buffer.from([0xdd])])
    assert.deepEqual(decodeFlowKey(4, buf, 3), V4_KEY)
  })

  it('decodeFlowKey decodes an IPv6 key', function () {
    assert.deepEqual(decodeFlowKey(6, V6_BYTES), V6_KEY)
  })

  it('decodeFlowKey reads an ICMP type/code from dport (type in the first byte)', function () {
    const icmp = key({ifindex: [1, 0, 0, 0], direction: 0, proto: 1, vlan: [0, 0], sport: [0, 0], dport: [3, 13], src: [10, 0, 0, 1], dst: [10, 0, 0, 2]})
    const k = decodeFlowKey(4, icmp)
    assert.equal(k.sport, 0)
    assert.equal(k.dport, 3 * 256 + 13)
  })

  it('encodeFlowKey writes exactly the hand-built bytes, and decodes back', function () {
    const v4 = encodeFlowKey(4, {
      ifindex: 16909060,
      direction: 1,
      proto: 6,
      vlanId: 100,
      sport: 443,
      dport: 51234,
      src: Uint8Array.from([192, 0, 2, 1]),
      dst: Uint8Array.from([198, 51, 100, 7]),
    })
    assert.deepEqual(v4, V4_BYTES)
    assert.deepEqual(decodeFlowKey(4, v4), V4_KEY)

    const v6 = encodeFlowKey(6, {
      ifindex: 2,
      direction: 0,
      proto: 17,
      vlanId: 4094,
      sport: 53,
      dport: 65535,
      src: V6_BYTES.subarray(12, 28),
      dst: V6_BYTES.subarray(28, 44),
    })
    assert.deepEqual(v6, V6_BYTES)
    assert.deepEqual(decodeFlowKey(6, v6), V6_KEY)
  })

  /** One CPU's struct flow_counters (40 bytes), from the C definition. */
  function counters(c: {packets: bigint; bytes: bigint; first: bigint; last: bigint; flags: number; tos: number; pad?: number}): Buffer {
    const b = Buffer.alloc(40)
    b.writeBigUInt64LE(c.packets, 0)
    b.writeBigUInt64LE(c.bytes, 8)
    b.writeBigUInt64LE(c.first, 16)
    b.writeBigUInt64LE(c.last, 24)
    b[32] = c.flags
    b[33] = c.tos
    b.fill(c.pad ?? 0, 34, 40)
    return b
  }

  it('decodePerCpuCounters sums CPUs, min first_seen, max last_seen, ORs flags, ignores unused slots', function () {
    const value = Buffer.concat([
      counters({packets: 10n, bytes: 1000n, first: 5000n, last: 9000n, flags: 0x02, tos: 0x10}),
      counters({packets: 0n, bytes: 0n, first: 0n, last: 0n, flags: 0, tos: 0}), // never saw it
      counters({packets: 3n, bytes: 5_000_000_000n, first: 4000n, last: 12000n, flags: 0x10, tos: 0xb8}),
      // first_seen 0: this slot is not a sighting, whatever else it holds
      counters({packets: 99n, bytes: 99n, first: 0n, last: 99999n, flags: 0x80, tos: 0xff, pad: 0xee}),
    ])
    assert.deepEqual(decodePerCpuCounters(value, 0, 4), {
      packets: 13,
      bytes: 5_000_001_000,
      firstSeenNs: 4000n,
      lastSeenNs: 12000n,
      tcpFlags: 0x12,
      ipTos: 0xb8, // from the CPU that saw the flow first
    })
  })

  it('decodePerCpuCounters takes tos from the earliest CPU also when it comes first', function () {
    const value = Buffer.concat([
      counters({packets: 1n, bytes: 60n, first: 1000n, last: 1000n, flags: 0x02, tos: 0x20}),
      counters({packets: 1n, bytes: 60n, first: 2000n, last: 2000n, flags: 0x01, tos: 0x40}),
    ])
    const c = decodePerCpuCounters(value, 0, 2)
    assert.equal(c.ipTos, 0x20)
    assert.equal(c.firstSeenNs, 1000n)
    assert.equal(c.lastSeenNs, 2000n)
    assert.equal(c.tcpFlags, 0x03)
  })

  it('decodePerCpuCounters honours offset and stride', function () {
    const slot = (c: Parameters<typeof counters>[0]) => Buffer.concat([counters(c), Buffer.alloc(8, 0x77)]) // 48-byte stride
    const value = Buffer.concat([
      Buffer.alloc(16, 0x55),
      slot({packets: 2n, bytes: 200n, first: 700n, last: 800n, flags: 0x04, tos: 1}),
      slot({packets: 5n, bytes: 500n, first: 600n, last: 650n, flags: 0x08, tos: 2}),
    ])
    assert.deepEqual(decodePerCpuCounters(value, 16, 2, 48), {packets: 7, bytes: 700, firstSeenNs: 600n, lastSeenNs: 800n, tcpFlags: 0x0c, ipTos: 2})
  })

  it('decodePerCpuCounters of a value no CPU saw is all zero', function () {
    assert.deepEqual(decodePerCpuCounters(Buffer.alloc(40 * 3), 0, 3), {packets: 0, bytes: 0, firstSeenNs: 0n, lastSeenNs: 0n, tcpFlags: 0, ipTos: 0})
  })

  it('decodeFlowRecord reads a hand-built struct flow_record', function () {
    const b = Buffer.alloc(48 + 5, 0)
    const o = 5
    b.writeBigUInt64LE(7n, o + 0)
    b.writeBigUInt64LE(1n << 40n, o + 8)
    b.writeBigUInt64LE(111n, o + 16)
    b.writeBigUInt64LE(222n, o + 24)
    b.writeBigUInt64LE(0x0102030405060708n, o + 32)
    b[o + 40] = 0x1b
    b[o + 41] = 0x04
    b.fill(0xff, o + 42, o + 48)
    assert.deepEqual(decodeFlowRecord(b, o), {
      packets: 7,
      bytes: 2 ** 40,
      firstSeenNs: 111n,
      lastSeenNs: 222n,
      drainGen: 0x0102030405060708n,
      tcpFlags: 0x1b,
      ipTos: 0x04,
    })
  })

  it('encodeFlowRecord writes the C layout, zeroes the padding, leaves neighbours alone, and round-trips', function () {
    const c = {packets: 123456, bytes: 9_000_000_000, firstSeenNs: 1_000_000_001n, lastSeenNs: 2_000_000_002n, tcpFlags: 0x19, ipTos: 0x2e}
    const buf = Buffer.alloc(8 + 48 + 8, 0xab)
    encodeFlowRecord(c, 42n, buf, 8)
    assert.deepEqual(buf.subarray(0, 8), Buffer.alloc(8, 0xab), 'bytes before the record changed')
    assert.deepEqual(buf.subarray(56), Buffer.alloc(8, 0xab), 'bytes after the record changed')
    assert.equal(buf.readBigUInt64LE(8 + 0), 123456n)
    assert.equal(buf.readBigUInt64LE(8 + 8), 9_000_000_000n)
    assert.equal(buf.readBigUInt64LE(8 + 16), 1_000_000_001n)
    assert.equal(buf.readBigUInt64LE(8 + 24), 2_000_000_002n)
    assert.equal(buf.readBigUInt64LE(8 + 32), 42n)
    assert.equal(buf[8 + 40], 0x19)
    assert.equal(buf[8 + 41], 0x2e)
    assert.deepEqual(buf.subarray(8 + 42, 8 + 48), Buffer.alloc(6), 'padding not zeroed')
    assert.deepEqual(decodeFlowRecord(buf, 8), {...c, drainGen: 42n})

    const fresh = encodeFlowRecord(c, 0n)
    assert.equal(fresh.length, 48)
    assert.deepEqual(decodeFlowRecord(fresh), {...c, drainGen: 0n})
  })

  it('perCpuStride rounds a value up to 8 bytes', function () {
    const cases: [number, number][] = [
      [1, 8],
      [8, 8],
      [9, 16],
      [16, 16],
      [20, 24],
      [40, 40],
      [44, 48],
      [48, 48],
    ]
    for (const [size, stride] of cases) assert.equal(perCpuStride(size), stride, `perCpuStride(${size})`)
  })

  it('decodePerCpuOverflow sums packets and bytes over CPUs', function () {
    const b = Buffer.alloc(4 + 3 * 16)
    const rows = [
      [1n, 10n],
      [2n, 20n],
      [3n, 5_000_000_000n],
    ]
    rows.forEach(([p, by], cpu) => {
      b.writeBigUInt64LE(p, 4 + cpu * 16)
      b.writeBigUInt64LE(by, 4 + cpu * 16 + 8)
    })
    assert.deepEqual(decodePerCpuOverflow(b, 4, 3), {packets: 6, bytes: 5_000_000_030})
  })

  it('mergeCounters adds, keeps the earliest first-seen (with its tos) and the latest last-seen', function () {
    const into = mergeCounters(emptyCounters(), {packets: 1, bytes: 100, firstSeenNs: 50n, lastSeenNs: 60n, tcpFlags: 0x02, ipTos: 7})
    mergeCounters(into, {packets: 2, bytes: 200, firstSeenNs: 40n, lastSeenNs: 55n, tcpFlags: 0x10, ipTos: 9})
    mergeCounters(into, {packets: 4, bytes: 400, firstSeenNs: 45n, lastSeenNs: 70n, tcpFlags: 0x01, ipTos: 11})
    assert.deepEqual(into, {packets: 7, bytes: 700, firstSeenNs: 40n, lastSeenNs: 70n, tcpFlags: 0x13, ipTos: 9})
  })
})
