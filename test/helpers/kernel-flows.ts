/**
 * Kernel flow keys built by hand, as the meter would write them, for tests that fill flow maps
 * directly (no traffic).
 */
import {FLOW_KEY4, KEY} from '../../src/bpf/layout.js'

/** A struct flow_key4 on ifindex 3, ingress, between two 198.18.0.0/15 hosts. */
export function flowKey4(sport: number, over: {proto?: number; dport?: number; src?: number[]; dst?: number[]} = {}): Buffer {
  const k = Buffer.alloc(FLOW_KEY4.size)
  k.writeUInt32LE(3, KEY.ifindex.offset)
  k[KEY.proto.offset] = over.proto ?? 6
  k.writeUInt16BE(sport, KEY.sport.offset)
  k.writeUInt16BE(over.dport ?? 80, KEY.dport.offset)
  k.set(over.src ?? [198, 18, 50, 1], FLOW_KEY4.fields.src.offset)
  k.set(over.dst ?? [198, 18, 50, 2], FLOW_KEY4.fields.dst.offset)
  return k
}
