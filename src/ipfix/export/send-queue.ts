/**
 * The messages a transport was handed while nothing waits before them: they leave together at
 * the next flush, in as few sendmmsg calls as they need (a full send buffer keeps the rest
 * here, for a retry shortly).
 */
import type {UdpSocket} from '../../sys/udp-socket.js'
import {releaseMessage} from '../wire/message.js'
import type {SentMessage} from './sent-window.js'
import {nextOrder, type SpooledMessage} from './spool.js'

export class SendQueue {
  /** The messages, the data records of each and the order they were handed over in, from `head`. */
  private messages: Buffer[] = []
  private records: number[] = []
  private orders: number[] = []
  private head = 0
  /** Those waiting for the queue to empty (flushed()). */
  private readonly idle: (() => void)[] = []

  /** Whether messages wait to be sent. */
  get pending(): boolean {
    return this.head < this.messages.length
  }

  push(message: Buffer, dataRecords: number): void {
    this.messages.push(message)
    this.records.push(dataRecords)
    this.orders.push(nextOrder())
  }

  /** Sends as many as the socket takes in one call: those sent (at `now()`), and the errno that stopped it (0: none). */
  sendSome(socket: UdpSocket, now: () => number): {sent: SentMessage[]; errno: number} {
    const from = this.head
    const result = socket.sendMany(this.messages, from, this.messages.length)
    const at = now()
    const sent: SentMessage[] = []
    for (let i = from; i < from + result.sent; i++) sent.push({message: this.messages[i], dataRecords: this.records[i], order: this.orders[i], at})
    this.head += result.sent
    return {sent, errno: result.errno}
  }

  /** Lets go of the next message: it can never leave. */
  dropNext(): void {
    releaseMessage(this.messages[this.head])
    this.head++
  }

  /** Takes the messages not sent yet (for the spool), and empties the queue. */
  takeUnsent(): SpooledMessage[] {
    const unsent: SpooledMessage[] = []
    for (let i = this.head; i < this.messages.length; i++) unsent.push({message: this.messages[i], dataRecords: this.records[i], order: this.orders[i]})
    this.reset()
    return unsent
  }

  /** Empties the queue (what was in it was sent, spooled or let go of): flushed() resolves. */
  reset(): void {
    this.messages = []
    this.records = []
    this.orders = []
    this.head = 0
    for (const resolve of this.idle.splice(0)) resolve()
  }

  /** Resolves at the next reset(). */
  emptied(): Promise<void> {
    return new Promise((resolve) => this.idle.push(resolve))
  }
}
