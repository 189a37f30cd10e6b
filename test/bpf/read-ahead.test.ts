/**
 * ReadAhead on real kernel maps: the entries it hands over are those BpfMap.forEachBatch reads,
 * read batch by read batch, and a caller that gives up half-way leaves the reader thread ready for the next.
 */
import assert from 'node:assert/strict'

import {BPF_F_NO_PREALLOC, BpfMap, MAP_TYPE} from '../../src/bpf/libbpf.js'
import {forEachBatchAhead, ReadAhead} from '../../src/bpf/read-ahead.js'
import {requireE2e} from '../helpers/e2e.js'

const KEY = 12
const VALUE = 20

function filledMap(entries: number): BpfMap {
  const map = BpfMap.create(MAP_TYPE.hash, 'fct_readahead', KEY, VALUE, Math.max(entries, 1), BPF_F_NO_PREALLOC)
  const keys = Buffer.alloc(entries * KEY)
  const values = Buffer.alloc(entries * VALUE)
  for (let i = 0; i < entries; i++) {
    keys.writeUInt32LE(i, i * KEY)
    keys.writeUInt32LE(i ^ 0x5a5a, i * KEY + 8)
    values.writeUInt32LE(i * 7, i * VALUE)
    values.writeUInt32LE(i + 1, i * VALUE + 16)
  }
  if (entries) map.updateBatch(keys, values, entries)
  return map
}

/** Every entry as "key hex=value hex", in the order read. */
function entriesOf(read: (onBatch: (keys: Buffer, values: Buffer, n: number) => void) => number): {list: string[]; total: number} {
  const list: string[] = []
  const total = read((keys, values, n) => {
    for (let i = 0; i < n; i++)
      list.push(`${keys.subarray(i * KEY, (i + 1) * KEY).toString('hex')}=${values.subarray(i * VALUE, (i + 1) * VALUE).toString('hex')}`)
  })
  return {list, total}
}

describe('bpf/read-ahead @e2e', function () {
  before(function () {
    requireE2e(this)
  })

  it('hands over every entry once, as a plain batch read sees them, over many read batches', function () {
    const map = filledMap(50_000)
    try {
      const ahead = entriesOf((f) => ReadAhead.shared().forEachBatch(map, f, 1024))
      const plain = entriesOf((f) => map.forEachBatch(f, {batchEntries: 1024}))
      assert.equal(ahead.total, 50_000)
      assert.equal(new Set(ahead.list).size, 50_000, 'no entry twice')
      assert.deepEqual([...ahead.list].sort(), [...plain.list].sort())
    } finally {
      map.close()
    }
  })

  it('reads an empty map as no entries, and the same map again after', function () {
    const map = filledMap(0)
    try {
      let calls = 0
      assert.equal(
        ReadAhead.shared().forEachBatch(map, () => calls++),
        0,
      )
      assert.equal(calls, 0)
      assert.equal(
        ReadAhead.shared().forEachBatch(map, () => calls++),
        0,
      )
    } finally {
      map.close()
    }
  })

  it('passes on an error thrown while handling a read batch, and reads the next map whole', function () {
    const first = filledMap(20_000)
    const second = filledMap(5_000)
    try {
      let batches = 0
      assert.throws(
        () =>
          ReadAhead.shared().forEachBatch(
            first,
            () => {
              if (++batches === 2) throw new Error('the sink failed')
            },
            1024,
          ),
        /the sink failed/,
      )
      assert.equal(batches, 2, 'no read batch is handed over after the error')
      assert.equal(entriesOf((f) => ReadAhead.shared().forEachBatch(second, f, 1024)).total, 5_000)
      // A batch shape other than the last one: the ring is rebuilt for it.
      assert.equal(entriesOf((f) => ReadAhead.shared().forEachBatch(first, f, 4096)).total, 20_000)
    } finally {
      first.close()
      second.close()
    }
  })

  describe('in libuv threads (forEachBatchAhead)', function () {
    /** entriesOf() of an asynchronous read. */
    async function entriesAhead(map: BpfMap, batchEntries: number): Promise<{list: string[]; total: number}> {
      const list: string[] = []
      const total = await forEachBatchAhead(
        map,
        (keys, values, n) => {
          for (let i = 0; i < n; i++)
            list.push(`${keys.subarray(i * KEY, (i + 1) * KEY).toString('hex')}=${values.subarray(i * VALUE, (i + 1) * VALUE).toString('hex')}`)
        },
        batchEntries,
      )
      return {list, total}
    }

    it('hands over every entry once, as a plain batch read sees them, over many read batches', async function () {
      const map = filledMap(50_000)
      try {
        const ahead = await entriesAhead(map, 1024)
        const plain = entriesOf((f) => map.forEachBatch(f, {batchEntries: 1024}))
        assert.equal(ahead.total, 50_000)
        assert.equal(new Set(ahead.list).size, 50_000, 'no entry twice')
        assert.deepEqual([...ahead.list].sort(), [...plain.list].sort())
      } finally {
        map.close()
      }
    })

    it('reads an empty map as no entries, and two maps at once each whole', async function () {
      const empty = filledMap(0)
      const a = filledMap(30_000)
      const b = filledMap(20_000)
      try {
        assert.equal((await entriesAhead(empty, 1024)).total, 0)
        const [ra, rb] = await Promise.all([entriesAhead(a, 1024), entriesAhead(b, 1024)])
        assert.equal(new Set(ra.list).size, 30_000)
        assert.equal(new Set(rb.list).size, 20_000)
        assert.deepEqual([...ra.list].sort(), [...entriesOf((f) => a.forEachBatch(f, {batchEntries: 1024})).list].sort())
      } finally {
        empty.close()
        a.close()
        b.close()
      }
    })

    it('passes on an error thrown while handling a read batch once no read is in flight, and reads the next map whole', async function () {
      const first = filledMap(20_000)
      const second = filledMap(5_000)
      try {
        let batches = 0
        await assert.rejects(
          forEachBatchAhead(
            first,
            () => {
              if (++batches === 2) throw new Error('the sink failed')
            },
            1024,
          ),
          /the sink failed/,
        )
        assert.equal(batches, 2, 'no read batch is handed over after the error')
        assert.equal((await entriesAhead(second, 1024)).total, 5_000)
        assert.equal((await entriesAhead(first, 4096)).total, 20_000)
      } finally {
        first.close()
        second.close()
      }
    })
  })
})
