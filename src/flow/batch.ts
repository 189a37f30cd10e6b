/**
 * Flows on their way to the collectors, column by column in typed arrays: the drain fills one,
 * the encoder reads it, and no object is made per flow on the way.
 */
import type {Family} from './record.js'

/** IPFIX flowEndReason (IE 136) values, RFC 7012 / RFC 5102. */
export const END_REASON = {
  idleTimeout: 1,
  activeTimeout: 2,
  endOfFlowDetected: 3,
  forcedEnd: 4,
  lackOfResources: 5,
} as const

/**
 * The drops of a batch's flows, for the rows of flows that had any (`meter attach --drops`):
 * made with the first such row, so that a batch of flows without drops carries no more memory.
 */
export interface BatchDrops {
  packets: Float64Array
  bytes: Float64Array
  /** The kernel's name of the flow's most frequent drop reason (enum skb_drop_reason, or TTL_EXPIRED). */
  reason: (string | undefined)[]
}

export class FlowBatch {
  readonly capacity: number
  length = 0
  readonly family: Family
  /** The batch's flows come from this meter set (namespace label) and observation domain. */
  netns = ''
  observationDomainId = 0
  readonly ifindex: Uint32Array
  readonly direction: Uint8Array
  readonly proto: Uint8Array
  readonly vlanId: Uint16Array
  /** QinQ: the inner (customer) tag; 0 when there is none. */
  readonly innerVlanId: Uint16Array
  /** The N of the 1-in-N packet sampling the flow was counted at (1: every packet); packets and bytes are as counted, not scaled. */
  readonly samplingInterval: Uint16Array
  readonly sport: Uint16Array
  readonly dport: Uint16Array
  /** Addresses, network order, `addrLen` bytes each. */
  readonly src: Uint8Array
  readonly dst: Uint8Array
  readonly addrLen: number
  readonly packets: Float64Array
  readonly bytes: Float64Array
  /** Epoch microseconds (with fraction) of the first and last packet. */
  readonly startUs: Float64Array
  readonly endUs: Float64Array
  readonly tcpFlags: Uint8Array
  readonly tos: Uint8Array
  readonly endReason: Uint8Array
  /**
   * The flow's other interface: where an ingress flow leaves the router, where an egress flow came
   * in; 0 where there is none (traffic for or from this host) or it is unknown.
   */
  readonly peerIfindex: Uint32Array
  /** Lowest and highest IPv4 TTL / IPv6 hop limit seen. */
  readonly minTtl: Uint8Array
  readonly maxTtl: Uint8Array
  /** IPFIX forwardingStatus (IE 89, RFC 7270) as the meter found it when the flow began. */
  readonly fwdStatus: Uint8Array
  /** The gateway towards dst, network order, `addrLen` bytes each; zeros when directly connected. */
  readonly nextHop: Uint8Array
  /** Undefined until a row of a flow with drops is written (dropsColumns()). */
  drops?: BatchDrops
  /**
   * The rows of TCP flows whose handshake the meter timed (src/flow/handshake-rtt.ts): the round
   * trips, in µs, between the router and the client and between the router and the server. Few
   * rows have them (the first record of each flow of a timed connection): a map by row, not a
   * column, so a batch without them takes no memory for them.
   */
  private readonly rtts = new Map<number, {clientUs: number; serverUs: number}>()
  /**
   * Biflows (RFC 5103, src/flow/biflow.ts): row i's reverse direction is the reverse batch's row
   * i (zero counts and times where it was not seen), and biflowDirection[i] is IPFIX
   * biflowDirection (IE 239). Both undefined in a batch of uniflows.
   */
  reverse?: FlowBatch
  biflowDirection?: Uint8Array

  constructor(family: Family, capacity: number) {
    this.family = family
    this.capacity = capacity
    this.addrLen = family === 4 ? 4 : 16
    this.ifindex = new Uint32Array(capacity)
    this.direction = new Uint8Array(capacity)
    this.proto = new Uint8Array(capacity)
    this.vlanId = new Uint16Array(capacity)
    this.innerVlanId = new Uint16Array(capacity)
    // A flow whose rate nobody set was counted at every packet: never 0, which a collector
    // would take as "no rate" (or, pmacct, as a factor that zeroes the counts).
    this.samplingInterval = new Uint16Array(capacity).fill(1)
    this.sport = new Uint16Array(capacity)
    this.dport = new Uint16Array(capacity)
    this.src = new Uint8Array(capacity * this.addrLen)
    this.dst = new Uint8Array(capacity * this.addrLen)
    this.packets = new Float64Array(capacity)
    this.bytes = new Float64Array(capacity)
    this.startUs = new Float64Array(capacity)
    this.endUs = new Float64Array(capacity)
    this.tcpFlags = new Uint8Array(capacity)
    this.tos = new Uint8Array(capacity)
    this.endReason = new Uint8Array(capacity)
    this.peerIfindex = new Uint32Array(capacity)
    this.minTtl = new Uint8Array(capacity)
    this.maxTtl = new Uint8Array(capacity)
    this.fwdStatus = new Uint8Array(capacity)
    this.nextHop = new Uint8Array(capacity * this.addrLen)
  }

  /** Row `i` carries these round trips (0, 0: none, as a row of a reused batch may have had). */
  setRtt(i: number, clientUs: number, serverUs: number): void {
    if (clientUs || serverUs) this.rtts.set(i, {clientUs, serverUs})
    else if (this.rtts.size) this.rtts.delete(i)
  }

  /** Row `i`'s round trips (0: none). */
  rttClientUs(i: number): number {
    return this.rtts.size === 0 ? 0 : (this.rtts.get(i)?.clientUs ?? 0)
  }

  rttServerUs(i: number): number {
    return this.rtts.size === 0 ? 0 : (this.rtts.get(i)?.serverUs ?? 0)
  }

  get full(): boolean {
    return this.length === this.capacity
  }

  /** The drop columns, made on first use. */
  dropsColumns(): BatchDrops {
    this.drops ??= {packets: new Float64Array(this.capacity), bytes: new Float64Array(this.capacity), reason: new Array<string | undefined>(this.capacity)}
    return this.drops
  }

  clear(): void {
    if (this.drops) {
      this.drops.packets.fill(0, 0, this.length)
      this.drops.bytes.fill(0, 0, this.length)
      this.drops.reason.fill(undefined, 0, this.length)
    }
    this.length = 0
    this.rtts.clear()
  }
}
