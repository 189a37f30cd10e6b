import assert from 'node:assert/strict'

import type {FlowKey} from '../../src/flow/record.js'
import {InvalidInputError} from '../../src/errors.js'
import {isEmptySelector, matchesSelector, parsePort, parseSelector, type FlowSelector} from '../../src/view/selectors.js'

function invalid(pattern: RegExp) {
  return (e: unknown) => e instanceof InvalidInputError && pattern.test(e.message)
}

const KEY: FlowKey = {
  family: 6,
  ifindex: 7,
  direction: 'egress',
  proto: 6,
  innerVlanId: 0,
  vlanId: 0,
  samplingInterval: 1,
  sport: 40000,
  dport: 443,
  src: '2001:db8::1',
  dst: '2001:db8::2',
}

describe('flow/selectors', function () {
  describe('parsePort', function () {
    for (const [v, n] of [
      [0, 0],
      [65535, 65535],
      ['80', 80],
      [' 443 ', 443],
      ['0', 0],
      ['65535', 65535],
    ] as [number | string, number][]) {
      it(`accepts ${JSON.stringify(v)}`, () => assert.equal(parsePort(v, '--dport'), n))
    }
    for (const v of [-1, 65536, 1.5, Number.NaN, '-1', '65536', '', 'http', '0x50', '80a', '8 0', '1e3']) {
      it(`rejects ${JSON.stringify(v)} naming the flag`, () => assert.throws(() => parsePort(v, '--sport'), invalid(/--sport/)))
    }
  })

  describe('parseSelector', function () {
    it('returns an empty selector for no flags', function () {
      assert.deepEqual(parseSelector({}), {})
    })

    it('parses and canonicalises every field', function () {
      assert.deepEqual(parseSelector({proto: 'TCP', src: '2001:DB8:0::1', sport: '40000', dst: '192.0.2.9', dport: 443, direction: 'egress'}), {
        proto: 6,
        src: '2001:db8::1',
        sport: 40000,
        dst: '192.0.2.9',
        dport: 443,
        direction: 'egress',
      })
    })

    it("treats direction 'both' as no direction", function () {
      assert.deepEqual(parseSelector({direction: 'both'}), {})
    })

    it('rejects an invalid source address naming --src', function () {
      assert.throws(() => parseSelector({src: '10.0.0.300'}), invalid(/--src/))
    })

    it('rejects an invalid destination address naming --dst', function () {
      assert.throws(() => parseSelector({dst: 'fd00:::1'}), invalid(/--dst/))
    })

    it('rejects invalid ports naming --sport / --dport', function () {
      assert.throws(() => parseSelector({sport: '70000'}), invalid(/--sport/))
      assert.throws(() => parseSelector({dport: 'x'}), invalid(/--dport/))
    })

    it('rejects an invalid protocol and direction', function () {
      assert.throws(() => parseSelector({proto: 'tcpx'}), InvalidInputError)
      assert.throws(() => parseSelector({direction: 'sideways'}), invalid(/sideways/))
    })
  })

  describe('isEmptySelector', function () {
    it('is true only when nothing is selected', function () {
      assert.equal(isEmptySelector({}), true)
      const nonEmpty: FlowSelector[] = [
        {proto: 0},
        {sport: 0},
        {dport: 0},
        {src: '::'},
        {dst: '0.0.0.0'},
        {ifindexes: [1]},
        {ifindexes: []},
        {direction: 'ingress'},
      ]
      for (const s of nonEmpty) assert.equal(isEmptySelector(s), false, JSON.stringify(s))
    })
  })

  describe('matchesSelector', function () {
    it('the empty selector matches everything', function () {
      assert.equal(matchesSelector({}, KEY), true)
    })

    it('matches when every given field matches', function () {
      assert.equal(
        matchesSelector(parseSelector({proto: 'tcp', src: '2001:DB8::0:1', sport: 40000, dst: '2001:db8:0:0::2', dport: '443', direction: 'egress'}), KEY),
        true,
      )
      assert.equal(matchesSelector({ifindexes: [3, 7]}, KEY), true)
    })

    it('fails on any one field that differs', function () {
      const misses: FlowSelector[] = [
        {proto: 17},
        {src: '2001:db8::2'},
        {dst: '2001:db8::1'},
        {sport: 443},
        {dport: 40000},
        {ifindexes: [1, 2]},
        {ifindexes: []},
        {direction: 'ingress'},
        {proto: 6, src: '2001:db8::1', dport: 80},
      ]
      for (const s of misses) assert.equal(matchesSelector(s, KEY), false, JSON.stringify(s))
    })

    it('port 0 and proto 0 select, they are not wildcards', function () {
      assert.equal(matchesSelector({sport: 0}, KEY), false)
      assert.equal(matchesSelector({proto: 0}, KEY), false)
      assert.equal(matchesSelector({sport: 0, proto: 1}, {...KEY, proto: 1, sport: 0, dport: 0x0800}), true)
    })
  })
})
