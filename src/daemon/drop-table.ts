/**
 * The drops of one meter set's flows, held beside the flow cache until each flow is exported (a
 * side table: only flows with drops are in it, so the flow records do not grow).
 *
 * Each drain takes the namespace's drops out of the kernel (src/bpf/drops.ts) and adds them here
 * under the flow key the meter uses. When a flow is exported, its row takes the drops held for it
 * and the forwardingStatus of its most frequent reason. The meter counts a packet before the kernel
 * drops it, but the two land in the kernel's maps apart, and a drain may take one without the other:
 * drops of a flow the cache does not hold wait one more drain for its packets. Drops still without a
 * flow after that were never metered (the meter is not on the interface they came in by, or
 * they are later fragments or IPv6 packets with extension headers, which the hook keys without
 * ports): they are counted per reason and interface (unmetered) and let go.
 */
import type {DropEntry} from '../bpf/drops.js'
import type {FlowBatch} from '../flow/batch.js'
import {dropReasonName, forwardingStatusOfDrop} from '../flow/drop-reasons.js'
import type {Family} from '../flow/record.js'

/** Drops of one reason on one interface, as the metrics count them. */
export interface DropTally {
  reason: string
  ifindex: number
  packets: number
  bytes: number
}

interface FlowDrops {
  family: Family
  key: Buffer
  ifindex: number
  packets: number
  bytes: number
  /** Packets per reason name. */
  byReason: Map<string, number>
  /** The drain that first took drops of this flow. */
  round: number
}

export class DropTable {
  private readonly flows = new Map<string, FlowDrops>()
  private readonly scratch = new Map<string, DropTally>()

  constructor(private readonly names: ReadonlyMap<number, string>) {}

  get size(): number {
    return this.flows.size
  }

  /** Adds what a drain took out of the kernel; returns it tallied per reason and interface. */
  add(entries: readonly DropEntry[], round: number): DropTally[] {
    const tallies = new Map<string, DropTally>()
    for (const e of entries) {
      const reason = dropReasonName(e.reason, e.ttlExpired, this.names)
      const id = `${e.family}${e.flowKey.toString('latin1')}`
      let flow = this.flows.get(id)
      if (!flow) this.flows.set(id, (flow = {family: e.family, key: e.flowKey, ifindex: e.ifindex, packets: 0, bytes: 0, byReason: new Map(), round}))
      flow.packets += e.packets
      flow.bytes += e.bytes
      flow.byReason.set(reason, (flow.byReason.get(reason) ?? 0) + e.packets)
      tally(tallies, reason, e.ifindex, e.packets, e.bytes)
    }
    return [...tallies.values()]
  }

  /**
   * Row `j` of `batch` is a flow whose key is at `ko` of `keys`: gives it the drops held for it,
   * and the forwardingStatus of its most frequent reason. Nothing to do (one comparison) while
   * no flow has drops.
   */
  attach(batch: FlowBatch, j: number, keys: Uint8Array, ko: number, keySize: number): void {
    if (this.flows.size === 0) return
    const id = `${batch.family}${Buffer.from(keys.buffer, keys.byteOffset + ko, keySize).toString('latin1')}`
    const flow = this.flows.get(id)
    if (!flow) return
    this.flows.delete(id)
    const drops = batch.dropsColumns()
    drops.packets[j] = flow.packets
    drops.bytes[j] = flow.bytes
    const reason = mostFrequent(flow.byReason)
    drops.reason[j] = reason
    batch.fwdStatus[j] = forwardingStatusOfDrop(reason)
  }

  /**
   * Lets go of the drops that waited a drain for their flow in vain (`held` says whether the
   * cache holds a flow): they are returned, per reason and interface, as unmetered.
   */
  sweep(round: number, held: (family: Family, key: Buffer) => boolean): DropTally[] {
    const tallies = this.scratch
    tallies.clear()
    for (const [id, flow] of this.flows) {
      if (round - flow.round < 1 || held(flow.family, flow.key)) continue
      this.flows.delete(id)
      const share = flow.bytes / flow.packets
      for (const [reason, packets] of flow.byReason) tally(tallies, reason, flow.ifindex, packets, Math.round(share * packets))
    }
    return [...tallies.values()]
  }
}

function tally(into: Map<string, DropTally>, reason: string, ifindex: number, packets: number, bytes: number): void {
  const id = `${reason}/${ifindex}`
  const t = into.get(id)
  if (t) {
    t.packets += packets
    t.bytes += bytes
  } else into.set(id, {reason, ifindex, packets, bytes})
}

/** The reason with the most packets (the first named, on a tie). */
function mostFrequent(byReason: ReadonlyMap<string, number>): string {
  let best = ''
  let most = -1
  for (const [reason, packets] of byReason) {
    if (packets > most) {
      best = reason
      most = packets
    }
  }
  return best
}
