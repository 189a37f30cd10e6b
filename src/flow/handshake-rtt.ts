/**
 * TCP round-trip times from the handshakes the meter timed (the kernel's `handshakes` map, read by
 * src/bpf/handshakes.ts): pairing the two directions of a connection, and the side table that
 * holds the times of the flows that have them until those flows are exported.
 *
 * The meter writes one entry per interface and direction that saw a handshake packet: the
 * initiator's (its latest SYN, and its first ACK after it) and the responder's (its latest
 * SYN+ACK). From the router, SYN+ACK - SYN is the round trip to the server and back (the server's
 * side) and ACK - SYN+ACK the round trip to the client and back (the client's side); only when
 * SYN < SYN+ACK < ACK. Where several meter points saw the handshake (ingress and egress, or both
 * interfaces of a router), each round trip is the smallest over the pairs: the one timed closest
 * to the far side.
 *
 * Only the flows of timed connections are in the side table (a few per connection): every other
 * flow record stays as it is.
 */
import type {Family} from './record.js'

export const HANDSHAKE_INITIATOR = 1
export const HANDSHAKE_RESPONDER = 2

/** One entry of the kernel's handshake map, decoded. */
export interface HandshakeEntry {
  family: Family
  /** HANDSHAKE_INITIATOR or HANDSHAKE_RESPONDER. */
  role: number
  ifindex: number
  /** 0 ingress, 1 egress. */
  direction: number
  /** The key bytes of the packet's flow, as the family's flow map keys it (latin1): the side table's key. */
  flowKey: string
  /** The packet's source and destination (address bytes as latin1, and host-order port). */
  src: string
  sport: number
  dst: string
  dport: number
  /** CLOCK_MONOTONIC ns: the SYN (initiator) or SYN+ACK (responder). */
  synNs: number
  /** The initiator's first ACK after its SYN; 0 until then, and always for a responder. */
  ackNs: number
}

/** A connection whose handshake was seen whole. */
export interface HandshakeRtt {
  family: Family
  /** ACK - SYN+ACK: the round trip between the router and the client. */
  clientUs: number
  /** SYN+ACK - SYN: the round trip between the router and the server. */
  serverUs: number
  /**
   * The interface the client's packets come in by and the one they leave by towards the server
   * (0 where no meter point tells): from the initiator's ingress or the responder's egress entry,
   * and from the responder's ingress or the initiator's egress entry.
   */
  inIfindex: number
  outIfindex: number
  /** The flow keys of every entry of the connection (both directions, each meter point). */
  flowKeys: string[]
}

export interface PairedHandshakes {
  rtts: HandshakeRtt[]
  /** Indexes (into the entries given) of those to delete from the kernel's map. */
  done: number[]
}

/**
 * A handshake whose ACK came this long ago without a SYN+ACK before it is given up: the map read
 * is not atomic, so an ACK just read may have had its SYN+ACK written past the read's position.
 */
const ACK_WITHOUT_PAIR_NS = 1e9

/** The connection an entry belongs to, the same from both sides: client, then server. */
function connectionOf(e: HandshakeEntry): string {
  return e.role === HANDSHAKE_INITIATOR ? `${e.family}|${e.src}|${e.sport}|${e.dst}|${e.dport}` : `${e.family}|${e.dst}|${e.dport}|${e.src}|${e.sport}`
}

/**
 * Pairs the entries of one read of a namespace's handshake map. A connection with a whole
 * handshake gets its round trips and its entries are done; so are those of a connection whose
 * initiator ACKed without a SYN+ACK seen before (no RTT: the handshake was not seen whole), and
 * those whose latest packet is older than `staleNs` (a handshake that never finished).
 */
export function pairHandshakes(entries: readonly HandshakeEntry[], nowNs: number, staleNs: number): PairedHandshakes {
  const byConnection = new Map<string, number[]>()
  entries.forEach((e, i) => {
    const id = connectionOf(e)
    const group = byConnection.get(id)
    if (group) group.push(i)
    else byConnection.set(id, [i])
  })
  const rtts: HandshakeRtt[] = []
  const done: number[] = []
  for (const group of byConnection.values()) {
    const members = group.map((i) => entries[i])
    const rtt = roundTrips(members)
    if (rtt) rtts.push(rtt)
    const latest = Math.max(...members.map((e) => Math.max(e.synNs, e.ackNs)))
    const acked = members.some((e) => e.role === HANDSHAKE_INITIATOR && e.ackNs > 0 && nowNs - e.ackNs >= ACK_WITHOUT_PAIR_NS)
    if (rtt || acked || nowNs - latest >= staleNs) done.push(...group)
  }
  return {rtts, done}
}

/** The round trips of one connection's entries, or undefined when no pair has SYN < SYN+ACK < ACK. */
function roundTrips(members: readonly HandshakeEntry[]): HandshakeRtt | undefined {
  let server = Infinity
  let client = Infinity
  for (const i of members) {
    if (i.role !== HANDSHAKE_INITIATOR || i.ackNs === 0) continue
    for (const r of members) {
      if (r.role !== HANDSHAKE_RESPONDER || !(i.synNs < r.synNs && r.synNs < i.ackNs)) continue
      server = Math.min(server, r.synNs - i.synNs)
      client = Math.min(client, i.ackNs - r.synNs)
    }
  }
  if (server === Infinity) return undefined
  const at = (role: number, direction: number) => members.find((e) => e.role === role && e.direction === direction)?.ifindex
  return {
    family: members[0].family,
    clientUs: Math.max(1, Math.round(client / 1000)),
    serverUs: Math.max(1, Math.round(server / 1000)),
    inIfindex: at(HANDSHAKE_INITIATOR, 0) ?? at(HANDSHAKE_RESPONDER, 1) ?? 0,
    outIfindex: at(HANDSHAKE_RESPONDER, 0) ?? at(HANDSHAKE_INITIATOR, 1) ?? 0,
    flowKeys: members.map((e) => e.flowKey),
  }
}

/** The round trips a flow record carries. */
export interface FlowRtt {
  clientUs: number
  serverUs: number
  /** CLOCK_MONOTONIC ns when the daemon learnt them (for pruning). */
  atNs: number
}

/** A flow key's bytes hashed as they lie (FNV-1a), so that a look-up allocates nothing. */
function hashKey(keys: Uint8Array, ko: number, keySize: number): number {
  let h = 0x811c9dc5
  for (let i = ko; i < ko + keySize; i++) h = Math.imul(h ^ keys[i], 0x01000193)
  return h >>> 0
}

function sameKey(key: Uint8Array, keys: Uint8Array, ko: number): boolean {
  for (let i = 0; i < key.length; i++) if (key[i] !== keys[ko + i]) return false
  return true
}

interface Held extends FlowRtt {
  key: Uint8Array
}

/**
 * The round trips of the flows of timed connections, by family and flow key bytes, until each
 * flow's record is exported (take) or they are older than a limit (prune: a flow exported without
 * a look here, or never seen). Looked up for every TCP record exported while it holds any: by a
 * hash of the key bytes where they lie, with no string or buffer made per look-up.
 */
export class FlowRtts {
  private readonly byFamily: Record<Family, Map<number, Held[]>> = {4: new Map(), 6: new Map()}
  private count = 0

  get size(): number {
    return this.count
  }

  add(rtt: HandshakeRtt, nowNs: number): void {
    for (const text of rtt.flowKeys) {
      const key = Uint8Array.from(Buffer.from(text, 'latin1'))
      const table = this.byFamily[rtt.family]
      const h = hashKey(key, 0, key.length)
      const bucket = table.get(h) ?? []
      const at = bucket.findIndex((e) => e.key.length === key.length && sameKey(e.key, key, 0))
      const held: Held = {key, clientUs: rtt.clientUs, serverUs: rtt.serverUs, atNs: nowNs}
      if (at >= 0) bucket[at] = held
      else {
        bucket.push(held)
        this.count++
      }
      table.set(h, bucket)
    }
  }

  /** Where the flow keyed by `keySize` bytes at `ko` of `keys` is held, if it is. */
  private find(family: Family, keys: Uint8Array, ko: number, keySize: number): {bucket: Held[]; at: number; h: number} | undefined {
    const table = this.byFamily[family]
    if (table.size === 0) return undefined
    const h = hashKey(keys, ko, keySize)
    const bucket = table.get(h)
    if (!bucket) return undefined
    const at = bucket.findIndex((e) => e.key.length === keySize && sameKey(e.key, keys, ko))
    return at < 0 ? undefined : {bucket, at, h}
  }

  /** The round trips of the flow keyed by `keySize` bytes at `ko` of `keys`, removed from the table; undefined when it has none. */
  take(family: Family, keys: Uint8Array, ko: number, keySize: number): FlowRtt | undefined {
    const found = this.find(family, keys, ko, keySize)
    if (!found) return undefined
    const [held] = found.bucket.splice(found.at, 1)
    if (found.bucket.length === 0) this.byFamily[family].delete(found.h)
    this.count--
    return {clientUs: held.clientUs, serverUs: held.serverUs, atNs: held.atNs}
  }

  /** The round trips of the flow keyed by `keySize` bytes at `ko` of `keys`, left in the table; undefined when it has none. */
  get(family: Family, keys: Uint8Array, ko: number, keySize: number): FlowRtt | undefined {
    const found = this.find(family, keys, ko, keySize)
    if (!found) return undefined
    const held = found.bucket[found.at]
    return {clientUs: held.clientUs, serverUs: held.serverUs, atNs: held.atNs}
  }

  /** Forgets what was learnt before `beforeNs`. */
  prune(beforeNs: number): void {
    for (const table of Object.values(this.byFamily)) {
      for (const [h, bucket] of table) {
        const kept = bucket.filter((e) => e.atNs >= beforeNs)
        this.count -= bucket.length - kept.length
        if (kept.length) table.set(h, kept)
        else table.delete(h)
      }
    }
  }
}
