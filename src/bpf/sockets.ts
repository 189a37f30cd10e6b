/**
 * The daemon's own sockets, by cookie, in the meter's skip_socks map: the meter does not count
 * the IPFIX datagrams it causes (an exporter that meters its export traffic feeds on itself).
 */
import type {MeterSet} from './meter-set.js'

function cookieKey(cookie: bigint): Buffer {
  const key = Buffer.alloc(8)
  key.writeBigUInt64LE(cookie)
  return key
}

export function skipSockets(set: MeterSet, cookies: bigint[]): void {
  const map = set.openMap('skip_socks')
  try {
    for (const c of cookies) map.update(cookieKey(c), Buffer.from([1]))
  } finally {
    map.close()
  }
}

export function unskipSockets(set: MeterSet, cookies: bigint[]): void {
  const map = set.openMap('skip_socks')
  try {
    for (const c of cookies) map.delete(cookieKey(c))
  } finally {
    map.close()
  }
}
