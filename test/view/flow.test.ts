import assert from 'node:assert/strict'

import type {FlowCounters, FlowKey} from '../../src/flow/record.js'
import {endpoint, toFlow, type Flow} from '../../src/view/flow.js'

const COUNTERS: FlowCounters = {
  packets: 5,
  bytes: 420,
  firstSeenNs: 1_000_000_000n,
  lastSeenNs: 3_500_000_000n,
  tcpFlags: 0x1b,
  ipTos: 0x10,
  peerIfindex: 0,
  fwdStatus: 0,
  nextHop: '',
  minTtl: 64,
  maxTtl: 64,
}
// 2023-11-14T22:13:20Z in epoch ns, minus the monotonic origin of this fictitious boot.
const OFFSET = 1_700_000_000_000_000_000n

function key(over: Partial<FlowKey>): FlowKey {
  return {
    family: 4,
    ifindex: 3,
    direction: 'ingress',
    proto: 6,
    vlanId: 0,
    innerVlanId: 0,
    samplingInterval: 1,
    sport: 40000,
    dport: 80,
    src: '10.0.0.1',
    dst: '10.0.0.2',
    ...over,
  }
}

describe('flow/flow', function () {
  describe('toFlow', function () {
    it('builds a TCP flow with names, counters and epoch-ms times', function () {
      const f = toFlow('lab', 'veth0', key({vlanId: 10}), COUNTERS, OFFSET)
      assert.deepEqual(f, {
        netns: 'lab',
        interface: 'veth0',
        ifindex: 3,
        direction: 'ingress',
        ipVersion: 4,
        src: '10.0.0.1',
        dst: '10.0.0.2',
        sport: 40000,
        dport: 80,
        proto: 6,
        protoName: 'tcp',
        vlanId: 10,
        innerVlanId: 0,
        samplingInterval: 1,
        tos: 0x10,
        peerIfindex: 0,
        nextHop: '',
        forwardingStatus: 0,
        minTtl: 64,
        maxTtl: 64,
        packets: 5,
        bytes: 420,
        tcpFlags: 0x1b,
        tcpFlagsText: '...AP.SF',
        start: 1_700_000_001_000,
        end: 1_700_000_003_500,
      })
      assert.ok(!('icmpType' in f) && !('icmpCode' in f), 'no ICMP fields on a TCP flow')
    })

    it('names an unknown interface by its index, and an unknown protocol by number', function () {
      const f = toFlow('root', undefined, key({ifindex: 42, proto: 253, sport: 0, dport: 0}), COUNTERS, OFFSET)
      assert.equal(f.interface, 'if42')
      assert.equal(f.protoName, '253')
    })

    it('keeps start/end 0 when a time is unknown', function () {
      const f = toFlow('root', 'eth0', key({}), {...COUNTERS, firstSeenNs: 0n, lastSeenNs: 0n}, OFFSET)
      assert.equal(f.start, 0)
      assert.equal(f.end, 0)
    })

    it('splits ICMP dport into type and code', function () {
      const f = toFlow('root', 'eth0', key({proto: 1, sport: 0, dport: 3 * 256 + 13}), COUNTERS, OFFSET)
      assert.equal(f.icmpType, 3)
      assert.equal(f.icmpCode, 13)
      assert.equal(f.protoName, 'icmp')
    })

    it('splits ICMPv6 dport into type and code', function () {
      const f = toFlow('root', 'eth0', key({family: 6, proto: 58, sport: 0, dport: 129 * 256, src: 'fe80::1', dst: 'fe80::2'}), COUNTERS, OFFSET)
      assert.equal(f.icmpType, 129)
      assert.equal(f.icmpCode, 0)
      assert.equal(f.ipVersion, 6)
    })
  })

  describe('endpoint', function () {
    const flow = (over: Partial<FlowKey>): Flow => toFlow('root', 'eth0', key(over), COUNTERS, OFFSET)

    it('writes IPv4 address:port', function () {
      const f = flow({})
      assert.equal(endpoint(f, 'src'), '10.0.0.1:40000')
      assert.equal(endpoint(f, 'dst'), '10.0.0.2:80')
    })

    it('puts IPv6 addresses in brackets', function () {
      const f = flow({family: 6, src: '2001:db8::1', dst: '2001:db8::2', sport: 53000, dport: 443})
      assert.equal(endpoint(f, 'src'), '[2001:db8::1]:53000')
      assert.equal(endpoint(f, 'dst'), '[2001:db8::2]:443')
    })

    it('shows ICMP type/code on the destination side only', function () {
      const f = flow({proto: 1, sport: 0, dport: 8 * 256})
      assert.equal(endpoint(f, 'src'), '10.0.0.1')
      assert.equal(endpoint(f, 'dst'), '10.0.0.2:8/0')
    })

    it('shows ICMPv6 type/code with a bracketed address', function () {
      const f = flow({family: 6, proto: 58, src: 'fe80::1', dst: 'ff02::1', sport: 0, dport: 1 * 256 + 4})
      assert.equal(endpoint(f, 'src'), '[fe80::1]')
      assert.equal(endpoint(f, 'dst'), '[ff02::1]:1/4')
    })

    it('shows port 0 for protocols without ports', function () {
      const f = flow({proto: 47, sport: 0, dport: 0})
      assert.equal(endpoint(f, 'dst'), '10.0.0.2:0')
    })
  })
})
