/**
 * One collector's UDP transport: one connected socket for the daemon's life (templates, options
 * and data share one transport session and a stable source port, RFC 7011 §10.3), resolved and
 * opened on demand. Messages handed to it are queued and leave together, in as few sendmmsg
 * calls as they need, when the session flushes (once per batch of flows); a full send buffer
 * (EAGAIN) keeps the rest queued and retries shortly.
 *
 * A collector that is down: UDP says nothing, but the collector's host answers each datagram
 * with ICMP port unreachable, which the socket reports (IP_RECVERR: the error queue names the
 * datagram refused; the next send fails with ECONNREFUSED). Sent messages are kept for
 * CONFIRM_MS in a window; when an error shows up, the refused message, everything sent after it
 * and everything not yet sent move to the collector's spool, and later messages go there too.
 * At each drain (service()) the oldest spooled message is sent as a probe, after the templates
 * of its domain; once CONFIRM_MS pass without an error the collector answers again, and the
 * spool is replayed in order, with the messages' own sequence numbers. A full spool drops its
 * oldest messages (counted). Nothing here waits on a collector: one that is down slows no other.
 */
import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'

import {EAGAIN, EINTR, EMSGSIZE, ENOBUFS, socketError, UdpSocket, type QueuedError} from '../sys/udp-socket.js'
import {releaseMessage} from './message.js'
import {MessageSpool, type SpooledMessage} from './spool.js'
import type {CollectorTarget} from './target.js'

export interface TransportEvents {
  /** A send failed (a collector that is down shows as ECONNREFUSED on a later send). */
  onError?: (error: Error) => void
  /** The spool dropped these messages (oldest first) to stay within its size. */
  onDrop?: (dropped: SpooledMessage[]) => void
  /** The collector answers again; `replayed` spooled messages are on their way. */
  onResume?: (replayed: number) => void
  /** Template messages for `domain` headed with `sequence`: sent before a probe or a replay. */
  preamble?: (domain: number, sequence: number) => Buffer[]
}

export interface TransportOptions {
  /** Bytes of messages held for a collector that is down; default 32 MiB. */
  spoolBytes?: number
  now?: () => number
}

export const DEFAULT_SPOOL_BYTES = 32 << 20
const SEND_BUFFER_BYTES = 4 << 20
/** How soon a send the socket's buffer could not take is tried again. */
const RETRY_MS = 1
/**
 * How long a sent message may still be named by an ICMP error: the round trip to the
 * collector's host and its ICMP, with room to spare. A message older than this, with no error
 * seen at the check, arrived.
 */
export const CONFIRM_MS = 1000
/** How long after CONFIRM_MS the window is looked at between drains (timers may fire a little early). */
const CONFIRM_SLACK_MS = 50

function anyAddress(host: string | undefined): boolean {
  return !host || host === '0.0.0.0' || host === '::'
}

interface SentMessage extends SpooledMessage {
  at: number
}

/** What a window slot holds once its message counts as arrived. */
const RELEASED: SentMessage = {message: Buffer.alloc(0), dataRecords: 0, at: 0}

export class UdpTransport {
  readonly target: CollectorTarget
  private readonly events: TransportEvents
  private readonly now: () => number
  private socket?: UdpSocket
  private opening?: Promise<void>
  /** Messages to send at the next flush, and the data records of each. */
  private queue: Buffer[] = []
  private queueRecords: number[] = []
  private head = 0
  /** Sent in the last CONFIRM_MS, oldest first, from `windowHead` (an index, so that dropping the oldest is O(1)). */
  private window: SentMessage[] = []
  private windowHead = 0
  private windowBytes = 0
  readonly spool: MessageSpool
  /** The collector refused: new messages go to the spool. */
  private down = false
  /** When the probe (the oldest spooled message) left, while down. */
  private probeAt?: number
  private retry?: NodeJS.Timeout
  /** Looks at the window again once its messages can be confirmed, so that they need not wait for the next drain. */
  private confirmTimer?: NodeJS.Timeout
  private idle: (() => void)[] = []
  sendErrors = 0

  constructor(target: CollectorTarget, events: TransportEvents = {}, options: TransportOptions = {}) {
    this.target = target
    this.events = events
    this.now = options.now ?? Date.now
    this.spool = new MessageSpool(options.spoolBytes ?? DEFAULT_SPOOL_BYTES)
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

  /** Whether the collector refused and its messages are being spooled. */
  get isDown(): boolean {
    return this.down
  }

  /** The socket's cookie, for the meter's skip list (the meter does not count our own datagrams). */
  cookie(): bigint | undefined {
    return this.socket?.cookie()
  }

  get localPort(): number | undefined {
    return this.socket?.localPort
  }

  /** Queues one finished message; it leaves at the next flush (or waits in the spool). */
  send(message: Buffer, dataRecords = 0): void {
    if (!this.socket) return
    if (this.down) this.toSpool([{message, dataRecords}])
    else {
      this.queue.push(message)
      this.queueRecords.push(dataRecords)
    }
  }

  private toSpool(items: SpooledMessage[], front = false): void {
    const dropped: SpooledMessage[] = []
    if (front) dropped.push(...this.spool.unshift(items))
    else for (const item of items) dropped.push(...this.spool.push(item))
    if (!dropped.length) return
    this.events.onDrop?.(dropped)
    for (const d of dropped) releaseMessage(d.message)
  }

  /** Sends everything queued, in order. */
  flush(): void {
    const socket = this.socket
    if (!socket) return
    if (this.head < this.queue.length && !this.down) this.checkErrors()
    while (this.head < this.queue.length && !this.down) {
      const from = this.head
      const {sent, errno} = socket.sendMany(this.queue, from, this.queue.length)
      const at = this.now()
      for (let i = from; i < from + sent; i++) this.remember({message: this.queue[i], dataRecords: this.queueRecords[i], at})
      this.head += sent
      if (!errno) continue
      if (errno === EAGAIN || errno === ENOBUFS || errno === EINTR) {
        this.retry ??= setTimeout(() => {
          this.retry = undefined
          this.flush()
        }, RETRY_MS)
        return
      }
      if (errno === EMSGSIZE) {
        // Too large for any route: it can never leave (maxMessageSize is above the path's limit).
        releaseMessage(this.queue[this.head])
        this.head++
        this.sendErrors++
        this.events.onError?.(socketError(errno, 'send'))
        continue
      }
      // The message the error came back on did not leave.
      this.goDown(errno, socket.readErrorQueue())
    }
    this.resetQueue()
  }

  private resetQueue(): void {
    this.queue = []
    this.queueRecords = []
    this.head = 0
    for (const resolve of this.idle.splice(0)) resolve()
  }

  private remember(sent: SentMessage): void {
    this.window.push(sent)
    this.windowBytes += sent.message.length
    // The window holds no more than the spool could: past that, the oldest count as arrived.
    let head = this.windowHead
    while (this.windowBytes > this.spool.limitBytes && head < this.window.length) this.windowBytes -= this.window[head++].message.length
    this.dropWindowBefore(head)
    this.confirmLater()
  }

  /**
   * Between drains nothing else would look at the window, and it would hold up to spoolBytes
   * of messages until the next one: check it once they are old enough to count as arrived.
   */
  private confirmLater(): void {
    if (this.confirmTimer || this.windowHead === this.window.length) return
    this.confirmTimer = setTimeout(() => {
      this.confirmTimer = undefined
      if (!this.socket || this.down) return
      this.checkErrors()
      this.confirmLater()
    }, CONFIRM_MS + CONFIRM_SLACK_MS)
    this.confirmTimer.unref()
  }

  /** Forgets the window's messages before index `head` (they count as arrived). */
  private dropWindowBefore(head: number): void {
    // Let go of them now: the array keeps its slots until it is compacted, and a slot still
    // holding a message would keep its memory (up to the window's whole limit again).
    for (let i = this.windowHead; i < head; i++) {
      releaseMessage(this.window[i].message)
      this.window[i] = RELEASED
    }
    this.windowHead = head
    // Compact now and then, not at every message: shifting a long array is O(length).
    if (head === this.window.length) {
      this.window = []
      this.windowHead = 0
    } else if (head >= 4096 && head * 2 >= this.window.length) {
      this.window = this.window.slice(head)
      this.windowHead = 0
    }
  }

  /**
   * Reads the socket's errors. None: what was sent more than CONFIRM_MS ago arrived. Some: the
   * collector is down, from the earliest message an error names.
   */
  private checkErrors(): void {
    if (this.takeErrors()) return
    const confirmed = this.now() - CONFIRM_MS
    let n = this.windowHead
    while (n < this.window.length && this.window[n].at <= confirmed) this.windowBytes -= this.window[n++].message.length
    this.dropWindowBefore(n)
  }

  /** Reads the socket's errors; if any, the collector is down (from the message they name). */
  private takeErrors(): boolean {
    const socket = this.socket!
    const queued = socket.readErrorQueue()
    const pending = socket.takeError()
    if (!queued.length && !pending) return false
    this.goDown(pending || queued[0].errno, queued)
    return true
  }

  /** The index of the earliest message in the window an ICMP error names, or the window's length. */
  private earliestRefused(errors: QueuedError[]): number {
    let earliest = this.window.length
    for (const {payload} of errors) {
      for (let i = this.windowHead; i < earliest; i++) {
        const m = this.window[i].message
        const n = Math.min(m.length, payload.length)
        if (n >= 16 && payload.compare(m, 0, n, 0, n) === 0) {
          earliest = i
          break
        }
      }
    }
    return earliest
  }

  /** The collector refused: the refused messages, those after them and the unsent go to the spool. */
  private goDown(errno: number, errors: QueuedError[]): void {
    const from = this.earliestRefused(errors)
    const refused = this.window.slice(from).map(({message, dataRecords}) => ({message, dataRecords}))
    for (const r of refused) this.windowBytes -= r.message.length
    this.window = this.window.slice(this.windowHead, from)
    this.windowHead = 0
    const unsent: SpooledMessage[] = []
    for (let i = this.head; i < this.queue.length; i++) unsent.push({message: this.queue[i], dataRecords: this.queueRecords[i]})
    this.resetQueue()
    const wasDown = this.down
    this.down = true
    this.probeAt = undefined
    this.toSpool([...refused, ...unsent], true)
    this.sendErrors++
    if (!wasDown) this.events.onError?.(socketError(errno, 'send'))
  }

  /**
   * Called at every drain: sends what is queued, reads the socket's errors, and while the
   * collector is down probes it with the oldest spooled message, replaying the spool once the
   * probe has gone CONFIRM_MS without an error.
   */
  service(): void {
    if (!this.socket) return
    if (!this.down) {
      this.flush()
      if (!this.down) this.checkErrors()
      return
    }
    if (this.probeAt !== undefined && !this.takeErrors()) {
      if (this.now() - this.probeAt >= CONFIRM_MS) this.resume()
      return
    }
    this.probe()
  }

  private probe(): void {
    const socket = this.socket!
    // Errors still queued name messages already back in the spool: only the probe's count.
    socket.readErrorQueue()
    socket.takeError()
    const first = this.spool.shift()
    if (!first) {
      this.down = false
      return
    }
    const preamble = this.events.preamble?.(first.message.readUInt32BE(12), first.message.readUInt32BE(8)) ?? []
    const batch = [...preamble, first.message]
    const {sent, errno} = socket.sendMany(batch, 0, batch.length)
    if (sent === batch.length) {
      this.remember({...first, at: this.now()})
      this.probeAt = this.now()
      return
    }
    // Refused at once (the last probe's error was still pending, or no route): still down.
    this.toSpool([first], true)
    this.probeAt = undefined
    if (errno && errno !== EAGAIN && errno !== ENOBUFS && errno !== EINTR) this.sendErrors++
  }

  /** The probe arrived: the spool goes out in order, after the templates of each domain in it. */
  private resume(): void {
    this.down = false
    this.probeAt = undefined
    const starts = this.spool.firstSequences()
    const items = this.spool.takeAll()
    for (const [domain, sequence] of starts) {
      for (const message of this.events.preamble?.(domain, sequence) ?? []) {
        this.queue.push(message)
        this.queueRecords.push(0)
      }
    }
    for (const item of items) {
      this.queue.push(item.message)
      this.queueRecords.push(item.dataRecords)
    }
    this.events.onResume?.(items.length)
    this.flush()
  }

  /** Resolves when every message handed to the transport has left or is spooled. */
  flushed(): Promise<void> {
    this.flush()
    if (this.head >= this.queue.length || this.down) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  close(): void {
    if (this.retry) clearTimeout(this.retry)
    this.retry = undefined
    if (this.confirmTimer) clearTimeout(this.confirmTimer)
    this.confirmTimer = undefined
    this.socket?.close()
    this.socket = undefined
    this.resetQueue()
  }
}
