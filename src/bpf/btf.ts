/**
 * A small reader of raw BTF (the kernel's type information, /sys/kernel/btf/vmlinux): enough to
 * find an enum by name and read its values. The file is several MB; one pass over the type
 * section, no parsing of what is not asked for.
 *
 * Format (include/uapi/linux/btf.h): a header (magic 0xeb9f, version, flags, hdr_len, then the
 * type and string sections' offsets and lengths, relative to the header's end); each type is
 * name_off, info (vlen in bits 0-15, kind in bits 24-28), size/type, then data whose length
 * depends on the kind.
 */
import {readFileSync} from 'node:fs'

import {StateError} from '../errors.js'

export const VMLINUX_BTF = '/sys/kernel/btf/vmlinux'

const BTF_MAGIC = 0xeb9f
const KIND = {int: 1, array: 3, struct: 4, union: 5, enum: 6, funcProto: 13, variable: 14, datasec: 15, declTag: 17, enum64: 19} as const

/** Bytes of kind-specific data after a type's 12-byte common part. */
function extraBytes(kind: number, vlen: number): number {
  switch (kind) {
    case KIND.int:
    case KIND.variable:
    case KIND.declTag:
      return 4
    case KIND.array:
      return 12
    case KIND.struct:
    case KIND.union:
    case KIND.datasec:
    case KIND.enum64:
      return 12 * vlen
    case KIND.enum:
    case KIND.funcProto:
      return 8 * vlen
    default:
      return 0
  }
}

/** The values of the enum `name` in BTF `data`, by value name; undefined when it has no such enum. */
export function btfEnum(data: Buffer, name: string): Map<string, number> | undefined {
  if (data.length < 24 || data.readUInt16LE(0) !== BTF_MAGIC) throw new StateError('not raw BTF: its magic number is wrong')
  const hdrLen = data.readUInt32LE(4)
  const typeStart = hdrLen + data.readUInt32LE(8)
  const typeEnd = typeStart + data.readUInt32LE(12)
  const strStart = hdrLen + data.readUInt32LE(16)
  const str = (off: number) => data.toString('latin1', strStart + off, data.indexOf(0, strStart + off))
  const wanted = Buffer.from(`${name}\0`, 'latin1')
  for (let at = typeStart; at + 12 <= typeEnd;) {
    const nameOff = data.readUInt32LE(at)
    const info = data.readUInt32LE(at + 4)
    const vlen = info & 0xffff
    const kind = (info >>> 24) & 0x1f
    const body = at + 12
    at = body + extraBytes(kind, vlen)
    if (kind !== KIND.enum && kind !== KIND.enum64) continue
    if (data.compare(wanted, 0, wanted.length, strStart + nameOff, strStart + nameOff + wanted.length) !== 0) continue
    const values = new Map<string, number>()
    for (let i = 0; i < vlen; i++) {
      if (kind === KIND.enum) values.set(str(data.readUInt32LE(body + 8 * i)), data.readUInt32LE(body + 8 * i + 4))
      else values.set(str(data.readUInt32LE(body + 12 * i)), data.readUInt32LE(body + 12 * i + 4) + data.readUInt32LE(body + 12 * i + 8) * 2 ** 32)
    }
    return values
  }
  return undefined
}

/** The running kernel's enum skb_drop_reason, value -> name without the SKB_DROP_REASON_ prefix. */
export function kernelDropReasons(path = VMLINUX_BTF): Map<number, string> {
  let data: Buffer
  try {
    data = readFileSync(path)
  } catch (error) {
    throw new StateError(`reading the kernel's BTF at ${path} failed: drop reasons need a kernel built with CONFIG_DEBUG_INFO_BTF`, {cause: error})
  }
  const values = btfEnum(data, 'skb_drop_reason')
  if (!values) throw new StateError(`the kernel's BTF at ${path} has no enum skb_drop_reason: drop reasons need Linux 5.17 or later`)
  const out = new Map<number, string>()
  for (const [name, value] of values) out.set(value, name.replace(/^SKB_DROP_REASON_/, ''))
  return out
}

let runningKernelReasons: ReadonlyMap<number, string> | undefined

/** The running kernel's drop reason names, read once (an empty table, numbers shown, if its BTF cannot be read). */
export function runningDropReasonNames(): ReadonlyMap<number, string> {
  if (!runningKernelReasons) {
    try {
      runningKernelReasons = kernelDropReasons()
    } catch {
      runningKernelReasons = new Map()
    }
  }
  return runningKernelReasons
}
