/**
 * An embedded IPFIX collector over UDP (RFC 7011 §10.3): one socket, one decoder for every
 * exporter, an optional conformance checker, and events:
 *
 * - 'message' (DecodedMessage, raw Buffer) for each message decoded,
 * - 'record' (DecodedRecord) for each data record, options records included,
 * - 'malformed' (DecodeError, {exporter, size}) for a datagram that is not a well-formed
 *   message; the collector keeps listening,
 * - 'refused' (RefusedTemplate, {exporter, observationDomainId}) for a template the decoder
 *   would not keep (see DecoderLimits); its data sets stay of unknown template,
 * - 'error' (Error) for a socket error after start.
 *
 * The exporter of a datagram is its source 'address:port' ('198.18.0.1:50101', or
 * '[2001:db8::1]:50101'); an IPv4 sender seen through a dual-stack socket is written as IPv4.
 * Over UDP, template withdrawals are ignored (§8.4).
 */
import {createSocket, type RemoteInfo, type Socket} from 'node:dgram'
import {lookup} from 'node:dns/promises'
import {EventEmitter} from 'node:events'
import {isIP} from 'node:net'

import {FlowctlError, PermissionError} from '../../errors.js'
import {DecodeError} from '../wire/errors.js'
import type {ConformanceChecker} from './conformance.js'
import {IpfixDecoder, type DecodedMessage, type DecodedRecord, type RefusedTemplate} from './decoder.js'

export const IPFIX_PORT = 4739

/**
 * The resident memory a process that runs one collector with the default decoder limits stays
 * under, whatever arrives, once it has limited its heap's growth (limitHeapGrowth() in src/sys):
 * about 85 MB to start, the templates' 32 MiB, V8's headroom over them and a message's decoding.
 * Measured under floods of the largest templates by test/faults/ipfix-listen-flood.test.ts.
 */
export const COLLECTOR_MEMORY_CEILING_MB = 300

export interface CollectorOptions {
  /** Address to listen on (default '::', every IPv6 and IPv4 address; falls back to 0.0.0.0 without IPv6). */
  host?: string
  /** UDP port (default 4739; 0 = an ephemeral port, see address()). */
  port?: number
  /** Judges every message received. */
  checker?: ConformanceChecker
  /** The decoder to use (default: a new one that ignores template withdrawals, as over UDP). */
  decoder?: IpfixDecoder
  /** Socket receive buffer in bytes (default 4 MiB; the kernel may cap it). */
  receiveBufferSize?: number
}

interface MalformedInfo {
  exporter: string
  size: number
}

interface RefusedInfo {
  exporter: string
  observationDomainId: number
}

/** The collector's events and what each hands its listeners (see the top of this module). */
interface CollectorEvents {
  record: [record: DecodedRecord]
  message: [message: DecodedMessage, raw: Buffer]
  malformed: [error: DecodeError, info: MalformedInfo]
  refused: [template: RefusedTemplate, info: RefusedInfo]
  error: [error: Error]
}

/** 'address:port' of a sender; '[v6]:port' for IPv6; an IPv4-mapped address as plain IPv4. */
function exporterName(address: string, port: number): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped) return `${mapped[1]}:${port}`
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}

export class IpfixCollector extends EventEmitter<CollectorEvents> {
  readonly decoder: IpfixDecoder
  readonly checker: ConformanceChecker | undefined
  private readonly host: string
  private readonly port: number
  private readonly receiveBufferSize: number
  private socket: Socket | undefined
  private bound: {host: string; port: number} | undefined

  constructor(options: CollectorOptions = {}) {
    super()
    this.host = options.host ?? '::'
    this.port = options.port ?? IPFIX_PORT
    this.checker = options.checker
    this.decoder = options.decoder ?? new IpfixDecoder({applyWithdrawals: false})
    this.receiveBufferSize = options.receiveBufferSize ?? 4 * 1024 * 1024
    if (!Number.isInteger(this.port) || this.port < 0 || this.port > 65535)
      throw new FlowctlError(`invalid UDP port ${this.port}: expected 0-65535`, {exitCode: 2})
  }

  /** Binds the socket; resolves with the address and port it listens on. */
  async start(): Promise<{host: string; port: number}> {
    if (this.socket) throw new FlowctlError('the collector is already started')
    let host = this.host
    let family = isIP(host)
    if (family === 0) {
      try {
        const found = await lookup(host)
        host = found.address
        family = found.family
      } catch (err) {
        throw new FlowctlError(`cannot listen on ${this.host}: the name does not resolve`, {cause: err, exitCode: 2})
      }
    }
    try {
      await this.bind(host, family === 6 ? 6 : 4)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // '::' on a host without IPv6: every IPv4 address instead.
      if (host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL' || code === 'EINVAL')) await this.bind('0.0.0.0', 4)
      else throw bindError(host, this.port, err)
    }
    return this.address()!
  }

  private bind(host: string, family: 4 | 6): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = createSocket({type: family === 6 ? 'udp6' : 'udp4', ipv6Only: false})
      const onError = (err: Error): void => {
        socket.close()
        reject(err)
      }
      socket.once('error', onError)
      socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.handle(msg, exporterName(rinfo.address, rinfo.port)))
      socket.bind({address: host, port: this.port}, () => {
        socket.off('error', onError)
        socket.on('error', (err) => {
          if (this.listenerCount('error')) this.emit('error', err)
        })
        try {
          socket.setRecvBufferSize(this.receiveBufferSize)
        } catch {
          // the kernel's limit applies
        }
        const a = socket.address()
        this.socket = socket
        this.bound = {host: a.address, port: a.port}
        resolve()
      })
    })
  }

  /** Where the collector listens, once started. */
  address(): {host: string; port: number} | undefined {
    return this.bound ? {...this.bound} : undefined
  }

  /** Decodes one datagram from `exporter` and emits what it holds (the socket calls this). */
  handle(datagram: Buffer, exporter: string): void {
    let message: DecodedMessage
    try {
      message = this.decoder.decode(datagram, exporter)
    } catch (err) {
      const error = err instanceof DecodeError ? err : new DecodeError(`cannot decode: ${(err as Error).message}`, 0, {cause: err})
      this.checker?.feed(datagram, exporter, error)
      this.emit('malformed', error, {exporter, size: datagram.length})
      return
    }
    this.checker?.feed(datagram, exporter, message)
    for (const t of message.refused) this.emit('refused', t, {exporter, observationDomainId: message.header.observationDomainId})
    this.emit('message', message, datagram)
    for (const r of message.records) this.emit('record', r)
  }

  /** Closes the socket. */
  async stop(): Promise<void> {
    const socket = this.socket
    this.socket = undefined
    this.bound = undefined
    if (!socket) return
    await new Promise<void>((resolve) => socket.close(() => resolve()))
  }
}

function bindError(host: string, port: number, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code
  const where = `udp ${host.includes(':') ? `[${host}]` : host}:${port}`
  if (code === 'EADDRINUSE') return new FlowctlError(`cannot listen on ${where}: the port is in use (another collector?); choose one with --port`, {cause: err})
  if (code === 'EACCES') return new PermissionError(`cannot listen on ${where}: permission denied (ports below 1024 need root)`, {cause: err})
  if (code === 'EADDRNOTAVAIL') return new FlowctlError(`cannot listen on ${where}: no interface has that address`, {cause: err, exitCode: 2})
  return new FlowctlError(`cannot listen on ${where}: ${(err as Error).message}`, {cause: err})
}

/**
 * Writes one line for a refused template at most every `intervalMs` (a flood of them must not
 * become a flood of lines), saying how many were refused since the last line.
 */
export function reportRefusals(collector: IpfixCollector, write: (line: string) => void, intervalMs = 10_000): void {
  let last = -Infinity
  let unreported = 0
  collector.on('refused', (t, info) => {
    unreported++
    const now = performance.now()
    if (now - last < intervalMs) return
    last = now
    const more = unreported > 1 ? ` (${unreported} templates refused since the last such line)` : ''
    unreported = 0
    write(
      `flowctl: refused template ${t.templateId} from ${info.exporter} domain ${info.observationDomainId}: it ${t.reason}${more}; its data will show as of unknown template`,
    )
  })
}

export type StopReason = 'count' | 'duration' | 'signal'

/**
 * Resolves when the collector has delivered `count` records, `durationSeconds` have passed, or
 * one of `signals` arrived (default SIGINT and SIGTERM), whichever comes first; `onRecord` sees
 * each record up to the count. Stops the collector before resolving.
 */
export function runUntil(
  collector: IpfixCollector,
  options: {count?: number; durationSeconds?: number; signals?: NodeJS.Signals[]; onRecord?: (record: DecodedRecord) => void},
): Promise<StopReason> {
  return new Promise((resolve) => {
    let seen = 0
    let done = false
    const signals = options.signals ?? ['SIGINT', 'SIGTERM']
    const finish = (reason: StopReason): void => {
      if (done) return
      done = true
      if (timer) clearTimeout(timer)
      collector.off('record', onRecord)
      for (const s of signals) process.off(s, onSignal)
      void collector.stop().then(() => resolve(reason))
    }
    const onRecord = (r: DecodedRecord): void => {
      if (done) return
      seen++
      options.onRecord?.(r)
      if (options.count !== undefined && seen >= options.count) finish('count')
    }
    const onSignal = (): void => finish('signal')
    const timer = options.durationSeconds !== undefined ? setTimeout(() => finish('duration'), options.durationSeconds * 1000) : undefined
    collector.on('record', onRecord)
    for (const s of signals) process.on(s, onSignal)
    if (options.count !== undefined && options.count <= 0) finish('count')
  })
}
