import assert from 'node:assert/strict'

import {releaseMemory} from '../../src/sys/heap.js'

describe('sys/heap releaseMemory', function () {
  it('takes the memory from under every view of the buffer (it goes at the next scavenge, not at a full collection)', function () {
    const slab = Buffer.allocUnsafeSlow(1 << 20).fill(7)
    const words = new Int32Array(slab.buffer)
    releaseMemory(slab.buffer)
    assert.equal(slab.buffer.byteLength, 0)
    assert.equal(slab.length, 0)
    assert.equal(words.length, 0)
  })

  it('does nothing to a buffer already given back, or an empty one', function () {
    const buffer = new ArrayBuffer(64)
    releaseMemory(buffer)
    assert.doesNotThrow(() => releaseMemory(buffer))
    assert.doesNotThrow(() => releaseMemory(new ArrayBuffer(0)))
  })
})
