/**
 * Flows made up for the spool and replay runs (the collector-spool faults and the replay bench),
 * where only their number and their counts matter: each of its own addresses and ports, so that
 * a collector keeps every one apart, with counts a test can sum.
 */
import {FlowBatch} from '../../src/flow/batch.js'

/**
 * `n` IPv4 UDP flows, 1 to 7 packets of 100 bytes each; `id` (0-65535) sets the source address, so
 * that batches of different ids never share a flow.
 */
export function distinctUdpFlows(n: number, id: number): FlowBatch {
  const b = new FlowBatch(4, n)
  b.observationDomainId = 1
  const nowUs = Date.now() * 1000
  for (let i = 0; i < n; i++) {
    b.src.set([198, 18, (id >> 8) & 255, id & 255], i * 4)
    b.dst.set([198, 19, (i >> 8) & 255, i & 255], i * 4)
    b.sport[i] = 1024 + i
    b.dport[i] = 5000
    b.proto[i] = 17
    b.packets[i] = 1 + (i % 7)
    b.bytes[i] = 100 * b.packets[i]
    b.startUs[i] = nowUs - 5_000_000
    b.endUs[i] = nowUs - 1_000_000
    b.ifindex[i] = 2
    b.endReason[i] = 1
    b.minTtl[i] = 64
    b.maxTtl[i] = 64
  }
  b.length = n
  return b
}
