import assert from 'node:assert/strict'

import {FlowCache} from '../../src/flow/flow-cache.js'
import {SLAB_CHUNKS, type FlowRecordLayout} from '../../src/flow/record-slabs.js'
import type {FlowSample} from '../../src/flow/record.js'

/**
 * A record layout of the cache's own (the kernel's is tested in test/bpf/layout.test.ts): a
 * 20-byte key, then a value of u64 packets, bytes, first, last; u32 flags, peer; u8 tos, min TTL,
 * max TTL, forwarding status; a 4-byte next hop. 1024-byte chunks with an 8-byte header.
 */
function layout(keySize = 20): FlowRecordLayout {
  const valueAt = Math.ceil(keySize / 8) * 8
  return {
    keySize,
    recordSize: valueAt + 48,
    valueAt,
    fields: {packets: 0, bytes: 8, firstNs: 16, lastNs: 24, tcpFlags: 32, peerIfindex: 36, tos: 40, minTtl: 41, maxTtl: 42, fwdStatus: 43, nextHop: 44},
    addrLen: 4,
    chunkBytes: 1024,
    chunkHeader: 8,
    readValue(buf, off, into) {
      const v = new DataView(buf.buffer, buf.byteOffset + off, 48)
      into.packets = Number(v.getBigUint64(0, true))
      into.bytes = Number(v.getBigUint64(8, true))
      into.firstNs = Number(v.getBigUint64(16, true))
      into.lastNs = Number(v.getBigUint64(24, true))
      into.tcpFlags = v.getUint32(32, true)
      into.peerIfindex = v.getUint32(36, true)
      into.tos = v.getUint8(40)
      into.minTtl = v.getUint8(41)
      into.maxTtl = v.getUint8(42)
      into.fwdStatus = v.getUint8(43)
      into.nextHopBytes = buf
      into.nextHopOffset = off + 44
      return into
    },
  }
}

function sample(over: Partial<FlowSample> = {}): FlowSample {
  return {
    packets: 0,
    bytes: 0,
    firstNs: 0,
    lastNs: 0,
    tcpFlags: 0,
    tos: 0,
    peerIfindex: 0,
    minTtl: 0,
    maxTtl: 0,
    fwdStatus: 0,
    nextHopBytes: new Uint8Array(4),
    nextHopOffset: 0,
    ...over,
  }
}

function key(n: number, size = 20): Uint8Array {
  const k = new Uint8Array(size)
  new DataView(k.buffer).setUint32(0, n, true)
  k[size - 1] = n % 251
  return k
}

const read = (cache: FlowCache, idx: number) => cache.read(idx, sample())

/** The entry of the key at `off` of `buf`, or -1, looked up as the drain does (a read batch of one). */
function find(cache: FlowCache, buf: Uint8Array, off = 0): number {
  const found = new Int32Array(1)
  cache.findMany(buf, off, 0, 1, found)
  return found[0]
}

/** Adds a zeroed entry for the key at `off` of `buf`, which is not there, as the drain does. */
function insert(cache: FlowCache, buf: Uint8Array, off = 0): number {
  const found = new Int32Array(1)
  const lookup = cache.findMany(buf, off, 0, 1, found)
  assert.equal(found[0], -1, 'the key is not there yet')
  return cache.insertFound(lookup, 0)
}

/** Inserts flow n with n packets and n * 10 bytes. */
function put(cache: FlowCache, n: number, size = 20): number {
  const idx = insert(cache, key(n, size))
  cache.merge(idx, sample({packets: n, bytes: n * 10, tcpFlags: n & 0xff}))
  return idx
}

describe('flow/flow-cache', function () {
  it('finds what it holds and nothing else', function () {
    const cache = new FlowCache(layout(), 100)
    for (let n = 0; n < 100; n++) put(cache, n)
    assert.equal(cache.size, 100)
    assert.ok(cache.full)
    for (let n = 0; n < 100; n++) assert.equal(read(cache, find(cache, key(n))).packets, n)
    assert.equal(find(cache, key(100)), -1)
    assert.throws(() => insert(cache, key(100)), /full/)
  })

  it('finds a key inside a larger buffer at an offset', function () {
    const cache = new FlowCache(layout(), 4)
    const buf = new Uint8Array(60)
    buf.set(key(7), 20)
    const idx = insert(cache, buf, 20)
    assert.equal(find(cache, key(7)), idx)
    assert.equal(find(cache, buf, 20), idx)
  })

  it('keeps its records as chunks of key and value, with the header left to the snapshot writer', function () {
    // 1024-byte chunks of 72-byte records after an 8-byte header: 14 a chunk.
    const cache = new FlowCache(layout(), 20 * SLAB_CHUNKS * 14)
    assert.equal(cache.recordsPerChunk, 14)
    for (let n = 0; n < 15 * SLAB_CHUNKS; n++) put(cache, n)
    assert.equal(cache.chunks, Math.ceil((15 * SLAB_CHUNKS) / 14))
    assert.equal(cache.recordAt(0), 8)
    assert.equal(cache.recordAt(13), 8 + 13 * 72)
    assert.equal(cache.recordAt(14), 1024 + 8)
    assert.notEqual(cache.chunkSlab(0), cache.chunkSlab(SLAB_CHUNKS), 'the next slab begins after SLAB_CHUNKS chunks')
    assert.equal(cache.chunkOffset(SLAB_CHUNKS + 1), 1024)
    const idx = 14 * SLAB_CHUNKS + 3 // in the second slab
    assert.equal(cache.slabOf(idx), cache.chunkSlab(SLAB_CHUNKS))
    assert.deepEqual(new Uint8Array(cache.slabOf(idx).subarray(cache.recordAt(idx), cache.recordAt(idx) + 20)), key(idx))
    assert.equal(read(cache, idx).bytes, idx * 10)
  })

  it('gives back slabs once the entries no longer need them, and keeps what remains findable', function () {
    const perSlab = SLAB_CHUNKS * 14
    const cache = new FlowCache(layout(), 10 * perSlab)
    for (let n = 0; n < 4 * perSlab; n++) put(cache, n)
    assert.equal(cache.room, 4 * perSlab)
    // Keep one flow in 100: room for twice what remains is one slab.
    const marks = new Uint8Array(cache.size)
    for (let idx = 0; idx < cache.size; idx++) marks[idx] = read(cache, idx).packets % 100 ? 1 : 0
    cache.removeMarked(marks)
    assert.equal(cache.size, Math.ceil((4 * perSlab) / 100))
    assert.equal(cache.room, perSlab)
    for (let n = 0; n < 4 * perSlab; n += 100) assert.equal(read(cache, find(cache, key(n))).packets, n)
    assert.equal(find(cache, key(1)), -1)
    for (let n = 0; n < 2 * perSlab; n++) if (n % 100) put(cache, n) // grows again
    const lastKept = Math.floor((4 * perSlab - 1) / 100) * 100
    assert.equal(read(cache, find(cache, key(lastKept))).packets, lastKept, 'kept through the growth')
    cache.clear()
    assert.equal(cache.room, perSlab)
    assert.equal(find(cache, key(0)), -1)
  })

  it('removeEachSlab hands over every entry once, a slab at a time from the last, giving each slab back after it', function () {
    const perSlab = SLAB_CHUNKS * 14
    const cache = new FlowCache(layout(), 10 * perSlab)
    const flows = 3 * perSlab + 5
    for (let n = 0; n < flows; n++) put(cache, n)
    const seen: number[] = []
    const ranges: [number, number, number][] = []
    cache.removeEachSlab((from, to) => {
      ranges.push([from, to, cache.room])
      for (let idx = from; idx < to; idx++) seen.push(read(cache, idx).packets)
    })
    // The last slab first (5 entries), then each full one; the slab just handed over is still there while it is read.
    assert.deepEqual(ranges, [
      [3 * perSlab, flows, 4 * perSlab],
      [2 * perSlab, 3 * perSlab, 3 * perSlab],
      [perSlab, 2 * perSlab, 2 * perSlab],
      [0, perSlab, perSlab],
    ])
    assert.deepEqual(
      [...seen].sort((a, b) => a - b),
      Array.from({length: flows}, (_, n) => n),
    )
    assert.equal(cache.size, 0)
    assert.equal(cache.room, perSlab)
    assert.equal(find(cache, key(0)), -1)
    for (let n = 0; n < 2 * perSlab; n++) put(cache, n) // and grows again
    assert.equal(read(cache, find(cache, key(2 * perSlab - 1))).packets, 2 * perSlab - 1)
  })

  it('removeEachSlab cut short by a throw keeps the entries not handed over whole, and findable', function () {
    const perSlab = SLAB_CHUNKS * 14
    const cache = new FlowCache(layout(), 10 * perSlab)
    const flows = 3 * perSlab + 5
    for (let n = 0; n < flows; n++) put(cache, n)
    let calls = 0
    assert.throws(
      () =>
        cache.removeEachSlab(() => {
          if (++calls === 2) throw new Error('the sink failed')
        }),
      /the sink failed/,
    )
    // The first call's entries are gone; those of the call that threw, and before, stay.
    assert.equal(cache.size, 3 * perSlab)
    assert.equal(cache.room, 3 * perSlab)
    for (let n = 0; n < 3 * perSlab; n++) assert.equal(read(cache, find(cache, key(n))).packets, n)
    assert.equal(find(cache, key(3 * perSlab)), -1)
    put(cache, 3 * perSlab)
    assert.equal(read(cache, find(cache, key(3 * perSlab))).packets, 3 * perSlab)
  })

  it('keeps every other entry findable, with its values, through random removals', function () {
    // Against a Map as the reference: removals move the last entry and shift probe runs back.
    const cache = new FlowCache(layout(44), 2000)
    const reference = new Map<number, number>()
    let next = 0
    let seed = 12345
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed / 0x7fffffff
    }
    for (let round = 0; round < 20000; round++) {
      if (cache.size < 1500 && (random() < 0.6 || cache.size === 0)) {
        const n = next++
        put(cache, n, 44)
        reference.set(n, n * 10)
      } else {
        const victims = [...reference.keys()]
        const n = victims[Math.floor(random() * victims.length)]
        cache.remove(find(cache, key(n, 44)))
        reference.delete(n)
      }
    }
    assert.equal(cache.size, reference.size)
    for (const [n, bytes] of reference) {
      const idx = find(cache, key(n, 44))
      assert.ok(idx >= 0 && idx < cache.size, `flow ${n} is there`)
      assert.equal(read(cache, idx).bytes, bytes)
      assert.equal(read(cache, idx).tcpFlags, n & 0xff)
    }
    for (let n = 0; n < next; n++) if (!reference.has(n)) assert.equal(find(cache, key(n, 44)), -1, `flow ${n} is gone`)
  })

  it('visits each entry once when removing while iterating downwards', function () {
    const cache = new FlowCache(layout(), 50)
    for (let n = 0; n < 50; n++) put(cache, n)
    const seen: number[] = []
    for (let idx = cache.size - 1; idx >= 0; idx--) {
      const {packets} = read(cache, idx)
      seen.push(packets)
      if (packets % 2 === 0) cache.remove(idx)
    }
    assert.deepEqual(
      [...seen].sort((a, b) => a - b),
      [...Array(50).keys()],
    )
    assert.equal(cache.size, 25)
    for (let n = 1; n < 50; n += 2) assert.ok(find(cache, key(n)) >= 0)
  })

  it('removeMarked drops the marked entries in one pass and keeps the rest findable, in order', function () {
    const cache = new FlowCache(layout(), 3000)
    for (let n = 0; n < 3000; n++) put(cache, n)
    const marks = new Uint8Array(3000)
    for (let idx = 0; idx < cache.size; idx++) if (read(cache, idx).packets % 3 !== 0) marks[idx] = 1
    cache.removeMarked(marks)
    assert.equal(cache.size, 1000)
    for (let idx = 0; idx < cache.size; idx++) assert.equal(read(cache, idx).packets, idx * 3, 'order kept')
    for (let n = 0; n < 3000; n++) {
      const idx = find(cache, key(n))
      if (n % 3 === 0) assert.equal(read(cache, idx).packets, n)
      else assert.equal(idx, -1, `flow ${n} is gone`)
    }
    // What remains can still grow and be removed one by one.
    for (let n = 3000; n < 3100; n++) put(cache, n)
    cache.remove(find(cache, key(0)))
    assert.equal(find(cache, key(0)), -1)
    assert.equal(read(cache, find(cache, key(3099))).packets, 3099)
  })

  it('add merges into the entry of a key, adds a new one, and refuses a new key when full', function () {
    const cache = new FlowCache(layout(), 2)
    const first = sample({
      packets: 2,
      bytes: 100,
      firstNs: 50,
      lastNs: 60,
      tcpFlags: 0x02,
      peerIfindex: 7,
      minTtl: 64,
      maxTtl: 64,
      fwdStatus: 64,
      nextHopBytes: new Uint8Array([198, 18, 0, 1]),
    })
    const a = cache.add(key(1), 0, first)
    const big = 2 ** 40 + 3 // past 32 bits: the u64 words carry
    assert.equal(
      cache.add(key(1), 0, {
        ...first,
        bytes: big,
        firstNs: 40,
        lastNs: 2 ** 45,
        tcpFlags: 0x10,
        minTtl: 63,
        maxTtl: 63,
        peerIfindex: 8,
        nextHopBytes: new Uint8Array([198, 18, 0, 2]),
      }),
      a,
    )
    const got = read(cache, a)
    assert.equal(got.packets, 4)
    assert.equal(got.bytes, 100 + big)
    assert.equal(got.firstNs, 40)
    assert.equal(got.lastNs, 2 ** 45)
    assert.equal(got.tcpFlags, 0x12)
    assert.equal(got.peerIfindex, 8, 'the first packet wins')
    assert.deepEqual([...got.nextHopBytes.subarray(got.nextHopOffset, got.nextHopOffset + 4)], [198, 18, 0, 2])
    assert.deepEqual([got.minTtl, got.maxTtl], [63, 64])
    assert.ok(cache.add(key(2), 0, first) >= 0)
    assert.equal(cache.add(key(3), 0, first), -1)
    assert.equal(cache.size, 2)
  })

  it('finds and inserts keys at offsets that are not a multiple of 4', function () {
    const cache = new FlowCache(layout(), 10)
    const buf = new Uint8Array(64)
    buf.set(key(9), 3)
    assert.equal(find(cache, buf.subarray(1), 2), -1)
    const idx = insert(cache, buf.subarray(1), 2)
    assert.equal(find(cache, key(9)), idx)
    assert.equal(find(cache, buf, 3), idx)
    assert.throws(() => new FlowCache(layout(22), 10), /32-bit words/)
  })
})

describe('flow/flow-cache findMany', function () {
  it('finds many keys at once as find does one by one, and inserts those it did not find', function () {
    const cache = new FlowCache(layout(), 5000)
    const entryOf = new Map<number, number>()
    for (let n = 0; n < 3000; n += 2) entryOf.set(n, put(cache, n)) // the even flows are there
    const keys = new Uint8Array(4 + 20 * 2000)
    for (let i = 0; i < 2000; i++) keys.set(key(i), 4 + i * 20)
    const found = new Int32Array(2000)
    const lookup = cache.findMany(keys, 4, 20, 2000, found)
    for (let i = 0; i < 2000; i++) assert.equal(found[i], find(cache, key(i)), `flow ${i}`)
    for (let i = 0; i < 2000; i++) assert.equal(found[i], entryOf.get(i) ?? -1, `flow ${i} where put put it`)
    for (let i = 1; i < 2000; i += 2) {
      assert.equal(found[i], -1)
      const idx = cache.insertFound(lookup, i)
      cache.merge(idx, sample({packets: i}))
    }
    for (let i = 0; i < 2000; i++) assert.equal(read(cache, find(cache, key(i))).packets, i)
    // An empty cache finds nothing without hashing, and hashes what it inserts.
    const empty = new FlowCache(layout(), 100)
    const none = new Int32Array(10)
    const nothing = empty.findMany(keys, 4, 20, 10, none)
    assert.deepEqual([...none], Array(10).fill(-1))
    const at3 = empty.insertFound(nothing, 3)
    const at7 = empty.insertFound(nothing, 7)
    assert.deepEqual([find(empty, key(3)), find(empty, key(7)), find(empty, key(4))], [at3, at7, -1])
    // Unaligned keys take the one-by-one path, with the same answers.
    const odd = new Uint8Array(2 + 20 * 10)
    for (let i = 0; i < 10; i++) odd.set(key(4000 + (i % 2 ? 0 : i)), 2 + i * 20)
    const few = new Int32Array(10)
    const oddLookup = cache.findMany(odd, 2, 20, 10, few)
    assert.equal(few[0], -1)
    assert.equal(few[1], -1, 'flow 4000 is not there')
    const idx = cache.insertFound(oddLookup, 1)
    assert.equal(find(cache, key(4000)), idx)
  })

  it('inserts from the lookup it is handed, whatever was looked up since', function () {
    const cache = new FlowCache(layout(), 100)
    put(cache, 1) // not empty: lookups hash their keys
    const first = new Uint8Array(20 * 4)
    const second = new Uint8Array(20 * 4)
    for (let i = 0; i < 4; i++) {
      first.set(key(10 + i), i * 20)
      second.set(key(20 + i), i * 20)
    }
    const foundFirst = new Int32Array(4)
    const foundSecond = new Int32Array(4)
    const a = cache.findMany(first, 0, 20, 4, foundFirst)
    const b = cache.findMany(second, 0, 20, 4, foundSecond)
    assert.deepEqual([...foundFirst, ...foundSecond], Array(8).fill(-1))
    const at12 = cache.insertFound(a, 2)
    const at21 = cache.insertFound(b, 1)
    assert.deepEqual([find(cache, key(12)), find(cache, key(21))], [at12, at21])
    assert.deepEqual([find(cache, key(22)), find(cache, key(11))], [-1, -1])
    // An empty cache's lookups hash at insertion, from their own keys too.
    const empty = new FlowCache(layout(), 100)
    const c = empty.findMany(first, 0, 20, 4, foundFirst)
    empty.findMany(second, 0, 20, 4, foundSecond)
    assert.equal(find(empty, key(13)), -1)
    const at13 = empty.insertFound(c, 3)
    assert.deepEqual([find(empty, key(13)), find(empty, key(23))], [at13, -1])
  })
})
