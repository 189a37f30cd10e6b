/**
 * Pairing the handshake entries of both directions into round trips, and the side table the flows
 * of timed connections carry them in (src/flow/handshake-rtt.ts).
 */
import assert from 'node:assert/strict'

import {FlowRtts, HANDSHAKE_INITIATOR, HANDSHAKE_RESPONDER, pairHandshakes, type HandshakeEntry} from '../../src/flow/handshake-rtt.js'

const C = '\xc6\x12\x00\x01' // 198.18.0.1
const S = '\xc6\x13\x00\x02' // 198.19.0.2
const MS = 1e6

/** An entry of a connection from C:40000 to S:80, seen on `ifindex` in `direction`. */
function entry(role: number, ifindex: number, direction: number, synNs: number, ackNs = 0, sport = 40000): HandshakeEntry {
  const init = role === HANDSHAKE_INITIATOR
  return {
    family: 4,
    role,
    ifindex,
    direction,
    flowKey: `key-${role}-${ifindex}-${direction}-${sport}`,
    src: init ? C : S,
    sport: init ? sport : 80,
    dst: init ? S : C,
    dport: init ? 80 : sport,
    synNs,
    ackNs,
  }
}

describe('pairHandshakes', function () {
  it('times a connection seen at the ingress of both router interfaces: server side SYN to SYN+ACK, client side SYN+ACK to ACK', function () {
    const entries = [entry(HANDSHAKE_INITIATOR, 2, 0, 100 * MS, 170 * MS), entry(HANDSHAKE_RESPONDER, 3, 0, 120 * MS)]
    const {rtts, done} = pairHandshakes(entries, 200 * MS, 10_000 * MS)
    assert.deepEqual(rtts, [{family: 4, clientUs: 50_000, serverUs: 20_000, inIfindex: 2, outIfindex: 3, flowKeys: [entries[0].flowKey, entries[1].flowKey]}])
    assert.deepEqual(done.sort(), [0, 1])
  })

  it('takes the smallest of each round trip over the meter points that saw the handshake (ingress and egress)', function () {
    const entries = [
      entry(HANDSHAKE_INITIATOR, 2, 0, 100 * MS, 170 * MS), // client side in
      entry(HANDSHAKE_INITIATOR, 3, 1, 101 * MS, 171 * MS), // out towards the server
      entry(HANDSHAKE_RESPONDER, 3, 0, 120 * MS), // in from the server
      entry(HANDSHAKE_RESPONDER, 2, 1, 121 * MS), // out towards the client
    ]
    const [rtt] = pairHandshakes(entries, 200 * MS, 10_000 * MS).rtts
    assert.equal(rtt.serverUs, 19_000)
    assert.equal(rtt.clientUs, 49_000)
    assert.deepEqual([rtt.inIfindex, rtt.outIfindex], [2, 3])
    assert.equal(rtt.flowKeys.length, 4)
  })

  it('gives no round trip unless SYN < SYN+ACK < ACK, and keeps a handshake in progress', function () {
    const waiting = pairHandshakes([entry(HANDSHAKE_INITIATOR, 2, 0, 100 * MS), entry(HANDSHAKE_RESPONDER, 3, 0, 120 * MS)], 200 * MS, 10_000 * MS)
    assert.deepEqual(waiting, {rtts: [], done: []})
    // A SYN retransmitted after the SYN+ACK (its time restarted): not a whole handshake.
    const restarted = pairHandshakes([entry(HANDSHAKE_INITIATOR, 2, 0, 130 * MS, 170 * MS), entry(HANDSHAKE_RESPONDER, 3, 0, 120 * MS)], 200 * MS, 10_000 * MS)
    assert.deepEqual(restarted.rtts, [])
  })

  it('gives up an ACKed handshake whose SYN+ACK was never seen (after a second), and a stale one', function () {
    const acked = [entry(HANDSHAKE_INITIATOR, 2, 0, 100 * MS, 170 * MS)]
    assert.deepEqual(pairHandshakes(acked, 200 * MS, 10_000 * MS), {rtts: [], done: []})
    assert.deepEqual(pairHandshakes(acked, 1200 * MS, 10_000 * MS), {rtts: [], done: [0]})
    const stale = [entry(HANDSHAKE_INITIATOR, 2, 0, 100 * MS), entry(HANDSHAKE_RESPONDER, 3, 0, 120 * MS)]
    assert.deepEqual(pairHandshakes(stale, 10_121 * MS, 10_000 * MS), {rtts: [], done: [0, 1]})
  })

  it('pairs only the entries of one connection (addresses and ports reversed)', function () {
    const entries = [
      entry(HANDSHAKE_INITIATOR, 2, 0, 100 * MS, 170 * MS, 40000),
      entry(HANDSHAKE_RESPONDER, 3, 0, 120 * MS, 0, 40001), // another connection's SYN+ACK
    ]
    assert.deepEqual(pairHandshakes(entries, 200 * MS, 10_000 * MS).rtts, [])
  })
})

describe('FlowRtts', function () {
  const key = (text: string) => Buffer.from(`xx${text}`, 'latin1')

  it('hands each flow of a timed connection its round trips once, by its key bytes and family', function () {
    const rtts = new FlowRtts()
    rtts.add({family: 4, clientUs: 5, serverUs: 7, inIfindex: 1, outIfindex: 2, flowKeys: ['abcd', 'efgh']}, 1000)
    assert.equal(rtts.size, 2)
    assert.equal(rtts.take(6, key('abcd'), 2, 4), undefined, 'another family')
    assert.deepEqual(rtts.take(4, key('abcd'), 2, 4), {clientUs: 5, serverUs: 7, atNs: 1000})
    assert.equal(rtts.take(4, key('abcd'), 2, 4), undefined, 'taken')
    assert.equal(rtts.take(4, key('zzzz'), 2, 4), undefined)
    assert.equal(rtts.size, 1)
  })

  it('keeps one entry per key: a connection timed again replaces its round trips', function () {
    const rtts = new FlowRtts()
    rtts.add({family: 4, clientUs: 5, serverUs: 7, inIfindex: 1, outIfindex: 2, flowKeys: ['abcd']}, 1000)
    rtts.add({family: 4, clientUs: 6, serverUs: 8, inIfindex: 1, outIfindex: 2, flowKeys: ['abcd']}, 2000)
    assert.equal(rtts.size, 1)
    assert.deepEqual(rtts.get(4, key('abcd'), 2, 4), {clientUs: 6, serverUs: 8, atNs: 2000})
    assert.equal(rtts.size, 1, 'get leaves it')
    assert.ok(rtts.take(4, key('abcd'), 2, 4))
    assert.equal(rtts.size, 0)
  })

  it('forgets round trips learnt before a time', function () {
    const rtts = new FlowRtts()
    rtts.add({family: 4, clientUs: 5, serverUs: 7, inIfindex: 1, outIfindex: 2, flowKeys: ['old1']}, 1000)
    rtts.add({family: 6, clientUs: 5, serverUs: 7, inIfindex: 1, outIfindex: 2, flowKeys: ['new1']}, 3000)
    rtts.prune(2000)
    assert.equal(rtts.size, 1)
    assert.ok(rtts.take(6, key('new1'), 2, 4))
  })
})
