/**
 * The meter program on crafted frames through BPF_PROG_TEST_RUN (`bpftool prog run`): what it
 * parses from each kind of packet, what it counts (in the flow maps and in meter_stats), how it
 * samples, and that it always answers TC_ACT_UNSPEC.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {compileMeter} from '../../src/bpf/compile.js'
import {pathsFromEnv} from '../../src/paths.js'
import {decodeFlowKey, decodeFlowValue} from '../../src/bpf/layout.js'
import {type Family, type FlowCounters, type FlowKey} from '../../src/flow/record.js'
import {BpfMap} from '../../src/bpf/libbpf.js'
import {readMeterStats, type MeterStats} from '../../src/bpf/meter-stats.js'
import {setSampling} from '../../src/bpf/sampling.js'
import {requireE2e} from '../helpers/e2e.js'
import * as P from '../helpers/packets.js'

const TC_ACT_UNSPEC = 4294967295 // -1 as bpftool prints it

interface Counted {
  key: FlowKey
  counters: FlowCounters
}

describe('meter program on crafted packets @e2e', function () {
  let pinDir: string
  let tmp: string
  let maps: Record<string, BpfMap> = {}

  before(async function () {
    requireE2e(this)
    const {objectPath} = await compileMeter({capacity: 1024}, pathsFromEnv().cacheDir)
    pinDir = `/sys/fs/bpf/fct-test-${randomBytes(3).toString('hex')}`
    tmp = mkdtempSync(join(tmpdir(), 'fct-prog-'))
    mkdirSync(pinDir) // bpftool pins into an existing directory
    await execa('bpftool', ['prog', 'loadall', objectPath, `${pinDir}/prog`, 'type', 'classifier', 'pinmaps', `${pinDir}/maps`])
    maps = {}
    for (const name of ['flows4_live', 'flows6_live', 'overflow', 'frags']) maps[name] = BpfMap.open(`${pinDir}/maps/${name}`)
  })

  after(function () {
    for (const m of Object.values(maps)) m.close()
    if (pinDir) rmSync(pinDir, {recursive: true, force: true})
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  /** The test's pinned maps, as a meter set's are opened (for the library's readers and writers). */
  const pinned = {openMap: (name: string) => BpfMap.open(`${pinDir}/maps/${name}`)}

  beforeEach(function () {
    for (const m of Object.values(maps)) m.forEachBatch(() => {}, {andDelete: true})
    setSampling(pinned, 1)
  })

  /**
   * Runs one frame through the ingress program (`repeat` times: the same skb, a fresh run each
   * time); `ctx` sets __sk_buff fields (gso_segs, gso_size).
   */
  async function feed(frame: Buffer, ctx?: {gsoSegs?: number; gsoSize?: number}, direction: 'ingress' | 'egress' = 'ingress', repeat = 1): Promise<number> {
    const data = join(tmp, 'frame.bin')
    writeFileSync(data, frame)
    const args = ['prog', 'run', 'pinned', `${pinDir}/prog/flowctl_${direction}`, 'data_in', data, 'repeat', String(repeat)]
    if (ctx) {
      const skb = Buffer.alloc(192) // struct __sk_buff
      skb.writeUInt32LE(ctx.gsoSegs ?? 0, 164)
      skb.writeUInt32LE(ctx.gsoSize ?? 0, 176)
      const file = join(tmp, 'ctx.bin')
      writeFileSync(file, skb)
      args.push('ctx_in', file)
    }
    const {stdout} = await execa('bpftool', args)
    return Number(stdout.match(/Return value: (\d+)/)![1])
  }

  function counted(family: Family): Counted[] {
    const map = maps[`flows${family}_live`]
    const out: Counted[] = []
    const keySize = map.info.keySize
    const valueSize = map.info.valueSize
    map.forEachBatch((keys, values, n) => {
      for (let i = 0; i < n; i++) {
        out.push({key: decodeFlowKey(family, keys, i * keySize), counters: decodeFlowValue(family, values, i * valueSize)})
      }
    })
    return out
  }

  function only(family: Family): Counted {
    const all = counted(family)
    assert.equal(all.length, 1, `expected exactly one IPv${family} flow, got ${JSON.stringify(all.map((c) => c.key))}`)
    return all[0]
  }

  /** What meter_stats counted since `before` (its counts only grow: each test reads its own). */
  function statsSince(before: MeterStats): {flows4: number; flows6: number; notSampled: number; overflowed: number} {
    const now = readMeterStats(pinned)!
    return {
      flows4: now.flowsCreated[4] - before.flowsCreated[4],
      flows6: now.flowsCreated[6] - before.flowsCreated[6],
      notSampled: now.packetsNotSampled - before.packetsNotSampled,
      overflowed: now.packetsOverflowed - before.packetsOverflowed,
    }
  }

  function packetsCounted(family: Family): number {
    return counted(family).reduce((sum, c) => sum + c.counters.packets, 0)
  }

  it('counts an IPv4 TCP packet under its 5-tuple, with IP bytes and TCP flags, at sampling interval 1', async function () {
    const ip = P.ipv4(6, '198.18.0.1', '198.18.0.2', P.tcp(40000, 80, 0x02, Buffer.alloc(10)), {tos: 0x28})
    assert.equal(await feed(P.ethernet(P.ETH_IPV4, ip)), TC_ACT_UNSPEC)
    const {key, counters} = only(4)
    assert.deepEqual(
      {
        src: key.src,
        dst: key.dst,
        sport: key.sport,
        dport: key.dport,
        proto: key.proto,
        direction: key.direction,
        vlanId: key.vlanId,
        samplingInterval: key.samplingInterval,
      },
      {src: '198.18.0.1', dst: '198.18.0.2', sport: 40000, dport: 80, proto: 6, direction: 'ingress', vlanId: 0, samplingInterval: 1},
    )
    assert.equal(counters.packets, 1)
    assert.equal(counters.bytes, 20 + 20 + 10)
    assert.equal(counters.tcpFlags, 0x02)
    assert.equal(counters.ipTos, 0x28)
  })

  it('ORs the TCP flags of every packet of a flow and sums its packets and bytes', async function () {
    for (const flags of [0x02, 0x10, 0x18, 0x11]) {
      await feed(P.ethernet(P.ETH_IPV4, P.ipv4(6, '198.18.0.1', '198.18.0.2', P.tcp(40000, 80, flags, Buffer.alloc(100)))))
    }
    const {counters} = only(4)
    assert.equal(counters.packets, 4)
    assert.equal(counters.bytes, 4 * 140)
    assert.equal(counters.tcpFlags, 0x02 | 0x10 | 0x18 | 0x11)
    assert.ok(counters.lastSeenNs >= counters.firstSeenNs && counters.firstSeenNs > 0n)
  })

  it('finds the ports behind IPv4 options', async function () {
    const options = Buffer.from([0x01, 0x01, 0x01, 0x00, 0x07, 0x07, 0x04, 0x00]) // NOPs, record route, end
    await feed(P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(5000, 53, Buffer.alloc(20)), {ipOptions: options})))
    const {key, counters} = only(4)
    assert.equal(key.sport, 5000)
    assert.equal(key.dport, 53)
    assert.equal(counters.bytes, 28 + 8 + 20)
  })

  it('reads no ports from an IPv4 fragment other than the first', async function () {
    const payload = P.udp(5000, 53, Buffer.alloc(50)) // what a misparse would read as ports
    await feed(P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', payload, {fragOffset: 1480})))
    const {key, counters} = only(4)
    assert.equal(key.proto, 17)
    assert.equal(key.sport, 0)
    assert.equal(key.dport, 0)
    assert.equal(counters.bytes, 20 + 58)
  })

  it('reads the ports of a first IPv4 fragment', async function () {
    await feed(P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(5000, 53, Buffer.alloc(50)), {moreFragments: true})))
    const {key} = only(4)
    assert.equal(key.sport, 5000)
    assert.equal(key.dport, 53)
  })

  it('walks IPv6 extension headers to the transport header', async function () {
    const ip = P.ipv6(17, 'fd00::1', 'fd00::2', P.udp(6000, 443, Buffer.alloc(30)), {
      extensions: [{type: 0}, {type: 43, extLen: 2}, {type: 60, extLen: 1}, {type: 51}],
      trafficClass: 0xb8,
    })
    await feed(P.ethernet(P.ETH_IPV6, ip))
    const {key, counters} = only(6)
    assert.deepEqual(
      {src: key.src, dst: key.dst, proto: key.proto, sport: key.sport, dport: key.dport},
      {src: 'fd00::1', dst: 'fd00::2', proto: 17, sport: 6000, dport: 443},
    )
    assert.equal(counters.bytes, ip.length)
    assert.equal(counters.ipTos, 0xb8)
  })

  it('reads no ports from an IPv6 fragment other than the first', async function () {
    const ip = P.ipv6(17, 'fd00::1', 'fd00::2', P.udp(6000, 443, Buffer.alloc(30)), {extensions: [{type: 44, fragOffset: 1232}]})
    await feed(P.ethernet(P.ETH_IPV6, ip))
    const {key} = only(6)
    assert.equal(key.proto, 17)
    assert.equal(key.sport, 0)
    assert.equal(key.dport, 0)
  })

  it('reads the VLAN id of an in-packet 802.1Q tag, and the outer one of 802.1ad QinQ', async function () {
    const ip = P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(1, 2))
    await feed(P.ethernet(P.ETH_IPV4, ip, [{tpid: P.TPID_8021Q, vid: 100}]))
    assert.equal(only(4).key.vlanId, 100)
    for (const m of Object.values(maps)) m.forEachBatch(() => {}, {andDelete: true})
    await feed(
      P.ethernet(P.ETH_IPV4, ip, [
        {tpid: P.TPID_8021AD, vid: 300},
        {tpid: P.TPID_8021Q, vid: 42},
      ]),
    )
    const {key, counters} = only(4)
    assert.equal(key.vlanId, 300)
    assert.equal(key.sport, 1)
    assert.equal(counters.bytes, 28)
  })

  it('keys ICMP and ICMPv6 by type and code', async function () {
    await feed(P.ethernet(P.ETH_IPV4, P.ipv4(1, '198.18.0.1', '198.18.0.2', P.icmp(3, 13, Buffer.alloc(28)))))
    const v4 = only(4).key
    assert.equal(v4.sport, 0)
    assert.equal(v4.dport, 3 * 256 + 13)
    await feed(P.ethernet(P.ETH_IPV6, P.ipv6(58, 'fd00::1', 'fd00::2', P.icmp(128, 0, Buffer.alloc(8)))))
    assert.equal(only(6).key.dport, 128 * 256)
  })

  it('reads SCTP ports and counts other protocols with zero ports', async function () {
    await feed(P.ethernet(P.ETH_IPV4, P.ipv4(132, '198.18.0.1', '198.18.0.2', P.sctp(3868, 3868))))
    await feed(P.ethernet(P.ETH_IPV4, P.ipv4(47, '198.18.0.1', '198.18.0.2', Buffer.alloc(24, 0xff))))
    const flows = counted(4).sort((x, y) => x.key.proto - y.key.proto)
    assert.deepEqual(
      flows.map((f) => [f.key.proto, f.key.sport, f.key.dport, f.counters.bytes]),
      [
        [47, 0, 0, 44],
        [132, 3868, 3868, 32],
      ],
    )
  })

  it('counts IP bytes, not the Ethernet padding of a short frame', async function () {
    const ip = P.ipv4(6, '198.18.0.1', '198.18.0.2', P.tcp(1, 2, 0x10)) // 40 bytes
    const frame = Buffer.concat([P.ethernet(P.ETH_IPV4, ip), Buffer.alloc(6)]) // padded to 60
    assert.equal(frame.length, 60)
    await feed(frame)
    assert.equal(only(4).counters.bytes, 40)
  })

  it('counts a GSO super-packet as its segments, each with its own headers', async function () {
    // 3 segments of 1000 payload bytes: 20 (IP) + 32 (TCP with timestamps) header bytes each.
    const tcpOptions = Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2])
    const ip = P.ipv4(6, '198.18.0.1', '198.18.0.2', P.tcp(40000, 80, 0x18, Buffer.alloc(3000), tcpOptions))
    await feed(P.ethernet(P.ETH_IPV4, ip), {gsoSegs: 3, gsoSize: 1000})
    const {counters} = only(4)
    assert.equal(counters.packets, 3)
    assert.equal(counters.bytes, 3 * (20 + 32) + 3000)
  })

  it('ignores non-IP frames and malformed IP, and always answers TC_ACT_UNSPEC', async function () {
    const frames = [
      // (BPF_PROG_TEST_RUN itself refuses frames whose IP header is cut short, so those cannot be fed.)
      P.ethernet(P.ETH_ARP, Buffer.alloc(28)),
      P.ethernet(P.ETH_IPV4, Buffer.concat([Buffer.from([0x65]), Buffer.alloc(19)])), // version 6 in an IPv4 frame
      P.ethernet(P.ETH_IPV4, Buffer.concat([Buffer.from([0x43]), Buffer.alloc(19)])), // IHL below 5
      P.ethernet(P.ETH_IPV6, Buffer.concat([Buffer.from([0x40]), Buffer.alloc(39)])), // version 4 in an IPv6 frame
      Buffer.alloc(14), // a bare Ethernet header
    ]
    for (const f of frames) assert.equal(await feed(f), TC_ACT_UNSPEC)
    assert.equal(counted(4).length, 0)
    assert.equal(counted(6).length, 0)
  })

  it('counts a packet whose transport header is cut short, without ports', async function () {
    const ip = P.ipv4(6, '198.18.0.1', '198.18.0.2', Buffer.from([0x9c, 0x40, 0x00])) // 3 bytes of TCP
    assert.equal(await feed(P.ethernet(P.ETH_IPV4, ip)), TC_ACT_UNSPEC)
    const {key, counters} = only(4)
    assert.equal(key.proto, 6)
    assert.equal(key.sport, 0)
    assert.equal(counters.bytes, 23)
  })

  it('keys the egress program by direction', async function () {
    assert.equal(await feed(P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(1, 2))), undefined, 'egress'), TC_ACT_UNSPEC)
    assert.equal(only(4).key.direction, 'egress')
  })

  it('counts in meter_stats each flow it creates, once, per family, and nothing for the packets of a known flow', async function () {
    const before = readMeterStats(pinned)!
    for (const sport of [1, 2, 3]) await feed(P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(sport, 53))))
    await feed(P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(1, 53))), undefined, 'ingress', 50)
    for (const sport of [1, 2]) await feed(P.ethernet(P.ETH_IPV6, P.ipv6(17, 'fd00::1', 'fd00::2', P.udp(sport, 53))), undefined, 'ingress', 20)
    await feed(P.ethernet(P.ETH_ARP, Buffer.alloc(28)))
    assert.deepEqual(statsSince(before), {flows4: 3, flows6: 2, notSampled: 0, overflowed: 0})
    assert.equal(packetsCounted(4), 53)
    assert.equal(packetsCounted(6), 40)
  })

  it('at 1:10 counts a random tenth of the packets, raw, under keys that say 10, and the rest in packets_not_sampled', async function () {
    setSampling(pinned, 10)
    const before = readMeterStats(pinned)!
    const sent = 100_000
    const ip = P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(5000, 53, Buffer.alloc(72)))
    await feed(P.ethernet(P.ETH_IPV4, ip), undefined, 'ingress', sent)
    const {key, counters} = only(4)
    const stats = statsSince(before)
    assert.equal(key.samplingInterval, 10)
    assert.equal(counters.packets + stats.notSampled, sent, 'every packet counted or not sampled, exactly')
    assert.equal(counters.bytes, counters.packets * ip.length, 'raw bytes: what was counted, not scaled')
    // Binomial(100000, 1/10): 5 standard deviations either side.
    const sigma = Math.sqrt(sent * 0.1 * 0.9)
    assert.ok(Math.abs(counters.packets - sent / 10) <= 5 * sigma, `${counters.packets} of ${sent} counted`)
    assert.equal(stats.flows4, 1)
  })

  it('a change of rate starts a new record at the new rate; the old one keeps what it counted', async function () {
    const frame = P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(5001, 53)))
    setSampling(pinned, 4)
    const before = readMeterStats(pinned)!
    await feed(frame, undefined, 'ingress', 4000)
    const atFour = only(4).counters.packets
    setSampling(pinned, 1)
    await feed(frame, undefined, 'ingress', 7)
    const byRate = new Map(counted(4).map((c) => [c.key.samplingInterval, c.counters.packets]))
    assert.deepEqual(
      byRate,
      new Map([
        [4, atFour],
        [1, 7],
      ]),
    )
    assert.equal(atFour + statsSince(before).notSampled, 4000)
  })

  it('counts a GSO super-packet it does not sample as its segments in packets_not_sampled', async function () {
    setSampling(pinned, 2)
    const before = readMeterStats(pinned)!
    const tcpOptions = Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2])
    const ip = P.ipv4(6, '198.18.0.1', '198.18.0.2', P.tcp(40000, 80, 0x18, Buffer.alloc(3000), tcpOptions))
    const runs = 200
    for (let i = 0; i < runs; i++) await feed(P.ethernet(P.ETH_IPV4, ip), {gsoSegs: 3, gsoSize: 1000})
    const segments = packetsCounted(4)
    assert.equal(segments + statsSince(before).notSampled, 3 * runs)
    assert.ok(segments > 0 && segments < 3 * runs && segments % 3 === 0, `${segments} segments counted`)
  })

  it('neither counts nor samples frames that are not IP', async function () {
    setSampling(pinned, 3)
    const before = readMeterStats(pinned)!
    await feed(P.ethernet(P.ETH_ARP, Buffer.alloc(28)), undefined, 'ingress', 300)
    assert.deepEqual(statsSince(before), {flows4: 0, flows6: 0, notSampled: 0, overflowed: 0})
    assert.equal(counted(4).length + counted(6).length, 0)
  })

  for (const family of [4, 6] as const) {
    it(`samples a fragmented IPv${family} datagram whole: its later fragment follows its first fragment's draw, under its ports`, async function () {
      setSampling(pinned, 2)
      const before = readMeterStats(pinned)!
      const datagrams = 120
      for (let id = 1; id <= datagrams; id++) {
        const first = P.udp(5000, 53, Buffer.alloc(40))
        const later = Buffer.alloc(32, 0xee) // payload only: what a misparse would read as ports
        const frames =
          family === 4
            ? [
                P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', first, {id, moreFragments: true})),
                P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', later, {id, fragOffset: 48})),
              ]
            : [
                P.ethernet(P.ETH_IPV6, P.ipv6(17, 'fd00::1', 'fd00::2', first, {extensions: [{type: 44, id, moreFragments: true}]})),
                P.ethernet(P.ETH_IPV6, P.ipv6(17, 'fd00::1', 'fd00::2', later, {extensions: [{type: 44, id, fragOffset: 48}]})),
              ]
        for (const frame of frames) await feed(frame)
      }
      const flows = counted(family)
      // Every later fragment counted went under its datagram's ports: no flow with ports 0.
      assert.deepEqual(
        flows.map((f) => [f.key.sport, f.key.dport, f.key.samplingInterval]),
        [[5000, 53, 2]],
      )
      const taken = flows[0].counters.packets
      const stats = statsSince(before)
      assert.equal(taken + stats.notSampled, 2 * datagrams)
      // Whole datagrams: two packets each, taken or skipped together (P(none or all taken) = 2^-119).
      assert.equal(taken % 2, 0)
      assert.ok(taken > 0 && taken < 2 * datagrams, `${taken} fragments counted`)
      const ipHeader = family === 4 ? 20 : 48
      assert.equal(flows[0].counters.bytes, (taken / 2) * (2 * ipHeader + 48 + 32))
    })
  }
})
