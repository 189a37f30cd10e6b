import assert from 'node:assert/strict'

import {FlowCache} from '../../src/flow/flow-cache.js'

function key(n: number, size = 20): Uint8Array {
  const k = new Uint8Array(size)
  new DataView(k.buffer).setUint32(0, n, true)
  k[size - 1] = n % 251
  return k
}

describe('flow/flow-cache', function () {
  it('finds what it holds and nothing else', function () {
    const cache = new FlowCache(20, 4, 100)
    for (let n = 0; n < 100; n++) {
      const idx = cache.insert(key(n))
      cache.packets[idx] = n
    }
    assert.equal(cache.size, 100)
    assert.ok(cache.full)
    for (let n = 0; n < 100; n++) assert.equal(cache.packets[cache.find(key(n))], n)
    assert.equal(cache.find(key(100)), -1)
    assert.throws(() => cache.insert(key(100)), /full/)
  })

  it('finds a key inside a larger buffer at an offset', function () {
    const cache = new FlowCache(20, 4, 4)
    const buf = new Uint8Array(60)
    buf.set(key(7), 20)
    const idx = cache.insert(buf, 20)
    assert.equal(cache.find(key(7)), idx)
    assert.equal(cache.find(buf, 20), idx)
  })

  it('keeps every other entry findable, with its columns, through random removals', function () {
    // Against a Map as the reference: removals move the last entry and shift probe runs back.
    const cache = new FlowCache(44, 4, 2000)
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
        const idx = cache.insert(key(n, 44))
        cache.bytes[idx] = n * 10
        cache.tcpFlags[idx] = n & 0xff
        reference.set(n, n * 10)
      } else {
        const victims = [...reference.keys()]
        const n = victims[Math.floor(random() * victims.length)]
        cache.remove(cache.find(key(n, 44)))
        reference.delete(n)
      }
    }
    assert.equal(cache.size, reference.size)
    for (const [n, bytes] of reference) {
      const idx = cache.find(key(n, 44))
      assert.ok(idx >= 0 && idx < cache.size, `flow ${n} is there`)
      assert.equal(cache.bytes[idx], bytes)
      assert.equal(cache.tcpFlags[idx], n & 0xff)
    }
    for (let n = 0; n < next; n++) if (!reference.has(n)) assert.equal(cache.find(key(n, 44)), -1, `flow ${n} is gone`)
  })

  it('visits each entry once when removing while iterating downwards', function () {
    const cache = new FlowCache(20, 4, 50)
    for (let n = 0; n < 50; n++) cache.packets[cache.insert(key(n))] = n
    const seen: number[] = []
    for (let idx = cache.size - 1; idx >= 0; idx--) {
      seen.push(cache.packets[idx])
      if (cache.packets[idx] % 2 === 0) cache.remove(idx)
    }
    assert.deepEqual([...seen].sort((a, b) => a - b), [...Array(50).keys()])
    assert.equal(cache.size, 25)
    for (let n = 1; n < 50; n += 2) assert.ok(cache.find(key(n)) >= 0)
  })
})
