/**
 * Shared by the exporter, tshark and `ipfix listen` suites: flows as plain objects, the FlowBatch
 * the exporter takes, the record each flow must come back as (worked out here from the input, not
 * by the code under test), and a collector that keeps everything it receives.
 */
import {compileTemplate, createExporter, type CollectorExporter, type ExporterOptions, type ExportTemplate} from '../../src/ipfix/export/collector-exporter.js'
import {elementByName, naturalLength, type InformationElement} from '../../src/ipfix/wire/elements.js'
import {exportableElement} from '../../src/ipfix/export/exportable-elements.js'
import {bindField, columnWriter, recordWriter, templateFamily, type BoundField} from '../../src/ipfix/export/flow-fields.js'
import {defaultConfig} from '../../src/config/load.js'
import {parseAddress} from '../../src/util/address.js'
import {FlowBatch} from '../../src/flow/batch.js'
import {IpfixCollector} from '../../src/ipfix/collect/collector.js'
import {ConformanceChecker, type ConformanceOptions} from '../../src/ipfix/collect/conformance.js'
import type {DecodedMessage, DecodedRecord} from '../../src/ipfix/collect/decoder.js'
import {renderFields} from '../../src/ipfix/collect/render.js'
import type {DecodeError} from '../../src/ipfix/wire/errors.js'
import {prng} from '../helpers/unit.js'

export interface FlowInput {
  family: 4 | 6
  /** Canonical text (RFC 5952 for IPv6), as the decoder writes addresses. */
  src: string
  dst: string
  sport: number
  /** For ICMP, type << 8 | code, as the meter keeps it. */
  dport: number
  proto: number
  tcpFlags: number
  bytes: number
  packets: number
  /** Epoch microseconds. */
  startUs: number
  endUs: number
  ifindex: number
  /** 0 ingress, 1 egress (IPFIX flowDirection). */
  direction: 0 | 1
  endReason: number
  tos: number
  vlanId: number
  /** QinQ inner tag (0: none). */
  innerVlanId: number
  /** The flow's other interface (an ingress flow's way out, an egress flow's way in); 0: none. */
  peerIfindex: number
  minTtl: number
  maxTtl: number
  /** forwardingStatus (RFC 7270): 64 forwarded, 128 dropped, 131 unroutable, 195 for us, 0 unknown. */
  fwdStatus: number
  /** The gateway, canonical text; '0.0.0.0' / '::' when directly connected. */
  nextHop: string
  /** 1 packet in N counted (packets and bytes are raw); 1 when not given. */
  samplingInterval?: number
}

/** The batch the drain would hand the exporter for these flows (all of one family). */
export function batchOf(flows: readonly FlowInput[], observationDomainId = 1): FlowBatch {
  const family = flows[0]?.family ?? 4
  const b = new FlowBatch(family, Math.max(1, flows.length))
  b.observationDomainId = observationDomainId
  flows.forEach((f, i) => {
    if (f.family !== family) throw new Error('batchOf: flows of one family only')
    b.src.set(parseAddress(f.src).bytes, i * b.addrLen)
    b.dst.set(parseAddress(f.dst).bytes, i * b.addrLen)
    b.sport[i] = f.sport
    b.dport[i] = f.dport
    b.proto[i] = f.proto
    b.tcpFlags[i] = f.tcpFlags
    b.bytes[i] = f.bytes
    b.packets[i] = f.packets
    b.startUs[i] = f.startUs
    b.endUs[i] = f.endUs
    b.ifindex[i] = f.ifindex
    b.direction[i] = f.direction
    b.endReason[i] = f.endReason
    b.tos[i] = f.tos
    b.vlanId[i] = f.vlanId
    b.innerVlanId[i] = f.innerVlanId
    b.samplingInterval[i] = f.samplingInterval ?? 1
    b.peerIfindex[i] = f.peerIfindex
    b.minTtl[i] = f.minTtl
    b.maxTtl[i] = f.maxTtl
    b.fwdStatus[i] = f.fwdStatus
    b.nextHop.set(parseAddress(f.nextHop).bytes, i * b.addrLen)
  })
  b.length = flows.length
  return b
}

/**
 * The fields of the default template (256 for IPv4, 257 for IPv6) a flow must decode to, as
 * IpfixDecoder returns them (64-bit counters as bigint). The metered interface is the
 * ingressInterface of an ingress flow and the egressInterface of an egress flow; the other one is
 * the flow's peer interface.
 */
export function expectedFields(f: FlowInput): Record<string, string | number | bigint> {
  const v = f.family === 4 ? 'IPv4' : 'IPv6'
  return {
    [`source${v}Address`]: f.src,
    [`destination${v}Address`]: f.dst,
    sourceTransportPort: f.sport,
    destinationTransportPort: f.dport,
    protocolIdentifier: f.proto,
    tcpControlBits: f.tcpFlags,
    octetDeltaCount: BigInt(f.bytes),
    packetDeltaCount: BigInt(f.packets),
    flowStartMilliseconds: Math.floor(f.startUs / 1000),
    flowEndMilliseconds: Math.floor(f.endUs / 1000),
    ingressInterface: f.direction === 0 ? f.ifindex : f.peerIfindex,
    egressInterface: f.direction === 1 ? f.ifindex : f.peerIfindex,
    flowDirection: f.direction,
    flowEndReason: f.endReason,
    ipClassOfService: f.tos,
    vlanId: f.vlanId,
    [`ipNextHop${v}Address`]: f.nextHop,
    minimumTTL: f.minTtl,
    maximumTTL: f.maxTtl,
  }
}

/** The same as JSON renders it (renderRecordJson, `ipfix listen --json`, tsharkDecodeIpfix): counters as numbers. */
export function expectedJson(f: FlowInput): Record<string, string | number> {
  const out: Record<string, string | number> = {}
  for (const [k, v] of Object.entries(expectedFields(f))) out[k] = typeof v === 'bigint' ? Number(v) : v
  return out
}

/** Flows end about now (whole seconds): the checker wants times within a day of the export time. */
export const NOW_MS = Math.floor(Date.now() / 1000) * 1000

/**
 * One direction of a TCP connection through a router metered at the ingress of both sides
 * (198.18.50.2:40000 in by ifindex 2, out by 3, flags SYN ACK PSH FIN), for the biflow tests.
 */
export function routedUniflow(f: Partial<FlowInput>): FlowInput {
  return {
    family: 4,
    src: '198.18.50.2',
    dst: '198.18.51.2',
    sport: 40000,
    dport: 80,
    proto: 6,
    tcpFlags: 0x1b,
    bytes: 400,
    packets: 5,
    startUs: NOW_MS * 1000,
    endUs: NOW_MS * 1000 + 20_000,
    ifindex: 2,
    direction: 0,
    endReason: 3,
    tos: 0,
    vlanId: 0,
    innerVlanId: 0,
    peerIfindex: 3,
    minTtl: 64,
    maxTtl: 64,
    fwdStatus: 64,
    nextHop: '0.0.0.0',
    ...f,
  }
}

/** The server's answer to routedUniflow({}): the reverse direction, in by ifindex 3, out by 2, 2 ms later. */
export function routedReply(f: Partial<FlowInput>): FlowInput {
  return routedUniflow({
    src: '198.18.51.2',
    dst: '198.18.50.2',
    sport: 80,
    dport: 40000,
    bytes: 3000,
    packets: 4,
    startUs: NOW_MS * 1000 + 2000,
    ifindex: 3,
    peerIfindex: 2,
    ...f,
  })
}
const NOW_US = NOW_MS * 1000

/** One TCP, UDP and ICMP flow of the family, every field set to a distinct, non-trivial value. */
export function sampleFlows(family: 4 | 6): FlowInput[] {
  const a =
    family === 4 ? ['198.18.0.1', '198.18.200.254', '10.1.2.3', '203.0.113.77'] : ['2001:db8::1', '2001:db8:ffff:1:2:3:4:5', 'fe80::aa:bb', 'fd00:1234::9']
  const gateway = family === 4 ? '198.19.255.1' : 'fe80::1:2ff:fe03:405'
  const none = family === 4 ? '0.0.0.0' : '::'
  const base = {family, tos: 0, vlanId: 0, innerVlanId: 0, direction: 0 as 0 | 1}
  return [
    // TCP forwarded: SYN|ACK|PSH|FIN|ECE|CWR, a counter beyond 2^32, DSCP EF, QinQ, ended by FIN,
    // leaving by interface 9 through a gateway.
    {
      ...base,
      src: a[0],
      dst: a[1],
      sport: 49152,
      dport: 443,
      proto: 6,
      tcpFlags: 0xdb,
      bytes: 5_000_000_123,
      packets: 3_400_001,
      startUs: NOW_US - 61_234_567,
      endUs: NOW_US - 1_000,
      ifindex: 7,
      direction: 0,
      endReason: 3,
      tos: 0xb8,
      vlanId: 4094,
      innerVlanId: 100,
      peerIfindex: 9,
      minTtl: 61,
      maxTtl: 64,
      fwdStatus: 64,
      nextHop: gateway,
    },
    // UDP egress that came in by interface 4_000_000_000, directly connected, active timeout.
    {
      ...base,
      src: a[2],
      dst: a[3],
      sport: 5353,
      dport: 53,
      proto: 17,
      tcpFlags: 0,
      bytes: 1_234,
      packets: 12,
      startUs: NOW_US - 2_000_999,
      endUs: NOW_US - 999,
      ifindex: 65_537,
      direction: 1,
      endReason: 2,
      tos: 0x02,
      vlanId: 1,
      innerVlanId: 4095,
      peerIfindex: 4_000_000_000,
      minTtl: 1,
      maxTtl: 255,
      fwdStatus: 64,
      nextHop: none,
    },
    // ICMP echo request (type 8, or 128 for ICMPv6) for this host, idle timeout.
    {
      ...base,
      src: a[1],
      dst: a[0],
      sport: 0,
      dport: family === 4 ? 0x0800 : 0x8000,
      proto: family === 4 ? 1 : 58,
      tcpFlags: 0,
      bytes: 84,
      packets: 1,
      startUs: NOW_US - 15_000_000,
      endUs: NOW_US - 15_000_000,
      ifindex: 3,
      direction: 0,
      endReason: 1,
      tos: 0,
      vlanId: 0,
      peerIfindex: 0,
      minTtl: 64,
      maxTtl: 64,
      fwdStatus: 195,
      nextHop: none,
    },
  ]
}

/** `n` pseudo-random flows (seeded, so a failure reproduces) with canonical addresses. */
export function randomFlows(family: 4 | 6, n: number, seed: number): FlowInput[] {
  const r = prng(seed)
  const int = (max: number) => Math.floor(r() * (max + 1))
  const group = () => (1 + int(0xfffe)).toString(16)
  const addr = () =>
    family === 4 ? `${1 + int(222)}.${int(255)}.${int(255)}.${1 + int(253)}` : `2001:db8:${group()}:${group()}:${group()}:${group()}:${group()}:${group()}`
  return Array.from({length: n}, () => {
    const proto = [6, 17, family === 4 ? 1 : 58][int(2)]
    const startUs = NOW_US - int(3_600_000_000)
    const minTtl = int(255)
    return {
      family,
      src: addr(),
      dst: addr(),
      sport: proto === 6 || proto === 17 ? int(65535) : 0,
      dport: int(65535),
      proto,
      tcpFlags: proto === 6 ? int(255) : 0,
      bytes: int(2 ** 40),
      packets: 1 + int(2 ** 30),
      startUs,
      endUs: startUs + int(60_000_000),
      ifindex: 1 + int(2 ** 31),
      direction: int(1) as 0 | 1,
      endReason: 1 + int(4),
      tos: int(255),
      vlanId: int(4095),
      innerVlanId: int(4095),
      peerIfindex: int(1) ? 1 + int(2 ** 31) : 0,
      minTtl,
      maxTtl: minTtl + int(255 - minTtl),
      fwdStatus: [0, 64, 128, 131, 195][int(4)],
      nextHop: int(1) ? addr() : family === 4 ? '0.0.0.0' : '::',
    }
  })
}

/** Whether the registry table knows forwardingStatus (IE 89): the 2013 snapshot does not. */
export const REGISTRY_KNOWS_FORWARDING_STATUS = elementByName('forwardingStatus') !== undefined

/**
 * forwardingStatus as the registry has it, or while it does not, a test-local element of the
 * number and type RFC 7270 gives it, so that its tests run before and after the registry knows it.
 */
export const FORWARDING_STATUS: InformationElement = elementByName('forwardingStatus') ?? {
  id: 89,
  name: 'forwardingStatus',
  type: 'unsigned32',
  semantics: 'identifier',
}

/** bindField, except that forwardingStatus binds to FORWARDING_STATUS while the registry lacks it. */
export function bindTestField(name: string, length?: number): BoundField {
  const exportable = exportableElement(name)
  if (elementByName(name) || exportable?.name !== FORWARDING_STATUS.name) return bindField(name, length)
  const len = length ?? exportable.defaultLength ?? naturalLength(FORWARDING_STATUS.type)
  return {element: FORWARDING_STATUS, length: len, write: recordWriter(exportable.value, len), writeColumn: columnWriter(exportable.value, len)}
}

/** compileTemplate with bindTestField: fields without a length get their default length. */
export function testTemplate(id: number, fields: readonly (string | {name: string; length: number})[]): ExportTemplate {
  const bound = fields.map((f) => (typeof f === 'string' ? bindTestField(f) : bindTestField(f.name, f.length)))
  return {
    template: {id, fields: bound.map((b) => ({element: b.element, length: b.length})), scopeFieldCount: 0},
    fields: bound,
    recordLength: bound.reduce((n, b) => n + b.length, 0),
    family: templateFamily(fields.map((f) => (typeof f === 'string' ? f : f.name))),
  }
}

/** The default templates (256 IPv4, 257 IPv6), compiled as the daemon compiles them. */
export function defaultExportTemplates(): ExportTemplate[] {
  return defaultConfig().templates.map((t) => compileTemplate(t.id, t.fields))
}

export const STATS_TEMPLATE_ID = 65000

/** An exporter of the default templates to 127.0.0.1:port. */
export function exporterTo(port: number, options: Partial<ExporterOptions> = {}, templates = defaultExportTemplates()): CollectorExporter {
  return createExporter({name: `127.0.0.1:${port}`, remote: {host: '127.0.0.1', port}}, templates, {
    maxMessageSize: 1400,
    templateRefreshMs: 60_000,
    statsTemplateId: STATS_TEMPLATE_ID,
    ...options,
  })
}

export interface Received {
  message: DecodedMessage
  raw: Buffer
}

/** A collector on 127.0.0.1 that keeps every message, record and malformed datagram, judged by a ConformanceChecker. */
export class Sink {
  readonly checker: ConformanceChecker
  readonly collector: IpfixCollector
  readonly received: Received[] = []
  readonly records: DecodedRecord[] = []
  readonly malformed: DecodeError[] = []
  /** The flow (non-options) records' fields as `ipfix listen --json` renders them, in arrival order. */
  readonly flows: Record<string, unknown>[] = []
  port = 0

  constructor(options: ConformanceOptions & {port?: number} = {}) {
    this.checker = new ConformanceChecker(options)
    this.collector = new IpfixCollector({host: '127.0.0.1', port: options.port ?? 0, checker: this.checker})
    this.collector.on('message', (message, raw) => this.received.push({message, raw: Buffer.from(raw)}))
    this.collector.on('record', (r) => {
      this.records.push(r)
      if (!r.options) this.flows.push(renderFields(r.fields))
    })
    this.collector.on('malformed', (e) => this.malformed.push(e))
  }

  static async start(options: ConformanceOptions & {port?: number} = {}): Promise<Sink> {
    const s = new Sink(options)
    s.port = (await s.collector.start()).port
    return s
  }

  /** The raw datagrams, in arrival order. */
  get datagrams(): Buffer[] {
    return this.received.map((r) => r.raw)
  }

  /** Waits until `done()` holds (polling the event loop), or fails after `ms` saying what it waited for. */
  async until(done: () => boolean, what: string, ms = 3000): Promise<void> {
    const deadline = Date.now() + ms
    while (!done()) {
      if (Date.now() > deadline)
        throw new Error(`timed out after ${ms} ms waiting for ${what} (${this.received.length} messages, ${this.records.length} records so far)`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  /** Waits for the messages the exporter has handed to its socket (all of them: UDP on loopback). */
  async settle(exporter: CollectorExporter): Promise<void> {
    await exporter.flushed()
    await this.until(() => this.received.length + this.malformed.length >= exporter.stats.messages, `${exporter.stats.messages} messages`)
  }

  async stop(): Promise<void> {
    await this.collector.stop()
  }
}
