import assert from 'node:assert/strict'

import {InvalidInputError} from '../../src/errors.js'
import {isIcmp, parseProtocol, protocolName, tcpFlagsText} from '../../src/flow/protocols.js'

describe('flow/protocols', function () {
  describe('parseProtocol', function () {
    // IANA protocol numbers.
    const names: [string, number][] = [
      ['icmp', 1],
      ['tcp', 6],
      ['TCP', 6],
      [' udp ', 17],
      ['gre', 47],
      ['esp', 50],
      ['icmpv6', 58],
      ['ipv6-icmp', 58],
      ['icmp6', 58],
      ['sctp', 132],
      ['udplite', 136],
    ]
    for (const [text, n] of names) it(`'${text}' is ${n}`, () => assert.equal(parseProtocol(text), n))

    for (const [text, n] of [
      ['0', 0],
      ['6', 6],
      ['006', 6],
      ['255', 255],
    ] as [string, number][]) {
      it(`number '${text}' is ${n}`, () => assert.equal(parseProtocol(text), n))
    }

    for (const text of ['', 'tpc', '256', '-1', '6.0', '0x6', '+6', '1e2', 'tcp udp']) {
      it(`rejects '${text}' with InvalidInputError`, function () {
        assert.throws(
          () => parseProtocol(text),
          (e: unknown) => e instanceof InvalidInputError && e.message.includes(`'${text}'`),
        )
      })
    }

    // Names of Object.prototype members must not pass as protocols (a plain-object lookup did).
    for (const text of ['constructor', '__proto__']) {
      it(`rejects the Object.prototype name '${text}' with InvalidInputError`, function () {
        assert.throws(() => parseProtocol(text), InvalidInputError)
      })
    }
  })

  describe('protocolName', function () {
    it('names known protocols and prints others as numbers', function () {
      assert.equal(protocolName(6), 'tcp')
      assert.equal(protocolName(17), 'udp')
      assert.equal(protocolName(1), 'icmp')
      assert.equal(protocolName(58), 'icmpv6')
      assert.equal(protocolName(253), '253')
      assert.equal(protocolName(0), '0')
    })

    it('round-trips with parseProtocol for every number', function () {
      for (let p = 0; p <= 255; p++) assert.equal(parseProtocol(protocolName(p)), p)
    })
  })

  it('isIcmp is true for ICMP and ICMPv6 only', function () {
    for (let p = 0; p <= 255; p++) assert.equal(isIcmp(p), p === 1 || p === 58, `proto ${p}`)
  })

  describe('tcpFlagsText', function () {
    // Bits (RFC 793, 3168): CWR 0x80 ECE 0x40 URG 0x20 ACK 0x10 PSH 0x08 RST 0x04 SYN 0x02 FIN 0x01
    const cases: [number, string][] = [
      [0x00, '........'],
      [0xff, 'CEUAPRSF'],
      [0x02, '......S.'],
      [0x12, '...A..S.'],
      [0x01, '.......F'],
      [0x80, 'C.......'],
      [0x18, '...AP...'],
      [0x04, '.....R..'],
      [0x40, '.E......'],
      [0x20, '..U.....'],
    ]
    for (const [flags, text] of cases) it(`0x${flags.toString(16)} is ${text}`, () => assert.equal(tcpFlagsText(flags), text))
  })
})
