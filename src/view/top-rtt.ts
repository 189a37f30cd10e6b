/**
 * The TCP round trips `flowctl top` shows beside its flows: it reads the meter set's handshake map
 * at each look at the slots, without changing it (the daemon pairs and deletes the entries at each
 * drain: top sees a handshake if it looks between its ACK and that drain, which its looks, ten per
 * drain interval, mostly do), and remembers the round trips of the flows of each connection seen
 * whole for as long as those flows may still show.
 */
import {peekHandshakes} from '../bpf/handshakes.js'
import type {BpfMap} from '../bpf/libbpf.js'
import type {MeterSet} from '../bpf/meter-set.js'
import {FlowRtts, type FlowRtt} from '../flow/handshake-rtt.js'
import type {Family} from '../flow/record.js'
import {monotonicNowNs} from '../sys/clock.js'

/** How long the round trips of a connection stay known after its handshake (its flows may show for as long). */
const KEPT_NS = 600e9

export class HandshakeWatch {
  private readonly map: BpfMap
  private readonly rtts = new FlowRtts()
  private prunedAt = 0

  constructor(set: MeterSet) {
    this.map = set.openMap('handshakes')
  }

  /** Reads the handshake map (one bpf() call while it holds few entries) and remembers what it finds timed. */
  look(): void {
    const nowNs = Number(monotonicNowNs())
    for (const rtt of peekHandshakes(this.map, nowNs)) this.rtts.add(rtt, nowNs)
    if (nowNs - this.prunedAt > 10e9) {
      this.rtts.prune(nowNs - KEPT_NS)
      this.prunedAt = nowNs
    }
  }

  /** The round trips of the flow with these key bytes, if its connection was seen timed. */
  of(family: Family, key: Buffer): FlowRtt | undefined {
    return this.rtts.get(family, key, 0, key.length)
  }

  close(): void {
    this.map.close()
  }
}
