/**
 * An independent IPFIX decoder for the tests: Wireshark's (tshark's) `cflow` dissector.
 *
 * `tsharkDecodeIpfix(datagrams, port)` writes the datagrams (one IPFIX message each, in order)
 * into a pcap file as UDP packets to `port` (test/helpers/pcap.ts), runs
 *
 *   tshark -r FILE -d udp.port==PORT,cflow -T json --no-duplicate-keys
 *
 * and returns one {@link TsharkRecord} per flow record tshark decoded (options data records only
 * when asked), its values keyed by IANA Information Element name. It throws a
 * {@link TsharkProblemError} when tshark marks a packet malformed or raises an expert info of
 * warning or error severity (a data set with no template, a bad set length...); use
 * `tsharkDissectIpfix` to get every record with its header, template and tshark's raw fields,
 * and the problems, without throwing.
 *
 * Value conventions are those of `flowctl ipfix listen --json` (renderRecordJson), so either can
 * be compared to the other or to the exporter's input:
 *
 * | element type                              | value                                            |
 * | ----------------------------------------- | ------------------------------------------------ |
 * | unsigned integers                         | number; a decimal string beyond 2^53             |
 * | ipv4Address, ipv6Address, macAddress      | tshark's text ('10.0.0.1', '2001:db8::1', 'aa:bb:..') |
 * | dateTimeSeconds                           | number, seconds since 1970                       |
 * | dateTimeMilliseconds                      | number, milliseconds since 1970                  |
 * | dateTimeMicroseconds, dateTimeNanoseconds | number, milliseconds since 1970 with a fraction (microseconds: to the nearest µs, §6.1.9) |
 * | flowDurationMilliseconds / Microseconds   | number, in the element's unit                    |
 *
 * tshark names fields by what it shows, not by element (cflow.abstimestart is any of
 * flowStartSeconds/Milliseconds/Microseconds/Nanoseconds); the element is chosen among the
 * candidates by the template tshark itself decoded for the set. Fields tshark shows that no
 * entry of {@link TSHARK_FIELDS} maps are left in `raw` only. Known limits: a template with both
 * a flowDuration* element and flowStart/End times (tshark's generated duration shares the name),
 * and enterprise-specific elements, are not mapped, except RFC 5103's reverse elements (PEN
 * 29305), named as our decoder names them (reversePacketDeltaCount).
 *
 * Times are parsed from tshark's text, which it writes in UTC ('Nov 14, 2023 22:13:20.123000000
 * UTC'); tshark runs with TZ=UTC so that a field shown in local time is UTC too.
 */
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {pcapFile, type PcapDatagram} from './pcap.js'

/**
 * One data record as tshark decoded it: its values by IANA element name (see the table above),
 * e.g. {sourceIPv4Address: '10.0.0.1', octetDeltaCount: 1500, flowStartMilliseconds: 1700000000123}.
 */
export type TsharkRecord = Record<string, number | string>

/** A data record with where it came from, and tshark's own view of it. */
export interface TsharkDecodedRecord {
  /** 1-based index of the datagram (pcap frame) the record came in. */
  frame: number
  observationDomainId: number
  sequenceNumber: number
  /** Export time from the message header, seconds since 1970. */
  exportTime: number
  /** The set ID: the template the record was decoded with. */
  templateId: number
  /** Whether that template is an Options Template. */
  options: boolean
  /** Values by IANA element name. */
  fields: TsharkRecord
  /** Every field tshark showed for the record, by tshark name, flattened, as tshark wrote it. */
  raw: Record<string, string | string[]>
}

export interface TsharkDissection {
  /** Every data record, options data records included, in the order of the datagrams. */
  records: TsharkDecodedRecord[]
  /** One line per malformed packet or warning/error expert info: 'frame 3: Data (8 bytes), no template found'. */
  problems: string[]
  /** The templates tshark decoded, by observation domain and template ID: their element IDs in order. */
  templates: Map<string, {ids: number[]; options: boolean}>
}

export interface TsharkOptions {
  /** Source address and port of the synthesized UDP packets (default 192.0.2.1:50000): tshark keeps templates per exporter. */
  src?: string
  sport?: number
  /** Destination address (default 192.0.2.2). */
  dst?: string
  /** The tshark binary (default 'tshark' on PATH). */
  tshark?: string
  /** tsharkDecodeIpfix: return options data records (the exporter's statistics) too (default false: flow records only). */
  includeOptions?: boolean
}

/** tshark declined or could not decode: the problems it reported, one per line. */
export class TsharkProblemError extends Error {
  readonly problems: string[]
  readonly records: TsharkDecodedRecord[]
  constructor(problems: string[], records: TsharkDecodedRecord[]) {
    super(`tshark reported ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n  ${problems.join('\n  ')}`)
    this.problems = problems
    this.records = records
  }
}

type Kind = 'uint' | 'text' | 'seconds' | 'milliseconds' | 'microseconds' | 'nanoseconds' | 'durationMs' | 'durationUs' | PartKind

interface Candidate {
  id: number
  name: string
  kind: Kind
}

const c = (id: number, name: string, kind: Kind = 'uint'): Candidate => ({id, name, kind})

/**
 * Elements tshark shows as two fields, the upper and lower bits of one value: icmpTypeCodeIPv6
 * as a type and a code, forwardingStatus (RFC 7270) as a status (2 bits) and a reason (6 bits)
 * whose field name depends on the status.
 */
const PARTS = {
  icmp6Type: {whole: 'icmpTypeCodeIPv6', shift: 8, upper: true},
  icmp6Code: {whole: 'icmpTypeCodeIPv6', shift: 8, upper: false},
  fwdStatus: {whole: 'forwardingStatus', shift: 6, upper: true},
  fwdReason: {whole: 'forwardingStatus', shift: 6, upper: false},
} as const
type PartKind = keyof typeof PARTS

function isPart(kind: Kind): kind is PartKind {
  return kind in PARTS
}

/**
 * tshark 4.0 cflow field names and the IANA elements each may stand for (found by decoding a
 * one-field template of each element). Covers every element flowctl exports, the exporter's
 * statistics, sampling rate and interface names options records, and a few common others.
 */
const TSHARK_FIELDS: Readonly<Partial<Record<string, readonly Candidate[]>>> = {
  'cflow.srcaddr': [c(8, 'sourceIPv4Address', 'text')],
  'cflow.dstaddr': [c(12, 'destinationIPv4Address', 'text')],
  'cflow.srcaddrv6': [c(27, 'sourceIPv6Address', 'text')],
  'cflow.dstaddrv6': [c(28, 'destinationIPv6Address', 'text')],
  'cflow.srcmac': [c(56, 'sourceMacAddress', 'text')],
  'cflow.srcport': [c(7, 'sourceTransportPort')],
  'cflow.dstport': [c(11, 'destinationTransportPort')],
  'cflow.protocol': [c(4, 'protocolIdentifier')],
  'cflow.tcpflags': [c(6, 'tcpControlBits')],
  'cflow.octets': [c(1, 'octetDeltaCount')],
  'cflow.packets': [c(2, 'packetDeltaCount')],
  'cflow.drop_octets': [c(132, 'droppedOctetDeltaCount')],
  'cflow.drop_packets': [c(133, 'droppedPacketDeltaCount')],
  'cflow.abstimestart': [
    c(150, 'flowStartSeconds', 'seconds'),
    c(152, 'flowStartMilliseconds', 'milliseconds'),
    c(154, 'flowStartMicroseconds', 'microseconds'),
    c(156, 'flowStartNanoseconds', 'nanoseconds'),
  ],
  'cflow.abstimeend': [
    c(151, 'flowEndSeconds', 'seconds'),
    c(153, 'flowEndMilliseconds', 'milliseconds'),
    c(155, 'flowEndMicroseconds', 'microseconds'),
    c(157, 'flowEndNanoseconds', 'nanoseconds'),
  ],
  'cflow.timedelta': [c(161, 'flowDurationMilliseconds', 'durationMs'), c(162, 'flowDurationMicroseconds', 'durationUs')],
  'cflow.inputint': [c(10, 'ingressInterface')],
  'cflow.if_name': [c(82, 'interfaceName', 'text')],
  'cflow.if_descr': [c(83, 'interfaceDescription', 'text')],
  'cflow.sampling_interval': [c(34, 'samplingInterval')],
  'cflow.outputint': [c(14, 'egressInterface')],
  'cflow.direction': [c(61, 'flowDirection')],
  'cflow.biflow_direction': [c(239, 'biflowDirection')],
  'cflow.flow_end_reason': [c(136, 'flowEndReason')],
  'cflow.tos': [c(5, 'ipClassOfService')],
  'cflow.ip_dscp': [c(195, 'ipDiffServCodePoint')],
  'cflow.ip_precedence': [c(196, 'ipPrecedence')],
  'cflow.vlanid': [c(58, 'vlanId')],
  'cflow.dot1q_vlan_id': [c(243, 'dot1qVlanId')],
  'cflow.dot1q_customer_vlan_id': [c(245, 'dot1qCustomerVlanId')],
  'cflow.nexthop': [c(15, 'ipNextHopIPv4Address', 'text')],
  'cflow.nexthopv6': [c(62, 'ipNextHopIPv6Address', 'text')],
  'cflow.ttl_min': [c(52, 'minimumTTL')],
  'cflow.ttl_max': [c(53, 'maximumTTL')],
  'cflow.forwarding_status': [c(89, 'forwardingStatus', 'fwdStatus')],
  'cflow.forwarding_status_unknown_code': [c(89, 'forwardingStatus', 'fwdReason')],
  'cflow.forwarding_status_forward_code': [c(89, 'forwardingStatus', 'fwdReason')],
  'cflow.forwarding_status_drop_code': [c(89, 'forwardingStatus', 'fwdReason')],
  'cflow.forwarding_status_consume_code': [c(89, 'forwardingStatus', 'fwdReason')],
  'cflow.ip_version': [c(60, 'ipVersion')],
  'cflow.ipv6flowlabel': [c(31, 'flowLabelIPv6')],
  'cflow.icmp_type_code_ipv4': [c(32, 'icmpTypeCodeIPv4')],
  'cflow.icmp_ipv4_type': [c(176, 'icmpTypeIPv4')],
  'cflow.icmp_ipv4_code': [c(177, 'icmpCodeIPv4')],
  // tshark shows icmpTypeCodeIPv6 (139) as a type and a code, under the names of 178 and 179.
  'cflow.icmp_ipv6_type': [c(139, 'icmpTypeCodeIPv6', 'icmp6Type'), c(178, 'icmpTypeIPv6')],
  'cflow.icmp_ipv6_code': [c(139, 'icmpTypeCodeIPv6', 'icmp6Code'), c(179, 'icmpCodeIPv6')],
  'cflow.od_id': [c(149, 'observationDomainId')],
  'cflow.flow_exporter': [c(144, 'exportingProcessId')],
  'cflow.octetsexp': [c(40, 'exportedOctetTotalCount')],
  'cflow.packetsexp': [c(41, 'exportedMessageTotalCount')],
  'cflow.flowsexp': [c(42, 'exportedFlowRecordTotalCount')],
  'cflow.ignore_packets': [c(164, 'ignoredPacketTotalCount')],
  'cflow.ignore_octets': [c(165, 'ignoredOctetTotalCount')],
  'cflow.notsent_flows': [c(166, 'notSentFlowTotalCount')],
  'cflow.sys_init_time': [c(160, 'systemInitTimeMilliseconds', 'milliseconds')],
  'cflow.observation_time_milliseconds': [c(323, 'observationTimeMilliseconds', 'milliseconds')],
}

/** Expert info severities (epan/proto.h): PI_WARN and above are problems. */
const PI_WARN = 0x00600000

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']

/** tshark's absolute time text to epoch nanoseconds: 'Nov 14, 2023 22:13:20.123000000 UTC'. */
export function parseTsharkTime(text: string): bigint {
  const m = /^([A-Z][a-z]{2}) +(\d{1,2}), (\d+) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))? UTC$/.exec(text.trim())
  const month = m ? MONTHS.indexOf(m[1]) : -1
  if (!m || month < 0) throw new Error(`cannot read tshark time '${text}' (expected 'Mon D, YYYY HH:MM:SS.fffffffff UTC')`)
  const ms = Date.UTC(Number(m[3]), month, Number(m[2]), Number(m[4]), Number(m[5]), Number(m[6]))
  if (!Number.isFinite(ms)) throw new Error(`tshark time '${text}' is out of range`)
  // An optional group that did not match is undefined (the regex types say string).
  const fraction = m[7] as string | undefined
  return BigInt(ms) * 1_000_000n + BigInt((fraction ?? '').padEnd(9, '0'))
}

/** tshark's decimal seconds ('5.876000000') in units of 10^-digits s, exactly. */
function decimalSeconds(text: string, digits: number): number {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(text.trim())
  if (!m) throw new Error(`cannot read tshark duration '${text}'`)
  const fraction = m[2] as string | undefined
  const frac = (fraction ?? '').padEnd(9, '0')
  if (/[1-9]/.test(frac.slice(digits))) throw new Error(`tshark duration '${text}' is finer than 10^-${digits} s`)
  return Number(m[1]) * 10 ** digits + Number(frac.slice(0, digits) || '0')
}

function uintValue(text: string): number | string {
  const t = text.trim()
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(t)) throw new Error(`cannot read tshark integer '${text}'`)
  const v = BigInt(t)
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()
}

function nsToMs(ns: bigint): number {
  const whole = ns / 1_000_000n
  return Number(whole) + Number(ns - whole * 1_000_000n) / 1e6
}

function convert(kind: Kind, text: string): number | string {
  switch (kind) {
    case 'uint':
    case 'icmp6Type':
    case 'icmp6Code':
    case 'fwdStatus':
    case 'fwdReason':
      return uintValue(text)
    case 'text':
      return text
    case 'seconds':
      return Number(parseTsharkTime(text) / 1_000_000_000n)
    case 'milliseconds':
      return Number(parseTsharkTime(text) / 1_000_000n)
    case 'microseconds':
      // tshark shows the whole NTP fraction; RFC 7011 §6.1.9 has the 11 low bits ignored: the
      // microsecond nearest, as our decoder reads it.
      return nsToMs(((parseTsharkTime(text) + 500n) / 1000n) * 1000n)
    case 'nanoseconds':
      return nsToMs(parseTsharkTime(text))
    case 'durationMs':
      return decimalSeconds(text, 3)
    case 'durationUs':
      return decimalSeconds(text, 6)
  }
}

type Json = string | Json[] | {[key: string]: Json}
type JsonObject = {[key: string]: Json}

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && !Array.isArray(v)
}

/** The string values of key `k` (with --no-duplicate-keys a repeated key is an array). */
function strings(v: Json | undefined): string[] {
  if (v === undefined) return []
  if (typeof v === 'string') return [v]
  if (Array.isArray(v)) return v.flatMap((x) => strings(x))
  return []
}

/** Objects under keys that start with `prefix` (an array value is several objects of one key). */
function children(o: JsonObject, prefix: string): JsonObject[] {
  const out: JsonObject[] = []
  for (const [k, v] of Object.entries(o)) {
    if (!k.startsWith(prefix)) continue
    for (const x of Array.isArray(v) ? v : [v]) if (isObject(x)) out.push(x)
  }
  return out
}

/** Every cflow.* leaf of a record, trees (tcpflags_tree, timedelta_tree) flattened. */
function flatten(o: JsonObject, into: Record<string, string[]> = {}): Record<string, string[]> {
  for (const [k, v] of Object.entries(o)) {
    const values = Array.isArray(v) ? v : [v]
    for (const x of values) {
      if (typeof x === 'string') (into[k] ??= []).push(x)
      else if (isObject(x)) flatten(x, into)
    }
  }
  return into
}

/** Malformed markers and warning/error expert infos anywhere under `o`. */
function findProblems(o: Json, frame: number, out: string[]): void {
  if (Array.isArray(o)) {
    for (const x of o) findProblems(x, frame, out)
    return
  }
  if (!isObject(o)) return
  for (const [k, v] of Object.entries(o)) {
    if (k === '_ws.malformed') out.push(`frame ${frame}: malformed packet (${strings(v).join(', ') || 'Malformed Packet'})`)
    else if (k === '_ws.expert') {
      for (const e of Array.isArray(v) ? v : [v]) {
        if (!isObject(e)) continue
        const severity = Number(strings(e['_ws.expert.severity'])[0] ?? 0)
        if (severity >= PI_WARN) out.push(`frame ${frame}: ${strings(e['_ws.expert.message']).join('; ')}`)
      }
    } else findProblems(v, frame, out)
  }
}

/**
 * RFC 5103 reverse elements (PEN 29305): tshark shows them under the field names of the forward
 * elements, after them in template order. A template's id list marks them REVERSE + element id.
 */
const REVERSE_PEN = 29305
const REVERSE = 0x10000

/** The candidate a template's element (REVERSE + id for a reverse one) is, named as our decoder names it (reversePacketDeltaCount). */
function candidateFor(candidates: readonly Candidate[], id: number): Candidate | undefined {
  if (id < REVERSE) return candidates.find((x) => x.id === id)
  const forward = candidates.find((x) => x.id === id - REVERSE)
  return forward && {...forward, name: `reverse${forward.name[0].toUpperCase()}${forward.name.slice(1)}`}
}

/** Maps one record's tshark fields to IANA names with the template tshark decoded it with. */
function mapFields(raw: Record<string, string[]>, templateIds: readonly number[]): TsharkRecord {
  const fields: TsharkRecord = {}
  // The upper and lower parts of each two-part element (PARTS), in template order; joined at the end.
  const parts = new Map<string, {shift: number; upper?: number; lower?: number}[]>()
  const halves = new Map<string, number>()
  for (const [name, values] of Object.entries(raw)) {
    const candidates = TSHARK_FIELDS[name]
    if (!candidates) continue
    // The template's elements this tshark field can stand for, in template order; tshark shows
    // repeated fields in template order too.
    const present = templateIds.map((id) => candidateFor(candidates, id)).filter((x): x is Candidate => x !== undefined)
    // A repeated element is keyed 'name', 'name#2'... as the decoder keys it (codec fieldKeys).
    const seen = new Map<string, number>()
    present.forEach((cand, i) => {
      const value = values[i] as string | undefined
      if (value === undefined) return
      if (isPart(cand.kind)) {
        const {whole, upper} = PARTS[cand.kind]
        const side = `${whole}/${upper}`
        const n = halves.get(side) ?? 0
        halves.set(side, n + 1)
        const list = parts.get(whole) ?? []
        parts.set(whole, list)
        list[n] ??= {shift: PARTS[cand.kind].shift}
        list[n][upper ? 'upper' : 'lower'] = uintValue(value) as number
        return
      }
      const n = (seen.get(cand.name) ?? 0) + 1
      seen.set(cand.name, n)
      fields[n === 1 ? cand.name : `${cand.name}#${n}`] = convert(cand.kind, value)
    })
  }
  for (const [whole, list] of parts) {
    list.forEach((h, i) => {
      if (h.upper !== undefined && h.lower !== undefined) fields[i === 0 ? whole : `${whole}#${i + 1}`] = (h.upper << h.shift) | h.lower
    })
  }
  return fields
}

/**
 * Runs tshark on the datagrams (each one UDP payload, in order) sent to `port`, and returns what
 * it decoded and every problem it reported. Throws if tshark cannot run or exits non-zero.
 */
export async function tsharkDissectIpfix(datagrams: readonly Buffer[], port: number, options: TsharkOptions = {}): Promise<TsharkDissection> {
  const dir = await mkdtemp(join(tmpdir(), 'flowctl-tshark-'))
  try {
    const file = join(dir, 'ipfix.pcap')
    const packets: PcapDatagram[] = datagrams.map((payload) => ({payload, src: options.src, dst: options.dst, sport: options.sport, dport: port}))
    await writeFile(file, pcapFile(packets))
    const r = await execa(options.tshark ?? 'tshark', ['-r', file, '-d', `udp.port==${port},cflow`, '-T', 'json', '--no-duplicate-keys'], {
      reject: false,
      env: {TZ: 'UTC'},
      timeout: 60_000,
      maxBuffer: 256 * 1024 * 1024,
    })
    if (r.failed || r.exitCode !== 0) throw new Error(`tshark failed (${r.shortMessage}): ${String(r.stderr).trim()}`)
    return parseTsharkJson(String(r.stdout), datagrams.length)
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
}

/** Parses tshark's `-T json --no-duplicate-keys` output of IPFIX packets (exported for unit tests of this helper). */
function parseTsharkJson(text: string, expectedFrames?: number): TsharkDissection {
  const packets = JSON.parse(text) as JsonObject[]
  const records: TsharkDecodedRecord[] = []
  const problems: string[] = []
  const templates = new Map<string, {ids: number[]; options: boolean}>()
  if (expectedFrames !== undefined && packets.length !== expectedFrames) problems.push(`tshark read ${packets.length} frames, expected ${expectedFrames}`)
  packets.forEach((packet, index) => {
    const frame = index + 1
    const layers = (packet._source as JsonObject | undefined)?.layers as JsonObject | undefined
    const cflow = layers?.cflow
    if (!layers || !isObject(cflow)) {
      problems.push(
        `frame ${frame}: not dissected as IPFIX (protocols: ${strings((layers?.frame as JsonObject | undefined)?.['frame.protocols']).join('') || '?'})`,
      )
      return
    }
    findProblems(layers, frame, problems)
    const version = Number(strings(cflow['cflow.version'])[0])
    if (version !== 10) {
      problems.push(`frame ${frame}: version ${version}, not IPFIX`)
      return
    }
    // Header fields are direct children of the cflow layer (cflow.od_id also appears inside records).
    const observationDomainId = Number(strings(cflow['cflow.od_id'])[0])
    const sequenceNumber = Number(strings(cflow['cflow.sequence'])[0])
    const exportTime = Number(strings((cflow['cflow.timestamp_tree'] as JsonObject | undefined)?.['cflow.exporttime'])[0])
    for (const set of children(cflow, 'Set ')) {
      const setId = Number(strings(set['cflow.flowset_id'])[0])
      if (setId === 2 || setId === 3) {
        for (const t of [...children(set, 'Template ('), ...children(set, 'Options Template (')]) {
          const id = Number(strings(t['cflow.template_id'])[0])
          const ids = children(t, 'Field (').map((f) => {
            const type = Number(strings(f['cflow.template_ipfix_field_type'])[0])
            if (strings(f['cflow.template_ipfix_pen_provided'])[0] !== '1') return type
            return Number(strings(f['cflow.template_ipfix_field_pen'])[0]) === REVERSE_PEN ? REVERSE + type : -1
          })
          templates.set(`${observationDomainId}/${id}`, {ids, options: setId === 3})
        }
        continue
      }
      const template = templates.get(`${observationDomainId}/${setId}`)
      for (const flow of children(set, 'Flow ')) {
        const flat = flatten(flow)
        const raw: Record<string, string | string[]> = {}
        for (const [k, v] of Object.entries(flat)) raw[k] = v.length === 1 ? v[0] : v
        records.push({
          frame,
          observationDomainId,
          sequenceNumber,
          exportTime,
          templateId: setId,
          options: template?.options ?? false,
          fields: template ? mapFields(flat, template.ids) : {},
          raw,
        })
      }
    }
  })
  return {records, problems, templates}
}

/**
 * tshark's decoding of the datagrams (one IPFIX message each, in order) sent to UDP `port`: the
 * values of each flow record (data records of non-options templates; with `includeOptions`, the
 * options data records too), in order. Throws a TsharkProblemError if tshark found any packet
 * malformed or raised a warning or error (a data set before its template, say).
 */
export async function tsharkDecodeIpfix(datagrams: readonly Buffer[], port: number, options: TsharkOptions = {}): Promise<TsharkRecord[]> {
  const {records, problems} = await tsharkDissectIpfix(datagrams, port, options)
  if (problems.length) throw new TsharkProblemError(problems, records)
  return records.filter((r) => options.includeOptions === true || !r.options).map((r) => r.fields)
}

/** Whether tshark runs here (for preconditions). */
async function tsharkAvailable(tshark = 'tshark'): Promise<boolean> {
  const r = await execa(tshark, ['--version'], {reject: false, timeout: 30_000}).catch(() => undefined)
  return r?.exitCode === 0
}

/**
 * The precondition of suites that run tshark, in the pattern of requireE2e (test/helpers/e2e.ts):
 * skips the suite where tshark is missing, except in CI (CI=true), where that is a failure.
 */
export async function requireTshark(ctx: Mocha.Context, tshark = 'tshark'): Promise<void> {
  if (await tsharkAvailable(tshark)) return
  const missing = `${tshark} is not installed (run misc/setup.sh)`
  if (process.env.CI === 'true') throw new Error(`precondition failed in CI: ${missing}`)
  ctx.skip()
}
