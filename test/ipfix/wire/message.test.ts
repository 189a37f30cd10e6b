/**
 * templateFits(), the one answer to "can this template ever be sent in messages of this size",
 * checked against what the builder and the encoder really write at the boundary.
 */
import assert from 'node:assert/strict'

import {CodecError} from '../../../src/ipfix/wire/errors.js'
import {elementByName, resolveElement, VARIABLE_LENGTH, type InformationElement} from '../../../src/ipfix/wire/elements.js'
import {IpfixDecoder} from '../../../src/ipfix/collect/decoder.js'
import {
  ARENA_BYTES,
  freeArenaCount,
  MESSAGE_AND_SET_HEADERS_LENGTH,
  MessageBuilder,
  maxTemplateFields,
  releaseMessage,
  TEMPLATE_SET_ID,
  templateFits,
  trimFreeArenas,
} from '../../../src/ipfix/wire/message.js'
import {encodeTemplateRecord, type Template, type TemplateField} from '../../../src/ipfix/wire/template.js'

function el(name: string): InformationElement {
  const e = elementByName(name)
  assert.ok(e, name)
  return e
}

/** A template of `count` fields: an 8-byte counter, then 1-byte fields of ids the registry lacks. */
function template(count: number): Template {
  const fields: TemplateField[] = [{element: el('octetDeltaCount'), length: 8}]
  for (let i = 1; i < count; i++) fields.push({element: resolveElement(32000 + i), length: 1})
  return {id: 300, scopeFieldCount: 0, fields}
}

/** Writes the template's Template Set in a message of `maxMessageSize`; the message, or the CodecError. */
function announce(t: Template, maxMessageSize: number): Buffer {
  const b = new MessageBuilder(maxMessageSize)
  b.begin(0, 0, 1)
  b.openSet(TEMPLATE_SET_ID)
  b.pos = encodeTemplateRecord(t, b.buf, b.pos)
  return b.finish()
}

describe('ipfix/message', function () {
  describe('templateFits', function () {
    it('fits a template announced in exactly maxMessageSize, and not in one byte less', function () {
      for (const count of [1, 5, 14, 40]) {
        const t = template(count)
        const fit = templateFits(t.fields, 65_507)
        const exact = MESSAGE_AND_SET_HEADERS_LENGTH + fit.templateRecordBytes
        // Here the template record, not the data record, is what decides.
        assert.ok(fit.dataRecordBytes <= fit.templateRecordBytes)
        assert.equal(templateFits(t.fields, exact).fits, true, `${count} fields`)
        const message = announce(t, exact)
        assert.equal(message.length, exact, `${count} fields`)
        // And a collector reads the template back from it.
        assert.equal(new IpfixDecoder().decode(message, 'e').templates[0].fields.length, count)
        assert.equal(templateFits(t.fields, exact - 1).fits, false)
        assert.throws(() => announce(t, exact - 1), CodecError)
      }
    })

    it('fits one data record with its headers, the shortest variable-length record counting 1 byte', function () {
      const fields = [
        {element: el('octetDeltaCount'), length: 8},
        {element: el('interfaceName'), length: VARIABLE_LENGTH},
      ]
      const fit = templateFits(fields, 1400)
      assert.deepEqual(fit, {fits: true, templateRecordBytes: 4 + 4 * 2, dataRecordBytes: 9, room: 1400 - 20})
      // 9 bytes of record and 12 of template record: 12 decides.
      assert.equal(templateFits(fields, 20 + 12).fits, true)
      assert.equal(templateFits(fields, 20 + 11).fits, false)
      const wide = [{length: 60}, {length: 60}]
      assert.equal(templateFits(wide, 20 + 120).fits, true)
      assert.equal(templateFits(wide, 20 + 119).fits, false)
    })

    it('counts 8 bytes for an enterprise field specifier', function () {
      const fields = [{length: 4, enterpriseNumber: 32473}, {length: 4}]
      assert.equal(templateFits(fields, 1400).templateRecordBytes, 4 + 8 + 4)
    })

    it('maxTemplateFields is the most fields templateFits accepts', function () {
      for (const size of [80, 100, 128, 1400]) {
        const n = maxTemplateFields(size)
        const ones = (k: number) => Array.from({length: k}, () => ({length: 1}))
        assert.equal(templateFits(ones(n), size).fits, true, `${size}`)
        assert.equal(templateFits(ones(n + 1), size).fits, false, `${size}`)
      }
      assert.equal(maxTemplateFields(80), 14)
    })
  })

  describe('MessageBuilder memory reuse (releaseMessage)', function () {
    const MAX = 1400
    /** A message of `MAX` bytes whose body is `seed` repeated: whether it is still intact shows whether its memory was reused. */
    function build(builder: MessageBuilder, seed: number): Buffer {
      builder.begin(0, seed, 1)
      builder.openSet(TEMPLATE_SET_ID)
      builder.buf.fill(seed & 0xff, builder.pos, MAX)
      builder.pos = MAX
      return builder.finish()
    }
    function intact(m: Buffer, seed: number): boolean {
      return m.readUInt32BE(8) === seed && m.subarray(MESSAGE_AND_SET_HEADERS_LENGTH).every((b) => b === (seed & 0xff))
    }

    it('reuses an arena once all its messages are released, and never the memory of a message still held', function () {
      const builder = new MessageBuilder(MAX)
      const held = new Map<number, Buffer>()
      const released = new Set<ArrayBufferLike>()
      let reused = 0
      let seed = 0
      // Some messages are held for long (as a spool would), most are released soon after (as the window does).
      for (let round = 0; round < 40; round++) {
        for (let i = 0; i < 100; i++) {
          const m = build(builder, ++seed)
          if (released.has(m.buffer)) reused++
          held.set(seed, m)
        }
        for (const [s, m] of held) {
          if (s % 997 !== 0 && s < seed - 150) {
            releaseMessage(m)
            released.add(m.buffer)
            held.delete(s)
          }
        }
        for (const [s, m] of held) assert.ok(intact(m, s), `message ${s} overwritten after round ${round}`)
      }
      assert.ok(reused > 1000, `memory was reused (${reused} messages in released arenas)`)
    })

    it('lets go of the arenas a burst left in the store once they sit unused, and keeps those a steady sender reuses', function () {
      trimFreeArenas()
      trimFreeArenas() // (whatever the tests before left)
      assert.equal(freeArenaCount(), 0)
      const perArena = Math.floor(ARENA_BYTES / MAX)
      // A burst: twenty arenas of messages, all released (the window let go of them).
      const builder = new MessageBuilder(MAX)
      let seed = 0
      const burst: Buffer[] = []
      for (let i = 0; i < 20 * perArena; i++) burst.push(build(builder, ++seed))
      for (const m of burst) releaseMessage(m)
      const stored = freeArenaCount()
      assert.ok(stored >= 18, `the burst's arenas are kept for reuse (${stored})`)
      trimFreeArenas() // a period starts
      // A steady sender: a few arenas' worth of messages at a time, each released before the next round.
      for (let round = 0; round < 5; round++) {
        const sent: Buffer[] = []
        for (let i = 0; i < 3 * perArena; i++) sent.push(build(builder, ++seed))
        for (const m of sent) releaseMessage(m)
      }
      trimFreeArenas() // the period ends: what sat unused through it goes
      const kept = freeArenaCount()
      assert.ok(kept >= 2 && kept <= 4, `the arenas the sender took in turn are kept (${kept} of ${stored})`)
      trimFreeArenas() // a period with nothing sent
      assert.equal(freeArenaCount(), 0)
    })

    it('a message released twice takes its arena out of reuse instead of freeing what is still held', function () {
      const builder = new MessageBuilder(MAX)
      const first = build(builder, 1)
      const second = build(builder, 2)
      releaseMessage(first)
      releaseMessage(first) // a bug: the arena must not come back while `second` is held
      for (let s = 3; s < 2000; s++) releaseMessage(build(builder, s))
      assert.ok(intact(second, 2))
    })

    it('ignores buffers no builder made', function () {
      assert.doesNotThrow(() => releaseMessage(Buffer.alloc(100)))
    })
  })
})
