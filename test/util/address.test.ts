import assert from 'node:assert/strict'

import {InvalidInputError} from '../../src/errors.js'
import {canonicalAddress, formatAddress, formatIPv4, formatIPv6, parseAddress} from '../../src/util/address.js'
import {prng} from '../helpers/unit.js'

/** 16 bytes from 8 16-bit groups. */
function v6(...groups: number[]): Buffer {
  assert.equal(groups.length, 8)
  const b = Buffer.alloc(16)
  groups.forEach((g, i) => b.writeUInt16BE(g, 2 * i))
  return b
}

describe('flow/address', function () {
  describe('formatIPv4', function () {
    it('writes dotted decimal, at an offset', function () {
      assert.equal(formatIPv4(Uint8Array.from([192, 0, 2, 255])), '192.0.2.255')
      assert.equal(formatIPv4(Uint8Array.from([9, 9, 0, 0, 0, 1, 9]), 2), '0.0.0.1')
      assert.equal(formatAddress(4, Uint8Array.from([10, 1, 2, 3])), '10.1.2.3')
    })
  })

  describe('formatIPv6 (RFC 5952)', function () {
    const cases: [string, Buffer, string][] = [
      ['all zero', v6(0, 0, 0, 0, 0, 0, 0, 0), '::'],
      ['loopback', v6(0, 0, 0, 0, 0, 0, 0, 1), '::1'],
      ['trailing run', v6(1, 0, 0, 0, 0, 0, 0, 0), '1::'],
      ['leading zeros dropped (4.1)', v6(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0x0001), '2001:db8::1'],
      ['lower case (4.3)', v6(0x2001, 0xdb8, 0xabcd, 0xef01, 0, 0, 0, 0xffff), '2001:db8:abcd:ef01::ffff'],
      ['longest run compressed (4.2.3)', v6(0x2001, 0, 0, 1, 0, 0, 0, 1), '2001:0:0:1::1'],
      ['equal runs: the first (4.2.3)', v6(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1), '2001:db8::1:0:0:1'],
      ['single zero group not compressed (4.2.2)', v6(0x2001, 0xdb8, 0, 1, 1, 1, 1, 1), '2001:db8:0:1:1:1:1:1'],
      ['no zero group', v6(1, 2, 3, 4, 5, 6, 7, 8), '1:2:3:4:5:6:7:8'],
      ['alternating single zeros', v6(1, 0, 1, 0, 1, 0, 1, 0), '1:0:1:0:1:0:1:0'],
      ['longer run after a shorter one', v6(0, 0, 1, 0, 0, 0, 1, 0), '0:0:1::1:0'],
      ['link-local', v6(0xfe80, 0, 0, 0, 0x211, 0x22ff, 0xfe33, 0x4455), 'fe80::211:22ff:fe33:4455'],
      ['IPv4-mapped (5)', v6(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201), '::ffff:192.0.2.1'],
    ]
    for (const [what, bytes, text] of cases) {
      it(`${what}: ${text}`, function () {
        assert.equal(formatIPv6(bytes), text)
        assert.equal(formatAddress(6, bytes), text)
      })
    }

    it('reads at an offset', function () {
      const buf = Buffer.concat([Buffer.from([0xff, 0xff, 0xff]), v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), Buffer.from([0xff])])
      assert.equal(formatIPv6(buf, 3), '2001:db8::2')
    })

    it('agrees with the WHATWG URL serializer (same compression rules) on random addresses', function () {
      const rand = prng(5952)
      for (let n = 0; n < 2000; n++) {
        // Mostly zero groups, so that runs of every length and position occur.
        const groups = Array.from({length: 8}, () => (rand() < 0.55 ? 0 : rand() < 0.5 ? Math.floor(rand() * 16) : Math.floor(rand() * 0x10000)))
        if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) continue // mapped: RFC 5952 §5 differs from WHATWG
        const bytes = v6(...groups)
        const oracle = new URL(`http://[${groups.map((g) => g.toString(16)).join(':')}]/`).hostname.slice(1, -1)
        assert.equal(formatIPv6(bytes), oracle, `groups ${groups.join(',')}`)
      }
    })
  })

  describe('parseAddress', function () {
    const good: [string, 4 | 6, number[]][] = [
      ['192.0.2.1', 4, [192, 0, 2, 1]],
      ['0.0.0.0', 4, [0, 0, 0, 0]],
      ['255.255.255.255', 4, [255, 255, 255, 255]],
      [' 10.0.0.1 ', 4, [10, 0, 0, 1]],
      ['::', 6, [...v6(0, 0, 0, 0, 0, 0, 0, 0)]],
      ['::1', 6, [...v6(0, 0, 0, 0, 0, 0, 0, 1)]],
      ['fd00::1', 6, [...v6(0xfd00, 0, 0, 0, 0, 0, 0, 1)]],
      ['1::', 6, [...v6(1, 0, 0, 0, 0, 0, 0, 0)]],
      ['2001:db8:1:2:3:4:5:6', 6, [...v6(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)]],
      ['2001:0DB8:0000:0000:0000:0000:0000:00FF', 6, [...v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xff)]],
      ['2001:db8::1:0:0:1', 6, [...v6(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1)]],
      ['::ffff:192.0.2.1', 6, [...v6(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201)]],
      ['64:ff9b::198.51.100.33', 6, [...v6(0x64, 0xff9b, 0, 0, 0, 0, 0xc633, 0x6421)]],
      ['1:2:3:4:5:6:10.0.0.1', 6, [...v6(1, 2, 3, 4, 5, 6, 0x0a00, 0x0001)]],
      ['::10.0.0.1', 6, [...v6(0, 0, 0, 0, 0, 0, 0x0a00, 0x0001)]],
    ]
    for (const [text, family, bytes] of good) {
      it(`parses '${text}'`, function () {
        const r = parseAddress(text)
        assert.equal(r.family, family)
        assert.deepEqual([...r.bytes], bytes)
      })
    }

    const bad = [
      '',
      ' ',
      'hello',
      '1.2.3',
      '1.2.3.4.5',
      '256.1.1.1',
      '1.2.3.4/24',
      '1:2:3:4:5:6:7:8:9',
      ':::',
      'fd00::1::2',
      '12345::1',
      'g::1',
      '::ffff:1.2.3.256',
      '[::1]',
    ]
    for (const text of bad) {
      it(`rejects '${text}' with InvalidInputError`, function () {
        assert.throws(
          () => parseAddress(text, 'source address (--src)'),
          (e: unknown) => e instanceof InvalidInputError && e.message.includes('source address (--src)') && e.message.includes(`'${text}'`),
        )
      })
    }

    it('round-trips random IPv6 addresses written by an independent serializer', function () {
      const rand = prng(4291)
      for (let n = 0; n < 500; n++) {
        const groups = Array.from({length: 8}, () => (rand() < 0.5 ? 0 : Math.floor(rand() * 0x10000)))
        const text = new URL(`http://[${groups.map((g) => g.toString(16)).join(':')}]/`).hostname.slice(1, -1)
        const r = parseAddress(text)
        assert.equal(r.family, 6)
        assert.deepEqual(r.bytes, v6(...groups), text)
      }
    })
  })

  describe('canonicalAddress', function () {
    it('gives equal text for equal addresses', function () {
      assert.equal(canonicalAddress('2001:DB8::0:1'), canonicalAddress('2001:db8::1'))
      assert.equal(canonicalAddress('2001:0db8:0:0:0:0:0:1'), '2001:db8::1')
      assert.equal(canonicalAddress('0:0:0:0:0:0:0:0'), '::')
      assert.equal(canonicalAddress('::ffff:a00:1'), canonicalAddress('::ffff:10.0.0.1'))
      assert.equal(canonicalAddress('::ffff:a00:1'), '::ffff:10.0.0.1')
      assert.equal(canonicalAddress(' 192.0.2.1'), '192.0.2.1')
    })

    it('gives different text for different addresses', function () {
      assert.notEqual(canonicalAddress('2001:db8::1'), canonicalAddress('2001:db8::1:0'))
      assert.notEqual(canonicalAddress('10.0.0.1'), canonicalAddress('::ffff:10.0.0.1'))
    })

    it('rejects invalid input naming what it was', function () {
      assert.throws(
        () => canonicalAddress('nope', 'destination address (--dst)'),
        (e: unknown) => e instanceof InvalidInputError && /--dst/.test(e.message),
      )
    })
  })
})
