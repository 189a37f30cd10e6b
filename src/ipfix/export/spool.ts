/**
 * What a collector that is down did not take, and what a collector that came back has yet to be
 * sent: its messages, in order. The transport bounds it (spoolBytes per collector, and one
 * SpoolBudget for all of them); the oldest go first, and the collector sees the data records of
 * a dropped message as a gap in the sequence numbers (the messages kept keep their numbering).
 */

export interface SpooledMessage {
  message: Buffer
  /** Data records in it (what its sequence number counts). */
  dataRecords: number
  /** When it was handed to a transport, as an order over all transports: the lower, the older. */
  order: number
}

let handedOver = 0

/** The next number of the order messages are handed to transports in (one count for the process: a budget compares them across collectors). */
export function nextOrder(): number {
  return ++handedOver
}

export class MessageSpool {
  private items: SpooledMessage[] = []
  private head = 0
  bytes = 0

  get length(): number {
    return this.items.length - this.head
  }

  push(item: SpooledMessage): void {
    this.items.push(item)
    this.bytes += item.message.length
  }

  /** Puts messages back in front (in their order): those a probe or a replay saw refused. */
  unshift(front: SpooledMessage[]): void {
    if (!front.length) return
    const rest = this.items.slice(this.head)
    this.items = [...front, ...rest]
    this.head = 0
    for (const item of front) this.bytes += item.message.length
  }

  peek(): SpooledMessage | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined
  }

  /** The i-th message from the front, without taking it. */
  at(i: number): SpooledMessage | undefined {
    return this.head + i < this.items.length ? this.items[this.head + i] : undefined
  }

  shift(): SpooledMessage | undefined {
    if (this.head >= this.items.length) return undefined
    const item = this.items[this.head]
    this.items[this.head++] = undefined as unknown as SpooledMessage
    this.bytes -= item.message.length
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }

  takeAll(): SpooledMessage[] {
    const all = this.items.slice(this.head)
    this.items = []
    this.head = 0
    this.bytes = 0
    return all
  }

  /** Each observation domain in the spool with the sequence number of its first message. */
  firstSequences(): Map<number, number> {
    const out = new Map<number, number>()
    for (let i = this.head; i < this.items.length; i++) {
      const m = this.items[i].message
      const domain = m.readUInt32BE(12)
      if (!out.has(domain)) out.set(domain, m.readUInt32BE(8))
    }
    return out
  }
}

/** A transport as a SpoolBudget sees it: the messages it holds (spooled, or sent and not yet confirmed). */
export interface MessageHolder {
  /** The order number of the oldest message it holds (nextOrder()), or undefined when it holds none. */
  oldestOrder(): number | undefined
  /** Lets go of its oldest message: a spooled one is dropped and counted, a sent one counts as arrived. */
  evictOldest(): void
}

/**
 * One bound on the messages every collector's transport holds together: their spools and their
 * windows of sent messages. Past it, the oldest message held by any of them goes (a spooled one
 * is dropped and counted by its own collector), so that many collectors down at once cannot take
 * the daemon's memory, and those down the longest lose first.
 */
export class SpoolBudget {
  limitBytes: number
  /** Memory of the messages held by every member (their bytes and their bookkeeping). */
  bytes = 0
  private readonly members = new Set<MessageHolder>()

  constructor(limitBytes: number) {
    this.limitBytes = limitBytes
  }

  join(member: MessageHolder): void {
    this.members.add(member)
  }

  /** The member holds nothing any more (it told the budget so through `release`). */
  leave(member: MessageHolder): void {
    this.members.delete(member)
  }

  hold(bytes: number): void {
    this.bytes += bytes
  }

  release(bytes: number): void {
    this.bytes -= bytes
  }

  /** A new bound (config reload); enforced at once. */
  setLimit(limitBytes: number): void {
    this.limitBytes = limitBytes
    this.enforce()
  }

  /** Lets go of the oldest messages held, whoever holds them, until the bound is kept. */
  enforce(): void {
    while (this.bytes > this.limitBytes) {
      let oldest: MessageHolder | undefined
      let oldestOrder = Infinity
      for (const m of this.members) {
        const o = m.oldestOrder()
        if (o !== undefined && o < oldestOrder) {
          oldest = m
          oldestOrder = o
        }
      }
      if (!oldest) return
      oldest.evictOldest()
    }
  }
}
