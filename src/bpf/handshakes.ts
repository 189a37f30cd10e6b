/**
 * The one reader of a meter set's `handshakes` map (TCP handshake times, see bpf/flowctl.h): each
 * drain reads it whole, pairs the two directions of each connection (src/flow/handshake-rtt.ts)
 * and deletes the entries of the connections done with (timed, not seen whole, or stale).
 */
import {
  HANDSHAKE_INITIATOR as FLOW_INITIATOR,
  HANDSHAKE_RESPONDER as FLOW_RESPONDER,
  pairHandshakes,
  type HandshakeEntry,
  type HandshakeRtt,
} from '../flow/handshake-rtt.js'
import {familyKeyOf, FLOW_KEY6, HANDSHAKE_KEY, HANDSHAKE_TIMES, KEY, readU32, readU64} from './layout.js'
import {HANDSHAKE_INITIATOR, HANDSHAKE_RESPONDER} from './layout.generated.js'
import type {BpfMap} from './libbpf.js'

/** Throws when the header's enum and src/flow's constants differ (typed as numbers: checked, not assumed). */
function agree(what: string, a: number, b: number): void {
  if (a !== b) throw new Error(`bpf/flowctl.h: ${what} differs from src/flow/handshake-rtt.ts (${a}, ${b})`)
}
agree('HANDSHAKE_INITIATOR', HANDSHAKE_INITIATOR, FLOW_INITIATOR)
agree('HANDSHAKE_RESPONDER', HANDSHAKE_RESPONDER, FLOW_RESPONDER)

const FLOW = HANDSHAKE_KEY.fields.flow.offset
const FAMILY = HANDSHAKE_KEY.fields.family.offset
const SRC6 = FLOW_KEY6.fields.src.offset
const DST6 = FLOW_KEY6.fields.dst.offset
const T = HANDSHAKE_TIMES.fields

function decode(keys: Buffer, ko: number, values: Buffer, vo: number): HandshakeEntry | undefined {
  const family = readU32(keys, ko + FAMILY)
  if (family !== 4 && family !== 6) return undefined
  const len = family === 4 ? 4 : 16
  const at = ko + FLOW
  return {
    family,
    role: readU32(values, vo + T.role.offset),
    ifindex: readU32(keys, at + KEY.ifindex.offset),
    direction: keys[at + KEY.direction.offset],
    flowKey: familyKeyOf(keys, ko + FLOW, family).toString('latin1'),
    src: keys.toString('latin1', at + SRC6, at + SRC6 + len),
    sport: keys.readUInt16BE(at + KEY.sport.offset),
    dst: keys.toString('latin1', at + DST6, at + DST6 + len),
    dport: keys.readUInt16BE(at + KEY.dport.offset),
    synNs: readU64(values, vo + T.synNs.offset),
    ackNs: readU64(values, vo + T.ackNs.offset),
  }
}

/** Every entry of the handshake map, decoded, with its key bytes; `junk`: keys this flowctl did not write (no family). */
function readEntries(map: BpfMap): {entries: HandshakeEntry[]; rawKeys: Buffer[]; junk: Buffer[]} {
  const keySize = map.info.keySize
  const valueSize = map.info.valueSize
  const entries: HandshakeEntry[] = []
  const rawKeys: Buffer[] = []
  const junk: Buffer[] = []
  map.forEachBatch(
    (keys, values, n) => {
      for (let i = 0; i < n; i++) {
        const e = decode(keys, i * keySize, values, i * valueSize)
        const raw = Buffer.from(keys.subarray(i * keySize, (i + 1) * keySize))
        if (!e) {
          junk.push(raw)
          continue
        }
        entries.push(e)
        rawKeys.push(raw)
      }
    },
    {batchEntries: 1024},
  )
  return {entries, rawKeys, junk}
}

/**
 * Reads the handshake map whole, and deletes what is done with (see pairHandshakes): returns the
 * connections timed. `nowNs` is CLOCK_MONOTONIC now; an entry older than `staleNs` goes. The
 * daemon's drain calls it: one writer of the map at a time.
 */
export function takeHandshakes(map: BpfMap, nowNs: number, staleNs: number): HandshakeRtt[] {
  const {entries, rawKeys, junk} = readEntries(map)
  const {rtts, done} = pairHandshakes(entries, nowNs, staleNs)
  const gone = [...junk, ...done.map((i) => rawKeys[i])]
  if (gone.length) map.deleteBatch(Buffer.concat(gone), gone.length)
  return rtts
}

/** The connections the handshake map holds timed whole now, changing nothing (`top`, beside the daemon). */
export function peekHandshakes(map: BpfMap, nowNs: number): HandshakeRtt[] {
  return pairHandshakes(readEntries(map).entries, nowNs, Infinity).rtts
}
