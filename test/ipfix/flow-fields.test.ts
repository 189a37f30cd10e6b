/**
 * The writers derived from EXPORTABLE_ELEMENTS (src/ipfix/exportable.ts): each element's bytes,
 * worked out here from the RFCs and the FlowBatch, not from the code under test; the column
 * writer and the one-record writer agree at every length a template may give; and the table is
 * what the config and the encoder see.
 */
import assert from 'node:assert/strict'

import {FlowBatch} from '../../src/flow/batch.js'
import {allowedLengths, elementByName, naturalLength} from '../../src/ipfix/elements.js'
import {EXPORTABLE_ELEMENTS, exportableElement} from '../../src/ipfix/exportable.js'
import {bindField, columnWriter, defaultFieldLength, recordWriter, templateFamily} from '../../src/ipfix/flow-fields.js'
import {prng} from '../helpers/unit.js'

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
            assert.ok(outside.every((x) => x === 0xee), `${name}/${len} wrote outside its field`)
            checked++
          }
        }
        assert.ok(checked >= 60, `${checked} element lengths checked`)
      })
    }
  })
})
