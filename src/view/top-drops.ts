/**
 * What `top` shows of a namespace's drops (`meter attach --drops`): the packets dropped since its
 * last sample, per flow, with the kernel's reason. Read from the namespace's current drops hash in
 * place, beside the daemon that swaps it at every drain: a hash swapped in since the last read is
 * counted from 0, and what the daemon took out of the one before after top's last read is not in
 * any interval (so the drop rates may undercount; the flows' own rates never do).
 */
import {runningDropReasonNames} from '../bpf/btf.js'
import {dropSetInode, peekDrops} from '../bpf/drops.js'
import type {MeterSet} from '../bpf/meter-set.js'
import {dropReasonName} from '../flow/drop-reasons.js'

/** A flow's drops in an interval: packets, and the reason with the most of them. */
export interface FlowDrops {
  packets: number
  reason: string
}

export class TopDrops {
  private mapId: number | undefined
  /** Packets of each flow key and reason at the last read (of hash `mapId`). */
  private seen = new Map<string, number>()

  constructor(private readonly set: MeterSet) {}

  /**
   * Drops since the last read, by the flow's key bytes (latin1, as the family's flow map keys it);
   * empty when the namespace has drops off.
   */
  read(): Map<string, FlowDrops> {
    const out = new Map<string, FlowDrops>()
    const inode = dropSetInode(this.set)
    const now = inode === undefined ? undefined : peekDrops(this.set.root, inode)
    if (!now) {
      this.mapId = undefined
      this.seen = new Map()
      return out
    }
    const same = now.id === this.mapId
    const next = new Map<string, number>()
    const most = new Map<string, number>()
    for (const e of now.entries) {
      const flow = e.flowKey.toString('latin1')
      const id = `${flow}\u0000${e.reason}\u0000${e.ttlExpired ? 1 : 0}`
      next.set(id, e.packets)
      const grew = e.packets - (same ? (this.seen.get(id) ?? 0) : 0)
      if (grew <= 0) continue
      const drops = out.get(flow)
      if (!drops) {
        out.set(flow, {packets: grew, reason: dropReasonName(e.reason, e.ttlExpired, runningDropReasonNames())})
        most.set(flow, grew)
        continue
      }
      drops.packets += grew
      if (grew > (most.get(flow) ?? 0)) {
        drops.reason = dropReasonName(e.reason, e.ttlExpired, runningDropReasonNames())
        most.set(flow, grew)
      }
    }
    this.mapId = now.id
    this.seen = next
    return out
  }
}
