/**
 * The information elements flowctl has a value for, one declaration each, by registry name: the
 * address family the element ties a template to (if any) and how its value comes from a
 * FlowBatch. Everything else is derived from this one table: the config's check of template
 * fields (exportableElement), and the writers that encode a field (flow-fields.ts). A template
 * naming any other element is a config error: sending zeros where a collector expects an AS
 * number would be a lie.
 */
import type {FlowBatch} from '../../flow/batch.js'
import {isIcmp} from '../../flow/protocols.js'
import {FLOWCTL_ELEMENTS, type InformationElement} from '../wire/elements.js'

/** The FlowBatch columns that hold one number per flow. */
export type NumberColumn =
  | 'ifindex'
  | 'peerIfindex'
  | 'direction'
  | 'proto'
  | 'vlanId'
  | 'innerVlanId'
  | 'samplingInterval'
  | 'sport'
  | 'dport'
  | 'packets'
  | 'bytes'
  | 'startUs'
  | 'endUs'
  | 'tcpFlags'
  | 'tos'
  | 'endReason'
  | 'minTtl'
  | 'maxTtl'
  | 'fwdStatus'

/** The FlowBatch columns that hold `addrLen` bytes of address per flow, network order. */
export type AddressColumn = 'src' | 'dst' | 'nextHop'

/** Where an element's value comes from. */
export type ValueSource =
  /** A number column, divided by `divisor` and floored when one is given. */
  | {column: NumberColumn; divisor?: number}
  /** One number column for ingress flows (flowDirection 0), another for egress flows. */
  | {ingress: NumberColumn; egress: NumberColumn}
  /** An address column's bytes as they are. */
  | {address: AddressColumn}
  /** An NTP-format time (RFC 7011 §6.1.9-10) of an epoch-microseconds column; `micro`: dateTimeMicroseconds. */
  | {ntpTime: 'startUs' | 'endUs'; micro: boolean}
  /** Computed from the flow (no column loop of its own: slower, for the rarely used elements). */
  | {compute: (b: FlowBatch, i: number) => number}

export interface ExportableElement {
  /**
   * flowctl's own enterprise-specific element (ENTERPRISE_ELEMENTS), sent under the Private
   * Enterprise Number the config's enterpriseNumber names: absent from the IANA registry.
   */
  enterprise?: InformationElement
  /** The address family a template with this element carries only. */
  family?: 4 | 6
  value: ValueSource
  /** The length a field gets when its template names none, where it is not the type's natural length. */
  defaultLength?: number
}

/** An ICMP element of the family: from the type << 8 | code the meter keeps in the destination port. */
const icmpOnly = (family: 4 | 6, pick: (typeCode: number) => number): ExportableElement => ({
  family,
  value: {compute: (b, i) => (b.family === family && isIcmp(b.proto[i]) ? pick(b.dport[i]) : 0)},
})

export const EXPORTABLE_ELEMENTS: Readonly<Record<string, ExportableElement>> = {
  sourceIPv4Address: {family: 4, value: {address: 'src'}},
  destinationIPv4Address: {family: 4, value: {address: 'dst'}},
  sourceIPv6Address: {family: 6, value: {address: 'src'}},
  destinationIPv6Address: {family: 6, value: {address: 'dst'}},
  // The gateway the router sends the flow to, looked up when the flow began; zeros (0.0.0.0, ::)
  // for a directly connected destination or traffic for this host.
  ipNextHopIPv4Address: {family: 4, value: {address: 'nextHop'}},
  ipNextHopIPv6Address: {family: 6, value: {address: 'nextHop'}},
  icmpTypeCodeIPv4: icmpOnly(4, (t) => t),
  icmpTypeIPv4: icmpOnly(4, (t) => t >> 8),
  icmpCodeIPv4: icmpOnly(4, (t) => t & 0xff),
  icmpTypeCodeIPv6: icmpOnly(6, (t) => t),
  icmpTypeIPv6: icmpOnly(6, (t) => t >> 8),
  icmpCodeIPv6: icmpOnly(6, (t) => t & 0xff),
  sourceTransportPort: {value: {column: 'sport'}},
  destinationTransportPort: {value: {column: 'dport'}},
  protocolIdentifier: {value: {column: 'proto'}},
  tcpControlBits: {value: {column: 'tcpFlags'}},
  octetDeltaCount: {value: {column: 'bytes'}},
  packetDeltaCount: {value: {column: 'packets'}},
  flowStartSeconds: {value: {column: 'startUs', divisor: 1e6}},
  flowEndSeconds: {value: {column: 'endUs', divisor: 1e6}},
  flowStartMilliseconds: {value: {column: 'startUs', divisor: 1e3}},
  flowEndMilliseconds: {value: {column: 'endUs', divisor: 1e3}},
  flowStartMicroseconds: {value: {ntpTime: 'startUs', micro: true}},
  flowEndMicroseconds: {value: {ntpTime: 'endUs', micro: true}},
  flowStartNanoseconds: {value: {ntpTime: 'startUs', micro: false}},
  flowEndNanoseconds: {value: {ntpTime: 'endUs', micro: false}},
  flowDurationMilliseconds: {value: {compute: (b, i) => Math.floor((b.endUs[i] - b.startUs[i]) / 1e3)}},
  flowDurationMicroseconds: {value: {compute: (b, i) => Math.floor(b.endUs[i] - b.startUs[i])}},
  // The metered interface is where an ingress flow came in and an egress flow leaves; the other
  // one (peerIfindex) is 0 for traffic for or from this host.
  ingressInterface: {value: {ingress: 'ifindex', egress: 'peerIfindex'}},
  egressInterface: {value: {ingress: 'peerIfindex', egress: 'ifindex'}},
  flowDirection: {value: {column: 'direction'}},
  flowEndReason: {value: {column: 'endReason'}},
  ipClassOfService: {value: {column: 'tos'}},
  ipDiffServCodePoint: {value: {column: 'tos', divisor: 4}}, // the TOS byte's upper 6 bits
  ipPrecedence: {value: {column: 'tos', divisor: 32}}, // its upper 3 bits
  vlanId: {value: {column: 'vlanId'}}, // the outer tag
  dot1qVlanId: {value: {column: 'vlanId'}},
  dot1qCustomerVlanId: {value: {column: 'innerVlanId'}}, // QinQ: the inner tag
  minimumTTL: {value: {column: 'minTtl'}}, // IPv4 TTL or IPv6 hop limit
  maximumTTL: {value: {column: 'maxTtl'}},
  // RFC 7270: unsigned32 in the registry, but its value is laid out as one byte (the status in
  // the upper two bits, a reason code below them), the byte NetFlow v9 exporters send: one byte
  // unless a template says otherwise. Not in the 2013 registry snapshot: bound by name, it is
  // exportable once the registry knows it.
  forwardingStatus: {value: {column: 'fwdStatus'}, defaultLength: 1},
  // The N of the 1-in-N sampling the flow was counted at (1: every packet), as RFC 7270's
  // samplingInterval says it; the counts stay raw. The rate also goes in an options record
  // before the data (sampling-options.ts), which is what nfdump and goflow2 read; akvorado and
  // pmacct read it here first, so each record is scaled by its own rate.
  samplingInterval: {value: {column: 'samplingInterval'}},
  // Packets and IP bytes of the flow the kernel dropped (`meter attach --drops`): 0 for a flow
  // without drops (or a namespace without drops on). Such a flow's forwardingStatus is the
  // dropped code of its most frequent reason (docs/drop-reasons.md).
  droppedPacketDeltaCount: {value: {compute: (b, i) => b.drops?.packets[i] ?? 0}},
  droppedOctetDeltaCount: {value: {compute: (b, i) => b.drops?.bytes[i] ?? 0}},
  ipVersion: {value: {compute: (b) => b.family}},
  observationDomainId: {value: {compute: (b) => b.observationDomainId}},
}

/**
 * flowctl's enterprise-specific elements: IANA has no element for them. They go out under the
 * Private Enterprise Number the operator configures (enterpriseNumber:), under the ids of
 * FLOWCTL_ELEMENTS (../wire/elements.ts), unsigned32, in microseconds; a template may name them only
 * when one is configured.
 */
const ENTERPRISE_ELEMENTS: Readonly<Record<string, ExportableElement & {enterprise: InformationElement}>> = {
  // The round trip between the router and the client of a TCP connection whose handshake the
  // meter saw whole: from the server's SYN+ACK to the client's first ACK. 0 in every other record.
  tcpRttClientMicroseconds: {enterprise: FLOWCTL_ELEMENTS.tcpRttClientMicroseconds, value: {compute: (b, i) => b.rttClientUs(i)}},
  // The round trip between the router and the server: from the client's SYN to the server's SYN+ACK.
  tcpRttServerMicroseconds: {enterprise: FLOWCTL_ELEMENTS.tcpRttServerMicroseconds, value: {compute: (b, i) => b.rttServerUs(i)}},
}

const byLower = new Map(
  [...Object.entries(EXPORTABLE_ELEMENTS), ...Object.entries(ENTERPRISE_ELEMENTS)].map(([name, info]) => [name.toLowerCase(), {name, ...info}]),
)

/** The exportable element of this name (any case), with its registry spelling. */
export function exportableElement(name: string): (ExportableElement & {name: string}) | undefined {
  return byLower.get(name.trim().toLowerCase())
}

const NOT_SEEN_AT_TC = 'the meter counts packets at tc and is not told'
const BGP = `BGP attributes live in a routing daemon's table; ${NOT_SEEN_AT_TC} which AS or BGP next hop a route came from`
const PREFIX = `the prefix length of the route a packet matched stays in the routing table: ${NOT_SEEN_AT_TC} which route that was`

/**
 * Why flowctl cannot fill an element the older tool's templates and flow files name: the kernel
 * never gives the meter the value. `config check` says this for a template that names one; a flow
 * file may still carry such an element with a value of its own (`ipfix send`). Undefined for an
 * element flowctl exports, or one it has no particular reason for.
 */
const UNFILLABLE: Readonly<Record<string, string>> = {
  bgpSourceAsNumber: BGP,
  bgpDestinationAsNumber: BGP,
  bgpNextHopIPv4Address: BGP,
  bgpNextHopIPv6Address: BGP,
  bgpNextAdjacentAsNumber: BGP,
  bgpPrevAdjacentAsNumber: BGP,
  sourceIPv4PrefixLength: PREFIX,
  destinationIPv4PrefixLength: PREFIX,
  sourceIPv6PrefixLength: PREFIX,
  destinationIPv6PrefixLength: PREFIX,
  fragmentIdentification: 'a flow spans many datagrams, each with its own fragment identification: no one value describes the flow',
}

const unfillableByLower = new Map(Object.entries(UNFILLABLE).map(([name, reason]) => [name.toLowerCase(), reason]))

export function unfillableReason(name: string): string | undefined {
  if (exportableElement(name)) return undefined
  return unfillableByLower.get(name.trim().toLowerCase())
}

/**
 * Default templates for a config that names none: an IPv4 template and its IPv6 twin with what
 * kflow/goflow-style collectors read (addresses, ports, protocol, TCP flags, octet and packet
 * deltas), times as flowStart/EndMilliseconds (goflow2 reads times only from IEs 150-157),
 * interfaces, direction, end reason, class of service and VLAN; then what a router's record
 * carries besides: the next hop and the TTL range (appended, so that the fields before keep
 * their places).
 */
const COMMON_TAIL = [
  'sourceTransportPort',
  'destinationTransportPort',
  'protocolIdentifier',
  'tcpControlBits',
  'octetDeltaCount',
  'packetDeltaCount',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'ingressInterface',
  'egressInterface',
  'flowDirection',
  'flowEndReason',
  'ipClassOfService',
  'vlanId',
]

export const DEFAULT_TEMPLATES: readonly {id: number; fields: readonly string[]}[] = [
  {id: 256, fields: ['sourceIPv4Address', 'destinationIPv4Address', ...COMMON_TAIL, 'ipNextHopIPv4Address', 'minimumTTL', 'maximumTTL']},
  {id: 257, fields: ['sourceIPv6Address', 'destinationIPv6Address', ...COMMON_TAIL, 'ipNextHopIPv6Address', 'minimumTTL', 'maximumTTL']},
]
