/**
 * Biflows carry the TCP round trips of their forward direction (src/flow/biflow.ts copies them
 * with every other column), and a batch the pairer reuses keeps none from its last use.
 */
import assert from 'node:assert/strict'

import {FlowBatch} from '../../src/flow/batch.js'
import {BiflowPairer} from '../../src/flow/biflow.js'

const CLIENT = [198, 18, 50, 2]
const SERVER = [198, 18, 51, 2]

/** The request (client 40000 -> server 80) in by ifindex 2, and the answer in by 3, with or without round trips. */
function connection(timed: boolean): FlowBatch {
  const b = new FlowBatch(4, 2)
  for (const [i, src, dst, sport, dport, ifindex, peer] of [
    [0, CLIENT, SERVER, 40000, 80, 2, 3],
    [1, SERVER, CLIENT, 80, 40000, 3, 2],
  ] as const) {
    b.ifindex[i] = ifindex
    b.peerIfindex[i] = peer
    b.src.set(src, i * 4)
    b.dst.set(dst, i * 4)
    b.sport[i] = sport
    b.dport[i] = dport
    b.proto[i] = 6
    b.packets[i] = 3
    b.bytes[i] = 300
    b.startUs[i] = 1000 + i
    b.endUs[i] = 2000
    b.tcpFlags[i] = i === 0 ? 0x1b : 0x12 | 0x09
    if (timed) b.setRtt(i, 20_000, 50_000)
  }
  b.length = 2
  return b
}

describe('biflow pairing: TCP round trips', function () {
  it('gives the biflow its forward direction’s round trips, and a reused batch none of a previous pair', function () {
    const pairer = new BiflowPairer()
    const out = pairer.pair(connection(true))
    assert.equal(out.length, 1)
    assert.deepEqual([out.rttClientUs(0), out.rttServerUs(0)], [20_000, 50_000])
    const again = pairer.pair(connection(false))
    assert.equal(again.length, 1)
    assert.deepEqual([again.rttClientUs(0), again.rttServerUs(0)], [0, 0])
  })
})
