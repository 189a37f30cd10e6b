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
