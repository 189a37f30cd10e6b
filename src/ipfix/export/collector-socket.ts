/**
 * The socket a transport sends to its collector through: connected to the collector's address
 * (a hostname resolved once, when it opens), sent from the target's source when it has one; the
 * send errors worth trying again, and the errors that say the collector refused a message.
 */
import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'

import {EAGAIN, EINTR, ENOBUFS, UdpSocket, type QueuedError} from '../../sys/udp-socket.js'
import type {CollectorTarget} from './target.js'

const SEND_BUFFER_BYTES = 4 << 20

function anyAddress(host: string | undefined): boolean {
  return !host || host === '0.0.0.0' || host === '::'
}

/** Whether a send that failed with `errno` may be tried again shortly (a full buffer, a signal). */
export function retryable(errno: number): boolean {
  return errno === EAGAIN || errno === ENOBUFS || errno === EINTR
}

/** A socket connected to the target's collector, from its source (the remote's and local addresses). */
export async function connectCollector(target: CollectorTarget): Promise<UdpSocket> {
  const {remote, source} = target
  const address = isIP(remote.host.split('%')[0]) ? remote.host : (await lookup(remote.host)).address
  const wildcard = anyAddress(source?.host)
  // A source of "any address, any port" is no source at all; "any address" on a fixed port
  // binds the remote's family's wildcard.
  const from =
    source && (!wildcard || source.port)
      ? {address: wildcard ? (isIP(address.split('%')[0]) === 6 ? '::' : '0.0.0.0') : source.host, port: source.port}
      : undefined
  return UdpSocket.connect({address, port: remote.port}, from, {sendBufferBytes: SEND_BUFFER_BYTES})
}

/** Whether an ICMP error names this message: it carries the message's head (at least its IPFIX header). */
export function errorNames({payload}: QueuedError, message: Buffer): boolean {
  const n = Math.min(message.length, payload.length)
  return n >= 16 && payload.compare(message, 0, n, 0, n) === 0
}

/**
 * The errors a collector's socket reports: ICMP errors queued with the head of the datagram
 * refused (IP_RECVERR), and the error the next send fails with (ECONNREFUSED). Some are read
 * before their turn, to know whether a message let go of early was refused: they are kept for it.
 */
export class SocketErrors {
  private early: QueuedError[] = []
  private earlyErrno = 0

  /** Whether an error the socket has now names `message` (what is read is kept for take()). */
  name(socket: UdpSocket, message: Buffer): boolean {
    this.early.push(...socket.readErrorQueue())
    this.earlyErrno ||= socket.takeError()
    return this.early.some((e) => errorNames(e, message))
  }

  /** The errors queued, those read before their turn first. */
  queued(socket: UdpSocket): QueuedError[] {
    return [...this.early.splice(0), ...socket.readErrorQueue()]
  }

  /** Every error: those queued, and the errno a send failed with (0: none). */
  take(socket: UdpSocket): {queued: QueuedError[]; errno: number} {
    const queued = this.queued(socket)
    const fresh = socket.takeError()
    const errno = this.earlyErrno || fresh
    this.earlyErrno = 0
    return {queued, errno}
  }

  /** Forgets every error, read or not. */
  clear(socket: UdpSocket): void {
    socket.readErrorQueue()
    socket.takeError()
    this.early = []
    this.earlyErrno = 0
  }
}
