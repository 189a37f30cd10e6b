/**
 * IpfixDecoder on whole messages built byte by byte from RFC 7011 (test/ipfix/messages.ts): what
 * it keeps per exporter and Observation Domain, what it reports, and the exact error for each kind
 * of malformed message (§9.1: a collector must say why it discards one).
 */
import assert from 'node:assert/strict'

import {DecodeError} from '../../../src/ipfix/wire/errors.js'
import {IpfixCollector} from '../../../src/ipfix/collect/collector.js'
import {IpfixDecoder, readHeader} from '../../../src/ipfix/collect/decoder.js'
import {hex, ID, message, optionsTemplateRecord, set, spec, templateRecord, u16, u32, u8} from '../messages.js'

const A = '198.18.0.1:50101'
const B = '198.18.0.2:50101'

/** Template 256: sourceIPv4Address/4, destinationIPv4Address/4, sourceTransportPort/2, octetDeltaCount/4 (reduced), packetDeltaCount/8. */
const T256 = templateRecord(
  256,
  spec(ID.sourceIPv4Address, 4),
  spec(ID.destinationIPv4Address, 4),
  spec(ID.sourceTransportPort, 2),
  spec(ID.octetDeltaCount, 4),
  spec(ID.packetDeltaCount, 8),
)
const TSET = set(2, T256)

function rec256(src: number[], dst: number[], sport: number, octets: number, packets: number): Buffer {
  return Buffer.concat([u8(...src), u8(...dst), u16(sport), u32(octets), u32(Math.floor(packets / 2 ** 32), packets % 2 ** 32)])
}
const R1 = rec256([10, 0, 0, 1], [10, 0, 0, 2], 1234, 1500, 3)
const R2 = rec256([192, 0, 2, 9], [198, 51, 100, 7], 65535, 0xffffffff, 2 ** 32 + 5)

/** Runs `f` and returns the DecodeError it throws (failing if it throws nothing else). */
function decodeError(f: () => unknown): DecodeError {
  try {
    f()
  } catch (err) {
    assert.ok(err instanceof DecodeError, `expected a DecodeError, got ${String(err)}`)
    return err
  }
  assert.fail('expected a DecodeError, nothing was thrown')
}

describe('ipfix/decoder', function () {
  describe('templates then data', function () {
    it('decodes the data records of a template sent in an earlier message, with the header', function () {
      const d = new IpfixDecoder()
      const m1 = d.decode(message({seq: 0, odid: 7}, TSET), A)
      assert.equal(m1.templates.length, 1)
      assert.deepEqual(
        m1.templates[0].fields.map((f) => `${f.element.name}/${f.length}`),
        ['sourceIPv4Address/4', 'destinationIPv4Address/4', 'sourceTransportPort/2', 'octetDeltaCount/4', 'packetDeltaCount/8'],
      )
      assert.deepEqual(m1.records, [])
      assert.deepEqual(m1.sets, [{id: 2, kind: 'template', offset: 16, length: 4 + T256.length, records: 1, padding: 0, paddingZero: true}])

      const m2 = d.decode(message({seq: 0, odid: 7, exportTime: 1_700_000_123}, set(256, R1, R2)), A)
      assert.deepEqual(m2.header, {version: 10, length: 16 + 4 + 2 * R1.length, exportTime: 1_700_000_123, sequenceNumber: 0, observationDomainId: 7})
      assert.equal(m2.records.length, 2)
      assert.deepEqual(m2.unknownSets, [])
      assert.deepEqual(m2.records[0], {
        exporter: A,
        observationDomainId: 7,
        templateId: 256,
        exportTime: 1_700_000_123,
        sequenceNumber: 0,
        options: false,
        fields: {sourceIPv4Address: '10.0.0.1', destinationIPv4Address: '10.0.0.2', sourceTransportPort: 1234, octetDeltaCount: 1500n, packetDeltaCount: 3n},
      })
      assert.deepEqual(m2.records[1].fields, {
        sourceIPv4Address: '192.0.2.9',
        destinationIPv4Address: '198.51.100.7',
        sourceTransportPort: 65535,
        octetDeltaCount: 0xffffffffn,
        packetDeltaCount: 2n ** 32n + 5n,
      })
    })

    it('decodes data after its template in the same message (sets take effect in order, §8)', function () {
      const m = new IpfixDecoder().decode(message({}, TSET, set(256, R1)), A)
      assert.equal(m.records.length, 1)
      assert.equal(m.records[0].fields.sourceTransportPort, 1234)
      assert.deepEqual(
        m.sets.map((s) => [s.id, s.kind, s.records]),
        [
          [2, 'template', 1],
          [256, 'data', 1],
        ],
      )
    })

    it('reads trailing bytes shorter than a record as padding and says whether they are zero (§3.3.1)', function () {
      const d = new IpfixDecoder()
      d.decode(message({}, TSET), A)
      const zero = d.decode(message({}, set(256, R1, hex('00 00 00'))), A)
      assert.equal(zero.records.length, 1)
      assert.deepEqual(zero.sets[0], {id: 256, kind: 'data', offset: 16, length: 4 + R1.length + 3, records: 1, padding: 3, paddingZero: true})
      const nonzero = d.decode(message({}, set(256, R1, hex('00 01'))), A)
      assert.deepEqual([nonzero.sets[0].padding, nonzero.sets[0].paddingZero], [2, false])
    })
  })

  describe('data before its template', function () {
    it('reports the set as of unknown template, with no records and no error, and decodes once the template comes', function () {
      const d = new IpfixDecoder()
      const early = message({seq: 0}, set(256, R1))
      const m = d.decode(early, A)
      assert.deepEqual(m.records, [])
      assert.deepEqual(m.unknownSets, [{templateId: 256, offset: 16, length: 4 + R1.length}])
      assert.deepEqual(m.sets, [{id: 256, kind: 'data', offset: 16, length: 4 + R1.length, records: 0, padding: 0, paddingZero: true}])

      d.decode(message({}, TSET), A)
      const again = d.decode(early, A)
      assert.deepEqual(again.unknownSets, [])
      assert.equal(again.records.length, 1)
    })

    it('does not apply a later template to an earlier set of the same message', function () {
      const m = new IpfixDecoder().decode(message({}, set(256, R1), TSET), A)
      assert.deepEqual(
        m.unknownSets.map((u) => u.templateId),
        [256],
      )
      assert.equal(m.records.length, 0)
    })
  })

  describe('options templates and options data records (§3.4.2)', function () {
    const OT = optionsTemplateRecord(300, 1, spec(ID.observationDomainId, 4), spec(ID.exportedMessageTotalCount, 8))

    it('decodes the options template with its scope count and marks its records as options', function () {
      const d = new IpfixDecoder()
      const m = d.decode(message({odid: 3}, set(3, OT), set(300, u32(3), u32(0, 42))), A)
      assert.deepEqual(
        m.templates.map((t) => [t.id, t.scopeFieldCount, t.fields.length]),
        [[300, 1, 2]],
      )
      assert.deepEqual(
        m.sets.map((s) => [s.id, s.kind]),
        [
          [3, 'optionsTemplate'],
          [300, 'data'],
        ],
      )
      assert.equal(m.records.length, 1)
      assert.equal(m.records[0].options, true)
      assert.deepEqual(m.records[0].fields, {observationDomainId: 3, exportedMessageTotalCount: 42n})
      assert.equal(d.template(A, 3, 300)?.scopeFieldCount, 1)
    })

    it('keeps options and data templates of one domain side by side', function () {
      const d = new IpfixDecoder()
      const m = d.decode(message({}, TSET, set(3, OT), set(256, R1), set(300, u32(0), u32(0, 1))), A)
      assert.deepEqual(
        m.records.map((r) => [r.templateId, r.options]),
        [
          [256, false],
          [300, true],
        ],
      )
      assert.deepEqual(
        d
          .templates(A, 0)
          .map((t) => t.id)
          .sort(),
        [256, 300],
      )
    })
  })

  describe('exporters and Observation Domains are kept apart (§3.1, §8)', function () {
    it('does not use a template of another domain or another exporter', function () {
      const d = new IpfixDecoder()
      d.decode(message({odid: 1}, TSET), A)
      assert.equal(d.decode(message({odid: 1}, set(256, R1)), A).records.length, 1)
      assert.deepEqual(
        d.decode(message({odid: 2}, set(256, R1)), A).unknownSets.map((u) => u.templateId),
        [256],
      )
      assert.deepEqual(
        d.decode(message({odid: 1}, set(256, R1)), B).unknownSets.map((u) => u.templateId),
        [256],
      )
      assert.equal(d.template(A, 1, 256)?.id, 256)
      assert.equal(d.template(A, 2, 256), undefined)
      assert.equal(d.template(B, 1, 256), undefined)
    })

    it('decodes the same template ID by the definition of each domain', function () {
      const d = new IpfixDecoder()
      d.decode(message({odid: 1}, set(2, templateRecord(256, spec(ID.sourceTransportPort, 2)))), A)
      d.decode(message({odid: 2}, set(2, templateRecord(256, spec(ID.protocolIdentifier, 1), spec(ID.protocolIdentifier, 1)))), A)
      assert.deepEqual(d.decode(message({odid: 1}, set(256, u16(0x0611))), A).records[0].fields, {sourceTransportPort: 0x0611})
      // A repeated element gets 'name#2' (codec fieldKeys).
      assert.deepEqual(d.decode(message({odid: 2}, set(256, u16(0x0611))), A).records[0].fields, {protocolIdentifier: 6, 'protocolIdentifier#2': 17})
    })

    it('reset(exporter) forgets only that exporter', function () {
      const d = new IpfixDecoder()
      d.decode(message({odid: 1}, TSET), A)
      d.decode(message({odid: 5}, TSET), A)
      d.decode(message({odid: 1}, TSET), B)
      d.reset(A)
      assert.deepEqual([d.templates(A, 1), d.templates(A, 5)], [[], []])
      assert.equal(d.templates(B, 1).length, 1)
      d.reset()
      assert.deepEqual(d.templates(B, 1), [])
    })
  })

  describe('template withdrawals (§8.1, §8.4)', function () {
    const withdraw256 = set(2, u16(256, 0))
    const withdrawAll = set(2, u16(2, 0))

    it('applies a withdrawal by default: later data of that template is unknown', function () {
      const d = new IpfixDecoder()
      d.decode(message({}, TSET), A)
      const m = d.decode(message({}, withdraw256), A)
      assert.deepEqual(m.withdrawals, [{templateId: 256, options: false, all: false, offset: 20}])
      assert.deepEqual(
        d.decode(message({}, set(256, R1)), A).unknownSets.map((u) => u.templateId),
        [256],
      )
    })

    it('ignores withdrawals with applyWithdrawals: false (UDP), but still lists them', function () {
      const d = new IpfixDecoder({applyWithdrawals: false})
      d.decode(message({}, TSET), A)
      for (const w of [withdraw256, withdrawAll]) {
        const m = d.decode(message({}, w), A)
        assert.equal(m.withdrawals.length, 1)
      }
      assert.equal(d.decode(message({}, set(256, R1)), A).records.length, 1)
    })

    it('the UDP collector ignores them too (its default decoder)', function () {
      const collector = new IpfixCollector({port: 0})
      const records: unknown[] = []
      collector.on('record', (r) => records.push(r))
      collector.handle(message({}, TSET), A)
      collector.handle(message({}, withdrawAll), A)
      collector.handle(message({}, set(256, R1)), A)
      assert.equal(records.length, 1)
    })
  })

  describe('malformed messages (§9.1): an exact DecodeError, and nothing learned', function () {
    const cases: [string, () => Buffer, string][] = [
      [
        'a datagram shorter than the header',
        () => hex('00 0a 00 0c 00 00 00 00 00 00 00 00'),
        'message of 12 bytes is shorter than the 16-byte IPFIX message header (at byte 0)',
      ],
      ['an empty datagram', () => Buffer.alloc(0), 'message of 0 bytes is shorter than the 16-byte IPFIX message header (at byte 0)'],
      ['NetFlow v9', () => message({version: 9}, TSET), 'version 9 is not IPFIX (10) (NetFlow v9, not IPFIX) (at byte 0)'],
      ['NetFlow v5', () => message({version: 5}), 'version 5 is not IPFIX (10) (NetFlow v5, not IPFIX) (at byte 0)'],
      ['version 11', () => message({version: 11}), 'version 11 is not IPFIX (10) (at byte 0)'],
      [
        'a length field larger than the datagram',
        () => message({length: 100}, TSET),
        `message length field says 100 bytes but the datagram has ${16 + TSET.length} (at byte 2)`,
      ],
      [
        'a length field smaller than the datagram',
        () => message({length: 16}, TSET),
        `message length field says 16 bytes but the datagram has ${16 + TSET.length} (at byte 2)`,
      ],
      [
        'a set length beyond the message',
        () => message({}, u16(256, 40), R1),
        `set 256 of 40 bytes runs past the end of the message (${4 + R1.length} bytes left) (at byte 18)`,
      ],
      ['a set length below 4', () => message({}, u16(256, 3), R1), 'set 256 has length 3, shorter than its 4-byte header (at byte 18)'],
      ['a set length of 0 (would loop forever)', () => message({}, u16(256, 0), R1), 'set 256 has length 0, shorter than its 4-byte header (at byte 18)'],
      [
        'bytes after the last set too short for a set header',
        () => message({}, TSET, hex('00 00 00')),
        `3 bytes after the last set are too short for a set header (at byte ${16 + TSET.length})`,
      ],
      ['set ID 1 (NetFlow v9 options template)', () => message({}, set(1, T256)), 'set ID 1 is not used in IPFIX (RFC 7011 §3.3.2) (at byte 16)'],
      ['reserved set ID 4', () => message({}, set(4, R1)), 'set ID 4 is reserved (RFC 7011 §3.3.2) (at byte 16)'],
      [
        'template padding of 4 or more bytes',
        () => message({}, set(2, T256, hex('00 00 00 00'))),
        `template set ends in 4 zero bytes: too many for padding, which must be shorter than the smallest record (RFC 7011 §3.3.1) (at byte ${20 + T256.length})`,
      ],
      [
        'options template padding of 4 or more bytes',
        () => message({}, set(3, optionsTemplateRecord(300, 1, spec(ID.observationDomainId, 4)), hex('00 00 00 00 00'))),
        'options template set ends in 5 zero bytes: too many for padding, which must be shorter than the smallest record (RFC 7011 §3.3.1) (at byte 30)',
      ],
      [
        'a template cut short',
        () => message({}, set(2, u16(256, 2), spec(ID.sourceIPv4Address, 4))),
        'template 256 is cut short: field specifier 2 of 2 needs 4 bytes, 0 left in the set (at byte 28)',
      ],
      [
        'template ID below 256',
        () => message({}, set(2, templateRecord(255, spec(ID.sourceIPv4Address, 4)))),
        'template record has template ID 255: IDs 0-255 are reserved (at byte 20)',
      ],
      [
        'options template with scope count 0',
        () => message({}, set(3, optionsTemplateRecord(300, 0, spec(ID.observationDomainId, 4)))),
        'options template 300 has scope field count 0 (RFC 7011 §3.4.2.2: it must not be zero) (at byte 24)',
      ],
      [
        'an invalid field length',
        () => message({}, set(2, templateRecord(256, spec(ID.sourceIPv4Address, 5)))),
        'template 256, field 1 (sourceIPv4Address): field length 5 is not valid for ipv4Address (at byte 24)',
      ],
    ]
    for (const [what, make, text] of cases) {
      it(what, function () {
        const d = new IpfixDecoder()
        const err = decodeError(() => d.decode(make(), A))
        assert.equal(err.message, text)
        assert.equal(err.code, 'E_IPFIX_DECODE')
      })
    }

    it('a variable-length value running past the set, naming the record field', function () {
      const d = new IpfixDecoder()
      d.decode(message({}, set(2, templateRecord(257, spec(ID.protocolIdentifier, 1), spec(ID.interfaceName, 65535)))), A)
      const err = decodeError(() => d.decode(message({}, set(257, u8(6, 9), hex('61 62'))), A))
      assert.equal(err.message, 'data record of template 257, field interfaceName: string value of 9 bytes runs past the end (2 bytes left) (at byte 21)')
    })

    it('discards the whole message: templates defined before the error do not take effect', function () {
      const d = new IpfixDecoder()
      decodeError(() => d.decode(message({}, TSET, u16(256, 2)), A))
      assert.deepEqual(d.templates(A, 0), [])
    })

    it('readHeader reads the header fields', function () {
      assert.deepEqual(readHeader(message({exportTime: 0xfffffffe, seq: 0x89abcdef, odid: 0xffffffff})), {
        version: 10,
        length: 16,
        exportTime: 0xfffffffe,
        sequenceNumber: 0x89abcdef,
        observationDomainId: 0xffffffff,
      })
    })
  })
})
