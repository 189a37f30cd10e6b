/**
 * The information elements flowctl has a value for, by registry name, and the address family a
 * field ties a template to. A template naming any other element is a config error: sending
 * zeros where a collector expects an AS number or a next hop would be a lie.
 */
export const EXPORTABLE_ELEMENTS: Readonly<Record<string, {family?: 4 | 6}>> = {
  sourceIPv4Address: {family: 4},
  destinationIPv4Address: {family: 4},
  sourceIPv6Address: {family: 6},
  destinationIPv6Address: {family: 6},
  icmpTypeCodeIPv4: {family: 4},
  icmpTypeIPv4: {family: 4},
  icmpCodeIPv4: {family: 4},
  icmpTypeCodeIPv6: {family: 6},
  icmpTypeIPv6: {family: 6},
  icmpCodeIPv6: {family: 6},
  sourceTransportPort: {},
  destinationTransportPort: {},
  protocolIdentifier: {},
  tcpControlBits: {},
  octetDeltaCount: {},
  packetDeltaCount: {},
  flowStartSeconds: {},
  flowEndSeconds: {},
  flowStartMilliseconds: {},
  flowEndMilliseconds: {},
  flowStartMicroseconds: {},
  flowEndMicroseconds: {},
  flowStartNanoseconds: {},
  flowEndNanoseconds: {},
  flowDurationMilliseconds: {},
  flowDurationMicroseconds: {},
  ingressInterface: {},
  egressInterface: {},
  flowDirection: {},
  flowEndReason: {},
  ipClassOfService: {},
  ipDiffServCodePoint: {},
  ipPrecedence: {},
  vlanId: {},
  dot1qVlanId: {},
  ipVersion: {},
  observationDomainId: {},
}

const byLower = new Map(Object.entries(EXPORTABLE_ELEMENTS).map(([name, info]) => [name.toLowerCase(), {name, ...info}]))

/** The exportable element of this name (any case), with its registry spelling. */
export function exportableElement(name: string): {name: string; family?: 4 | 6} | undefined {
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
  ipNextHopIPv4Address: 'the meter does not look up the route of a flow, so it has no next hop for it',
  ipNextHopIPv6Address: 'the meter does not look up the route of a flow, so it has no next hop for it',
  minimumTTL: 'the meter does not keep the TTL or hop limit of the packets it counts',
  maximumTTL: 'the meter does not keep the TTL or hop limit of the packets it counts',
  fragmentIdentification: 'a flow spans many datagrams, each with its own fragment identification: no one value describes the flow',
  dot1qCustomerVlanId: 'the meter keeps only the outer VLAN tag of a QinQ frame (as vlanId), not the inner customer tag',
  forwardingStatus: `${NOT_SEEN_AT_TC} whether the kernel then forwards, drops or consumes a packet (that is decided after tc ingress)`,
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
 * interfaces, direction, end reason, class of service and VLAN.
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
  {id: 256, fields: ['sourceIPv4Address', 'destinationIPv4Address', ...COMMON_TAIL]},
  {id: 257, fields: ['sourceIPv6Address', 'destinationIPv6Address', ...COMMON_TAIL]},
]
