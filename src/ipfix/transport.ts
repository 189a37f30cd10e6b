/**
 * One collector's UDP transport: one connected socket for the daemon's life (templates, options
 * and data share one transport session and a stable source port, RFC 7011 §10.3), resolved and
 * opened on demand, that takes finished messages and reports send errors.
 */
import {createSocket, type Socket} from 'node:dgram'
import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'

import type {CollectorTarget} from './target.js'

export interface TransportEvents {
  /** A send failed (a collector that is down shows as ECONNREFUSED on a later send). */
  onError?: (error: Error) => void
}

export class UdpTransport {
  readonly target: CollectorTarget
  private readonly events: TransportEvents
  private socket?: Socket
  private opening?: Promise<void>
  private inflight = 0
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
    const address = isIP(remote.host) ? remote.host : (await lookup(remote.host)).address
    const socket = createSocket({type: isIP(address) === 6 ? 'udp6' : 'udp4', reuseAddr: false})
    socket.on('error', (error) => this.fail(error))
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.bind({address: source?.host && source.host !== '0.0.0.0' && source.host !== '::' ? source.host : undefined, port: source?.port ?? 0}, () => {
        socket.off('error', reject)
        resolve()
      })
    })
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.connect(remote.port, address, () => {
        socket.off('error', reject)
        resolve()
      })
    })
    try {
      socket.setSendBufferSize(4 << 20)
    } catch {
      // the kernel caps it at net.core.wmem_max; what we get is fine
    }
    this.socket = socket
  }

  get isOpen(): boolean {
    return !!this.socket
  }

  /**
   * The socket's file descriptor, for its socket cookie (the meter skips our own datagrams).
   * Node keeps the libuv handle under a symbol of dgram's (`_handle` is its deprecated alias).
   */
  get fd(): number | undefined {
    const socket = this.socket as unknown as Record<symbol, {handle?: {fd?: number}}> | undefined
    if (!socket) return undefined
    const state = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol')
    const fd = state ? socket[state]?.handle?.fd : undefined
    return typeof fd === 'number' && fd >= 0 ? fd : undefined
  }

  get localPort(): number | undefined {
    return this.socket?.address().port
  }

  /** Hands one finished message to the socket. */
  send(message: Buffer): void {
    const socket = this.socket
    if (!socket) return
    this.inflight++
    socket.send(message, (error) => {
      if (error) {
        this.sendErrors++
        this.fail(error)
      }
      if (--this.inflight === 0) for (const resolve of this.idle.splice(0)) resolve()
    })
  }

  private fail(error: Error): void {
    this.events.onError?.(error)
  }

  /** Resolves when every message handed to the socket has left. */
  flushed(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  close(): void {
    this.socket?.close()
    this.socket = undefined
  }
}
