import assert from 'node:assert/strict'

import {jsonArrayElements} from '../../src/bpf/json-stream.js'
import {prng} from '../helpers/unit.js'

async function* chunked(bytes: Buffer, sizes: () => number): AsyncGenerator<Buffer> {
  for (let i = 0; i < bytes.length;) {
    const n = Math.max(1, sizes())
    await Promise.resolve()
    yield bytes.subarray(i, i + n)
    i += n
  }
}

async function* pieces(parts: (string | Buffer | Uint8Array)[]): AsyncGenerator<string | Buffer | Uint8Array> {
  for (const p of parts) yield p
}

async function collect(source: AsyncIterable<Buffer | Uint8Array | string>): Promise<unknown[]> {
  const out: unknown[] = []
  for await (const e of jsonArrayElements(source)) out.push(e)
  return out
}

/** Elements that stress the scanner: brackets and braces inside strings, escapes, nesting, UTF-8. */
const TRICKY: unknown[] = [
  {key: ['0x0a', '0x00'], value: ['0x01']},
  {s: 'a ] b } c [ d { e'},
  {s: 'quote " inside', t: '\\', u: '\\"', v: 'ends with backslash\\'},
  {q: 'say "]}" now', odd: '"', brackets: '"[{'},
  {nested: [[1, [2, [3, {deep: ['x', {y: []}]}]]], {}], empty: {}, arr: []},
  [1, 2, [3, 4], {a: '[]'}],
  [],
  {},
  {unicode: 'flöw → ✓ 🚀', escaped: '\u0000\n\t\u2028'},
  {
    values: [
      {cpu: 0, value: ['0x00', '0xff']},
      {cpu: 1, value: ['0x10', '0x20']},
    ],
    formatted: {key: {ifindex: 2}, values: [{cpu: 0, value: {packets: 1}}]},
  },
]

describe('bpf/json-stream jsonArrayElements', function () {
  const compact = Buffer.from(JSON.stringify(TRICKY))
  const pretty = Buffer.from(JSON.stringify(TRICKY, null, 2))

  it('yields every element of a whole array in one chunk', async function () {
    assert.deepEqual(await collect(pieces([compact])), TRICKY)
    assert.deepEqual(await collect(pieces([pretty])), TRICKY)
  })

  it('yields the same with 1-byte chunks', async function () {
    assert.deepEqual(await collect(chunked(compact, () => 1)), TRICKY)
    assert.deepEqual(await collect(chunked(pretty, () => 1)), TRICKY)
  })

  it('yields the same with the input split in two at every byte boundary', async function () {
    for (let cut = 0; cut <= compact.length; cut++) {
      const got = await collect(pieces([compact.subarray(0, cut), compact.subarray(cut)]))
      assert.deepEqual(got, TRICKY, `split at byte ${cut}`)
    }
  })

  it('yields the same with random chunk sizes', async function () {
    const rand = prng(2024)
    for (let round = 0; round < 200; round++) {
      const input = round % 2 ? pretty : compact
      const max = 1 + Math.floor(rand() * 40)
      assert.deepEqual(await collect(chunked(input, () => 1 + Math.floor(rand() * max))), TRICKY, `round ${round}`)
    }
  })

  it('accepts string and Uint8Array chunks', async function () {
    const text = JSON.stringify(TRICKY)
    const mid = Math.floor(text.length / 2)
    assert.deepEqual(await collect(pieces([text.slice(0, mid), Uint8Array.from(Buffer.from(text.slice(mid)))])), TRICKY)
  })

  it('yields nothing for an empty array', async function () {
    assert.deepEqual(await collect(pieces(['[]'])), [])
    assert.deepEqual(await collect(pieces(['[', '\n', ']', '\n'])), [])
    assert.deepEqual(await collect(chunked(Buffer.from(' [\n  ]\n'), () => 1)), [])
  })

  it('yields elements as they complete, before the array ends', async function () {
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    async function* slow() {
      yield '[{"a":1},{"b":'
      yield '2},'
      await gate
      yield '{"c":3}]'
    }
    const it = jsonArrayElements(slow())
    assert.deepEqual((await it.next()).value, {a: 1})
    assert.deepEqual((await it.next()).value, {b: 2})
    release()
    assert.deepEqual((await it.next()).value, {c: 3})
    assert.equal((await it.next()).done, true)
  })

  const truncated = ['[', '[{', '[{"a":1}', '[{"a":1},', '[{"a":"b', '[{"a":"b\\"}]', '[[1,2]', '[{"a":[1,2]}']
  for (const text of truncated) {
    it(`throws SyntaxError on truncated input ${JSON.stringify(text)}`, async function () {
      await assert.rejects(collect(chunked(Buffer.from(text), () => 1)), SyntaxError)
      await assert.rejects(collect(pieces([text])), SyntaxError)
    })
  }

  it('throws SyntaxError on every proper prefix of a valid array', async function () {
    for (let cut = 1; cut < compact.length; cut++) {
      await assert.rejects(collect(pieces([compact.subarray(0, cut)])), SyntaxError, `prefix of ${cut} bytes`)
    }
  })

  // Input that is not a JSON array (an empty stream, bpftool's {"error": ...}) is an error, not an empty dump.
  it('throws SyntaxError when the input is empty or not an array', async function () {
    await assert.rejects(collect(pieces([])), SyntaxError, 'empty stream')
    await assert.rejects(collect(pieces([''])), SyntaxError, 'empty chunk')
    await assert.rejects(collect(pieces(['{"error":"can\'t get next key"}'])), SyntaxError, 'top-level object')
  })

  it('throws SyntaxError on more closing than opening brackets', async function () {
    await assert.rejects(collect(pieces(['[{"a":1}]]'])), SyntaxError)
  })

  it('throws SyntaxError on a malformed element', async function () {
    await assert.rejects(collect(pieces(['[{"a":1,}]'])), SyntaxError)
  })
})
