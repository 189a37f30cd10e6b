/**
 * The daemon's own sockets, by cookie, in the meter's skip_socks map: the meter does not count
 * the IPFIX datagrams it causes (an exporter that meters its export traffic feeds on itself).
 */
import koffi from 'koffi'

import {BpfError} from '../errors.js'
import type {MeterSet} from './meter-set.js'

const SOL_SOCKET = 1
const SO_COOKIE = 57

let getsockopt: ((fd: number, level: number, name: number, value: Buffer, len: Uint32Array) => number) | undefined

/** The kernel's unique, never reused id of a socket. */
export function socketCookie(fd: number): bigint {
  getsockopt ??= koffi.load('libc.so.6').func('int getsockopt(int fd, int level, int name, void *value, void *len)')
  const value = Buffer.alloc(8)
  const len = new Uint32Array([8])
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, value, len) !== 0) throw new BpfError('reading a socket cookie', 22)
  return value.readBigUInt64LE(0)
}

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
