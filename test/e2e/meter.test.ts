/**
 * The meter end to end: namespaces joined by veth, the CLI attaching it, real traffic of every
 * kind, and exact packet and byte counts from `flowctl dump --json`.
 *
 * Oracles: the traffic agents send known datagrams (so UDP and ICMP counts are computed from what
 * was sent), and for TCP the veth's own counters: the link carries nothing else (static
 * neighbours, no IPv6, offloads off), so its packets are the flow's and its bytes are the flow's IP
 * bytes plus 14 bytes of Ethernet header per packet.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'

import type {Flow} from '../../src/view/flow.js'
import {Lab} from '../../src/lab/lab.js'
import {ping, runAgent, startAgent} from '../../src/lab/traffic.js'
import {cli, cliJson, cliOk, requireE2e} from '../helpers/e2e.js'
import * as P from '../helpers/packets.js'

const ETH = 14

function find(flows: Flow[], match: Partial<Flow>): Flow[] {
  return flows.filter((f) => Object.entries(match).every(([k, v]) => (f as unknown as Record<string, unknown>)[k] === v))
}

function one(flows: Flow[], match: Partial<Flow>): Flow {
  const found = find(flows, match)
  assert.equal(
    found.length,
    1,
    `expected one flow matching ${JSON.stringify(match)}, found ${found.length}: ${JSON.stringify(flows.map((f) => [f.direction, f.protoName, f.src, f.sport, f.dst, f.dport, f.vlanId]))}`,
  )
  return found[0]
}

describe('meter end to end @e2e', function () {
  const lab = new Lab()
  let a: string
  let b: string
  let flows: Flow[]
  const udpSports = [40001, 40002, 40003]
  let v6Sport: number
  let tcpPort: number
  let tcpLink: {tx: {packets: number; bytes: number}; rx: {packets: number; bytes: number}}

  before(async function () {
    requireE2e(this)
    a = await lab.namespace('a')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.10.1/24', '198.18.10.2/24'], v6: ['fd00:10::1/64', 'fd00:10::2/64'], quiet: true})
    await lab.veth(a, 'a1', b, 'b1', {v4: ['198.18.11.1/24', '198.18.11.2/24'], quiet: true})

    const attached = await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '-n', 'a1'])
    assert.match(attached, /a0:ingress attached/)
    assert.match(attached, /a1:egress attached/)

    // UDP: 3 flows x 20 datagrams of 100 bytes.
    const sink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: 7000})
    for (const sport of udpSports) await runAgent(a, {mode: 'udp-send', host: '198.18.10.2', port: 7000, sport, count: 20, size: 100})
    sink.stop()
    // VLAN-tagged frames on the wire, both ways: 802.1Q 100, and QinQ (802.1ad 200 around 802.1Q 300).
    // (Frames a sends keep their tags in the packet at tc egress; frames a receives have the outer
    // tag moved to skb->vlan_tci before tc ingress: both paths of the parser.)
    const tagged = (src: string, dst: string, sport: number, size: number, tags: {tpid: number; vid: number}[]) =>
      P.ethernet(P.ETH_IPV4, P.ipv4(17, src, dst, P.udp(sport, 7000, Buffer.alloc(size))), tags).toString('hex')
    const q100 = [{tpid: P.TPID_8021Q, vid: 100}]
    const qinq = [
      {tpid: P.TPID_8021AD, vid: 200},
      {tpid: P.TPID_8021Q, vid: 300},
    ]
    await runAgent(a, {mode: 'raw-send', ifname: 'a0', count: 10, frameHex: tagged('198.18.12.1', '198.18.12.2', 41000, 50, q100)})
    await runAgent(b, {mode: 'raw-send', ifname: 'b0', count: 6, frameHex: tagged('198.18.12.2', '198.18.12.1', 41001, 60, q100)})
    await runAgent(a, {mode: 'raw-send', ifname: 'a0', count: 7, frameHex: tagged('198.18.14.1', '198.18.14.2', 42000, 70, qinq)})
    await runAgent(b, {mode: 'raw-send', ifname: 'b0', count: 5, frameHex: tagged('198.18.14.2', '198.18.14.1', 42001, 80, qinq)})
    // IPv6 UDP: 15 datagrams of 300 bytes.
    const sink6 = await startAgent(b, {mode: 'udp-sink', host: '::', port: 7006})
    v6Sport = (await runAgent(a, {mode: 'udp-send', host: 'fd00:10::2', port: 7006, count: 15, size: 300})).sport
    sink6.stop()
    // ICMP echo, 4 requests and 4 replies.
    await ping(a, '198.18.10.2', 4, 56, 0.05)
    // TCP on its own link: 200 kB, then FIN both ways.
    const before = await lab.linkStats(a, 'a1')
    const server = await startAgent(b, {mode: 'tcp-sink', host: '198.18.11.2', port: 8000})
    tcpPort = (await runAgent(a, {mode: 'tcp-send', host: '198.18.11.2', port: 8000, bytes: 200_000})).localPort
    await server.result
    await new Promise((r) => setTimeout(r, 200)) // the last ACK
    const after = await lab.linkStats(a, 'a1')
    tcpLink = {
      tx: {packets: after.txPackets - before.txPackets, bytes: after.txBytes - before.txBytes},
      rx: {packets: after.rxPackets - before.rxPackets, bytes: after.rxBytes - before.rxBytes},
    }
    flows = await cliJson<Flow[]>(['dump', '--netns', a])
  })

  after(async function () {
    if (a) await cli(['meter', 'detach', '--netns', a])
    await lab.destroy()
  })

  it('counts each UDP flow exactly: packets sent, and IP bytes', function () {
    for (const sport of udpSports) {
      const f = one(flows, {interface: 'a0', direction: 'egress', proto: 17, sport, dport: 7000})
      assert.equal(f.src, '198.18.10.1')
      assert.equal(f.dst, '198.18.10.2')
      assert.equal(f.packets, 20)
      assert.equal(f.bytes, 20 * (20 + 8 + 100))
      assert.equal(f.ipVersion, 4)
      assert.equal(f.vlanId, 0)
    }
    // The sink listens, so nothing came back: no UDP from it, no ICMP port unreachable.
    assert.equal(find(flows, {interface: 'a0', direction: 'ingress', proto: 17, src: '198.18.10.2'}).length, 0)
    assert.equal(find(flows, {interface: 'a0', direction: 'ingress', proto: 1, icmpType: 3}).length, 0)
  })

  it('counts IPv6 UDP', function () {
    const f = one(flows, {direction: 'egress', ipVersion: 6, proto: 17, sport: v6Sport})
    assert.equal(f.src, 'fd00:10::1')
    assert.equal(f.dst, 'fd00:10::2')
    assert.equal(f.dport, 7006)
    assert.equal(f.packets, 15)
    assert.equal(f.bytes, 15 * (40 + 8 + 300))
  })

  it('counts ICMP echo both ways, keyed by type and code', function () {
    const request = one(flows, {direction: 'egress', proto: 1, src: '198.18.10.1'})
    const reply = one(flows, {direction: 'ingress', proto: 1, src: '198.18.10.2'})
    assert.deepEqual([request.icmpType, request.icmpCode, request.packets, request.bytes], [8, 0, 4, 4 * 84])
    assert.deepEqual([reply.icmpType, reply.icmpCode, reply.packets, reply.bytes], [0, 0, 4, 4 * 84])
  })

  it('keys 802.1Q-tagged traffic by its VLAN id, tag in the packet (egress) or offloaded (ingress)', function () {
    const out = one(flows, {interface: 'a0', direction: 'egress', sport: 41000})
    assert.deepEqual([out.vlanId, out.dst, out.dport, out.packets, out.bytes], [100, '198.18.12.2', 7000, 10, 10 * (28 + 50)])
    const back = one(flows, {interface: 'a0', direction: 'ingress', sport: 41001})
    assert.deepEqual([back.vlanId, back.dst, back.dport, back.packets, back.bytes], [100, '198.18.12.1', 7000, 6, 6 * (28 + 60)])
  })

  it('parses through QinQ and keys by the outer VLAN', function () {
    const out = one(flows, {interface: 'a0', direction: 'egress', sport: 42000})
    assert.deepEqual([out.vlanId, out.dst, out.dport, out.packets, out.bytes], [200, '198.18.14.2', 7000, 7, 7 * (28 + 70)])
    const back = one(flows, {interface: 'a0', direction: 'ingress', sport: 42001})
    assert.deepEqual([back.vlanId, back.dst, back.dport, back.packets, back.bytes], [200, '198.18.14.1', 7000, 5, 5 * (28 + 80)])
  })

  it('counts a TCP connection both ways exactly as the interface counted it, with SYN and FIN', function () {
    const out = one(flows, {interface: 'a1', direction: 'egress', proto: 6, sport: tcpPort})
    const back = one(flows, {interface: 'a1', direction: 'ingress', proto: 6, dport: tcpPort})
    assert.equal(out.packets, tcpLink.tx.packets)
    assert.equal(out.bytes, tcpLink.tx.bytes - ETH * tcpLink.tx.packets)
    assert.equal(back.packets, tcpLink.rx.packets)
    assert.equal(back.bytes, tcpLink.rx.bytes - ETH * tcpLink.rx.packets)
    assert.ok(out.bytes > 200_000, 'the payload went out')
    assert.equal(out.tcpFlags & 0x13, 0x13, `SYN, ACK and FIN in ${out.tcpFlagsText}`)
    assert.equal(back.tcpFlags & 0x13, 0x13, `SYN, ACK and FIN in ${back.tcpFlagsText}`)
    // No other traffic crossed this link.
    assert.equal(find(flows, {interface: 'a1'}).length, 2)
  })

  it('stamps flows with wall-clock times of when the packets passed', function () {
    const now = Date.now()
    for (const f of flows) {
      assert.ok(f.start <= f.end, 'start before end')
      assert.ok(now - f.start < 120_000 && f.end <= now + 50, `times within the test run: ${f.start}..${f.end} vs ${now}`)
    }
  })

  it('shows status with the flows, capacity and program of each meter', async function () {
    const status = await cliJson<
      {interface: string; direction: string; state: string; flows: number; capacity: number; progId: number; mapPath: string; overflowPackets: number}[]
    >(['meter', 'status', '--netns', a])
    assert.equal(status.length, 4)
    for (const s of status) {
      assert.equal(s.state, 'attached')
      assert.equal(s.capacity, 1048576)
      assert.equal(s.overflowPackets, 0)
      assert.equal(s.mapPath, `/sys/fs/bpf/flowctl/netns/${a}/maps`)
      assert.equal(s.flows, find(flows, {interface: s.interface, direction: s.direction as 'ingress'}).length)
    }
  })

  it('says "unchanged" when attached again', async function () {
    const out = await cliOk(['meter', 'attach', '-i', `${a}:a0`])
    assert.match(out, /a0:ingress unchanged/)
    assert.match(out, /a0:egress unchanged/)
  })

  it('flushes one flow by its key and leaves the others as they were', async function () {
    const out = await cliOk(['flush', '--netns', a, '-p', 'udp', '-s', 'fd00:10::1', '-S', String(v6Sport), '-d', 'fd00:10::2', '-D', '7006'])
    assert.match(out, /^1 flow removed/)
    const now = await cliJson<Flow[]>(['dump', '--netns', a])
    assert.equal(find(now, {ipVersion: 6, proto: 17, sport: v6Sport}).length, 0)
    for (const sport of udpSports) assert.equal(one(now, {direction: 'egress', proto: 17, sport}).packets, 20)
    // Flushing it again is not an error.
    assert.match(
      await cliOk(['flush', '--netns', a, '-p', 'udp', '-s', 'fd00:10::1', '-S', String(v6Sport), '-d', 'fd00:10::2', '-D', '7006']),
      /^0 flows removed/,
    )
  })

  it('detaches leaving no filter, qdisc or pin of ours', async function () {
    const out = await cliOk(['meter', 'detach', '--netns', a])
    assert.match(out, /maps removed/)
    for (const dev of ['a0', 'a1']) {
      for (const dir of ['ingress', 'egress']) assert.equal(await lab.exec(a, 'tc', ['filter', 'show', 'dev', dev, dir]), '')
      assert.doesNotMatch(await lab.exec(a, 'tc', ['qdisc', 'show', 'dev', dev]), /clsact/)
    }
    assert.equal(existsSync(`/sys/fs/bpf/flowctl/netns/${a}`), false)
    const state = JSON.parse(readFileSync('/run/flowctl/attachments.json', 'utf8')) as {attachments: {netns: string}[]}
    assert.equal(state.attachments.filter((x) => x.netns === a).length, 0)
  })
})
