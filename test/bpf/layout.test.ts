/**
 * The kernel layout is defined once, in bpf/flowctl.h: the committed generated modules must be
 * what misc/gen-layout.ts makes of the headers now (as bpf2go's generated files are checked), and
 * the accessors of src/bpf/layout.ts must read hand-built bytes as the C structs lay them out.
 */
import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {TARGETS, generateTarget} from '../../misc/gen-layout.js'
import {
  FLOW_KEY4,
  FLOW_KEY6,
  FLOW_VALUE4,
  FLOW_VALUE6,
  HANDSHAKE_KEY,
  HANDSHAKE_TIMES,
  LAYOUT_VERSION,
  decodeFlowKey,
  decodeFlowValue,
  pendingChunks,
  readFlowSample,
  emptySample,
  recordsPerChunk,
  flowRecordLayout,
} from '../../src/bpf/layout.js'
import {PENDING_CHUNK_HEADER, PENDING_FLOW6} from '../../src/bpf/layout.generated.js'
import {FlowCache} from '../../src/flow/flow-cache.js'
import {emptyCounters, mergeCounters} from '../../src/flow/record.js'
import {REPO_ROOT} from '../helpers/unit.js'

describe('the generated kernel layout', function () {
  this.timeout(60_000)

  for (const target of TARGETS) {
    it(`${target.output} is what ${target.header} generates now (run \`npm run gen:layout\` after changing a header)`, async function () {
      const committed = await readFile(join(REPO_ROOT, target.output), 'utf8')
      assert.equal(committed, await generateTarget(target))
    })
  }

  it('LAYOUT_VERSION is the header enum; layout 2 has the router-grade fields, layout 3 the sampling interval in the key, layout 4 the handshake map', function () {
    assert.equal(LAYOUT_VERSION, 4)
    // Layout 4 keyed handshakes by the IPv6-shaped flow key and the family, and left the flow maps' shapes alone.
    assert.deepEqual([HANDSHAKE_KEY.size, HANDSHAKE_KEY.fields.flow.size, HANDSHAKE_TIMES.size], [52, FLOW_KEY6.size, 24])
    for (const f of ['peerIfindex', 'minTtl', 'maxTtl', 'fwdStatus', 'nextHop']) assert.ok(f in FLOW_VALUE4.fields && f in FLOW_VALUE6.fields, f)
    assert.ok('innerVlanId' in FLOW_KEY4.fields && 'innerVlanId' in FLOW_KEY6.fields)
    // Where layout 2 had its padding: the flow maps keep their shapes, and layout-2 keys read as interval 1.
    assert.deepEqual(
      [FLOW_KEY4.fields.samplingInterval, FLOW_KEY6.fields.samplingInterval],
      [
        {offset: 14, size: 2},
        {offset: 14, size: 2},
      ],
    )
    assert.deepEqual([FLOW_KEY4.size, FLOW_KEY6.size], [24, 48])
  })

  it('the pending map is sized for two snapshots of twice the capacity of each family', function () {
    const capacity = 1 << 20
    const per4 = recordsPerChunk(4)
    const per6 = recordsPerChunk(6)
    assert.ok(per4 * 72 + 8 <= 32768 && per6 * 112 + 8 <= 32768)
    assert.equal(pendingChunks(capacity), 2 * (Math.ceil((2 * capacity) / per4) + Math.ceil((2 * capacity) / per6)))
  })
})

describe('bpf/layout.ts accessors', function () {
  function key4(): Buffer {
    const k = Buffer.alloc(FLOW_KEY4.size)
    k.set([0x04, 0x03, 0x02, 0x01], 0) // ifindex 0x01020304, little-endian
    k[4] = 1 // egress
    k[5] = 6
    k.set([0x64, 0x00], 6) // vlan 100, host order
    k.set([0x01, 0xbb], 8) // sport 443, network order
    k.set([0xc8, 0x22], 10) // dport 51234
    k.set([0x0a, 0x00], 12) // inner vlan 10
    k.set([0x0a, 0x01], 14) // sampled 1 in 266, host order
    k.set([192, 0, 2, 1], 16)
    k.set([198, 51, 100, 7], 20)
    return k
  }

  it('decodeFlowKey reads an IPv4 key byte by byte as struct flow_key4 lays it out', function () {
    assert.deepEqual(decodeFlowKey(4, key4()), {
      family: 4,
      ifindex: 16909060,
      direction: 'egress',
      proto: 6,
      vlanId: 100,
      innerVlanId: 10,
      samplingInterval: 266,
      sport: 443,
      dport: 51234,
      src: '192.0.2.1',
      dst: '198.51.100.7',
    })
  })

  it('decodeFlowKey reads an IPv6 key at an offset', function () {
    const k = Buffer.alloc(FLOW_KEY6.size)
    k[0] = 2
    k[5] = 17
    k.set([0x20, 0x01, 0x0d, 0xb8], 16)
    k[31] = 1
    k.set([0xfe, 0x80], 32)
    k[47] = 9
    const buf = Buffer.concat([Buffer.from([0xaa, 0xbb]), k])
    const d = decodeFlowKey(6, buf, 2)
    // Interval 0: a key of a layout-2 meter set carried over, which counted every packet.
    assert.deepEqual([d.ifindex, d.proto, d.src, d.dst, d.direction, d.samplingInterval], [2, 17, '2001:db8::1', 'fe80::9', 'ingress', 1])
  })

  it('decodeFlowValue reads every field of a hand-built struct flow_value4', function () {
    const v = Buffer.alloc(FLOW_VALUE4.size)
    v.writeBigUInt64LE(7n, 0)
    v.writeBigUInt64LE(7000n, 8)
    v.writeBigUInt64LE(1_000_000n, 16)
    v.writeBigUInt64LE(2_000_000n, 24)
    v.writeUInt32LE(0x12, 32)
    v.writeUInt32LE(5, 36)
    v.set([0x2e, 60, 63, 64], 40)
    v.set([198, 18, 0, 254], 44)
    assert.deepEqual(decodeFlowValue(4, v), {
      packets: 7,
      bytes: 7000,
      firstSeenNs: 1_000_000n,
      lastSeenNs: 2_000_000n,
      tcpFlags: 0x12,
      ipTos: 0x2e,
      peerIfindex: 5,
      fwdStatus: 64,
      nextHop: '198.18.0.254',
      minTtl: 60,
      maxTtl: 63,
    })
  })

  it('a flow cache entry is the snapshot record of the kernel value merged into it, byte for byte', function () {
    const v = Buffer.alloc(FLOW_VALUE6.size)
    v.writeBigUInt64LE(3n, 0)
    v.writeBigUInt64LE(300n, 8)
    v.writeBigUInt64LE(2n ** 40n + 5n, 16)
    v.writeBigUInt64LE(2n ** 40n + 9n, 24)
    v.writeUInt32LE(0x02, 32)
    v.writeUInt32LE(11, 36)
    v.set([0, 1, 255, 195], 40)
    v.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 44)
    const key = Buffer.alloc(FLOW_KEY6.size, 0x5a)
    const cache = new FlowCache(flowRecordLayout(6), 4)
    const idx = cache.add(key, 0, readFlowSample(v, 0, emptySample()))
    const at = cache.recordAt(idx)
    const record = Buffer.from(cache.slabOf(idx).subarray(at, at + PENDING_FLOW6.size))
    assert.deepEqual(record.subarray(PENDING_FLOW6.fields.key.offset, PENDING_FLOW6.fields.key.offset + FLOW_KEY6.size), key)
    assert.deepEqual(record.subarray(PENDING_FLOW6.fields.value.offset), v)
    assert.equal(at, PENDING_CHUNK_HEADER.size, 'the first record follows the chunk header')
  })

  it('mergeCounters: sums, latest last-seen, OR of flags, TTL range, first-packet fields from the earliest', function () {
    const into = mergeCounters(emptyCounters(), {
      ...emptyCounters(),
      packets: 1,
      bytes: 100,
      firstSeenNs: 50n,
      lastSeenNs: 60n,
      tcpFlags: 0x02,
      ipTos: 7,
      peerIfindex: 3,
      minTtl: 60,
      maxTtl: 60,
    })
    mergeCounters(into, {
      ...emptyCounters(),
      packets: 2,
      bytes: 200,
      firstSeenNs: 40n,
      lastSeenNs: 55n,
      tcpFlags: 0x10,
      ipTos: 9,
      peerIfindex: 4,
      minTtl: 50,
      maxTtl: 55,
    })
    mergeCounters(into, {
      ...emptyCounters(),
      packets: 4,
      bytes: 400,
      firstSeenNs: 45n,
      lastSeenNs: 70n,
      tcpFlags: 0x01,
      ipTos: 11,
      peerIfindex: 5,
      minTtl: 61,
      maxTtl: 64,
    })
    assert.deepEqual(into, {
      ...emptyCounters(),
      packets: 7,
      bytes: 700,
      firstSeenNs: 40n,
      lastSeenNs: 70n,
      tcpFlags: 0x13,
      ipTos: 9,
      peerIfindex: 4,
      minTtl: 50,
      maxTtl: 64,
    })
  })
})
