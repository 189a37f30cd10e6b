/**
 * Interface names for the ifindexes the records carry (ingressInterface, egressInterface):
 * options records mapping each ifindex in use to interfaceName (82) and interfaceDescription
 * (83), sent before the first data that names the interface in a domain, again after every
 * template refresh, and again when its name or alias changes.
 *
 * Two shapes, each in an Options Template of its own:
 * - the standard one: scope ingressInterface (10); interfaceName and interfaceDescription, both
 *   of variable length. tshark decodes it; nfdump logs one line per set that it cannot read it;
 *   goflow2, akvorado and pmacct read no interface names from IPFIX at all.
 * - nfdump's: scope observationDomainId (149); ingressInterface, then interfaceDescription in a
 *   fixed length. The only shape nfdump 1.7 reads (it shows 83 as the interface name, `%inam`),
 *   and sound IPFIX: a record of the domain pairing an interface with its description.
 * Both carry the same description: the interface's alias, or its name when it has none (83 is
 * "the description of an interface", and nfdump shows nothing else).
 */
import type {FlowBatch} from '../../flow/batch.js'
import {encodeRecord, recordSize} from '../wire/codec.js'
import {IE, VARIABLE_LENGTH} from '../wire/elements.js'
import type {Template} from '../wire/template.js'
import type {RecordRun} from './encode.js'

/** An interface as the options records name it. */
export interface InterfaceLabel {
  /** interfaceName (82): the kernel's name of the interface (IF-MIB ifName). */
  name: string
  /** interfaceDescription (83): its alias (IF-MIB ifAlias, `ip link set DEV alias TEXT`), or its name when it has none. */
  description: string
}

/** Where an exporter finds the label of an interface its records name. */
export interface InterfaceLabels {
  /**
   * Interface `ifindex` of observation domain `domain`; undefined when it is not known, or when
   * namespaces sharing the domain each have an interface of that ifindex (names would then be
   * wrong for the records of one of them).
   */
  label(domain: number, ifindex: number): InterfaceLabel | undefined
}

/**
 * Bytes of interfaceDescription in nfdump's shape: nfdump 1.7 reads the field in a fixed length
 * and ends the string at its last byte, so a description keeps at most 63 bytes there.
 */
const NFDUMP_DESCRIPTION_LENGTH = 64

/** The standard Options Template: scope ingressInterface; interfaceName, interfaceDescription (variable length). */
export function interfaceNamesTemplate(id: number): Template {
  return {
    id,
    scopeFieldCount: 1,
    fields: [
      {element: IE.ingressInterface, length: 4},
      {element: IE.interfaceName, length: VARIABLE_LENGTH},
      {element: IE.interfaceDescription, length: VARIABLE_LENGTH},
    ],
  }
}

/** nfdump's Options Template: scope observationDomainId; ingressInterface, interfaceDescription (NFDUMP_DESCRIPTION_LENGTH bytes). */
export function nfdumpInterfaceNamesTemplate(id: number): Template {
  return {
    id,
    scopeFieldCount: 1,
    fields: [
      {element: IE.observationDomainId, length: 4},
      {element: IE.ingressInterface, length: 4},
      {element: IE.interfaceDescription, length: NFDUMP_DESCRIPTION_LENGTH},
    ],
  }
}

/** The longest start of `text` that takes at most `bytes` bytes of UTF-8 (a character is never cut). */
export function utf8Prefix(text: string, bytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= bytes) return text
  let out = ''
  let used = 0
  for (const ch of text) {
    const n = Buffer.byteLength(ch, 'utf8')
    if (used + n > bytes) break
    out += ch
    used += n
  }
  return out
}

/** An interface to announce. */
export interface InterfaceEntry {
  ifindex: number
  label: InterfaceLabel
}

/** The options records naming `entries` in `domain`: one run per template, the standard one first. */
export function interfaceNamesRuns(standard: Template, nfdump: Template, domain: number, entries: readonly InterfaceEntry[]): RecordRun[] {
  const wide = entries.map((e) => ({ingressInterface: e.ifindex, interfaceName: e.label.name, interfaceDescription: e.label.description}))
  const narrowLength = 8 + NFDUMP_DESCRIPTION_LENGTH
  return [
    {
      count: wide.length,
      data: true,
      setId: () => standard.id,
      length: (i) => recordSize(standard, wide[i]),
      write: (i, _n, buf, pos) => encodeRecord(buf, pos, standard, wide[i]),
    },
    {
      count: entries.length,
      data: true,
      fixedLength: narrowLength,
      setId: () => nfdump.id,
      length: () => narrowLength,
      write(i, n, buf, pos) {
        for (let k = i; k < i + n; k++) {
          buf.writeUInt32BE(domain >>> 0, pos)
          buf.writeUInt32BE(entries[k].ifindex >>> 0, pos + 4)
          // One byte short of the field: nfdump ends the string at the field's last byte.
          const text = Buffer.from(utf8Prefix(entries[k].label.description, NFDUMP_DESCRIPTION_LENGTH - 1), 'utf8')
          text.copy(buf, pos + 8)
          buf.fill(0, pos + 8 + text.length, pos + narrowLength)
          pos += narrowLength
        }
        return pos
      },
    },
  ]
}

const labelKey = (l: InterfaceLabel) => `${l.name}\u0000${l.description}`

/**
 * What a session has announced of the interfaces in each domain since it last sent its templates,
 * and what a batch's records name that is new (or renamed) there.
 */
export class InterfaceAnnouncements {
  private readonly announced = new Map<number, Map<number, string>>()

  constructor(private readonly labels: InterfaceLabels) {}

  /** Templates went again to `domain` (a refresh, an error, a move): every interface is announced again. */
  forget(domain: number): void {
    this.announced.delete(domain)
  }

  /**
   * The interfaces the batch's records name (the metered one and the other, both columns) that
   * are not announced in its domain with their present label; they count as announced from now.
   */
  due(batch: FlowBatch): InterfaceEntry[] {
    const domain = batch.observationDomainId
    let known = this.announced.get(domain)
    if (!known) this.announced.set(domain, (known = new Map<number, string>()))
    const out: InterfaceEntry[] = []
    const seen = new Set<number>()
    const consider = (ifindex: number) => {
      if (ifindex === 0 || seen.has(ifindex)) return
      seen.add(ifindex)
      const label = this.labels.label(domain, ifindex)
      if (!label) return
      const key = labelKey(label)
      if (known.get(ifindex) === key) return
      known.set(ifindex, key)
      out.push({ifindex, label})
    }
    // Flows of one interface come in long runs: only a change of ifindex is looked up.
    let lastIfindex = -1
    let lastPeer = -1
    for (let i = 0; i < batch.length; i++) {
      const ifindex = batch.ifindex[i]
      const peer = batch.peerIfindex[i]
      if (ifindex !== lastIfindex) consider((lastIfindex = ifindex))
      if (peer !== lastPeer) consider((lastPeer = peer))
    }
    return out
  }
}
