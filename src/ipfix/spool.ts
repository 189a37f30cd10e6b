/**
 * What a collector that is down did not take: its messages, in order, bounded in bytes. When
 * full, the oldest messages are dropped and counted; the numbering of the ones kept is theirs
 * (the collector sees the dropped data records as a gap in the sequence numbers).
 */

export interface SpooledMessage {
  message: Buffer
  /** Data records in it (what its sequence number counts). */
  dataRecords: number
}

export interface SpoolDrop {
  messages: number
  bytes: number
}

export class MessageSpool {
  readonly limitBytes: number
  private items: SpooledMessage[] = []
  private head = 0
  bytes = 0
  droppedMessages = 0
  droppedBytes = 0

  constructor(limitBytes: number) {
    this.limitBytes = limitBytes
  }

  get length(): number {
    return this.items.length - this.head
  }

  /** Appends; returns the messages dropped to make room, oldest first (the message itself if it can never fit). */
  push(item: SpooledMessage): SpooledMessage[] {
    if (item.message.length > this.limitBytes) {
      this.droppedMessages++
      this.droppedBytes += item.message.length
      return [item]
    }
    this.items.push(item)
    this.bytes += item.message.length
    const dropped: SpooledMessage[] = []
    while (this.bytes > this.limitBytes) {
      const old = this.shift()!
      this.droppedMessages++
      this.droppedBytes += old.message.length
      dropped.push(old)
    }
    return dropped
  }

  /** Puts messages back in front (in their order): those a probe or a replay saw refused. */
  unshift(front: SpooledMessage[]): SpooledMessage[] {
    const rest = this.takeAll()
    const dropped: SpooledMessage[] = []
    for (const item of [...front, ...rest]) dropped.push(...this.push(item))
    return dropped
  }

  peek(): SpooledMessage | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined
  }

  shift(): SpooledMessage | undefined {
    if (this.head >= this.items.length) return undefined
    const item = this.items[this.head]
    this.items[this.head++] = undefined as unknown as SpooledMessage
    this.bytes -= item.message.length
    if (this.head > 1024 && this.head * 2 > this.items.length) {
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
