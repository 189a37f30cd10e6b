import assert from 'node:assert/strict'

import {decodeRecord, encodeRecord, fieldKeys, readValue, recordSize, valueSize, writeValue} from '../../../src/ipfix/wire/codec.js'
import type {BasicList, FieldValue, SubTemplateList, SubTemplateMultiList, TemplateLookup} from '../../../src/ipfix/wire/field-values.js'
import {ListSemantic} from '../../../src/ipfix/wire/list-values.js'
import {CodecError, DecodeError} from '../../../src/ipfix/wire/errors.js'
import {resolveElement} from '../../../src/ipfix/wire/elements.js'
import {ABSTRACT_TYPES, elementByName, VARIABLE_LENGTH, type AbstractType, type InformationElement} from '../../../src/ipfix/wire/elements.js'
import type {Template} from '../../../src/ipfix/wire/template.js'
import {hex} from '../messages.js'

const V = VARIABLE_LENGTH

function el(name: string): InformationElement {
  const e = elementByName(name)
  assert.ok(e, name)
  return e
}

function encode(type: AbstractType, length: number, value: FieldValue, templates?: TemplateLookup): Buffer {
  const buf = Buffer.alloc(70000, 0xee)
  const end = writeValue(buf, 0, type, length, value, templates)
  return buf.subarray(0, end)
}

function decode(bytes: Buffer, type: AbstractType, length: number, templates?: TemplateLookup): FieldValue {
  const {value, next} = readValue(bytes, 0, bytes.length, type, length, templates)
  assert.equal(next, bytes.length, 'readValue consumed every byte')
  return value
}

// A template for sub-template lists: sourceTransportPort (2), protocolIdentifier (1).
const T300: Template = {
  id: 300,
  scopeFieldCount: 0,
  fields: [
    {element: el('sourceTransportPort'), length: 2},
    {element: el('protocolIdentifier'), length: 1},
  ],
}
// octetDeltaCount reduced to 4 bytes, and a variable-length interfaceName.
const T301: Template = {
  id: 301,
  scopeFieldCount: 0,
  fields: [
    {element: el('octetDeltaCount'), length: 4},
    {element: el('interfaceName'), length: V},
  ],
}
const lookup: TemplateLookup = (id) => (id === 300 ? T300 : id === 301 ? T301 : undefined)

/** Lengths per RFC 7011 §6.2 (integers to any fewer octets, float64 to 4) and §7. */
const LENGTHS: Record<AbstractType, number[]> = {
  unsigned8: [1],
  unsigned16: [2, 1],
  unsigned32: [4, 3, 2, 1],
  unsigned64: [8, 7, 6, 5, 4, 3, 2, 1],
  signed8: [1],
  signed16: [2, 1],
  signed32: [4, 3, 2, 1],
  signed64: [8, 7, 6, 5, 4, 3, 2, 1],
  float32: [4],
  float64: [8, 4],
  boolean: [1],
  macAddress: [6],
  string: [V, 0, 1, 12, 300],
  octetArray: [V, 0, 3],
  dateTimeSeconds: [4],
  dateTimeMilliseconds: [8],
  dateTimeMicroseconds: [8],
  dateTimeNanoseconds: [8],
  ipv4Address: [4],
  ipv6Address: [16],
  basicList: [V],
  subTemplateList: [V],
  subTemplateMultiList: [V],
}

/** Values to round-trip at a given length: [value given, value read back]. */
function samples(type: AbstractType, length: number): [FieldValue, FieldValue][] {
  const bits = 8 * length
  switch (type) {
    case 'unsigned8':
    case 'unsigned16':
    case 'unsigned32':
      return [
        [0, 0],
        [1, 1],
        [2 ** bits - 1, 2 ** bits - 1],
        [Math.floor(2 ** bits / 3), Math.floor(2 ** bits / 3)],
      ]
    case 'signed8':
    case 'signed16':
    case 'signed32':
      return [
        [0, 0],
        [-1, -1],
        [-(2 ** (bits - 1)), -(2 ** (bits - 1))],
        [2 ** (bits - 1) - 1, 2 ** (bits - 1) - 1],
      ]
    case 'unsigned64': {
      const max = (1n << BigInt(bits)) - 1n
      return [
        [0, 0n],
        [1, 1n],
        [max, max],
        [max / 3n, max / 3n],
        [255, 255n],
      ]
    }
    case 'signed64': {
      const half = 1n << BigInt(bits - 1)
      return [
        [0n, 0n],
        [-1, -1n],
        [-half, -half],
        [half - 1n, half - 1n],
        [-100, -100n],
      ]
    }
    case 'float32':
      return [
        [1.5, 1.5],
        [-0.25, -0.25],
        [0, 0],
        [Infinity, Infinity],
        [NaN, NaN],
      ]
    case 'float64':
      return length === 8
        ? [
            [Math.PI, Math.PI],
            [-1e300, -1e300],
            [5e-324, 5e-324],
          ]
        : [
            [1.5, 1.5],
            [-0.25, -0.25],
            [65504, 65504],
          ]
    case 'boolean':
      return [
        [true, true],
        [false, false],
      ]
    case 'macAddress':
      return [
        ['00:1b:21:ab:cd:ef', '00:1b:21:ab:cd:ef'],
        ['02-00-00-00-00-01', '02:00:00:00:00:01'],
        ['FF:FF:FF:FF:FF:FF', 'ff:ff:ff:ff:ff:ff'],
      ]
    case 'string':
      if (length === V)
        return [
          ['', ''],
          ['eth0', 'eth0'],
          ['héllo wörld ✓', 'héllo wörld ✓'],
          ['x'.repeat(300), 'x'.repeat(300)],
        ]
      if (length === 0) return [['', '']]
      return length >= 2
        ? [
            ['', ''],
            ['e'.repeat(length), 'e'.repeat(length)],
            ['é', 'é'],
          ]
        : [
            ['', ''],
            ['e', 'e'],
          ]
    case 'octetArray':
      if (length === V)
        return [
          [Buffer.alloc(0), Buffer.alloc(0)],
          [hex('01 02 03'), hex('01 02 03')],
          [Buffer.alloc(1000, 7), Buffer.alloc(1000, 7)],
        ]
      return [[Buffer.alloc(length, 0xab), Buffer.alloc(length, 0xab)]]
    case 'dateTimeSeconds':
      return [
        [0, 0],
        [1_700_000_000, 1_700_000_000],
        [2 ** 32 - 1, 2 ** 32 - 1],
      ]
    case 'dateTimeMilliseconds':
      return [
        [0, 0],
        [1_700_000_000_123, 1_700_000_000_123],
        [1_700_000_000_123n, 1_700_000_000_123],
      ]
    case 'dateTimeMicroseconds':
      return [
        [1_700_000_000_123_456_000n, 1_700_000_000_123_456_000n],
        [1_700_000_000_999_999_000n, 1_700_000_000_999_999_000n],
        [0n, 0n],
      ]
    case 'dateTimeNanoseconds':
      return [
        [1_700_000_000_123_456_789n, 1_700_000_000_123_456_789n],
        [1_700_000_000_999_999_999n, 1_700_000_000_999_999_999n],
        [1n, 1n],
      ]
    case 'ipv4Address':
      return [
        ['192.0.2.1', '192.0.2.1'],
        ['0.0.0.0', '0.0.0.0'],
        ['255.255.255.255', '255.255.255.255'],
      ]
    case 'ipv6Address':
      return [
        ['2001:db8::1', '2001:db8::1'],
        ['2001:DB8:0:0::0:1', '2001:db8::1'],
        ['::', '::'],
        ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
      ]
    case 'basicList': {
      const ports = {kind: 'basicList', semantic: ListSemantic.allOf, field: {element: el('sourceTransportPort'), length: 2}, values: [80, 443]} as BasicList
      const names = {
        kind: 'basicList',
        semantic: ListSemantic.oneOrMoreOf,
        field: {element: el('interfaceName'), length: V},
        values: ['eth0', 'x'.repeat(260)],
      } as BasicList
      const empty = {kind: 'basicList', semantic: ListSemantic.undefined, field: {element: el('octetDeltaCount'), length: 8}, values: []} as BasicList
      const pen = {
        kind: 'basicList',
        semantic: ListSemantic.exactlyOneOf,
        field: {element: resolveElement(12, 32473), length: 4, enterpriseNumber: 32473},
        values: [hex('c0000201')],
      } as BasicList
      const big = {
        kind: 'basicList',
        semantic: ListSemantic.ordered,
        field: {element: el('octetDeltaCount'), length: 8},
        values: Array.from({length: 40}, (_, i) => BigInt(i) * 1_000_000_007n),
      } as BasicList
      return [
        [ports, ports],
        [names, names],
        [empty, empty],
        [pen, pen],
        [big, big],
      ]
    }
    case 'subTemplateList': {
      const list = {
        kind: 'subTemplateList',
        semantic: ListSemantic.allOf,
        templateId: 300,
        records: [
          {sourceTransportPort: 80, protocolIdentifier: 6},
          {sourceTransportPort: 53, protocolIdentifier: 17},
        ],
      } as SubTemplateList
      const empty = {kind: 'subTemplateList', semantic: ListSemantic.noneOf, templateId: 301, records: []} as SubTemplateList
      const variable = {
        kind: 'subTemplateList',
        semantic: ListSemantic.ordered,
        templateId: 301,
        records: [{octetDeltaCount: 5n, interfaceName: 'eth0'}],
      } as SubTemplateList
      return [
        [list, list],
        [empty, empty],
        [variable, variable],
      ]
    }
    case 'subTemplateMultiList': {
      const list = {
        kind: 'subTemplateMultiList',
        semantic: ListSemantic.allOf,
        entries: [
          {templateId: 300, records: [{sourceTransportPort: 80, protocolIdentifier: 6}]},
          {
            templateId: 301,
            records: [
              {octetDeltaCount: 100n, interfaceName: 'lo'},
              {octetDeltaCount: 0n, interfaceName: ''},
            ],
          },
        ],
      } as SubTemplateMultiList
      const empty = {kind: 'subTemplateMultiList', semantic: ListSemantic.undefined, entries: []} as SubTemplateMultiList
      return [
        [list, list],
        [empty, empty],
      ]
    }
  }
}

describe('ipfix/codec', function () {
  describe('round trip of every abstract type at natural and every reduced size', function () {
    it('covers every type of RFC 7012 §3.1', function () {
      assert.deepEqual(Object.keys(LENGTHS).sort(), [...ABSTRACT_TYPES].sort())
      assert.equal(ABSTRACT_TYPES.length, 23)
    })
    for (const type of Object.keys(LENGTHS) as AbstractType[]) {
      for (const length of LENGTHS[type]) {
        it(`${type} at length ${length === V ? 'variable' : length}`, function () {
          const list = samples(type, length)
          assert.ok(list.length > 0)
          for (const [given, expected] of list) {
            const bytes = encode(type, length, given, lookup)
            if (length !== V) assert.equal(bytes.length, length, `${type} fills its field`)
            assert.equal(valueSize(type, length, given, lookup), bytes.length)
            assert.deepEqual(decode(bytes, type, length, lookup), expected)
            // at an offset inside a larger buffer, too
            const big = Buffer.concat([hex('aa bb cc'), bytes, hex('dd')])
            const r = readValue(big, 3, 3 + bytes.length, type, length, lookup)
            assert.deepEqual(r.value, expected)
            assert.equal(r.next, 3 + bytes.length)
          }
        })
      }
    }
  })

  describe('encodings computed by hand (RFC 7011 §6)', function () {
    const cases: [string, AbstractType, number, FieldValue, string][] = [
      ['unsigned8', 'unsigned8', 1, 200, 'c8'],
      ['unsigned16 network order', 'unsigned16', 2, 0x1234, '12 34'],
      ['unsigned32', 'unsigned32', 4, 0x01020304, '01 02 03 04'],
      ['unsigned32 reduced to 3', 'unsigned32', 3, 0x020304, '02 03 04'],
      ['unsigned64 above 2^53 (bigint)', 'unsigned64', 8, 2n ** 53n + 1n, '00 20 00 00 00 00 00 01'],
      ['unsigned64 from a number', 'unsigned64', 8, 2 ** 40, '00 00 01 00 00 00 00 00'],
      ['unsigned64 reduced to 4 (the §6.2 example)', 'unsigned64', 4, 4294967295, 'ff ff ff ff'],
      ['unsigned64 reduced to 7', 'unsigned64', 7, 0x01020304050607n, '01 02 03 04 05 06 07'],
      ['signed8 -1', 'signed8', 1, -1, 'ff'],
      ['signed16 -2', 'signed16', 2, -2, 'ff fe'],
      ['signed16 -2 reduced to 1', 'signed16', 1, -2, 'fe'],
      ['signed32 -129 reduced to 2', 'signed32', 2, -129, 'ff 7f'],
      ['signed64 -1 reduced to 3', 'signed64', 3, -1n, 'ff ff ff'],
      ['signed64 min', 'signed64', 8, -(2n ** 63n), '80 00 00 00 00 00 00 00'],
      ['float32 1.5 (IEEE binary32)', 'float32', 4, 1.5, '3f c0 00 00'],
      ['float64 1.5 (IEEE binary64)', 'float64', 8, 1.5, '3f f8 00 00 00 00 00 00'],
      ['float64 reduced to float32', 'float64', 4, -2, 'c0 00 00 00'],
      ['boolean true = 1 (§6.1.5)', 'boolean', 1, true, '01'],
      ['boolean false = 2 (§6.1.5)', 'boolean', 1, false, '02'],
      ['macAddress', 'macAddress', 6, '00:1b:21:ab:cd:ef', '00 1b 21 ab cd ef'],
      ['ipv4Address', 'ipv4Address', 4, '192.0.2.1', 'c0 00 02 01'],
      ['ipv6Address', 'ipv6Address', 16, '2001:db8::1', '20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01'],
      ['string UTF-8, variable', 'string', V, 'é', '02 c3 a9'],
      ['string fixed, zero padded', 'string', 6, 'eth0', '65 74 68 30 00 00'],
      ['octetArray variable, empty', 'octetArray', V, Buffer.alloc(0), '00'],
      ['dateTimeSeconds', 'dateTimeSeconds', 4, 1_700_000_000, '65 53 f1 00'],
      ['dateTimeSeconds modulo 2^32 (§5.2)', 'dateTimeSeconds', 4, 2 ** 32 + 5, '00 00 00 05'],
      ['dateTimeMilliseconds', 'dateTimeMilliseconds', 8, 1_700_000_000_123, '00 00 01 8b cf e5 68 7b'],
      // NTP: 1970-01-01 is 2208988800 = 0x83aa7e80 seconds after 1900-01-01.
      ['dateTimeNanoseconds at the UNIX epoch', 'dateTimeNanoseconds', 8, 0n, '83 aa 7e 80 00 00 00 00'],
      ['dateTimeNanoseconds: half a second is fraction 2^31', 'dateTimeNanoseconds', 8, 1_500_000_000n, '83 aa 7e 81 80 00 00 00'],
      ['dateTimeNanoseconds: 1 ns is fraction round(2^32/10^9) = 4', 'dateTimeNanoseconds', 8, 1n, '83 aa 7e 80 00 00 00 04'],
      // 2024-01-01T00:00:00Z = 1704067200 s after 1970 = 3913056000 = 0xe93c7f00 after 1900.
      ['dateTimeNanoseconds 2024-01-01', 'dateTimeNanoseconds', 8, 1_704_067_200_250_000_000n, 'e9 3c 7f 00 40 00 00 00'],
      // 1 us = 4294.967 units of 2^-32 s; the nearest multiple of 2^11 is 4096 = 0x1000.
      ['dateTimeMicroseconds: 1 us, low 11 bits zero', 'dateTimeMicroseconds', 8, 1_000n, '83 aa 7e 80 00 00 10 00'],
      ['dateTimeMicroseconds: half a second', 'dateTimeMicroseconds', 8, 500_000_000n, '83 aa 7e 80 80 00 00 00'],
      // 2036-02-07T06:28:16Z = 2085978496 s after 1970 is NTP 2^32: era 1 starts at seconds 0 (§5.2).
      ['dateTimeNanoseconds in NTP era 1', 'dateTimeNanoseconds', 8, 2_085_978_496_000_000_000n, '00 00 00 00 00 00 00 00'],
    ]
    for (const [what, type, length, value, bytes] of cases) {
      it(`${what}: ${bytes}`, function () {
        assert.deepEqual(encode(type, length, value), hex(bytes))
      })
    }

    it('reads the same bytes back', function () {
      assert.equal(decode(hex('ff 7f'), 'signed32', 2), -129)
      assert.equal(decode(hex('fe'), 'signed16', 1), -2)
      assert.equal(decode(hex('ff ff ff'), 'signed64', 3), -1n)
      assert.equal(decode(hex('ff ff ff'), 'unsigned64', 3), 0xffffffn)
      assert.equal(decode(hex('c0 00 00 00'), 'float64', 4), -2)
      assert.equal(decode(hex('83 aa 7e 81 80 00 00 00'), 'dateTimeNanoseconds', 8), 1_500_000_000n)
      assert.equal(decode(hex('e9 3c 7f 00 40 00 00 00'), 'dateTimeNanoseconds', 8), 1_704_067_200_250_000_000n)
      assert.equal(decode(hex('00 00 00 00 00 00 00 00'), 'dateTimeNanoseconds', 8), 2_085_978_496_000_000_000n)
      assert.equal(decode(hex('65 74 68 30 00 00'), 'string', 6), 'eth0')
      assert.equal(decode(hex('00 00 01 8b cf e5 68 7b'), 'dateTimeMilliseconds', 8), 1_700_000_000_123)
    })

    it('ignores the 11 low fraction bits of dateTimeMicroseconds (§6.1.9: MUST be ignored)', function () {
      assert.equal(decode(hex('83 aa 7e 80 00 00 17 ff'), 'dateTimeMicroseconds', 8), 1_000n)
      // the same bytes as nanoseconds keep them: 0x17ff = 6143 units = 1430.3 ns
      assert.equal(decode(hex('83 aa 7e 80 00 00 17 ff'), 'dateTimeNanoseconds', 8), 1_430n)
    })

    it('rounds dateTimeMicroseconds to the microsecond', function () {
      assert.deepEqual(encode('dateTimeMicroseconds', 8, 1_499n), hex('83 aa 7e 80 00 00 10 00'))
      assert.deepEqual(encode('dateTimeMicroseconds', 8, 999_999_600n), hex('83 aa 7e 81 00 00 00 00'))
    })

    it('rejects a boolean other than 1 or 2, saying where', function () {
      for (const b of [0, 3, 255]) {
        assert.throws(
          () => decode(Buffer.from([b]), 'boolean', 1),
          (e: unknown) => e instanceof DecodeError && e.offset === 0 && /boolean octet/.test(e.message),
        )
      }
      const buf = hex('00 00 00 07')
      assert.throws(
        () => readValue(buf, 3, 4, 'boolean', 1),
        (e: unknown) => e instanceof DecodeError && e.offset === 3 && /at byte 3/.test(e.message),
      )
    })
  })

  describe('variable-length encoding (RFC 7011 §7)', function () {
    it('uses one length octet below 255', function () {
      const b = encode('octetArray', V, Buffer.alloc(254, 1))
      assert.equal(b.length, 255)
      assert.equal(b[0], 254)
    })

    it('uses 255 and two octets from 255 on', function () {
      const b255 = encode('octetArray', V, Buffer.alloc(255, 1))
      assert.equal(b255.length, 258)
      assert.deepEqual(b255.subarray(0, 3), hex('ff 00 ff'))
      const b256 = encode('string', V, 'a'.repeat(256))
      assert.equal(b256.length, 259)
      assert.deepEqual(b256.subarray(0, 4), hex('ff 01 00 61'))
      const b65535 = encode('octetArray', V, Buffer.alloc(65535))
      assert.deepEqual(b65535.subarray(0, 3), hex('ff ff ff'))
      assert.deepEqual(decode(b255, 'octetArray', V), Buffer.alloc(255, 1))
      assert.equal(decode(b256, 'string', V), 'a'.repeat(256))
    })

    it('reads the 3-octet form for short values too', function () {
      assert.equal(decode(hex('ff 00 03 61 62 63'), 'string', V), 'abc')
    })

    it('rejects a value longer than 65535 bytes', function () {
      assert.throws(() => encode('octetArray', V, Buffer.alloc(65536)), CodecError)
    })

    it('rejects values running past the end, with the offset', function () {
      assert.throws(
        () => readValue(hex('05 61 62'), 0, 3, 'string', V),
        (e: unknown) => e instanceof DecodeError && e.offset === 0 && /runs past the end/.test(e.message),
      )
      assert.throws(
        () => readValue(hex('ff 00'), 0, 2, 'string', V),
        (e: unknown) => e instanceof DecodeError && /3-octet length cut short/.test(e.message),
      )
      assert.throws(
        () => readValue(hex('aa'), 1, 1, 'octetArray', V),
        (e: unknown) => e instanceof DecodeError && e.offset === 1,
      )
      // the end bound counts, not the buffer's length
      assert.throws(() => readValue(hex('03 61 62 63'), 0, 3, 'string', V), DecodeError)
    })
  })

  describe('structured data (RFC 6313)', function () {
    it('encodes a basicList: semantic, field ID, element length, values', function () {
      const v = {kind: 'basicList', semantic: ListSemantic.allOf, field: {element: el('sourceTransportPort'), length: 2}, values: [80, 443]} as BasicList
      assert.deepEqual(encode('basicList', V, v), hex('09  03  00 07  00 02  00 50  01 bb'))
    })

    it('encodes an enterprise basicList with the E bit and the enterprise number', function () {
      const v = {
        kind: 'basicList',
        semantic: ListSemantic.ordered,
        field: {element: resolveElement(7, 32473), length: 2, enterpriseNumber: 32473},
        values: [hex('00 50')],
      } as BasicList
      assert.deepEqual(encode('basicList', V, v), hex('0b  04  80 07  00 02  00 00 7e d9  00 50'))
      const back = decode(hex('0b  04  80 07  00 02  00 00 7e d9  00 50'), 'basicList', V)
      assert.deepEqual(back, v)
      assert.equal((back as {field: {element: InformationElement}}).field.element.name, 'e32473.ie7')
    })

    it('encodes a basicList of variable-length values with their own prefixes', function () {
      const v = {kind: 'basicList', semantic: ListSemantic.allOf, field: {element: el('interfaceName'), length: V}, values: ['a', 'bc']} as BasicList
      assert.deepEqual(encode('basicList', V, v), hex('0a  03  00 52  ff ff  01 61  02 62 63'))
    })

    it('encodes a subTemplateList: semantic, template ID, records', function () {
      const v = {
        kind: 'subTemplateList',
        semantic: ListSemantic.ordered,
        templateId: 300,
        records: [
          {sourceTransportPort: 80, protocolIdentifier: 6},
          {sourceTransportPort: 53, protocolIdentifier: 17},
        ],
      } as SubTemplateList
      assert.deepEqual(encode('subTemplateList', V, v, lookup), hex('09  04  01 2c  00 50 06  00 35 11'))
    })

    it('encodes a subTemplateMultiList: semantic, then template ID, block length (header included), records', function () {
      const v = {
        kind: 'subTemplateMultiList',
        semantic: ListSemantic.allOf,
        entries: [
          {templateId: 300, records: [{sourceTransportPort: 80, protocolIdentifier: 6}]},
          {templateId: 301, records: [{octetDeltaCount: 100, interfaceName: 'lo'}]},
        ],
      } as SubTemplateMultiList
      assert.deepEqual(encode('subTemplateMultiList', V, v, lookup), hex('13  03  01 2c 00 07  00 50 06  01 2d 00 0b  00 00 00 64 02 6c 6f'))
    })

    it('keeps the records of an unknown template raw, and writes them back as they were', function () {
      const bytes = hex('09  04  01 2c  00 50 06  00 35 11')
      const v = decode(bytes, 'subTemplateList', V)
      assert.deepEqual(v, {kind: 'subTemplateList', semantic: 4, templateId: 300, records: [], raw: hex('00 50 06 00 35 11')})
      assert.deepEqual(encode('subTemplateList', V, v), bytes)
      const multi = decode(hex('0c  03  01 2c 00 07  00 50 06  01 2d 00 04'), 'subTemplateMultiList', V, (id) => (id === 300 ? T300 : undefined))
      assert.deepEqual(multi, {
        kind: 'subTemplateMultiList',
        semantic: 3,
        entries: [
          {templateId: 300, records: [{sourceTransportPort: 80, protocolIdentifier: 6}]},
          {templateId: 301, records: [], raw: Buffer.alloc(0)},
        ],
      })
    })

    it('uses the 3-octet length for a list of 255 bytes or more', function () {
      const v = {kind: 'basicList', semantic: 3, field: {element: el('octetDeltaCount'), length: 8}, values: Array.from({length: 32}, () => 1n)} as BasicList
      const b = encode('basicList', V, v) // 5 + 32 * 8 = 261
      assert.deepEqual(b.subarray(0, 4), hex('ff 01 05 03'))
      assert.deepEqual(decode(b, 'basicList', V), v)
    })

    it('rejects malformed lists', function () {
      assert.throws(
        () => decode(hex('03 03 00 07'), 'basicList', V),
        (e: unknown) => e instanceof DecodeError && /5-byte header/.test(e.message),
      )
      assert.throws(
        () => decode(hex('08 03 00 07 00 02 00 50 01'), 'basicList', V),
        (e: unknown) => e instanceof DecodeError && /runs past/.test(e.message),
      )
      assert.throws(
        () => decode(hex('07 03 00 08 00 03 00 00'), 'basicList', V),
        (e: unknown) => e instanceof DecodeError && /not valid for ipv4Address/.test(e.message),
      )
      assert.throws(
        () => decode(hex('05 03 01 2c 00 50'), 'subTemplateList', V, lookup),
        (e: unknown) => e instanceof DecodeError && /template 300/.test(e.message),
      )
      assert.throws(
        () => decode(hex('04 03 01 2c 00'), 'subTemplateMultiList', V, lookup),
        (e: unknown) => e instanceof DecodeError && /block header cut short/.test(e.message),
      )
      assert.throws(
        () => decode(hex('06 03 01 2c 00 09 00'), 'subTemplateMultiList', V, lookup),
        (e: unknown) => e instanceof DecodeError && /runs past the list/.test(e.message),
      )
      assert.throws(
        () => decode(hex('05 03 01 2c 00 02'), 'subTemplateMultiList', V, lookup),
        (e: unknown) => e instanceof DecodeError && /shorter than its 4-byte header/.test(e.message),
      )
    })

    it('refuses to encode a sub-template list of an unknown template', function () {
      const v = {kind: 'subTemplateList', semantic: 3, templateId: 999, records: [{a: 1}]} as SubTemplateList
      assert.throws(
        () => encode('subTemplateList', V, v, lookup),
        (e: unknown) => e instanceof CodecError && /template 999/.test(e.message),
      )
    })
  })

  describe('encoding errors', function () {
    const bad: [string, AbstractType, number, FieldValue, RegExp][] = [
      ['unsigned8 256', 'unsigned8', 1, 256, /does not fit in 1 byte/],
      ['unsigned16 -1', 'unsigned16', 2, -1, /does not fit/],
      ['unsigned32 65536 in 2 bytes', 'unsigned32', 2, 65536, /does not fit in 2 bytes/],
      ['unsigned64 2^56 in 7 bytes', 'unsigned64', 7, 2n ** 56n, /does not fit in 7 bytes/],
      ['unsigned64 -1', 'unsigned64', 8, -1n, /does not fit/],
      ['unsigned64 2^64', 'unsigned64', 8, 2n ** 64n, /does not fit/],
      ['unsigned64 unsafe number', 'unsigned64', 8, 2 ** 60, /bigint/],
      ['signed8 128', 'signed8', 1, 128, /does not fit/],
      ['signed8 -129', 'signed8', 1, -129, /does not fit/],
      ['signed32 32768 in 2 bytes', 'signed32', 2, 32768, /does not fit/],
      ['signed64 2^55 in 7 bytes', 'signed64', 7, 2n ** 55n, /does not fit/],
      ['a fraction', 'unsigned32', 4, 1.5, /not an integer/],
      ['a string for a number', 'unsigned32', 4, '5', /number or bigint/],
      ['float64 1e300 as float32', 'float64', 4, 1e300, /float32/],
      ['float32 from a string', 'float32', 4, '1', /must be a number/],
      ['boolean from 1', 'boolean', 1, 1, /true or false/],
      ['macAddress text', 'macAddress', 6, '00:1b:21:ab:cd', /macAddress/],
      ['IPv6 text in ipv4Address', 'ipv4Address', 4, '2001:db8::1', /not an IPv4 address/],
      ['IPv4 text in ipv6Address', 'ipv6Address', 16, '192.0.2.1', /not an IPv6 address/],
      ['garbage address', 'ipv4Address', 4, '300.1.1.1', /not an IPv4 address/],
      ['octetArray of the wrong length', 'octetArray', 4, hex('01 02 03'), /does not match its field length 4/],
      ['string longer than its field', 'string', 3, 'éé', /longer than its field/],
      ['string from a Buffer', 'string', V, hex('61'), /must be a string/],
      ['dateTimeMilliseconds before 1970', 'dateTimeMilliseconds', 8, -1, /before 1970/],
      ['ipv4Address of length 3', 'ipv4Address', 3, '192.0.2.1', /field length 3 is not valid for ipv4Address/],
      ['unsigned16 of length 4', 'unsigned16', 4, 1, /not valid for unsigned16/],
      ['boolean variable-length', 'boolean', V, true, /variable length/],
      ['float32 of length 8', 'float32', 8, 1, /not valid/],
      ['dateTimeMilliseconds reduced', 'dateTimeMilliseconds', 4, 1, /not valid/],
      ['a list from a number', 'basicList', V, 5, /basicList object/],
      [
        'a basicList semantic of 256',
        'basicList',
        V,
        {kind: 'basicList', semantic: 256, field: {element: el('protocolIdentifier'), length: 1}, values: []},
        /semantic/,
      ],
    ]
    for (const [what, type, length, value, message] of bad) {
      it(`${what}: CodecError`, function () {
        assert.throws(
          () => encode(type, length, value),
          (e: unknown) => e instanceof CodecError && message.test(e.message),
        )
      })
    }

    it('throws CodecError when the buffer is too small, writing nothing beyond it', function () {
      const buf = Buffer.alloc(3)
      assert.throws(
        () => writeValue(buf, 0, 'unsigned32', 4, 1),
        (e: unknown) => e instanceof CodecError && /buffer too small/.test(e.message),
      )
      assert.throws(() => writeValue(buf, 1, 'string', V, 'abc'), CodecError)
    })

    it('rejects fixed lengths that are not valid when decoding', function () {
      assert.throws(
        () => readValue(hex('00 00 00'), 0, 3, 'ipv4Address', 3),
        (e: unknown) => e instanceof DecodeError && /not valid for ipv4Address/.test(e.message),
      )
      assert.throws(() => readValue(hex('00 00 00'), 0, 3, 'unsigned8', V), DecodeError)
    })

    it('rejects a fixed value cut short, with the offset', function () {
      assert.throws(
        () => readValue(hex('00 00 00 00 01 02'), 4, 6, 'unsigned32', 4),
        (e: unknown) => e instanceof DecodeError && e.offset === 4 && /at byte 4/.test(e.message),
      )
    })
  })

  describe('records', function () {
    it('encodes and decodes a record in template order, with its size', function () {
      const rec = {octetDeltaCount: 1000n, interfaceName: 'eth0'}
      const buf = Buffer.alloc(20)
      const end = encodeRecord(buf, 0, T301, rec)
      assert.deepEqual(buf.subarray(0, end), hex('00 00 03 e8  04 65 74 68 30'))
      assert.equal(recordSize(T301, rec), 9)
      assert.deepEqual(decodeRecord(buf, 0, end, T301), {fields: rec, next: 9})
    })

    it('names repeated elements name#2, name#3', function () {
      const t: Template = {id: 400, scopeFieldCount: 0, fields: [0, 1, 2].map(() => ({element: el('sourceIPv4Address'), length: 4}))}
      assert.deepEqual(fieldKeys(t.fields), ['sourceIPv4Address', 'sourceIPv4Address#2', 'sourceIPv4Address#3'])
      const bytes = hex('0a 00 00 01  0a 00 00 02  0a 00 00 03')
      assert.deepEqual(decodeRecord(bytes, 0, 12, t).fields, {
        sourceIPv4Address: '10.0.0.1',
        'sourceIPv4Address#2': '10.0.0.2',
        'sourceIPv4Address#3': '10.0.0.3',
      })
    })

    it('says which field is missing or wrong', function () {
      assert.throws(
        () => encodeRecord(Buffer.alloc(20), 0, T301, {octetDeltaCount: 1}),
        (e: unknown) => e instanceof CodecError && /template 301 lacks field interfaceName/.test(e.message),
      )
      assert.throws(
        () => encodeRecord(Buffer.alloc(20), 0, T301, {octetDeltaCount: 2 ** 32, interfaceName: ''}),
        (e: unknown) => e instanceof CodecError && /template 301, field octetDeltaCount/.test(e.message),
      )
      assert.throws(
        () => decodeRecord(hex('00 00 03 e8 05 65'), 0, 6, T301),
        (e: unknown) => e instanceof DecodeError && /template 301, field interfaceName/.test(e.message) && e.offset === 4,
      )
    })
  })

  describe('integers at every reduced size, and NTP-format times', function () {
    it('an unsigned64 is written big-endian in 1 to 8 bytes (reduced-size encoding, §6.2)', function () {
      const cases: [number, number, string][] = [
        [1, 0xab, 'ab'],
        [2, 0x1234, '12 34'],
        [3, 0x123456, '12 34 56'],
        [4, 0xdeadbeef, 'de ad be ef'],
        [5, 0x01_0203_0405, '01 02 03 04 05'],
        [6, 0xffff_ffff_ffff, 'ff ff ff ff ff ff'],
        [7, 2 ** 53 - 1, '1f ff ff ff ff ff ff'],
        [8, 2 ** 53 - 1, '00 1f ff ff ff ff ff ff'],
        [8, 2 ** 32, '00 00 00 01 00 00 00 00'],
        [7, 0x01_0000_0000_00, '00 01 00 00 00 00 00'],
      ]
      for (const [length, value, bytes] of cases) {
        const buf = Buffer.alloc(10, 0xee)
        assert.equal(writeValue(buf, 1, 'unsigned64', length, value), 1 + length)
        assert.deepEqual(buf.subarray(1, 1 + length), hex(bytes), `${length} bytes of ${value}`)
        assert.equal(buf[0], 0xee)
        assert.equal(buf[1 + length], 0xee)
      }
    })

    it('an unsigned64 that does not fit its length or its buffer is refused', function () {
      assert.throws(() => writeValue(Buffer.alloc(8), 0, 'unsigned64', 1, 256), CodecError)
      assert.throws(() => writeValue(Buffer.alloc(8), 0, 'unsigned64', 4, -1), CodecError)
      assert.throws(() => writeValue(Buffer.alloc(8), 0, 'unsigned64', 8, 2 ** 53), CodecError)
      assert.throws(() => writeValue(Buffer.alloc(16), 0, 'unsigned64', 9, 1), CodecError)
      assert.throws(() => writeValue(Buffer.alloc(8), 0, 'unsigned64', 2, 1.5), CodecError)
      assert.throws(() => writeValue(Buffer.alloc(3), 0, 'unsigned64', 4, 1), CodecError)
    })

    it('dateTimeNanoseconds and dateTimeMicroseconds are written in the NTP format', function () {
      const buf = Buffer.alloc(10)
      assert.equal(writeValue(buf, 2, 'dateTimeNanoseconds', 8, 1_704_067_200_250_000_000n), 10)
      assert.deepEqual(buf.subarray(2), hex('e9 3c 7f 00 40 00 00 00'))
      writeValue(buf, 2, 'dateTimeMicroseconds', 8, 1_000n)
      assert.deepEqual(buf.subarray(2), hex('83 aa 7e 80 00 00 10 00'))
    })
  })

  describe('elements', function () {
    it('resolves registry ids and names unknown and enterprise ones', function () {
      assert.equal(resolveElement(8).name, 'sourceIPv4Address')
      assert.deepEqual(resolveElement(32000), {id: 32000, name: 'ie32000', type: 'octetArray'})
      assert.deepEqual(resolveElement(8, 9), {id: 8, name: 'e9.ie8', type: 'octetArray'})
    })
  })
})
