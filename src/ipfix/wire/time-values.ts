/**
 * Times on the wire (RFC 7011 §6.1.7-6.1.10): dateTimeSeconds in 4 bytes, dateTimeMilliseconds
 * in 8, and dateTimeMicroseconds and dateTimeNanoseconds as NTP timestamps (seconds since 1900
 * and a binary fraction of a second, 32 bits each).
 *
 * NTP era (RFC 7011 §5.2): timestamps are written modulo 2^32 seconds ("as if the NTP era is
 * implicit"); when read, a seconds field with its top bit clear is taken to be in era 1 (from
 * 2036-02-07), as RFC 4330 §3 does, so times from 1968-01-20 to 2104 read back as written.
 */
import {CodecError} from './errors.js'
import type {FieldValue} from './field-values.js'
import {toBigInt, writeBigBE} from './number-values.js'

export type TimeType = 'dateTimeSeconds' | 'dateTimeMilliseconds' | 'dateTimeMicroseconds' | 'dateTimeNanoseconds'

const NTP_UNIX_OFFSET = 2208988800n
const NS_PER_S = 1_000_000_000n
const TWO32N = 0x1_0000_0000n

/**
 * Epoch nanoseconds to NTP seconds (modulo 2^32) and fraction. With `micro`, the time is rounded
 * to the microsecond and the 11 least significant fraction bits are zero (RFC 7011 §6.1.9).
 */
export function epochNsToNtp(epochNs: bigint, micro = false): {seconds: number; fraction: number} {
  let secs: bigint
  let fraction: number
  if (micro) {
    const us = divRound(epochNs, 1000n)
    secs = floorDiv(us, 1_000_000n)
    const rem = Number(us - secs * 1_000_000n)
    // units of 2^-21 s, that is 2^11 units of 2^-32 s: < 2^21 for any rem < 10^6
    fraction = Math.round((rem * 2 ** 21) / 1e6) * 2048
  } else {
    secs = floorDiv(epochNs, NS_PER_S)
    const rem = epochNs - secs * NS_PER_S
    fraction = Number(divRound(rem * TWO32N, NS_PER_S)) // at most 4294967292 for rem < 10^9
  }
  const ntpSecs = (((secs + NTP_UNIX_OFFSET) % TWO32N) + TWO32N) % TWO32N
  return {seconds: Number(ntpSecs), fraction}
}

/**
 * NTP seconds and fraction to epoch nanoseconds. Seconds with the top bit clear are taken to be in
 * NTP era 1 (2036 onwards). With `micro`, the 11 least significant fraction bits are ignored and
 * the time is rounded to the microsecond (RFC 7011 §6.1.9: they MUST be ignored).
 */
export function ntpToEpochNs(seconds: number, fraction: number, micro = false): bigint {
  let secs = BigInt(seconds >>> 0)
  if (secs < 0x8000_0000n) secs += TWO32N
  const unix = secs - NTP_UNIX_OFFSET
  if (micro) {
    const us = Math.round(((fraction >>> 11) * 1e6) / 2 ** 21)
    return unix * NS_PER_S + BigInt(us) * 1000n
  }
  return unix * NS_PER_S + divRound(BigInt(fraction >>> 0) * NS_PER_S, TWO32N)
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q
}

/** a / b rounded half up (b > 0). */
function divRound(a: bigint, b: bigint): bigint {
  return floorDiv(2n * a + b, 2n * b)
}

/**
 * Writes a time: seconds (modulo 2^32) or milliseconds since 1970, or nanoseconds since 1970 as
 * an NTP timestamp. Refuses a time in seconds or milliseconds before 1970.
 */
export function writeTime(buf: Buffer, off: number, type: TimeType, value: FieldValue): void {
  const v = toBigInt(value, type)
  switch (type) {
    case 'dateTimeSeconds':
      if (v < 0n) throw new CodecError(`dateTimeSeconds value ${v} is before 1970`)
      buf.writeUInt32BE(Number(v % TWO32N), off)
      return
    case 'dateTimeMilliseconds':
      if (v < 0n) throw new CodecError(`dateTimeMilliseconds value ${v} is before 1970`)
      writeBigBE(buf, off, 8, v)
      return
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds': {
      const {seconds, fraction} = epochNsToNtp(v, type === 'dateTimeMicroseconds')
      buf.writeUInt32BE(seconds, off)
      buf.writeUInt32BE(fraction, off + 4)
    }
  }
}

/** Reads a time: seconds or milliseconds since 1970 as a number, an NTP timestamp as bigint nanoseconds since 1970. */
export function readTime(buf: Buffer, off: number, type: TimeType): number | bigint {
  switch (type) {
    case 'dateTimeSeconds':
      return buf.readUInt32BE(off)
    case 'dateTimeMilliseconds':
      return Number(buf.readBigUInt64BE(off))
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds':
      return ntpToEpochNs(buf.readUInt32BE(off), buf.readUInt32BE(off + 4), type === 'dateTimeMicroseconds')
  }
}
