/**
 * The daemon's own sockets, by cookie, in the meter's skip_socks map: the meter does not count
 * the IPFIX datagrams it causes (an exporter that meters its export traffic feeds on itself).
 */
import type {BpfMap} from './libbpf.js'

/** A meter set, or a daemon's drainer of one (which opens the set it holds, not whatever is at its path). */
type MapSource = {openMap(name: string): BpfMap}

function cookieKey(cookie: bigint): Buffer {
  const key = Buffer.alloc(8)
  key.writeBigUInt64LE(cookie)
  return key
}

export function skipSockets(set: MapSource, cookies: bigint[]): void {
  const map = set.openMap('skip_socks')
  try {
    for (const c of cookies) map.update(cookieKey(c), Buffer.from([1]))
  } finally {
    map.close()
  }
}

export function unskipSockets(set: MapSource, cookies: bigint[]): void {
  const map = set.openMap('skip_socks')
  try {
    for (const c of cookies) map.delete(cookieKey(c))
  } finally {
    map.close()
  }
}
