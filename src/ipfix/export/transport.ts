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
 * spool is replayed in order, with the messages' own sequence numbers: paced, no faster than
 * replayBytesPerSecond in bursts a collector's default receive buffer holds (a collector drops
 * what its socket buffer cannot take, and nobody hears of it). While a replay goes on, new
 * messages join the back of the spool: nothing overtakes what waits. Without a backlog the
 * spool is empty and messages leave at once, as above, unless the live export is paced
 * (sendBytesPerSecond): then every message takes the replay's way, through the spool and the
 * same token bucket in the same bursts, in order, so that a drain that ends many flows at once
 * never overruns the collector's receive buffer. What waits for its turn is held like a spool
 * (and bounded, dropped and counted like one).
 *
 * The spool and the window are bounded together, per collector (spoolBytes) and, through a
 * SpoolBudget, for every collector at once: the oldest message goes first (a spooled one is
 * dropped and counted, a sent one counts as arrived). Nothing here waits on a collector: one that
 * is down slows no other.
 */
import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'
import {performance} from 'node:perf_hooks'

import {EAGAIN, EINTR, EMSGSIZE, ENOBUFS, MAX_BATCH, socketError, UdpSocket, type QueuedError} from '../../sys/udp-socket.js'
import {MESSAGE_HEADER_LENGTH, OPTIONS_TEMPLATE_SET_ID, releaseMessage, TEMPLATE_SET_ID} from '../wire/message.js'
import {MessageSpool, nextOrder, type MessageHolder, type SpoolBudget, type SpooledMessage} from './spool.js'
import type {MessageTransport, TransportEvents} from './message-transport.js'
import type {CollectorTarget} from './target.js'

export interface TransportOptions {
  /** Memory for the messages held for this collector (its spool and its window together; HELD_MESSAGE_OVERHEAD each besides their bytes); default 32 MiB. */
  spoolBytes?: number
  /** How fast a backlog is replayed; default DEFAULT_REPLAY_BYTES_PER_SECOND. The target's own rate, when it has one, wins. */
  replayBytesPerSecond?: number
  /** How fast every message may leave (the live export paced like a replay); 0 or undefined = as fast as the socket takes them. The target's own rate, when it has one, wins. */
  sendBytesPerSecond?: number
  /** The bound on what every collector's transport holds together. */
  budget?: SpoolBudget
  now?: () => number
  /** A monotonic clock in ms for the replay's pace (default performance.now). */
  paceClock?: () => number
}

export const DEFAULT_SPOOL_BYTES = 32 << 20
/**
 * What a held message costs besides its own bytes, as spoolBytes and the budget count it: its
 * Buffer view and its entry, on the heap (156-180 bytes measured, Node 20, after a collection),
 * and up to 7 bytes of alignment in its chunk. Without it, a spool of small messages (a quiet
 * router's drains end a few flows each) would take three times its bound.
 */
export const HELD_MESSAGE_OVERHEAD = 176
/**
 * 5 MB/s (40 Mbit/s: about 3,500 messages of 1400 bytes, 75,000 IPv4 flows of the default
 * template a second). Into nfcapd 1.7.1 on loopback with its default receive buffer
 * (docs/benchmarks.md, figure 8), replays lost nothing up to 20 MB/s on a quiet machine, but at
 * 10 MB/s they lost now and then when nfcapd had to wait for a busy CPU (load 3-4), where 5 MB/s
 * lost nothing: a quarter of what held on a quiet host, for a collector host that is
 * slower, busier or shared with other exporters. It is still several times the live export of a
 * busy router, so a backlog drains while what is exported meanwhile waits behind it; a full
 * default spool goes in about 7 s.
 */
export const DEFAULT_REPLAY_BYTES_PER_SECOND = 5_000_000
/**
 * The most a replay sends at once: 32 KiB, 23 messages of 1400 bytes. A collector's socket
 * buffer is net.core.rmem_default (208 KiB) unless it asks for more, and each datagram takes its
 * kernel buffer's size there (about 2.3 KiB on loopback, up to 4.5 KiB behind some NICs): 32 KiB
 * takes at most half of it. (Into nfcapd on loopback, bursts of 128 KiB and more lost messages.)
 */
export const REPLAY_BURST_BYTES = 32 << 10
/** At a high rate the bursts are this much of a second's worth instead (timers fire every millisecond or so at best). */
const REPLAY_BURST_MS = 2
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

function retryable(errno: number): boolean {
  return errno === EAGAIN || errno === ENOBUFS || errno === EINTR
}

interface SentMessage extends SpooledMessage {
  at: number
}

/** What a window slot holds once its message counts as arrived. */
const RELEASED: SentMessage = {message: Buffer.alloc(0), dataRecords: 0, order: 0, at: 0}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Whether a message holds template sets (its first set is a template or options template set). */
function carriesTemplates(message: Buffer): boolean {
  if (message.length < MESSAGE_HEADER_LENGTH + 2) return false
  const setId = message.readUInt16BE(MESSAGE_HEADER_LENGTH)
  return setId === TEMPLATE_SET_ID || setId === OPTIONS_TEMPLATE_SET_ID
}

/** Whether an ICMP error names this message: it carries the message's head (at least its IPFIX header). */
function names({payload}: QueuedError, message: Buffer): boolean {
  const n = Math.min(message.length, payload.length)
  return n >= 16 && payload.compare(message, 0, n, 0, n) === 0
}

/** Where a target's messages go from: the socket's remote and local addresses. */
async function connect(target: CollectorTarget): Promise<UdpSocket> {
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

export class UdpTransport implements MessageTransport, MessageHolder {
  private current: CollectorTarget
  private events: TransportEvents = {}
  private readonly now: () => number
  private readonly paceClock: () => number
  private socket?: UdpSocket
  private opening?: Promise<void>
  /** Messages to send at the next flush, the data records of each and the order they were handed over in. */
  private queue: Buffer[] = []
  private queueRecords: number[] = []
  private queueOrders: number[] = []
  private head = 0
  /** Sent in the last CONFIRM_MS, oldest first, from `windowHead` (an index, so that dropping the oldest is O(1)). */
  private window: SentMessage[] = []
  private windowHead = 0
  private windowBytes = 0
  /** What waits: while the collector is down, and while a replay is under way. */
  readonly spool = new MessageSpool()
  /** Memory the spool and the window may take together (per collector), as `held` counts it. */
  private limitBytes: number
  private defaultReplayRate: number
  private defaultSendRate: number
  /** A backlog from an outage or a move is going out (replayBytesPerSecond paces it), since resume() until the spool is empty. */
  private replaying = false
  private readonly budget?: SpoolBudget
  /** The held bytes the budget was last told of, while a member of it (until close()). */
  private told = 0
  private inBudget = false
  /** The collector refused: new messages go to the spool. */
  private down = false
  /** The collector changes address (moveTo): new messages wait in the spool. */
  private moving = false
  /** When the probe (the oldest spooled message) left, while down. */
  private probeAt?: number
  /** The probe while it is in the window, its fate unknown. */
  private probing?: SentMessage
  /** Errors read off the socket before their turn (to know whether a message let go of early was refused): takeErrors' too. */
  private earlyErrors: QueuedError[] = []
  private earlyErrno = 0
  /** The templates a replay sends first. */
  private front: Buffer[] = []
  /** A message with templates was dropped from the spool: the next message that leaves goes after its domain's templates. */
  private templatesDropped = false
  /** The replay's token bucket: bytes it may send now, as of `tokensAt` (paceClock()). */
  private tokens = 0
  private tokensAt = 0
  private pacer?: NodeJS.Timeout
  private retry?: NodeJS.Timeout
  /** Looks at the window again once its messages can be confirmed, so that they need not wait for the next drain. */
  private confirmTimer?: NodeJS.Timeout
  private idle: (() => void)[] = []
  /** Counts close() calls: a move under way gives up when the transport was closed meanwhile. */
  private generation = 0
  sendErrors = 0

  constructor(target: CollectorTarget, options: TransportOptions = {}) {
    this.current = target
    this.now = options.now ?? Date.now
    this.paceClock = options.paceClock ?? (() => performance.now())
    this.limitBytes = options.spoolBytes ?? DEFAULT_SPOOL_BYTES
    this.defaultReplayRate = options.replayBytesPerSecond ?? DEFAULT_REPLAY_BYTES_PER_SECOND
    this.defaultSendRate = options.sendBytesPerSecond ?? 0
    this.budget = options.budget
    this.budget?.join(this)
    this.inBudget = !!this.budget
  }

  get target(): CollectorTarget {
    return this.current
  }

  /** Where what becomes of the messages held is told (createExporter: the session). */
  subscribe(events: TransportEvents): void {
    this.events = events
  }

  /** Bytes a second a backlog goes out at: the target's own rate, or the transport's default. */
  get replayBytesPerSecond(): number {
    return this.current.replayBytesPerSecond ?? this.defaultReplayRate
  }

  /** Bytes a second any message may leave at (0 = unpaced): the target's own rate, or the transport's default. */
  get sendBytesPerSecond(): number {
    return this.current.sendBytesPerSecond ?? this.defaultSendRate
  }

  /** Whether every message goes through the pacer (the spool and the token bucket), not only a backlog. */
  private get paced(): boolean {
    return this.sendBytesPerSecond > 0
  }

  /**
   * The token bucket's rate: a backlog after an outage or a move goes at replayBytesPerSecond,
   * and no message ever faster than sendBytesPerSecond when that is set.
   */
  private get paceBytesPerSecond(): number {
    const send = this.sendBytesPerSecond
    if (!this.replaying && send > 0) return send
    return send > 0 ? Math.min(send, this.replayBytesPerSecond) : this.replayBytesPerSecond
  }

  private get burstBytes(): number {
    return Math.max(REPLAY_BURST_BYTES, (this.paceBytesPerSecond * REPLAY_BURST_MS) / 1000)
  }

  /** Opens the socket; safe to call again after a failure (a hostname that did not resolve). */
  async open(): Promise<void> {
    if (this.socket) return
    this.opening ??= this.doOpen().finally(() => (this.opening = undefined))
    return this.opening
  }

  private async doOpen(): Promise<void> {
    const socket = await connect(this.current)
    if (this.socket) socket.close()
    else this.socket = socket
  }

  get isOpen(): boolean {
    return !!this.socket
  }

  /** Whether the collector refused and its messages are being spooled. */
  get isDown(): boolean {
    return this.down
  }

  /** Whether messages wait their turn behind others (a replay under way, or a collector that is down or moving). */
  get isBacklogged(): boolean {
    return this.down || this.moving || this.spool.length > 0 || this.front.length > 0
  }

  /** The socket's cookie, for the meter's skip list (the meter does not count our own datagrams). */
  cookie(): bigint | undefined {
    return this.socket?.cookie()
  }

  get localPort(): number | undefined {
    return this.socket?.localPort
  }

  /** The same collector at the same address with other settings (config reload): its replay rate. */
  retarget(target: CollectorTarget): void {
    this.current = target
  }

  /** A new bound for this collector's spool and window (config reload); enforced at once. */
  setSpoolBytes(bytes: number): void {
    this.limitBytes = bytes
    this.keepLimits()
  }

  /** New default rates, for a target that has none of its own (config reload). */
  setDefaultRates(rates: {replayBytesPerSecond?: number; sendBytesPerSecond?: number}): void {
    if (rates.replayBytesPerSecond !== undefined) this.defaultReplayRate = rates.replayBytesPerSecond
    if (rates.sendBytesPerSecond !== undefined) this.defaultSendRate = rates.sendBytesPerSecond
  }

  /** Queues one finished message; it leaves at the next flush (or waits in the spool). */
  send(message: Buffer, dataRecords = 0): void {
    if (!this.socket) return
    if (this.down || this.moving || this.spool.length > 0 || this.front.length > 0 || this.paced) {
      // Behind a backlog (or paced): in the spool, after everything that waits.
      this.toSpool([{message, dataRecords, order: nextOrder()}])
      if (!this.down && !this.moving) this.schedulePacer()
    } else {
      this.queue.push(message)
      this.queueRecords.push(dataRecords)
      this.queueOrders.push(nextOrder())
    }
  }

  private toSpool(items: SpooledMessage[], front = false): void {
    if (front) this.spool.unshift(items)
    else for (const item of items) this.spool.push(item)
    this.account()
    this.keepLimits()
  }

  /** The memory of the messages held (spool and window): their bytes and HELD_MESSAGE_OVERHEAD each. */
  private get held(): number {
    return this.windowBytes + this.spool.bytes + HELD_MESSAGE_OVERHEAD * (this.window.length - this.windowHead + this.spool.length)
  }

  /** Tells the budget what this transport holds now. */
  private account(): void {
    if (!this.inBudget) return
    const held = this.held
    if (held === this.told) return
    this.budget!.hold(held - this.told)
    this.told = held
  }

  /** Keeps the spool and the window within spoolBytes, and all transports within their budget. */
  private keepLimits(): void {
    while (this.held > this.limitBytes && this.oldestOrder() !== undefined) this.evictOldest()
    if (this.inBudget) this.budget!.enforce()
  }

  oldestOrder(): number | undefined {
    return this.evictsFromWindow() ? this.window[this.windowHead].order : this.spool.peek()?.order
  }

  /**
   * Whether the next message to let go of is a sent one. Not a probe while anything is spooled:
   * its fate is unknown until CONFIRM_MS pass (it may be reaching a collector that is back, and
   * counting it as dropped would say it was lost when it arrived); it stays, one message past
   * the bound at most, and if it is refused it goes back to the spool, where its turn comes.
   */
  private evictsFromWindow(): boolean {
    if (this.windowHead >= this.window.length) return false
    return this.window[this.windowHead] !== this.probing || this.spool.length === 0
  }

  /**
   * Lets go of the oldest message held: sent ones before spooled ones (dropped and counted). A
   * sent one counts as arrived, unless an error the socket has for us names it, or it is a probe
   * to a collector that is down with nothing spooled to let go of instead: then it is dropped and
   * counted too.
   */
  evictOldest(): void {
    if (this.evictsFromWindow()) {
      const oldest = this.window[this.windowHead]
      let refused = oldest === this.probing
      if (!refused && this.socket) {
        // Its ICMP error may be waiting: read them now, and keep them for takeErrors.
        this.earlyErrors.push(...this.socket.readErrorQueue())
        this.earlyErrno ||= this.socket.takeError()
        refused = this.earlyErrors.some((e) => names(e, oldest.message))
      }
      if (oldest === this.probing) this.probing = undefined
      this.windowBytes -= oldest.message.length
      if (refused) this.events.onDrop?.([oldest])
      this.dropWindowBefore(this.windowHead + 1)
    } else {
      const item = this.spool.shift()
      if (!item) return
      // Templates dropped while the collector answers (a paced export, or a replay that fell
      // behind) go again before the next message; a collector that is down gets them anyway.
      if (!this.down && carriesTemplates(item.message)) this.templatesDropped = true
      this.events.onDrop?.([item])
      releaseMessage(item.message)
    }
    this.account()
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
      for (let i = from; i < from + sent; i++) this.remember({message: this.queue[i], dataRecords: this.queueRecords[i], order: this.queueOrders[i], at})
      this.head += sent
      if (!errno) continue
      if (retryable(errno)) {
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
      this.goDown(errno, this.readErrorQueue())
    }
    this.resetQueue()
  }

  private resetQueue(): void {
    this.queue = []
    this.queueRecords = []
    this.queueOrders = []
    this.head = 0
    for (const resolve of this.idle.splice(0)) resolve()
  }

  private remember(sent: SentMessage): void {
    this.window.push(sent)
    this.windowBytes += sent.message.length
    this.account()
    // Past spoolBytes (or the budget), the oldest count as arrived.
    this.keepLimits()
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

  /** Forgets the window's messages before index `head` (they count as arrived); the caller has taken their bytes off windowBytes. */
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
    this.confirmBefore(this.now() - CONFIRM_MS)
  }

  /** The window's messages sent at or before `at` arrived. */
  private confirmBefore(at: number): void {
    let n = this.windowHead
    while (n < this.window.length && this.window[n].at <= at) this.windowBytes -= this.window[n++].message.length
    if (n === this.windowHead) return
    this.dropWindowBefore(n)
    this.account()
  }

  /** Reads the socket's errors; if any, the collector is down (from the message they name). */
  private takeErrors(): boolean {
    const socket = this.socket!
    const queued = this.readErrorQueue()
    const fresh = socket.takeError()
    const pending = this.earlyErrno || fresh
    this.earlyErrno = 0
    if (!queued.length && !pending) return false
    this.goDown(pending || queued[0].errno, queued)
    return true
  }

  /** The errors queued on the socket, those read before their turn first. */
  private readErrorQueue(): QueuedError[] {
    return [...this.earlyErrors.splice(0), ...this.socket!.readErrorQueue()]
  }

  /** The index of the earliest message in the window an ICMP error names, or the window's length. */
  private earliestRefused(errors: QueuedError[]): number {
    let earliest = this.window.length
    for (const error of errors) {
      for (let i = this.windowHead; i < earliest; i++) {
        if (names(error, this.window[i].message)) {
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
    const refused: SpooledMessage[] = this.window.slice(from).map(({message, dataRecords, order}) => ({message, dataRecords, order}))
    for (const r of refused) this.windowBytes -= r.message.length
    this.window = this.window.slice(this.windowHead, from)
    this.windowHead = 0
    const unsent: SpooledMessage[] = []
    for (let i = this.head; i < this.queue.length; i++) unsent.push({message: this.queue[i], dataRecords: this.queueRecords[i], order: this.queueOrders[i]})
    this.resetQueue()
    this.stopPacer()
    // The templates a replay had yet to send: the next one sends them again.
    for (const m of this.front.splice(0)) releaseMessage(m)
    const wasDown = this.down
    this.down = true
    this.probeAt = undefined
    this.probing = undefined
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
    if (!this.socket || this.moving) return
    if (!this.down) {
      this.flush()
      if (!this.down) this.checkErrors()
      if (!this.down && this.isBacklogged) this.schedulePacer()
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
    this.earlyErrors = []
    this.earlyErrno = 0
    const first = this.spool.shift()
    if (!first) {
      this.down = false
      return
    }
    const preamble = this.events.preamble?.(first.message.readUInt32BE(12), first.message.readUInt32BE(8)) ?? []
    const batch = [...preamble, first.message]
    const {sent, errno} = socket.sendMany(batch, 0, batch.length)
    if (sent === batch.length) {
      this.probing = {...first, at: this.now()}
      this.remember(this.probing)
      this.probeAt = this.now()
      return
    }
    // Refused at once (the last probe's error was still pending, or no route): still down.
    this.toSpool([first], true)
    this.probeAt = undefined
    if (errno && !retryable(errno)) this.sendErrors++
  }

  /** The probe arrived: the spool goes out in order, paced, after the templates of each domain in it. */
  private resume(): void {
    this.down = false
    this.probeAt = undefined
    this.probing = undefined
    for (const [domain, sequence] of this.spool.firstSequences()) this.front.push(...(this.events.preamble?.(domain, sequence) ?? []))
    this.events.onResume?.(this.spool.length)
    this.replaying = true
    // The collector's buffer had the probe's time to empty: a whole burst may go at once.
    this.tokens = this.burstBytes
    this.tokensAt = this.paceClock()
    this.replay()
  }

  private schedulePacer(delayMs = 0): void {
    if (this.pacer) return
    this.pacer = setTimeout(() => {
      this.pacer = undefined
      this.replay()
    }, delayMs)
  }

  private stopPacer(): void {
    if (this.pacer) clearTimeout(this.pacer)
    this.pacer = undefined
  }

  /**
   * Sends the next part of the backlog (or of the paced export), the templates first, as far as
   * the token bucket allows (paceBytesPerSecond, bursts of at most burstBytes), and comes back
   * for the rest.
   */
  private replay(): void {
    const socket = this.socket
    if (!socket || this.down || this.moving || this.pacer) return
    this.checkErrors()
    if (this.down) return
    if (this.templatesDropped) {
      this.templatesDropped = false
      if (!this.front.length) for (const [domain, sequence] of this.spool.firstSequences()) this.front.push(...(this.events.preamble?.(domain, sequence) ?? []))
    }
    const now = this.paceClock()
    const rate = this.paceBytesPerSecond
    const burst = this.burstBytes
    this.tokens = Math.min(burst, this.tokens + ((now - this.tokensAt) * rate) / 1000)
    this.tokensAt = now
    // What fits the tokens; the first message goes once a burst's worth is there even if it is
    // larger (the bucket then owes it).
    const batch: Buffer[] = []
    let bytes = 0
    const fromFront = Math.min(this.front.length, MAX_BATCH)
    for (let i = 0; i < fromFront; i++) {
      const m = this.front[i]
      if (batch.length && bytes + m.length > this.tokens) break
      if (!batch.length && m.length > this.tokens && this.tokens < burst) break
      batch.push(m)
      bytes += m.length
    }
    const fronts = batch.length
    if (fronts === this.front.length) {
      for (let i = 0; batch.length < MAX_BATCH; i++) {
        const item = this.spool.at(i)
        if (!item) break
        const m = item.message
        if (batch.length && bytes + m.length > this.tokens) break
        if (!batch.length && m.length > this.tokens && this.tokens < burst) break
        batch.push(m)
        bytes += m.length
      }
    }
    if (batch.length) {
      const {sent, errno} = socket.sendMany(batch, 0, batch.length)
      const at = this.now()
      const sentFronts = Math.min(sent, fronts)
      for (const m of this.front.splice(0, sentFronts)) {
        this.tokens -= m.length
        releaseMessage(m)
      }
      for (let i = sentFronts; i < sent; i++) {
        const item = this.spool.shift()!
        this.tokens -= item.message.length
        this.window.push({...item, at})
        this.windowBytes += item.message.length
      }
      if (sent > sentFronts) {
        this.account()
        this.confirmLater()
      }
      if (errno && !retryable(errno)) {
        if (errno !== EMSGSIZE) {
          this.goDown(errno, this.readErrorQueue())
          return
        }
        // Too large for any route: it can never leave.
        const m = sent < fronts ? this.front.shift()! : this.spool.shift()!.message
        releaseMessage(m)
        this.account()
        this.sendErrors++
        this.events.onError?.(socketError(errno, 'send'))
      } else if (errno) {
        this.schedulePacer(RETRY_MS)
        return
      }
    }
    const next = this.front[0] ?? this.spool.peek()?.message
    if (!next) {
      // The backlog is out: the normal path (or the live pace) takes over.
      this.replaying = false
      return
    }
    // Back when the bucket holds half a burst (or the next message), not at every millisecond.
    const wanted = Math.min(burst, Math.max(burst / 2, next.length))
    this.schedulePacer(Math.max(1, Math.ceil(((wanted - this.tokens) * 1000) / rate)))
  }

  /**
   * The same collector at another address or from another source (a config reload): what the
   * old address did not take goes to the new one, in order and with its own sequence numbers.
   * Meanwhile new messages wait in the spool; messages sent in the last CONFIRM_MS get that
   * long to be refused (those refused are sent again, to the new address; the rest arrived).
   * Then the socket is replaced (the cookie changes), and the new address gets the spool once a
   * probe gets through. Throws if the new address cannot be opened: the spool waits for open().
   */
  async moveTo(target: CollectorTarget): Promise<void> {
    const generation = this.generation
    this.moving = true
    this.stopPacer()
    try {
      if (this.socket) await this.settle(generation)
      if (generation !== this.generation) return
      let next: UdpSocket | undefined
      let failure: unknown
      try {
        next = await connect(target)
      } catch (error) {
        failure = error
      }
      if (generation !== this.generation) {
        next?.close()
        return
      }
      this.socket?.close()
      this.socket = next
      this.current = target
      this.probeAt = undefined
      this.probing = undefined
      for (const m of this.front.splice(0)) releaseMessage(m)
      // Nothing was sent to the new address yet: the spool goes once a probe gets through.
      this.down = this.spool.length > 0
      if (failure) throw failure
    } finally {
      this.moving = false
    }
  }

  /**
   * Stops sending (a collector dropped from the config): sends what is queued, gives the
   * messages sent in the last CONFIRM_MS that long to be refused (back to the spool), and
   * closes. What the spool then holds never leaves: take it with discard().
   */
  async retire(): Promise<void> {
    const generation = this.generation
    this.flush()
    this.moving = true
    this.stopPacer()
    if (this.socket) await this.settle(generation)
    this.close()
  }

  /** The unsent go to the spool; after CONFIRM_MS, what the socket's errors name too, and the rest of the window arrived. */
  private async settle(generation: number): Promise<void> {
    if (this.head < this.queue.length) {
      const unsent: SpooledMessage[] = []
      for (let i = this.head; i < this.queue.length; i++) unsent.push({message: this.queue[i], dataRecords: this.queueRecords[i], order: this.queueOrders[i]})
      this.resetQueue()
      this.toSpool(unsent, true)
    }
    if (this.windowHead < this.window.length) await sleep(CONFIRM_MS + CONFIRM_SLACK_MS)
    if (generation !== this.generation || !this.socket) return
    // Every message in the window was sent CONFIRM_MS ago or more (the clock given may stand
    // still): those an error names go to the spool, with all after them; the rest arrived.
    this.takeErrors()
    this.confirmBefore(Infinity)
  }

  /**
   * Takes what the spool holds (it will never be sent: the collector was dropped, or the daemon
   * stops), a probe still in flight to a collector that is down first.
   */
  discard(): SpooledMessage[] {
    const all: SpooledMessage[] = []
    const probe = this.probing
    if (probe && this.window.length > this.windowHead && this.window[this.window.length - 1] === probe) {
      this.window.pop()
      this.windowBytes -= probe.message.length
      all.push(probe)
    }
    this.probing = undefined
    this.probeAt = undefined
    all.push(...this.spool.takeAll())
    this.account()
    for (const item of all) releaseMessage(item.message)
    return all
  }

  /** Resolves when every message handed to the transport has left or is spooled. */
  flushed(): Promise<void> {
    this.flush()
    if (this.head >= this.queue.length || this.down) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  close(): void {
    this.generation++
    if (this.retry) clearTimeout(this.retry)
    this.retry = undefined
    if (this.confirmTimer) clearTimeout(this.confirmTimer)
    this.confirmTimer = undefined
    this.stopPacer()
    this.socket?.close()
    this.socket = undefined
    this.resetQueue()
    // The window's messages are let go of; the spool stays (its stats), outside the budget.
    this.windowBytes = 0
    this.dropWindowBefore(this.window.length)
    if (this.inBudget) {
      this.budget!.release(this.told)
      this.budget!.leave(this)
      this.inBudget = false
      this.told = 0
    }
  }
}
