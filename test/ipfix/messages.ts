/**
 * IPFIX bytes built by hand from the RFC 7011 layouts (Figures F, G, I, K, N), for the ipfix unit
 * suites. Nothing here uses src/: the expectations must not come from the code under test.
 */

/** Bytes from hex text, spaces allowed: hex('0a 00 ff'). */
export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex')
}

export function u8(...ns: number[]): Buffer {
  return Buffer.from(ns)
}

export function u16(...ns: number[]): Buffer {
  const b = Buffer.alloc(2 * ns.length)
  ns.forEach((n, i) => b.writeUInt16BE(n, 2 * i))
  return b
}

export function u32(...ns: number[]): Buffer {
  const b = Buffer.alloc(4 * ns.length)
  ns.forEach((n, i) => b.writeUInt32BE(n, 4 * i))
  return b
}

/** A field specifier (Figure G): E bit and id, length, and the enterprise number when given. */
export function spec(id: number, length: number, pen?: number): Buffer {
  return pen === undefined ? u16(id, length) : Buffer.concat([u16(0x8000 | id, length), u32(pen)])
}

/** A Template Record (Figure K): template ID, field count, field specifiers. */
export function templateRecord(id: number, ...specs: Buffer[]): Buffer {
  return Buffer.concat([u16(id, specs.length), ...specs])
}

/** An Options Template Record (Figure N): template ID, field count, scope field count, specifiers. */
export function optionsTemplateRecord(id: number, scopeCount: number, ...specs: Buffer[]): Buffer {
  return Buffer.concat([u16(id, specs.length, scopeCount), ...specs])
}

/** A Set (Figure I): set ID and length (header included), then the body. */
export function set(id: number, ...body: Buffer[]): Buffer {
  const content = Buffer.concat(body)
  return Buffer.concat([u16(id, 4 + content.length), content])
}

export interface HeaderFields {
  version?: number
  exportTime?: number
  seq?: number
  odid?: number
  /** Override the length field (default: the real length). */
  length?: number
}

/** A message (Figure F header, then the sets). */
export function message(h: HeaderFields, ...sets: Buffer[]): Buffer {
  const body = Buffer.concat(sets)
  return Buffer.concat([u16(h.version ?? 10, h.length ?? 16 + body.length), u32(h.exportTime ?? 1_700_000_000, h.seq ?? 0, h.odid ?? 0), body])
}

/** IANA element ids used by the suites (from the IANA registry). */
export const ID = {
  octetDeltaCount: 1,
  packetDeltaCount: 2,
  protocolIdentifier: 4,
  sourceTransportPort: 7,
  sourceIPv4Address: 8,
  destinationTransportPort: 11,
  destinationIPv4Address: 12,
  sourceIPv6Address: 27,
  exportedMessageTotalCount: 41,
  sourceMacAddress: 56,
  interfaceName: 82,
  observationDomainId: 149,
  flowStartSeconds: 150,
  flowStartMilliseconds: 152,
  flowEndMilliseconds: 153,
  flowStartMicroseconds: 154,
  flowStartNanoseconds: 156,
  systemInitTimeMilliseconds: 160,
  paddingOctets: 210,
  basicList: 291,
  subTemplateList: 292,
  subTemplateMultiList: 293,
} as const

/**
 * The memory attack of issue 13: one message defining `templates` templates of `fields`
 * enterprise-specific fields each (4-byte values, PEN 32473, or `pen`; null: ids the IANA
 * registry lacks, without enterprise number), in Observation Domain `odid`.
 */
export function templateFlood(odid: number, options: {templates?: number; fields?: number; firstId?: number; pen?: number | null} = {}): Buffer {
  const count = options.templates ?? 4
  const fields = options.fields ?? 60
  const pen = options.pen === undefined ? 32473 : options.pen
  const records: Buffer[] = []
  for (let t = 0; t < count; t++) {
    const specs: Buffer[] = []
    for (let f = 0; f < fields; f++) specs.push(pen === null ? spec(16_000 + (f % 16_000), 4) : spec(1 + f, 4, pen))
    records.push(templateRecord((options.firstId ?? 256) + t, ...specs))
  }
  return message({odid}, set(2, ...records))
}
