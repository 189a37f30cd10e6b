import assert from 'node:assert/strict'

import {CodecError, DecodeError} from '../../../src/ipfix/wire/errors.js'
import {elementByName, resolveElement, VARIABLE_LENGTH, type InformationElement} from '../../../src/ipfix/wire/elements.js'
import {
  decodeOptionsTemplateSet,
  decodeTemplateSet,
  encodeTemplateRecord,
  fixedDataRecordLength,
  minDataRecordLength,
  sameTemplate,
  templateRecordSize,
  type Template,
} from '../../../src/ipfix/wire/template.js'
import {hex, ID, optionsTemplateRecord, spec, templateRecord, u16} from '../messages.js'

const V = VARIABLE_LENGTH

function el(name: string): InformationElement {
  const e = elementByName(name)
  assert.ok(e, name)
  return e
}

/** Decodes a whole set body (as if just after a set header at offset 0). */
function body(...parts: Buffer[]): Buffer {
  return Buffer.concat(parts)
}

const T256: Template = {
  id: 256,
  scopeFieldCount: 0,
  fields: [
    {element: el('sourceIPv4Address'), length: 4},
    {element: el('destinationIPv4Address'), length: 4},
    {element: el('octetDeltaCount'), length: 4},
    {element: resolveElement(5, 32473), length: V, enterpriseNumber: 32473},
  ],
}

const T258: Template = {
  id: 258,
  scopeFieldCount: 1,
  fields: [
    {element: el('observationDomainId'), length: 4},
    {element: el('exportedMessageTotalCount'), length: 8},
  ],
}

describe('ipfix/template', function () {
  describe('encodeTemplateRecord (RFC 7011 §3.4.1, §3.2)', function () {
    it('writes the header and field specifiers, the E bit and enterprise number for enterprise fields', function () {
      const buf = Buffer.alloc(40, 0xee)
      const end = encodeTemplateRecord(T256, buf, 2)
      // ID 256, 4 fields | 8/4 | 12/4 | 1/4 (reduced) | E+5/65535, PEN 32473 = 0x7ed9
      const expected = hex('01 00 00 04  00 08 00 04  00 0c 00 04  00 01 00 04  80 05 ff ff 00 00 7e d9')
      assert.equal(end, 2 + expected.length)
      assert.deepEqual(buf.subarray(2, end), expected)
      assert.equal(templateRecordSize(T256), 24)
      assert.equal(buf[1], 0xee)
      assert.equal(buf[end], 0xee)
    })

    it('writes an options template record with its scope field count (§3.4.2.2)', function () {
      const buf = Buffer.alloc(14)
      assert.equal(encodeTemplateRecord(T258, buf, 0), 14)
      // ID 258, 2 fields, scope 1 | observationDomainId (149)/4 | exportedMessageTotalCount (41)/8
      assert.deepEqual(buf, hex('01 02 00 02 00 01  00 95 00 04  00 29 00 08'))
      assert.equal(templateRecordSize(T258), 14)
    })

    it('rejects what cannot be a template', function () {
      const buf = Buffer.alloc(64)
      assert.throws(
        () => encodeTemplateRecord({...T256, id: 255}, buf, 0),
        (e: unknown) => e instanceof CodecError && /256-65535/.test(e.message),
      )
      assert.throws(() => encodeTemplateRecord({id: 300, fields: [], scopeFieldCount: 0}, buf, 0), /no fields/)
      assert.throws(() => encodeTemplateRecord({...T258, scopeFieldCount: 3}, buf, 0), /scope field count 3/)
      assert.throws(
        () => encodeTemplateRecord({id: 300, scopeFieldCount: 0, fields: [{element: el('sourceIPv4Address'), length: 16}]}, buf, 0),
        (e: unknown) => e instanceof CodecError && /field length 16/.test(e.message),
      )
      assert.throws(() => encodeTemplateRecord({id: 300, scopeFieldCount: 0, fields: [{element: el('protocolIdentifier'), length: V}]}, buf, 0), CodecError)
      assert.throws(() => encodeTemplateRecord(T256, Buffer.alloc(23), 0), /buffer too small/)
    })
  })

  describe('decodeTemplateSet', function () {
    it('reads templates, IANA and enterprise fields, and zero padding', function () {
      const b = body(
        templateRecord(256, spec(ID.sourceIPv4Address, 4), spec(ID.destinationIPv4Address, 4), spec(ID.octetDeltaCount, 4), spec(5, V, 32473)),
        templateRecord(257, spec(ID.sourceIPv6Address, 16), spec(32000, 3)),
        hex('00 00'),
      )
      const d = decodeTemplateSet(b, 0, b.length)
      assert.equal(d.templates.length, 2)
      assert.ok(sameTemplate(d.templates[0], T256))
      assert.deepEqual(
        d.templates[0].fields.map((f) => [f.element.name, f.element.type, f.length, f.enterpriseNumber]),
        [
          ['sourceIPv4Address', 'ipv4Address', 4, undefined],
          ['destinationIPv4Address', 'ipv4Address', 4, undefined],
          ['octetDeltaCount', 'unsigned64', 4, undefined],
          ['e32473.ie5', 'octetArray', V, 32473],
        ],
      )
      assert.deepEqual(d.templates[1].fields[1], {element: {id: 32000, name: 'ie32000', type: 'octetArray'}, length: 3})
      assert.equal(d.templates[1].scopeFieldCount, 0)
      assert.deepEqual(d.padding, {offset: b.length - 2, length: 2, zero: true})
      assert.deepEqual(d.withdrawals, [])
      assert.equal(d.inOrder.length, 2)
    })

    it('reads the fields of the reverse PEN 29305 (RFC 5103 biflows) as the reverse of the IANA element', function () {
      const b = templateRecord(
        300,
        spec(ID.packetDeltaCount, 8),
        spec(ID.packetDeltaCount, 4, 29305),
        spec(ID.sourceIPv4Address, 4, 29305),
        spec(32000, 2, 29305),
      )
      const d = decodeTemplateSet(b, 0, b.length)
      assert.deepEqual(
        d.templates[0].fields.map((f) => [f.element.name, f.element.type, f.length, f.enterpriseNumber]),
        [
          ['packetDeltaCount', 'unsigned64', 8, undefined],
          ['reversePacketDeltaCount', 'unsigned64', 4, 29305],
          ['reverseSourceIPv4Address', 'ipv4Address', 4, 29305],
          ['e29305.ie32000', 'octetArray', 2, 29305],
        ],
      )
    })

    it('respects start and end inside a larger buffer', function () {
      const rec = templateRecord(300, spec(ID.protocolIdentifier, 1))
      const b = Buffer.concat([hex('ff ff ff'), rec, hex('ff ff ff ff')])
      const d = decodeTemplateSet(b, 3, 3 + rec.length)
      assert.equal(d.templates.length, 1)
      assert.equal(d.templates[0].id, 300)
      assert.deepEqual(d.padding, {offset: 3 + rec.length, length: 0, zero: true})
    })

    it('reports nonzero padding without throwing', function () {
      const b = body(templateRecord(300, spec(ID.protocolIdentifier, 1)), hex('00 01 00'))
      assert.deepEqual(decodeTemplateSet(b, 0, b.length).padding, {offset: 8, length: 3, zero: false})
    })

    it('reads withdrawals (field count 0) and the all-templates withdrawal (ID 2), in order with templates (§8.1)', function () {
      const b = body(u16(300, 0), templateRecord(300, spec(ID.protocolIdentifier, 1)), u16(2, 0))
      const d = decodeTemplateSet(b, 0, b.length)
      assert.deepEqual(d.withdrawals, [
        {templateId: 300, options: false, all: false, offset: 0},
        {templateId: 2, options: false, all: true, offset: 12},
      ])
      assert.deepEqual(
        d.inOrder.map((x) => ('fields' in x ? `template ${x.id}` : `withdraw ${x.templateId}`)),
        ['withdraw 300', 'template 300', 'withdraw 2'],
      )
    })

    it('rejects malformed records, saying where', function () {
      const cases: [string, Buffer, RegExp, number][] = [
        ['template ID below 256', templateRecord(255, spec(1, 8)), /template ID 255/, 0],
        ['withdrawal of ID 3 in a template set', u16(3, 0), /withdrawal names template ID 3/, 0],
        ['cut short in a field specifier', body(u16(256, 2), spec(1, 8), hex('00 02')), /template 256 is cut short: field specifier 2 of 2/, 8],
        ['cut short in an enterprise number', body(u16(256, 1), u16(0x8001, 4), hex('00 00')), /enterprise number of field 1 of 1/, 4],
        [
          'a length not valid for the type',
          templateRecord(256, spec(ID.sourceIPv4Address, 5)),
          /field 1 \(sourceIPv4Address\): field length 5 is not valid for ipv4Address/,
          4,
        ],
        ['variable length for an integer', templateRecord(256, spec(ID.protocolIdentifier, V)), /not valid for unsigned8/, 4],
        ['unsigned64 longer than 8', templateRecord(256, spec(ID.octetDeltaCount, 9)), /field length 9/, 4],
      ]
      for (const [what, b, message, offset] of cases) {
        assert.throws(
          () => decodeTemplateSet(b, 0, b.length),
          (e: unknown) => e instanceof DecodeError && message.test(e.message) && e.offset === offset,
          what,
        )
      }
    })
  })

  describe('decodeOptionsTemplateSet', function () {
    it('reads options templates with their scope field count', function () {
      const b = body(optionsTemplateRecord(258, 1, spec(ID.observationDomainId, 4), spec(ID.exportedMessageTotalCount, 8)), hex('00 00'))
      const d = decodeOptionsTemplateSet(b, 0, b.length)
      assert.equal(d.templates.length, 1)
      assert.ok(sameTemplate(d.templates[0], T258))
      assert.equal(d.templates[0].scopeFieldCount, 1)
      assert.deepEqual(d.padding, {offset: 14, length: 2, zero: true})
    })

    it('reads 4-byte withdrawals, and the all-options-templates withdrawal (ID 3)', function () {
      const b = body(u16(258, 0), u16(3, 0))
      const d = decodeOptionsTemplateSet(b, 0, b.length)
      assert.deepEqual(d.withdrawals, [
        {templateId: 258, options: true, all: false, offset: 0},
        {templateId: 3, options: true, all: true, offset: 4},
      ])
      assert.deepEqual(d.templates, [])
    })

    it('rejects scope count 0 or above the field count, and records cut short', function () {
      const cases: [string, Buffer, RegExp][] = [
        ['scope 0 (§3.4.2.2: MUST NOT be zero)', optionsTemplateRecord(258, 0, spec(1, 8)), /scope field count 0/],
        ['scope above the field count', optionsTemplateRecord(258, 2, spec(1, 8)), /scope field count 2 but only 1 fields/],
        ['header cut short', body(u16(258, 1), hex('00')), /header needs 6 bytes/],
        ['field cut short', body(u16(258, 2, 1), spec(1, 8)), /options template 258 is cut short/],
        ['template ID below 256', optionsTemplateRecord(2, 1, spec(1, 8)), /IDs 0-255 are reserved/],
      ]
      for (const [what, b, message] of cases) {
        assert.throws(
          () => decodeOptionsTemplateSet(b, 0, b.length),
          (e: unknown) => e instanceof DecodeError && message.test(e.message),
          what,
        )
      }
    })
  })

  describe('record lengths', function () {
    it('minDataRecordLength counts a variable-length field as 1 byte', function () {
      assert.equal(minDataRecordLength(T256), 4 + 4 + 4 + 1)
      assert.equal(minDataRecordLength(T258), 12)
    })

    it('fixedDataRecordLength is undefined with a variable-length field', function () {
      assert.equal(fixedDataRecordLength(T256), undefined)
      assert.equal(fixedDataRecordLength(T258), 12)
    })
  })

  it('round-trips encode and decode', function () {
    const buf = Buffer.alloc(templateRecordSize(T256))
    encodeTemplateRecord(T256, buf, 0)
    const back = decodeTemplateSet(buf, 0, buf.length).templates[0]
    assert.deepEqual(back, T256)
    const obuf = Buffer.alloc(templateRecordSize(T258))
    encodeTemplateRecord(T258, obuf, 0)
    assert.deepEqual(decodeOptionsTemplateSet(obuf, 0, obuf.length).templates[0], T258)
  })
})
