/**
 * The messages a transport sent in the last CONFIRM_MS, oldest first: a collector that is down
 * says so only through ICMP errors, each naming the datagram refused, so a sent message is kept
 * until no error can name it any more (then it counts as arrived and is let go of). The messages
 * an error names, and every one sent after them, go back to the spool.
 */
import type {QueuedError} from '../../sys/udp-socket.js'
import {releaseMessage} from '../wire/message.js'
import {errorNames} from './collector-socket.js'
import type {SpooledMessage} from './spool.js'

/** A message sent at `at` (the transport's clock, ms). */
export interface SentMessage extends SpooledMessage {
  at: number
}

/** What a slot holds once its message counts as arrived. */
const RELEASED: SentMessage = {message: Buffer.alloc(0), dataRecords: 0, order: 0, at: 0}

export class SentWindow {
  /** Oldest first, from `head` (an index, so that letting go of the oldest is O(1)). */
  private items: SentMessage[] = []
  private head = 0
  /** The bytes of the messages held. */
  bytes = 0

  /** The messages held. */
  get length(): number {
    return this.items.length - this.head
  }

  get oldest(): SentMessage | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined
  }

  push(sent: SentMessage): void {
    this.items.push(sent)
    this.bytes += sent.message.length
  }

  /** Lets go of the oldest message (it arrived, or was dropped: the caller has counted it). */
  dropOldest(): void {
    if (this.head >= this.items.length) return
    this.bytes -= this.items[this.head].message.length
    this.dropBefore(this.head + 1)
  }

  /** The messages sent at or before `at` arrived and are let go of; returns whether there were any. */
  confirmBefore(at: number): boolean {
    let n = this.head
    while (n < this.items.length && this.items[n].at <= at) this.bytes -= this.items[n++].message.length
    if (n === this.head) return false
    this.dropBefore(n)
    return true
  }

  /**
   * Takes out the earliest message one of `errors` names and every message sent after it (the
   * collector refused them; they are not let go of: they go back to the spool). Those before it
   * stay.
   */
  takeRefused(errors: QueuedError[]): SpooledMessage[] {
    const from = this.earliestNamed(errors)
    const refused: SpooledMessage[] = this.items.slice(from).map(({message, dataRecords, order}) => ({message, dataRecords, order}))
    for (const r of refused) this.bytes -= r.message.length
    this.items = this.items.slice(this.head, from)
    this.head = 0
    return refused
  }

  /** Takes out the newest message if it is `sent` (a probe in flight), without letting go of it; returns whether it was. */
  takeNewest(sent: SentMessage): boolean {
    if (this.head >= this.items.length || this.items[this.items.length - 1] !== sent) return false
    this.items.pop()
    this.bytes -= sent.message.length
    return true
  }

  /** Lets go of every message (the transport closes). */
  clear(): void {
    this.bytes = 0
    this.dropBefore(this.items.length)
  }

  /** The index of the earliest message an error names, or the end. */
  private earliestNamed(errors: QueuedError[]): number {
    let earliest = this.items.length
    for (const error of errors) {
      for (let i = this.head; i < earliest; i++) {
        if (errorNames(error, this.items[i].message)) {
          earliest = i
          break
        }
      }
    }
    return earliest
  }

  /** Forgets the messages before index `head` (the caller has taken their bytes off `bytes`). */
  private dropBefore(head: number): void {
    // Let go of them now: the array keeps its slots until it is compacted, and a slot still
    // holding a message would keep its memory (up to the window's whole limit again).
    for (let i = this.head; i < head; i++) {
      releaseMessage(this.items[i].message)
      this.items[i] = RELEASED
    }
    this.head = head
    // Compact now and then, not at every message: shifting a long array is O(length).
    if (head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (head >= 4096 && head * 2 >= this.items.length) {
      this.items = this.items.slice(head)
      this.head = 0
    }
  }
}
