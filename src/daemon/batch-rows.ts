/**
 * The rows of a FlowBatch of ended flows, written from what the drain has at hand: the kernel's
 * key bytes (a read batch's, or a cache record's, which has the same layout) and a FlowSample.
 */
import {KEY, keySamplingInterval, readU32, srcOffset} from '../bpf/layout.js'
import type {FlowBatch} from '../flow/batch.js'
import type {FlowSample} from '../flow/record.js'

/** The key columns of batch row `j` from kernel key bytes at `ko`. */
export function fillKey(batch: FlowBatch, j: number, keys: Uint8Array, ko: number): void {
  batch.ifindex[j] = readU32(keys, ko + KEY.ifindex.offset)
  batch.direction[j] = keys[ko + KEY.direction.offset]
  batch.proto[j] = keys[ko + KEY.proto.offset]
  batch.vlanId[j] = keys[ko + KEY.vlanId.offset] | (keys[ko + KEY.vlanId.offset + 1] << 8)
  batch.innerVlanId[j] = keys[ko + KEY.innerVlanId.offset] | (keys[ko + KEY.innerVlanId.offset + 1] << 8)
  batch.samplingInterval[j] = keySamplingInterval(keys, ko)
  batch.sport[j] = (keys[ko + KEY.sport.offset] << 8) | keys[ko + KEY.sport.offset + 1]
  batch.dport[j] = (keys[ko + KEY.dport.offset] << 8) | keys[ko + KEY.dport.offset + 1]
  const len = batch.addrLen
  const src = batch.src
  const dst = batch.dst
  for (let k = 0, at = j * len, from = ko + srcOffset(batch.family); k < len; k++) {
    src[at + k] = keys[from + k]
    dst[at + k] = keys[from + len + k]
  }
}

/** The counter columns of batch row `j` (times turned from CLOCK_MONOTONIC ns into epoch µs). */
export function fillCounters(batch: FlowBatch, j: number, s: FlowSample, reason: number, offsetNs: number): void {
  batch.packets[j] = s.packets
  batch.bytes[j] = s.bytes
  batch.startUs[j] = (s.firstNs + offsetNs) / 1000
  batch.endUs[j] = (s.lastNs + offsetNs) / 1000
  batch.tcpFlags[j] = s.tcpFlags
  batch.tos[j] = s.tos
  batch.peerIfindex[j] = s.peerIfindex
  batch.minTtl[j] = s.minTtl
  batch.maxTtl[j] = s.maxTtl
  batch.fwdStatus[j] = s.fwdStatus
  const len = batch.addrLen
  for (let k = 0; k < len; k++) batch.nextHop[j * len + k] = s.nextHopBytes[s.nextHopOffset + k]
  batch.endReason[j] = reason
}
