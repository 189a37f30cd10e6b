/**
 * One collector's UDP transport: one connected socket for the daemon's life (templates, options
 * and data share one transport session and a stable source port, RFC 7011 §10.3), resolved and
 * opened on demand. Messages handed to it are queued and leave together, in as few sendmmsg
 * calls as they need, when the session flushes (once per batch of flows); a full send buffer
 * (EAGAIN) keeps the rest queued and retries shortly.
 */
import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'

import {EAGAIN, EINTR, ENOBUFS, socketError, UdpSocket} from '../sys/udp-socket.js'
import type {CollectorTarget} from './target.js'

export interface TransportEvents {
  /** A send failed (a collector that is down shows as ECONNREFUSED on a later send). */
  onError?: (error: Error) => void
}

const SEND_BUFFER_BYTES = 4 << 20
/** How soon a send the socket's buffer could not take is tried again. */
const RETRY_MS = 1

function anyAddress(host: string | undefined): boolean {
  return !host || host === '0.0.0.0' || host === '::'
}

export class UdpTransport {
  readonly target: CollectorTarget
  private readonly events: TransportEvents
  private socket?: UdpSocket
  private opening?: Promise<void>
  private queue: Buffer[] = []
  private head = 0
  private retry?: NodeJS.Timeout
  private idle: (() => void)[] = []
  sendErrors = 0

  constructor(target: CollectorTarget, events: TransportEvents = {}) {
    this.target = target
    this.events = events
  }

  /** Opens the socket; safe to call again after a failure (a hostname that did not resolve). */
  async open(): Promise<void> {
    if (this.socket) return
    this.opening ??= this.doOpen().finally(() => (this.opening = undefined))
    return this.opening
  }

  private async doOpen(): Promise<void> {
    const {remote, source} = this.target
    const address = isIP(remote.host.split('%')[0]) ? remote.host : (await lookup(remote.host)).address
    const wildcard = anyAddress(source?.host)
    // A source of "any address, any port" is no source at all; "any address" on a fixed port
    // binds the remote's family's wildcard.
    const from = source && (!wildcard || source.port) ? {address: wildcard ? (isIP(address.split('%')[0]) === 6 ? '::' : '0.0.0.0') : source.host, port: source.port} : undefined
    this.socket = UdpSocket.connect({address, port: remote.port}, from, {sendBufferBytes: SEND_BUFFER_BYTES})
  }

  get isOpen(): boolean {
    return !!this.socket
  }

  /** The socket's cookie, for the meter's skip list (the meter does not count our own datagrams). */
  cookie(): bigint | undefined {
    return this.socket?.cookie()
  }

  get localPort(): number | undefined {
    return this.socket?.localPort
  }

  /** Queues one finished message; it leaves at the next flush. */
  send(message: Buffer): void {
    if (this.socket) this.queue.push(message)
  }

  /** Sends everything queued, in order. */
  flush(): void {
    const socket = this.socket
    if (!socket) return
    while (this.head < this.queue.length) {
      const {sent, errno} = socket.sendMany(this.queue, this.head, this.queue.length)
      this.head += sent
      if (!errno) continue
      if (errno === EAGAIN || errno === ENOBUFS || errno === EINTR) {
        this.retry ??= setTimeout(() => {
          this.retry = undefined
          this.flush()
        }, RETRY_MS)
        return
      }
      // The message the error came back on did not leave (ECONNREFUSED: an earlier datagram
      // met a closed port): it is counted and given up.
      this.head++
      this.sendErrors++
      this.events.onError?.(socketError(errno, 'send'))
    }
    this.queue = []
    this.head = 0
    for (const resolve of this.idle.splice(0)) resolve()
  }

  /** Resolves when every message handed to the transport has left. */
  flushed(): Promise<void> {
    this.flush()
    if (this.head >= this.queue.length) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  close(): void {
    if (this.retry) clearTimeout(this.retry)
    this.retry = undefined
    this.socket?.close()
    this.socket = undefined
    this.queue = []
    this.head = 0
    for (const resolve of this.idle.splice(0)) resolve()
  }
}
