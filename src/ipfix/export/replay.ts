/**
 * The way out of a transport's spool while its collector answers: a backlog after an outage or a
 * move, no faster than replayBytesPerSecond, or every message when the live export is paced
 * (sendBytesPerSecond). The spool leaves in order, with the messages' own sequence numbers, after
 * the templates of each domain in it, in the pacer's bursts; what is exported meanwhile joins the
 * back of the spool, so nothing overtakes what waits.
 */
import {EMSGSIZE, MAX_BATCH, type UdpSocket} from '../../sys/udp-socket.js'
import {MESSAGE_HEADER_LENGTH, OPTIONS_TEMPLATE_SET_ID, releaseMessage, TEMPLATE_SET_ID} from '../wire/message.js'
import {retryable} from './collector-socket.js'
import type {HeldMessages} from './held-messages.js'
import {Pacer, PaceRates} from './pacer.js'
import type {CollectorTarget} from './target.js'

/** How soon a send the socket's buffer could not take is tried again. */
export const RETRY_MS = 1

/** Whether a message holds template sets (its first set is a template or options template set). */
export function carriesTemplates(message: Buffer): boolean {
  if (message.length < MESSAGE_HEADER_LENGTH + 2) return false
  const setId = message.readUInt16BE(MESSAGE_HEADER_LENGTH)
  return setId === TEMPLATE_SET_ID || setId === OPTIONS_TEMPLATE_SET_ID
}

/** What a replay needs of its transport. */
export interface ReplayLink {
  /** The collector as it is now (a reload may change its rates). */
  target(): CollectorTarget
  /** The socket when the collector may be sent to now (open, answering, not moving; its errors read first), or undefined. */
  readySocket(): UdpSocket | undefined
  /** Template messages for `domain` headed with `sequence`. */
  preamble(domain: number, sequence: number): Buffer[]
  /** Spooled messages left: they are in the window now. */
  sent(): void
  /** A send failed with `errno`, for good: the collector is down. */
  refused(errno: number): void
  /** A message can never leave (`errno`: EMSGSIZE): it was let go of. */
  unsendable(errno: number): void
}

export interface ReplayOptions {
  replayBytesPerSecond: number
  sendBytesPerSecond: number
  /** A monotonic clock in ms for the pace. */
  paceClock: () => number
  /** The transport's clock (ms), which sent messages are stamped with. */
  now: () => number
}

export class SpoolReplay {
  readonly rates: PaceRates
  /** The templates sent first. */
  private readonly front: Buffer[] = []
  /** A backlog from an outage or a move is going out (replayBytesPerSecond paces it), since start() until the spool is empty. */
  private replaying = false
  /** A message with templates was dropped from the spool: the next message that leaves goes after its domain's templates. */
  private templatesDropped = false
  /** The token bucket and timer of the turns. */
  private readonly pacer: Pacer
  private readonly now: () => number

  constructor(
    private readonly held: HeldMessages,
    private readonly link: ReplayLink,
    options: ReplayOptions,
  ) {
    this.rates = new PaceRates(options.replayBytesPerSecond, options.sendBytesPerSecond)
    this.pacer = new Pacer(options.paceClock, () => this.turn())
    this.now = options.now
  }

  /** Whether templates wait to go before the spool. */
  get waiting(): boolean {
    return this.front.length > 0
  }

  /** Whether every message goes through the spool and the pacer, not only a backlog. */
  get paced(): boolean {
    return this.rates.sendFor(this.link.target()) > 0
  }

  /** The collector answers again: the spool goes, after the templates of each domain in it, with a whole burst at once (its buffer had the probe's time to empty). */
  start(): void {
    this.queueTemplates()
    this.replaying = true
    this.pacer.fill(this.rates.bucketRate(this.link.target(), this.replaying))
    this.turn()
  }

  /** A turn as soon as can be (one at a time). */
  schedule(): void {
    this.pacer.schedule()
  }

  /** No more turns until the next schedule() or start(). */
  stop(): void {
    this.pacer.stop()
  }

  /** Lets go of the templates that were to go first (the collector went down or moves: the next replay sends them again). */
  forgetTemplates(): void {
    for (const m of this.front.splice(0)) releaseMessage(m)
  }

  /** A spooled message with templates was dropped while the collector answers: the next message that leaves goes after its domain's templates. */
  templatesLost(): void {
    this.templatesDropped = true
  }

  private queueTemplates(): void {
    for (const [domain, sequence] of this.held.spool.firstSequences()) this.front.push(...this.link.preamble(domain, sequence))
  }

  /** Sends the next part, the templates first, as far as the token bucket allows, and comes back for the rest. */
  private turn(): void {
    if (this.pacer.scheduled) return
    const socket = this.link.readySocket()
    if (!socket) return
    if (this.templatesDropped) {
      this.templatesDropped = false
      if (!this.front.length) this.queueTemplates()
    }
    const spool = this.held.spool
    this.pacer.refill(this.rates.bucketRate(this.link.target(), this.replaying))
    const batch: Buffer[] = []
    let bytes = 0
    const fromFront = Math.min(this.front.length, MAX_BATCH)
    for (let i = 0; i < fromFront; i++) {
      const m = this.front[i]
      if (!this.pacer.admits(bytes, m.length, batch.length === 0)) break
      batch.push(m)
      bytes += m.length
    }
    const fronts = batch.length
    if (fronts === this.front.length) {
      for (let i = 0; batch.length < MAX_BATCH; i++) {
        const m = spool.at(i)?.message
        if (!m || !this.pacer.admits(bytes, m.length, batch.length === 0)) break
        batch.push(m)
        bytes += m.length
      }
    }
    if (batch.length) {
      const {sent, errno} = socket.sendMany(batch, 0, batch.length)
      const at = this.now()
      const sentFronts = Math.min(sent, fronts)
      for (const m of this.front.splice(0, sentFronts)) {
        this.pacer.spend(m.length)
        releaseMessage(m)
      }
      if (sent > sentFronts) {
        this.pacer.spend(this.held.sentFromSpool(sent - sentFronts, at))
        this.link.sent()
      }
      if (errno && !retryable(errno)) {
        if (errno !== EMSGSIZE) return this.link.refused(errno)
        // Too large for any route: it can never leave.
        releaseMessage(sent < fronts ? this.front.shift()! : spool.shift()!.message)
        this.held.account()
        this.link.unsendable(errno)
      } else if (errno) {
        this.pacer.schedule(RETRY_MS)
        return
      }
    }
    const next = this.front.length ? this.front[0] : spool.peek()?.message
    if (!next) {
      // The backlog is out: the normal path (or the live pace) takes over.
      this.replaying = false
      return
    }
    this.pacer.scheduleFor(next.length)
  }
}
