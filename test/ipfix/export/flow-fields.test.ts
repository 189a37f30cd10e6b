/**
 * The writers derived from EXPORTABLE_ELEMENTS (src/ipfix/export/exportable-elements.ts): each element's bytes,
 * worked out here from the RFCs and the FlowBatch, not from the code under test; the column
 * writer and the one-record writer agree at every length a template may give; and the table is
 * what the config and the encoder see.
 */
import assert from 'node:assert/strict'

import {FlowBatch} from '../../../src/flow/batch.js'
import {allowedLengths, elementByName, naturalLength} from '../../../src/ipfix/wire/elements.js'
import {DEFAULT_TEMPLATES, EXPORTABLE_ELEMENTS, exportableElement} from '../../../src/ipfix/export/exportable-elements.js'
import {bindField, columnWriter, defaultFieldLength, recordWriter, templateFamily} from '../../../src/ipfix/export/flow-fields.js'
import {prng} from '../../helpers/unit.js'
import {batchOf, bindTestField, FORWARDING_STATUS, REGISTRY_KNOWS_FORWARDING_STATUS, type FlowInput} from '../flows.js'

/** Elements the table declares ahead of the registry snapshot (bound by name once the registry knows them). */
const AWAITING_REGISTRY = ['forwardingStatus']

/** A batch of `n` flows of the family with every column pseudo-random (seeded) and in its range. */
function randomBatch(family: 4 | 6, n: number, seed: number): FlowBatch {
  const r = prng(seed)
  const int = (max: number) => Math.floor(r() * (max + 1))
  const b = new FlowBatch(family, n)
  b.observationDomainId = 1 + int(2 ** 32 - 2)
  for (let i = 0; i < n; i++) {
    b.ifindex[i] = int(2 ** 32 - 1)
    b.peerIfindex[i] = int(2 ** 32 - 1)
    b.direction[i] = int(1)
    b.proto[i] = [1, 6, 17, 58, 47][int(4)]
    b.vlanId[i] = int(4095)
    b.innerVlanId[i] = int(4095)
    b.sport[i] = int(65535)
    b.dport[i] = int(65535)
    b.packets[i] = int(2 ** 40)
    b.bytes[i] = int(2 ** 52)
    b.startUs[i] = 1.7e15 + int(1e12) + r()
    b.endUs[i] = b.startUs[i] + int(1e9)
    b.tcpFlags[i] = int(255)
    b.tos[i] = int(255)
    b.endReason[i] = 1 + int(4)
    b.minTtl[i] = int(255)
    b.maxTtl[i] = int(255)
    b.fwdStatus[i] = [0, 64, 128, 131, 195][int(4)]
    for (let k = 0; k < b.addrLen; k++) {
      b.src[i * b.addrLen + k] = int(255)
      b.dst[i * b.addrLen + k] = int(255)
      b.nextHop[i * b.addrLen + k] = int(255)
    }
  }
  b.length = n
  return b
}

/** The lengths a template may give the element's type (every fixed one, for a variable type none). */
function lengthsOf(name: string): number[] {
  const element = elementByName(name)
  if (!element) return []
  const allowed = allowedLengths(element.type)
  return allowed === 'any' ? [] : allowed
}

describe('ipfix/flow-fields', function () {
  describe('the one table', function () {
    it('names registry elements in their registry spelling (or ones awaiting the registry)', function () {
      for (const name of Object.keys(EXPORTABLE_ELEMENTS)) {
        const element = elementByName(name)
        if (!element) {
          assert.ok(AWAITING_REGISTRY.includes(name), `${name} is not in the registry`)
          continue
        }
        assert.equal(element.name, name)
      }
    })

    it('exportableElement finds an element by any case, with its registry spelling and family', function () {
      assert.deepEqual(
        ['SOURCEIPV4ADDRESS', ' sourceIPv6Address ', 'octetdeltacount', 'bgpSourceAsNumber'].map((n) => {
          const e = exportableElement(n)
          return e && [e.name, e.family]
        }),
        [['sourceIPv4Address', 4], ['sourceIPv6Address', 6], ['octetDeltaCount', undefined], undefined],
      )
    })

    it('an element ties a template to its family; the first family-bound field decides', function () {
      assert.equal(templateFamily(['octetDeltaCount', 'destinationIPv6Address']), 6)
      assert.equal(templateFamily(['icmpTypeCodeIPv4', 'packetDeltaCount']), 4)
      assert.equal(templateFamily(['octetDeltaCount', 'flowEndMilliseconds']), undefined)
    })

    it('bindField refuses an element flowctl has no value for', function () {
      assert.throws(() => bindField('bgpSourceAsNumber'), {message: "flowctl cannot export information element 'bgpSourceAsNumber'"})
      assert.throws(() => bindField('noSuchElement'), {message: "flowctl cannot export information element 'noSuchElement'"})
    })

    it('a field without a length gets the natural length of its type', function () {
      for (const name of Object.keys(EXPORTABLE_ELEMENTS)) {
        const element = elementByName(name)
        if (!element || EXPORTABLE_ELEMENTS[name].defaultLength) continue
        assert.equal(bindField(name).length, naturalLength(element.type), name)
        assert.equal(defaultFieldLength(name), naturalLength(element.type), name)
      }
      assert.equal(defaultFieldLength('bgpSourceAsNumber'), undefined)
    })

    it('only the packet and octet deltas in fewer than 8 bytes are counters the exporter splits', function () {
      const withMax = Object.keys(EXPORTABLE_ELEMENTS)
        .filter((name) => elementByName(name))
        .flatMap((name) => lengthsOf(name).map((len) => ({name, len, max: bindField(name, len).counterMax})))
        .filter((f) => f.max)
      assert.deepEqual(
        withMax.map((f) => `${f.name}/${f.len}: ${JSON.stringify(f.max)}`),
        [
          ...[1, 2, 3, 4, 5, 6, 7].map((len) => `octetDeltaCount/${len}: {"bytes":${2 ** (8 * len) - 1}}`),
          ...[1, 2, 3, 4, 5, 6, 7].map((len) => `packetDeltaCount/${len}: {"packets":${2 ** (8 * len) - 1}}`),
        ],
      )
    })
  })

  describe('column and record writers agree', function () {
    for (const family of [4, 6] as const) {
      it(`every element at every length, IPv${family} flows, from any first flow`, function () {
        const batch = randomBatch(family, 40, family)
        let checked = 0
        for (const [name, e] of Object.entries(EXPORTABLE_ELEMENTS)) {
          if (e.family && e.family !== family) continue
          const element = elementByName(name)
          // Elements awaiting the registry: their writers need no registry entry.
          const lengths = element ? lengthsOf(name) : [1, 2, 3, 4]
          for (const len of lengths) {
            const stride = len + 3
            const fromColumn = Buffer.alloc(stride * 30, 0xee)
            const fromRecords = Buffer.alloc(stride * 30, 0xee)
            columnWriter(e.value, len)(batch, 7, 30, fromColumn, 2, stride)
            const write = recordWriter(e.value, len)
            for (let r = 0; r < 30; r++) write(batch, 7 + r, fromRecords, 2 + r * stride)
            assert.deepEqual(fromColumn, fromRecords, `${name}/${len}`)
            // Each writes its `len` bytes per record and no other.
            const outside = [...fromColumn].filter((_, p) => p < 2 || (p - 2) % stride >= len)
            assert.ok(
              outside.every((x) => x === 0xee),
              `${name}/${len} wrote outside its field`,
            )
            checked++
          }
        }
        assert.ok(checked >= 60, `${checked} element lengths checked`)
      })
    }
  })

  describe('the router fields, byte by byte', function () {
    // One ingress and one egress flow of each family; only the columns that matter here are set.
    const flow = (family: 4 | 6, direction: 0 | 1): FlowInput => ({
      family,
      src: family === 4 ? '198.18.0.1' : '2001:db8::1',
      dst: family === 4 ? '198.18.0.2' : '2001:db8::2',
      sport: 1,
      dport: 2,
      proto: 17,
      tcpFlags: 0,
      bytes: 100,
      packets: 1,
      startUs: 1.7e15,
      endUs: 1.7e15,
      endReason: 1,
      tos: 0,
      vlanId: 10,
      ...(direction === 0
        ? // Forwarded, in by 7 and out by 9 through a gateway, TTLs 61 to 64, inner tag 100.
          {
            direction,
            ifindex: 7,
            peerIfindex: 9,
            nextHop: family === 4 ? '198.19.255.1' : 'fe80::1:2ff:fe03:405',
            minTtl: 61,
            maxTtl: 64,
            innerVlanId: 100,
            fwdStatus: 64,
          }
        : // Out by 65537, in by 4,000,000,000, directly connected, TTL 1 to 255, inner tag 4095, unroutable.
          {
            direction,
            ifindex: 65_537,
            peerIfindex: 4_000_000_000,
            nextHop: family === 4 ? '0.0.0.0' : '::',
            minTtl: 1,
            maxTtl: 255,
            innerVlanId: 4095,
            fwdStatus: 131,
          }),
    })

    /** [element, length, family (any when absent), [ingress flow's bytes, egress flow's bytes]] */
    const CASES: [string, number, 4 | 6 | undefined, [string, string]][] = [
      // The metered interface on the flow's side, the peer on the other; 4,000,000,000 = 0xee6b2800.
      ['ingressInterface', 4, undefined, ['00000007', 'ee6b2800']],
      ['egressInterface', 4, undefined, ['00000009', '00010001']],
      // Reduced sizes (RFC 7011 §6.2): a value too large is sent as the largest the field holds.
      ['ingressInterface', 3, undefined, ['000007', 'ffffff']],
      ['ingressInterface', 2, undefined, ['0007', 'ffff']],
      ['ingressInterface', 1, undefined, ['07', 'ff']],
      ['egressInterface', 3, undefined, ['000009', '010001']],
      ['egressInterface', 2, undefined, ['0009', 'ffff']],
      ['egressInterface', 1, undefined, ['09', 'ff']],
      // Network order, zeros when directly connected.
      ['ipNextHopIPv4Address', 4, 4, ['c613ff01', '00000000']],
      ['ipNextHopIPv6Address', 16, 6, ['fe800000000000000001 02fffe030405', '00000000000000000000000000000000']],
      ['minimumTTL', 1, undefined, ['3d', '01']],
      ['maximumTTL', 1, undefined, ['40', 'ff']],
      ['dot1qCustomerVlanId', 2, undefined, ['0064', '0fff']],
      ['dot1qCustomerVlanId', 1, undefined, ['64', 'ff']],
      // 64 forwarded, 131 dropped (unroutable): one byte by default, or the unsigned32 in 2 to 4.
      ['forwardingStatus', 1, undefined, ['40', '83']],
      ['forwardingStatus', 2, undefined, ['0040', '0083']],
      ['forwardingStatus', 3, undefined, ['000040', '000083']],
      ['forwardingStatus', 4, undefined, ['00000040', '00000083']],
    ]

    for (const family of [4, 6] as const) {
      const batch = batchOf([flow(family, 0), flow(family, 1)])
      for (const [name, len, only, [ingress, egress]] of CASES) {
        if (only && only !== family) continue
        it(`${name}/${len}, IPv${family}: ingress ${ingress.replace(/ /g, '')}, egress ${egress.replace(/ /g, '')}`, function () {
          const field = bindTestField(name, len)
          assert.equal(field.length, len)
          const expected = [ingress, egress].map((h) => h.replace(/ /g, ''))
          // One record at a time, as the exporter writes a counter split over records.
          const one = [0, 1].map((i) => {
            const buf = Buffer.alloc(len)
            field.write(batch, i, buf, 0)
            return buf.toString('hex')
          })
          assert.deepEqual(one, expected)
          // Both as a column, in records of len + 2 bytes.
          const column = Buffer.alloc(2 * (len + 2))
          field.writeColumn(batch, 0, 2, column, 1, len + 2)
          assert.deepEqual([column.subarray(1, 1 + len).toString('hex'), column.subarray(len + 3, 2 * len + 3).toString('hex')], expected)
        })
      }
    }

    it('the next hop, the TTLs and the inner tag have their registry numbers and types', function () {
      assert.deepEqual(
        ['ipNextHopIPv4Address', 'ipNextHopIPv6Address', 'minimumTTL', 'maximumTTL', 'dot1qCustomerVlanId', 'ingressInterface', 'egressInterface'].map((n) => {
          const e = bindField(n).element
          return `${e.name} ${e.id} ${e.type}`
        }),
        [
          'ipNextHopIPv4Address 15 ipv4Address',
          'ipNextHopIPv6Address 62 ipv6Address',
          'minimumTTL 52 unsigned8',
          'maximumTTL 53 unsigned8',
          'dot1qCustomerVlanId 245 unsigned16',
          'ingressInterface 10 unsigned32',
          'egressInterface 14 unsigned32',
        ],
      )
      assert.equal(templateFamily(['minimumTTL', 'ipNextHopIPv6Address']), 6)
      assert.equal(templateFamily(['ipNextHopIPv4Address']), 4)
    })

    it('forwardingStatus: IE 89, one byte unless the template says otherwise, bound by name once the registry knows it', function () {
      assert.equal(FORWARDING_STATUS.id, 89)
      assert.equal(defaultFieldLength('forwardingStatus'), REGISTRY_KNOWS_FORWARDING_STATUS ? 1 : undefined)
      if (REGISTRY_KNOWS_FORWARDING_STATUS) {
        const field = bindField('FORWARDINGSTATUS')
        assert.deepEqual([field.element.id, field.length], [89, 1])
      } else {
        // Until then a template naming it is refused like any element flowctl cannot export.
        assert.throws(() => bindField('forwardingStatus'), {message: "flowctl cannot export information element 'forwardingStatus'"})
      }
    })
  })

  describe('the default templates', function () {
    const size = (fields: readonly string[]) => fields.reduce((n, name) => n + bindField(name).length, 0)

    it('keep the fields collectors read, in their places, then the next hop and the TTL range', function () {
      const before = [
        'sourceTransportPort',
        'destinationTransportPort',
        'protocolIdentifier',
        'tcpControlBits',
        'octetDeltaCount',
        'packetDeltaCount',
        'flowStartMilliseconds',
        'flowEndMilliseconds',
        'ingressInterface',
        'egressInterface',
        'flowDirection',
        'flowEndReason',
        'ipClassOfService',
        'vlanId',
      ]
      assert.deepEqual(DEFAULT_TEMPLATES, [
        {id: 256, fields: ['sourceIPv4Address', 'destinationIPv4Address', ...before, 'ipNextHopIPv4Address', 'minimumTTL', 'maximumTTL']},
        {id: 257, fields: ['sourceIPv6Address', 'destinationIPv6Address', ...before, 'ipNextHopIPv6Address', 'minimumTTL', 'maximumTTL']},
      ])
      assert.deepEqual(
        DEFAULT_TEMPLATES.map((t) => templateFamily(t.fields)),
        [4, 6],
      )
    })

    it('records of 65 (IPv4) and 101 (IPv6) bytes: 21 and 13 to a message of the default 1400 bytes, both templates in one', function () {
      const [v4, v6] = DEFAULT_TEMPLATES.map((t) => size(t.fields))
      assert.deepEqual([v4, v6], [59 + 4 + 1 + 1, 83 + 16 + 1 + 1])
      // 16-byte message header, 4-byte set header.
      assert.deepEqual([Math.floor((1400 - 20) / v4), Math.floor((1400 - 20) / v6)], [21, 13])
      // A template record: 4 bytes, then 4 per field.
      const templateSet = 16 + 4 + DEFAULT_TEMPLATES.reduce((n, t) => n + 4 + 4 * t.fields.length, 0)
      assert.equal(templateSet, 180)
    })
  })
})
