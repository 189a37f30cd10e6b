/**
 * Numbers on the wire (RFC 7011 §6.1.1-6.1.5): unsigned and signed integers, in their natural
 * length or reduced to fewer bytes (§6.2), floats (a float64 may be sent as a float32), and
 * booleans (1 is true, 2 is false).
 */
import type {AbstractType} from './elements.js'
import {CodecError, DecodeError} from './errors.js'
import {describeValue, type FieldValue} from './field-values.js'

export type IntegerType = 'unsigned8' | 'unsigned16' | 'unsigned32' | 'unsigned64' | 'signed8' | 'signed16' | 'signed32' | 'signed64'
export type FloatType = 'float32' | 'float64'

/** 2^(8 n): the first value that does not fit in n unsigned bytes. */
const LIMITS = [1, 2 ** 8, 2 ** 16, 2 ** 24, 2 ** 32, 2 ** 40, 2 ** 48, 2 ** 56, 2 ** 64]

/** An integer value as a bigint: a bigint as it is, a number when it is a safe integer. */
export function toBigInt(value: FieldValue, type: AbstractType): bigint {
  if (typeof value === 'bigint') return value
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new CodecError(`${type} value ${value} is not an integer (use a bigint beyond 2^53)`)
    return BigInt(value)
  }
  throw new CodecError(`${type} value must be a number or bigint, not ${describeValue(value)}`)
}

/** `v` (0 to 2^(8 length) - 1) big-endian in `length` bytes. */
export function writeBigBE(buf: Buffer, off: number, length: number, v: bigint): void {
  for (let i = length - 1; i >= 0; i--) {
    buf[off + i] = Number(v & 0xffn)
    v >>= 8n
  }
}

/** Writes an integer in `length` bytes (two's complement for a signed type); refuses one that does not fit. */
export function writeInteger(buf: Buffer, off: number, type: IntegerType, length: number, value: FieldValue): void {
  const signed = type.startsWith('signed')
  if (typeof value === 'number' && length <= 6) {
    if (!Number.isInteger(value)) throw new CodecError(`${type} value ${value} is not an integer`)
    const limit = LIMITS[length]
    if (signed ? value < -limit / 2 || value >= limit / 2 : value < 0 || value >= limit) {
      throw new CodecError(`${type} value ${value} does not fit in ${length} byte${length === 1 ? '' : 's'}`)
    }
    if (signed) buf.writeIntBE(value, off, length)
    else buf.writeUIntBE(value, off, length)
    return
  }
  const v = toBigInt(value, type)
  const bits = BigInt(length * 8)
  const limit = 1n << bits
  if (signed ? v < -(limit >> 1n) || v >= limit >> 1n : v < 0n || v >= limit) {
    throw new CodecError(`${type} value ${v} does not fit in ${length} byte${length === 1 ? '' : 's'}`)
  }
  writeBigBE(buf, off, length, v < 0n ? v + limit : v)
}

/** Reads an integer of `n` bytes: a number for the 8- to 32-bit types, a bigint for the 64-bit ones at any length. */
export function readInteger(buf: Buffer, off: number, n: number, type: IntegerType): number | bigint {
  switch (type) {
    case 'unsigned8':
    case 'unsigned16':
    case 'unsigned32':
      return buf.readUIntBE(off, n)
    case 'signed8':
    case 'signed16':
    case 'signed32':
      return buf.readIntBE(off, n)
    case 'unsigned64':
    case 'signed64': {
      let v = 0n
      for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(buf[off + i])
      if (type === 'signed64' && n > 0 && buf[off] & 0x80) v -= 1n << BigInt(8 * n)
      return v
    }
  }
}

/** Writes a float in 4 bytes (float32) or 8 (float64); refuses a finite value a float32 cannot hold. */
export function writeFloat(buf: Buffer, off: number, type: FloatType, length: number, value: FieldValue): void {
  if (typeof value !== 'number') throw new CodecError(`${type} value must be a number, not ${describeValue(value)}`)
  if (length === 4) {
    if (Number.isFinite(value) && !Number.isFinite(Math.fround(value))) throw new CodecError(`${type} value ${value} does not fit in a float32`)
    buf.writeFloatBE(value, off)
  } else {
    buf.writeDoubleBE(value, off)
  }
}

export function readFloat(buf: Buffer, off: number, n: number, type: FloatType): number {
  return type === 'float32' || n === 4 ? buf.readFloatBE(off) : buf.readDoubleBE(off)
}

export function writeBoolean(buf: Buffer, off: number, value: FieldValue): void {
  if (typeof value !== 'boolean') throw new CodecError(`boolean value must be true or false, not ${describeValue(value)}`)
  buf[off] = value ? 1 : 2
}

/** Reads a boolean octet; any octet other than 1 or 2 is a DecodeError. */
export function readBoolean(buf: Buffer, off: number): boolean {
  const b = buf[off]
  if (b === 1) return true
  if (b === 2) return false
  throw new DecodeError(`boolean octet ${b} is neither 1 (true) nor 2 (false)`, off)
}
