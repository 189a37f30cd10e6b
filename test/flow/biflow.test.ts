import assert from 'node:assert/strict'

import {FlowBatch} from '../../src/flow/batch.js'
import {BIFLOW_DIRECTION, BiflowPairer, MAX_HELD_ROWS} from '../../src/flow/biflow.js'

const SYN = 0x02
const ACK = 0x10
const PSH = 0x08
const FIN = 0x01
const INGRESS = 0
const EGRESS = 1
// A router: r0 (ifindex 2) towards the client, r1 (ifindex 3) towards the server.
const R0 = 2
const R1 = 3
const CLIENT = [198, 18, 50, 2]
const SERVER = [198, 18, 51, 2]

interface Row {
  ifindex: number
  peer: number
  direction: number
  src: number[]
  dst: number[]
  sport: number
  dport: number
  proto?: number
  packets: number
  bytes: number
  startUs: number
  flags?: number
}

function batchOf(rows: Row[]): FlowBatch {
  const b = new FlowBatch(4, rows.length)
  b.netns = 'router'
  b.observationDomainId = 7
  rows.forEach((r, i) => {
    b.ifindex[i] = r.ifindex
    b.peerIfindex[i] = r.peer
    b.direction[i] = r.direction
    b.src.set(r.src, i * 4)
    b.dst.set(r.dst, i * 4)
    b.sport[i] = r.sport
    b.dport[i] = r.dport
    b.proto[i] = r.proto ?? 6
    b.packets[i] = r.packets
    b.bytes[i] = r.bytes
    b.startUs[i] = r.startUs
    b.endUs[i] = r.startUs + 1000
    b.tcpFlags[i] = r.flags ?? 0
  })
  b.length = rows.length
  b.tos.fill(0x10)
  return b
}

/** Client to server on 40000 -> 80, and the answer. */
const request = (ifindex: number, peer: number, direction: number, extra: Partial<Row> = {}): Row => ({
  ifindex,
  peer,
  direction,
  src: CLIENT,
  dst: SERVER,
  sport: 40000,
  dport: 80,
  packets: 5,
  bytes: 400,
  startUs: 1000,
  flags: SYN | ACK | PSH | FIN,
  ...extra,
})
const answer = (ifindex: number, peer: number, direction: number, extra: Partial<Row> = {}): Row => ({
  ifindex,
  peer,
  direction,
  src: SERVER,
  dst: CLIENT,
  sport: 80,
  dport: 40000,
  packets: 4,
  bytes: 3000,
  startUs: 1500,
  flags: SYN | ACK | PSH | FIN,
  ...extra,
})

interface Biflow {
  ifindex: number
  direction: number
  sport: number
  packets: number
  bytes: number
  reversePackets: number
  reverseBytes: number
  reverseIfindex: number
  biflowDirection: number
}

function biflows(b: FlowBatch): Biflow[] {
  const r = b.reverse!
  const out: Biflow[] = []
  for (let i = 0; i < b.length; i++) {
    out.push({
      ifindex: b.ifindex[i],
      direction: b.direction[i],
      sport: b.sport[i],
      packets: b.packets[i],
      bytes: b.bytes[i],
      reversePackets: r.packets[i],
      reverseBytes: r.bytes[i],
      reverseIfindex: r.packets[i] ? r.ifindex[i] : 0,
      biflowDirection: b.biflowDirection![i],
    })
  }
  return out.sort((x, y) => x.ifindex - y.ifindex || x.direction - y.direction)
}

function sums(b: FlowBatch): {packets: number; bytes: number} {
  let packets = 0
  let bytes = 0
  for (let i = 0; i < b.length; i++) {
    packets += b.packets[i] + (b.reverse ? b.reverse.packets[i] : 0)
    bytes += b.bytes[i] + (b.reverse ? b.reverse.bytes[i] : 0)
  }
  return {packets, bytes}
}

describe('biflow pairing', function () {
  it('joins the ingress of each side of a router (the request in by r0, the answer in by r1)', function () {
    const b = batchOf([answer(R1, R0, INGRESS), request(R0, R1, INGRESS)])
    const out = new BiflowPairer().pair(b)
    assert.deepEqual(biflows(out), [
      {ifindex: R0, direction: INGRESS, sport: 40000, packets: 5, bytes: 400, reversePackets: 4, reverseBytes: 3000, reverseIfindex: R1, biflowDirection: 1},
    ])
    assert.equal(out.netns, 'router')
    assert.equal(out.observationDomainId, 7)
  })

  it('joins one interface metered both ways', function () {
    const out = new BiflowPairer().pair(batchOf([answer(R0, R1, EGRESS), request(R0, R1, INGRESS)]))
    assert.deepEqual(biflows(out), [
      {ifindex: R0, direction: INGRESS, sport: 40000, packets: 5, bytes: 400, reversePackets: 4, reverseBytes: 3000, reverseIfindex: R0, biflowDirection: 1},
    ])
  })

  it('makes two biflows of a router metered both ways on both interfaces, each of one interface', function () {
    const b = batchOf([request(R0, R1, INGRESS), answer(R1, R0, INGRESS), request(R1, R0, EGRESS), answer(R0, R1, EGRESS)])
    const out = new BiflowPairer().pair(b)
    assert.deepEqual(biflows(out), [
      {ifindex: R0, direction: INGRESS, sport: 40000, packets: 5, bytes: 400, reversePackets: 4, reverseBytes: 3000, reverseIfindex: R0, biflowDirection: 1},
      {ifindex: R1, direction: EGRESS, sport: 40000, packets: 5, bytes: 400, reversePackets: 4, reverseBytes: 3000, reverseIfindex: R1, biflowDirection: 1},
    ])
    assert.deepEqual(sums(out), sums(b))
  })

  it('exports a direction seen alone with zero reverse counts, and a SYN alone as the initiator', function () {
    const b = batchOf([request(R0, R1, INGRESS, {sport: 40001, flags: SYN, packets: 2, bytes: 120}), answer(R1, R0, INGRESS, {dport: 40002, flags: SYN | ACK})])
    const out = new BiflowPairer().pair(b)
    const rows = biflows(out)
    assert.equal(rows.length, 2)
    assert.deepEqual(rows[0], {
      ifindex: R0,
      direction: INGRESS,
      sport: 40001,
      packets: 2,
      bytes: 120,
      reversePackets: 0,
      reverseBytes: 0,
      reverseIfindex: 0,
      biflowDirection: BIFLOW_DIRECTION.initiator,
    })
    // A lone SYN-ACK direction: with OR-ed flags it looks the same as a SYN followed by ACKs.
    assert.equal(rows[1].biflowDirection, BIFLOW_DIRECTION.arbitrary)
    assert.equal(out.reverse!.startUs[0], 0)
    assert.equal(out.reverse!.tos[0], 0)
    assert.deepEqual(sums(out), sums(b))
  })

  it("keeps a flow's drops (meter attach --drops) on its side of the biflow, and gives a reverse seen alone none", function () {
    const b = batchOf([answer(R1, R0, INGRESS), request(R0, R1, INGRESS), request(R0, R1, INGRESS, {sport: 40003})])
    const drops = b.dropsColumns()
    for (const i of [1, 2]) {
      drops.packets[i] = 3
      drops.bytes[i] = 240
      drops.reason[i] = 'NETFILTER_DROP'
    }
    const out = new BiflowPairer().pair(b)
    for (const sport of [40000, 40003]) {
      const i = [...out.sport.subarray(0, out.length)].indexOf(sport)
      assert.deepEqual([out.drops?.packets[i], out.drops?.bytes[i], out.drops?.reason[i]], [3, 240, 'NETFILTER_DROP'], `${sport}`)
      assert.equal(out.reverse!.drops?.reason[i], undefined, `the reverse of ${sport} had no drops`)
    }
  })

  it('takes the side whose flags hold SYN without ACK as the initiator, even when seen later', function () {
    // A refused connection: the client's SYN alone, the server's RST-ACK first seen earlier (a clock quirk).
    const b = batchOf([answer(R1, R0, INGRESS, {flags: 0x14, startUs: 500}), request(R0, R1, INGRESS, {flags: SYN, startUs: 900})])
    const [row] = biflows(new BiflowPairer().pair(b))
    assert.equal(row.sport, 40000, 'the client side is forward')
    assert.equal(row.biflowDirection, BIFLOW_DIRECTION.initiator)
  })

  it('takes the earlier first packet as the initiator when both sides saw SYN, and says arbitrary without any SYN', function () {
    const both = batchOf([answer(R1, R0, INGRESS, {startUs: 2000}), request(R0, R1, INGRESS, {startUs: 2100})])
    const [server] = biflows(new BiflowPairer().pair(both))
    assert.equal(server.sport, 80, 'the side seen first (here the server) is forward')
    assert.equal(server.biflowDirection, BIFLOW_DIRECTION.initiator)
    const midway = batchOf([answer(R1, R0, INGRESS, {flags: ACK | PSH}), request(R0, R1, INGRESS, {flags: ACK | PSH})])
    const [row] = biflows(new BiflowPairer().pair(midway))
    assert.equal(row.sport, 40000, 'the earlier first packet is forward')
    assert.equal(row.biflowDirection, BIFLOW_DIRECTION.arbitrary)
  })

  it('takes the first seen side of a UDP exchange as the initiator', function () {
    const b = batchOf([
      answer(R1, R0, INGRESS, {proto: 17, flags: 0, sport: 53, dport: 5353, startUs: 3000}),
      request(R0, R1, INGRESS, {proto: 17, flags: 0, sport: 5353, dport: 53, startUs: 2000}),
    ])
    const [row] = biflows(new BiflowPairer().pair(b))
    assert.equal(row.sport, 5353)
    assert.equal(row.biflowDirection, BIFLOW_DIRECTION.initiator)
    assert.equal(row.reversePackets, 4)
  })

  it('pairs an ICMP echo request with its reply, the request forward, and leaves other ICMP alone', function () {
    const icmp = (row: Row, type: number): Row => ({...row, proto: 1, sport: 0, dport: type << 8, flags: 0})
    const b = batchOf([icmp(answer(R1, R0, INGRESS, {startUs: 1}), 0), icmp(request(R0, R1, INGRESS, {startUs: 2}), 8), icmp(answer(R1, R0, INGRESS), 3)])
    const out = new BiflowPairer().pair(b)
    const rows = biflows(out)
    assert.equal(rows.length, 2)
    const echo = rows.find((r) => r.reversePackets > 0)!
    assert.equal(echo.ifindex, R0, 'the echo request is forward')
    assert.equal(echo.biflowDirection, BIFLOW_DIRECTION.initiator)
    assert.deepEqual(sums(out), sums(b))
  })

  it('pairs IPv6 flows by all 16 bytes of their addresses, and an ICMPv6 echo with its reply', function () {
    const b = new FlowBatch(6, 5)
    const client = [0xfd, 0, 0, 0x60, ...new Array<number>(11).fill(0), 2]
    const server = [0xfd, 0, 0, 0x61, ...new Array<number>(11).fill(0), 2]
    const other = [...server.slice(0, 15), 3]
    const rows: [number[], number[], number, number, number, number][] = [
      [client, server, 6, 40000, 80, R0],
      [server, client, 6, 80, 40000, R1],
      [other, client, 6, 80, 40000, R1], // another server: alone
      [client, server, 58, 0, 128 << 8, R0],
      [server, client, 58, 0, 129 << 8, R1],
    ]
    rows.forEach(([src, dst, proto, sport, dport, ifindex], i) => {
      b.src.set(src, i * 16)
      b.dst.set(dst, i * 16)
      b.proto[i] = proto
      b.sport[i] = sport
      b.dport[i] = dport
      b.ifindex[i] = ifindex
      b.peerIfindex[i] = ifindex === R0 ? R1 : R0
      b.packets[i] = i + 1
      b.bytes[i] = 100 * (i + 1)
      b.startUs[i] = 1000 + i
    })
    b.length = rows.length
    const out = new BiflowPairer().pair(b)
    assert.equal(out.length, 3)
    const byProto = (proto: number, sport: number) => [...Array(out.length).keys()].find((i) => out.proto[i] === proto && out.sport[i] === sport)!
    const tcp = byProto(6, 40000)
    assert.deepEqual([out.packets[tcp], out.reverse!.packets[tcp]], [1, 2])
    const echo = byProto(58, 0)
    assert.deepEqual([out.dport[echo] >> 8, out.packets[echo], out.reverse!.packets[echo], out.biflowDirection![echo]], [128, 4, 5, BIFLOW_DIRECTION.initiator])
    assert.deepEqual(sums(out), sums(b))
  })

  it('does not pair flows of other protocols, VLANs, interfaces or sampling intervals', function () {
    const b = batchOf([request(R0, R1, INGRESS), answer(R1, R0, INGRESS, {proto: 17}), answer(R0, R1, INGRESS), answer(R1, 9, INGRESS)])
    const vlan = batchOf([request(R0, R1, INGRESS), answer(R1, R0, INGRESS)])
    vlan.vlanId[1] = 100
    const sampled = batchOf([request(R0, R1, INGRESS), answer(R1, R0, INGRESS)])
    sampled.samplingInterval[1] = 10
    const pairer = new BiflowPairer()
    for (const batch of [b, vlan, sampled]) {
      const out = pairer.pair(batch)
      assert.equal(out.length, batch.length, 'every uniflow alone')
      assert.deepEqual(sums(out), sums(batch))
    }
  })

  it('pairs the directions a drain handed over in different batches, when the held rows are flushed', function () {
    const pairer = new BiflowPairer()
    const sent: Biflow[] = []
    const send = (b: FlowBatch) => sent.push(...biflows(b))
    pairer.hold(batchOf([request(R0, R1, INGRESS), request(R0, R1, INGRESS, {sport: 40001})]), send)
    const other = batchOf([answer(R1, R0, INGRESS)])
    other.netns = 'another-router'
    pairer.hold(other, send)
    pairer.hold(batchOf([answer(R1, R0, INGRESS)]), send)
    assert.equal(sent.length, 0, 'nothing before the flush')
    pairer.flush(send)
    assert.deepEqual(
      sent.map((r) => [r.sport, r.reversePackets]),
      [[40000, 4]],
      'the pair; the directions alone wait for the next flush',
    )
    sent.length = 0
    pairer.flush(send)
    assert.deepEqual(
      sent.map((r) => [r.sport, r.reversePackets]).sort((a, b) => a[0] - b[0]),
      [
        [80, 0], // another meter set's answer
        [40001, 0],
      ],
      'kept back once only',
    )
    sent.length = 0
    pairer.flush(send)
    assert.equal(sent.length, 0, 'the rows went with the flushes')
  })

  it('pairs a direction with its reverse that ended one round later, and keeps nothing back at a final flush', function () {
    const pairer = new BiflowPairer()
    const sent: Biflow[] = []
    const send = (b: FlowBatch) => sent.push(...biflows(b))
    pairer.hold(batchOf([request(R0, R1, INGRESS)]), send)
    pairer.flush(send)
    assert.equal(sent.length, 0)
    pairer.hold(batchOf([answer(R1, R0, INGRESS), request(R0, R1, INGRESS, {sport: 40001})]), send)
    pairer.flush(send, true)
    assert.deepEqual(
      sent.map((r) => [r.sport, r.packets, r.reversePackets, r.biflowDirection]).sort((a, b) => a[0] - b[0]),
      [
        [40000, 5, 4, 1],
        [40001, 5, 0, 0],
      ],
    )
    sent.length = 0
    pairer.flush(send)
    assert.equal(sent.length, 0, 'nothing kept after a final flush')
  })

  it('pairs what it holds before it holds more than MAX_HELD_ROWS of a meter set, losing none', function () {
    const pairer = new BiflowPairer()
    let packets = 0
    let records = 0
    const send = (b: FlowBatch) => {
      records += b.length
      packets += sums(b).packets
    }
    const rows = Array.from({length: 8192}, (_, k) => request(R0, R1, INGRESS, {sport: k, packets: 1}))
    for (let k = 0; k < 9; k++) pairer.hold(batchOf(rows), send)
    assert.equal(records, MAX_HELD_ROWS, 'the first MAX_HELD_ROWS went when the next row came')
    pairer.flush(send, true)
    assert.deepEqual([records, packets], [9 * 8192, 9 * 8192])
  })

  it('keeps every packet and byte in exactly one record over a mixed batch', function () {
    const rows: Row[] = []
    // Connections from 40 client ports, each seen by some of the router's four meters, some twice.
    const meters = [request(R0, R1, INGRESS), answer(R1, R0, INGRESS), request(R1, R0, EGRESS), answer(R0, R1, EGRESS)]
    for (let k = 0; k < 200; k++) {
      const port = 30000 + (Math.floor(k / 4) % 40)
      const m = meters[k % (k % 3 ? 4 : 3)]
      const ports = m.sport === 80 ? {dport: port} : {sport: port}
      rows.push({...m, ...ports, packets: k + 1, bytes: 100 * (k + 1), startUs: k})
    }
    const b = batchOf(rows)
    const out = new BiflowPairer().pair(b)
    assert.deepEqual(sums(out), sums(b))
    assert.ok(out.length < b.length, 'some pairs were made')
    let nonEmpty = 0
    for (let i = 0; i < out.length; i++) nonEmpty += (out.packets[i] > 0 ? 1 : 0) + (out.reverse!.packets[i] > 0 ? 1 : 0)
    assert.equal(nonEmpty, b.length, 'each uniflow in one record')
  })
})
