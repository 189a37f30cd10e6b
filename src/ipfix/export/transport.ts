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
 *
 * Its parts: the queue of what leaves at the next flush (send-queue.ts), the socket and its
 * errors (collector-socket.ts), the spool and the window of sent messages with their bounds
 * (held-messages.ts, sent-window.ts), and the replay with its pacing (replay.ts, pacer.ts).
 */
import {performance} from 'node:perf_hooks'
import {setTimeout as sleep} from 'node:timers/promises'

import {EMSGSIZE, socketError, type QueuedError, type UdpSocket} from '../../sys/udp-socket.js'
import {connectCollector, retryable, SocketErrors} from './collector-socket.js'
import {HeldMessages} from './held-messages.js'
import type {MessageTransport, TransportEvents} from './message-transport.js'
import {DEFAULT_REPLAY_BYTES_PER_SECOND} from './pacer.js'
import {carriesTemplates, RETRY_MS, SpoolReplay} from './replay.js'
import {SendQueue} from './send-queue.js'
import {nextOrder, type MessageSpool, type SpoolBudget, type SpooledMessage} from './spool.js'
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

const DEFAULT_SPOOL_BYTES = 32 << 20
/**
 * How long a sent message may still be named by an ICMP error: the round trip to the
 * collector's host and its ICMP, with room to spare. A message older than this, with no error
 * seen at the check, arrived.
 */
export const CONFIRM_MS = 1000
/** How long after CONFIRM_MS the window is looked at between drains (timers may fire a little early). */
const CONFIRM_SLACK_MS = 50

export class UdpTransport implements MessageTransport {
  private current: CollectorTarget
  private events: TransportEvents = {}
  private readonly now: () => number
  private socket?: UdpSocket
  private opening?: Promise<void>
  /** What leaves at the next flush, while nothing waits before it. */
  private readonly queue = new SendQueue()
  /** The spool and the window. */
  private readonly held: HeldMessages
  private readonly errors = new SocketErrors()
  /** The spool's way out while the collector answers, paced. */
  private readonly replay: SpoolReplay
  /** The collector refused: new messages go to the spool. */
  private down = false
  /** The collector changes address (moveTo): new messages wait in the spool. */
  private moving = false
  /** When the probe (the oldest spooled message) left, while down. */
  private probeAt?: number
  private retry?: NodeJS.Timeout
  /** Looks at the window again once its messages can be confirmed, so that they need not wait for the next drain. */
  private confirmTimer?: NodeJS.Timeout
  /** Counts close() calls: a move under way gives up when the transport was closed meanwhile. */
  private generation = 0
  sendErrors = 0

  constructor(target: CollectorTarget, options: TransportOptions = {}) {
    this.current = target
    this.now = options.now ?? Date.now
    this.held = new HeldMessages(options.spoolBytes ?? DEFAULT_SPOOL_BYTES, options.budget, {
      refused: (message) => !!this.socket && this.errors.name(this.socket, message),
      dropped: (item, spooled) => {
        // Templates dropped while the collector answers (a paced export, or a replay that fell
        // behind) go again before the next message; a collector that is down gets them anyway.
        if (spooled && !this.down && carriesTemplates(item.message)) this.replay.templatesLost()
        this.events.onDrop?.([item])
      },
    })
    this.replay = new SpoolReplay(
      this.held,
      {
        target: () => this.current,
        readySocket: () => {
          if (!this.socket || this.down || this.moving || !this.checkErrors()) return undefined
          return this.socket
        },
        preamble: (domain, sequence) => this.events.preamble?.(domain, sequence) ?? [],
        sent: () => this.confirmLater(),
        refused: (errno) => this.goDown(errno, this.errors.queued(this.socket!)),
        unsendable: (errno) => {
          this.sendErrors++
          this.events.onError?.(socketError(errno, 'send'))
        },
      },
      {
        replayBytesPerSecond: options.replayBytesPerSecond ?? DEFAULT_REPLAY_BYTES_PER_SECOND,
        sendBytesPerSecond: options.sendBytesPerSecond ?? 0,
        paceClock: options.paceClock ?? (() => performance.now()),
        now: this.now,
      },
    )
  }

  get target(): CollectorTarget {
    return this.current
  }

  /** Where what becomes of the messages held is told (createExporter: the session). */
  subscribe(events: TransportEvents): void {
    this.events = events
  }

  /** What waits: while the collector is down, and while a replay is under way. */
  get spool(): MessageSpool {
    return this.held.spool
  }

  /** Opens the socket; safe to call again after a failure (a hostname that did not resolve). */
  async open(): Promise<void> {
    if (this.socket) return
    this.opening ??= this.doOpen().finally(() => (this.opening = undefined))
    return this.opening
  }

  private async doOpen(): Promise<void> {
    const socket = await connectCollector(this.current)
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
    return this.down || this.moving || this.spool.length > 0 || this.replay.waiting
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
    this.held.setLimit(bytes)
  }

  /** New default rates, for a target that has none of its own (config reload). */
  setDefaultRates(rates: {replayBytesPerSecond?: number; sendBytesPerSecond?: number}): void {
    this.replay.rates.setDefaults(rates)
  }

  /** Queues one finished message; it leaves at the next flush (or waits in the spool). */
  send(message: Buffer, dataRecords = 0): void {
    if (!this.socket) return
    if (this.isBacklogged || this.replay.paced) {
      // Behind a backlog (or paced): in the spool, after everything that waits.
      this.held.toSpool([{message, dataRecords, order: nextOrder()}])
      if (!this.down && !this.moving) this.replay.schedule()
    } else {
      this.queue.push(message, dataRecords)
    }
  }

  /** Sends everything queued, in order. */
  flush(): void {
    const socket = this.socket
    if (!socket) return
    if (this.queue.pending && !this.down) this.checkErrors()
    while (this.queue.pending && !this.down) {
      const {sent, errno} = this.queue.sendSome(socket, this.now)
      for (const m of sent) {
        this.held.remember(m)
        this.confirmLater()
      }
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
        this.queue.dropNext()
        this.sendErrors++
        this.events.onError?.(socketError(errno, 'send'))
        continue
      }
      // The message the error came back on did not leave.
      this.goDown(errno, this.errors.queued(socket))
    }
    this.queue.reset()
  }

  /**
   * Between drains nothing else would look at the window, and it would hold up to spoolBytes
   * of messages until the next one: check it once they are old enough to count as arrived.
   */
  private confirmLater(): void {
    if (this.confirmTimer || this.held.window.length === 0) return
    this.confirmTimer = setTimeout(() => {
      this.confirmTimer = undefined
      if (!this.socket || this.down) return
      this.checkErrors()
      this.confirmLater()
    }, CONFIRM_MS + CONFIRM_SLACK_MS)
    this.confirmTimer.unref()
  }

  /**
   * Reads the socket's errors. None: what was sent more than CONFIRM_MS ago arrived. Some: the
   * collector is down, from the earliest message an error names. Returns whether it still answers.
   */
  private checkErrors(): boolean {
    if (this.takeErrors()) return false
    this.held.confirmBefore(this.now() - CONFIRM_MS)
    return true
  }

  /** Reads the socket's errors; if any, the collector is down (from the message they name). */
  private takeErrors(): boolean {
    const {queued, errno} = this.errors.take(this.socket!)
    if (!queued.length && !errno) return false
    this.goDown(errno || queued[0].errno, queued)
    return true
  }

  /** The collector refused: the refused messages, those after them and the unsent go to the spool. */
  private goDown(errno: number, errors: QueuedError[]): void {
    const refused = this.held.window.takeRefused(errors)
    const unsent = this.queue.takeUnsent()
    this.replay.stop()
    // The templates a replay had yet to send: the next one sends them again.
    this.replay.forgetTemplates()
    const wasDown = this.down
    this.down = true
    this.probeAt = undefined
    this.held.probing = undefined
    this.held.toSpool([...refused, ...unsent], true)
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
      if (this.isDown || !this.checkErrors()) return
      if (this.isBacklogged) this.replay.schedule()
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
    this.errors.clear(socket)
    const first = this.spool.shift()
    if (!first) {
      this.down = false
      return
    }
    const preamble = this.events.preamble?.(first.message.readUInt32BE(12), first.message.readUInt32BE(8)) ?? []
    const batch = [...preamble, first.message]
    const {sent, errno} = socket.sendMany(batch, 0, batch.length)
    if (sent === batch.length) {
      this.held.probing = {...first, at: this.now()}
      this.held.remember(this.held.probing)
      this.confirmLater()
      this.probeAt = this.now()
      return
    }
    // Refused at once (the last probe's error was still pending, or no route): still down.
    this.held.toSpool([first], true)
    this.probeAt = undefined
    if (errno && !retryable(errno)) this.sendErrors++
  }

  /** The probe arrived: the spool goes out in order, paced, after the templates of each domain in it. */
  private resume(): void {
    this.down = false
    this.probeAt = undefined
    this.held.probing = undefined
    this.events.onResume?.(this.spool.length)
    this.replay.start()
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
    this.replay.stop()
    try {
      if (this.socket) await this.settle(generation)
      if (generation !== this.generation) return
      let next: UdpSocket | undefined
      let failure: Error | undefined
      try {
        next = await connectCollector(target)
      } catch (error) {
        failure = error as Error
      }
      if (generation !== this.generation) {
        next?.close()
        return
      }
      this.socket?.close()
      this.socket = next
      this.current = target
      this.probeAt = undefined
      this.held.probing = undefined
      this.replay.forgetTemplates()
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
    this.replay.stop()
    if (this.socket) await this.settle(generation)
    this.close()
  }

  /** The unsent go to the spool; after CONFIRM_MS, what the socket's errors name too, and the rest of the window arrived. */
  private async settle(generation: number): Promise<void> {
    if (this.queue.pending) this.held.toSpool(this.queue.takeUnsent(), true)
    if (this.held.window.length > 0) await sleep(CONFIRM_MS + CONFIRM_SLACK_MS)
    if (generation !== this.generation || !this.socket) return
    // Every message in the window was sent CONFIRM_MS ago or more (the clock given may stand
    // still): those an error names go to the spool, with all after them; the rest arrived.
    this.takeErrors()
    this.held.confirmBefore(Infinity)
  }

  /**
   * Takes what the spool holds (it will never be sent: the collector was dropped, or the daemon
   * stops), a probe still in flight to a collector that is down first.
   */
  discard(): SpooledMessage[] {
    this.probeAt = undefined
    return this.held.discard()
  }

  /** Resolves when every message handed to the transport has left or is spooled. */
  flushed(): Promise<void> {
    this.flush()
    if (!this.queue.pending || this.down) return Promise.resolve()
    return this.queue.emptied()
  }

  close(): void {
    this.generation++
    if (this.retry) clearTimeout(this.retry)
    this.retry = undefined
    if (this.confirmTimer) clearTimeout(this.confirmTimer)
    this.confirmTimer = undefined
    this.replay.stop()
    this.socket?.close()
    this.socket = undefined
    this.queue.reset()
    this.held.close()
  }
}
