/**
 * What a transport holds for its collector: the spool (what waits: the collector is down, or a
 * replay or the paced export is under way) and the window (what was sent in the last CONFIRM_MS,
 * which an ICMP error could still name). Both are bounded together, per collector (spoolBytes)
 * and, through a SpoolBudget, for every collector at once: the oldest message goes first (a
 * spooled one is dropped and counted, a sent one counts as arrived).
 */
import {releaseMessage} from '../wire/message.js'
import {SentWindow, type SentMessage} from './sent-window.js'
import {MessageSpool, type MessageHolder, type SpoolBudget, type SpooledMessage} from './spool.js'

/**
 * What a held message costs besides its own bytes, as spoolBytes and the budget count it: its
 * Buffer view and its entry, on the heap (156-180 bytes measured, Node 20, after a collection),
 * and up to 7 bytes of alignment in its arena. Without it, a spool of small messages (a quiet
 * router's drains end a few flows each) would take three times its bound.
 */
export const HELD_MESSAGE_OVERHEAD = 176

/** What the held messages ask of their transport when they let go of one. */
export interface EvictionHost {
  /** Whether an error the socket has for us names this sent message (read now, and kept for later). */
  refused(message: Buffer): boolean
  /** A message was dropped: a sent one the collector refused, or a spooled one (`spooled`). */
  dropped(item: SpooledMessage, spooled: boolean): void
}

export class HeldMessages implements MessageHolder {
  /** What waits, in order. */
  readonly spool = new MessageSpool()
  /** What was sent in the last CONFIRM_MS, oldest first. */
  readonly window = new SentWindow()
  /** The probe while it is in the window, its fate unknown. */
  probing?: SentMessage
  /** Memory the spool and the window may take together, as `bytes` counts it. */
  private limitBytes: number
  /** The budget shared with the other collectors, until close(). */
  private budget?: SpoolBudget
  /** The bytes the budget was last told of. */
  private told = 0

  constructor(
    limitBytes: number,
    budget: SpoolBudget | undefined,
    private readonly host: EvictionHost,
  ) {
    this.limitBytes = limitBytes
    this.budget = budget
    budget?.join(this)
  }

  /** The memory of the messages held: their bytes and HELD_MESSAGE_OVERHEAD each. */
  get bytes(): number {
    return this.window.bytes + this.spool.bytes + HELD_MESSAGE_OVERHEAD * (this.window.length + this.spool.length)
  }

  /** A new bound (config reload); enforced at once. */
  setLimit(bytes: number): void {
    this.limitBytes = bytes
    this.keepLimits()
  }

  /** Spools messages: at the back, or back in front (those refused, or not sent yet, in their order). */
  toSpool(items: SpooledMessage[], front = false): void {
    if (front) this.spool.unshift(items)
    else for (const item of items) this.spool.push(item)
    this.account()
    this.keepLimits()
  }

  /** A message that left: in the window until it is confirmed. */
  remember(sent: SentMessage): void {
    this.window.push(sent)
    this.account()
    // Past spoolBytes (or the budget), the oldest count as arrived.
    this.keepLimits()
  }

  /** The first `count` spooled messages left at `at` (a replay): they move to the window. Returns their bytes. */
  sentFromSpool(count: number, at: number): number {
    let bytes = 0
    for (let i = 0; i < count; i++) {
      const item = this.spool.shift()!
      bytes += item.message.length
      this.window.push({...item, at})
    }
    this.account()
    return bytes
  }

  /** The window's messages sent at or before `at` arrived. */
  confirmBefore(at: number): void {
    if (this.window.confirmBefore(at)) this.account()
  }

  /**
   * Takes (and lets go of) what the spool holds, a probe still in flight to a collector that is
   * down first: it will never be sent.
   */
  discard(): SpooledMessage[] {
    const all: SpooledMessage[] = []
    const probe = this.probing
    if (probe && this.window.takeNewest(probe)) all.push(probe)
    this.probing = undefined
    all.push(...this.spool.takeAll())
    this.account()
    for (const item of all) releaseMessage(item.message)
    return all
  }

  /** Tells the budget what is held now. */
  account(): void {
    if (!this.budget) return
    const held = this.bytes
    if (held === this.told) return
    this.budget.hold(held - this.told)
    this.told = held
  }

  /** Keeps the spool and the window within spoolBytes, and all transports within their budget. */
  private keepLimits(): void {
    while (this.bytes > this.limitBytes && this.oldestOrder() !== undefined) this.evictOldest()
    this.budget?.enforce()
  }

  oldestOrder(): number | undefined {
    return this.evictsFromWindow() ? this.window.oldest?.order : this.spool.peek()?.order
  }

  /**
   * Whether the next message to let go of is a sent one. Not a probe while anything is spooled:
   * its fate is unknown until CONFIRM_MS pass (it may be reaching a collector that is back, and
   * counting it as dropped would say it was lost when it arrived); it stays, one message past
   * the bound at most, and if it is refused it goes back to the spool, where its turn comes.
   */
  private evictsFromWindow(): boolean {
    const oldest = this.window.oldest
    if (!oldest) return false
    return oldest !== this.probing || this.spool.length === 0
  }

  /**
   * Lets go of the oldest message held: sent ones before spooled ones (dropped and counted). A
   * sent one counts as arrived, unless an error the socket has for us names it, or it is a probe
   * to a collector that is down with nothing spooled to let go of instead: then it is dropped and
   * counted too.
   */
  evictOldest(): void {
    const oldest = this.window.oldest
    if (oldest && this.evictsFromWindow()) {
      const probe = oldest === this.probing
      const refused = probe || this.host.refused(oldest.message)
      if (probe) this.probing = undefined
      if (refused) this.host.dropped(oldest, false)
      this.window.dropOldest()
    } else {
      const item = this.spool.shift()
      if (!item) return
      this.host.dropped(item, true)
      releaseMessage(item.message)
    }
    this.account()
  }

  /** Lets go of the window (the transport closes); the spool stays (its stats), outside the budget. */
  close(): void {
    this.window.clear()
    if (!this.budget) return
    this.budget.release(this.told)
    this.budget.leave(this)
    this.budget = undefined
    this.told = 0
  }
}
