/**
 * Builds IPFIX messages (RFC 7011 §3) into one buffer of the maximum message size: a 16-byte
 * header, then sets, each with a 4-byte header and its records. The builder never lets a
 * message outgrow the buffer; callers ask whether a record fits before writing it.
 *
 * The wire sizes live here once: the headers, and `templateFits()`, which the config, the
 * exporter and anything else that must know whether a template can ever be sent all ask.
 */
import {FIELD_SPECIFIER_LENGTH, minDataRecordLength, TEMPLATE_RECORD_HEADER_LENGTH, templateRecordSize} from './template.js'

export const IPFIX_VERSION = 10
export const MESSAGE_HEADER_LENGTH = 16
export const SET_HEADER_LENGTH = 4
export const TEMPLATE_SET_ID = 2
export const OPTIONS_TEMPLATE_SET_ID = 3
/** What a message with one set adds around that set's records. */
export const MESSAGE_AND_SET_HEADERS_LENGTH = MESSAGE_HEADER_LENGTH + SET_HEADER_LENGTH

/** A template's field as far as its wire size goes: its length, and an enterprise number if any. */
export interface WireField {
  /** The field length; VARIABLE_LENGTH (65535) counts as its shortest, 1 byte. */
  length: number
  enterpriseNumber?: number
}

/** Whether a data template can be used in messages of a size, and the sizes that decide it. */
export interface TemplateFit {
  fits: boolean
  /** Bytes of its Template Record: 4 of header and 4 per field (8 per enterprise field). */
  templateRecordBytes: number
  /** Bytes of its shortest data record. */
  dataRecordBytes: number
  /** Bytes a message of that size has for one set's records: the size less MESSAGE_AND_SET_HEADERS_LENGTH. */
  room: number
}

/**
 * Whether a data template of `fields` can be announced, and one of its records sent, in a message
 * of at most `maxMessageSize` bytes: each goes in a message of its own at worst, so each must fit
 * there with the message and set headers. A template that does not can never carry a flow.
 */
export function templateFits(fields: readonly WireField[], maxMessageSize: number): TemplateFit {
  const templateRecordBytes = templateRecordSize({fields})
  const dataRecordBytes = minDataRecordLength({fields})
  const room = maxMessageSize - MESSAGE_AND_SET_HEADERS_LENGTH
  return {fits: templateRecordBytes <= room && dataRecordBytes <= room, templateRecordBytes, dataRecordBytes, room}
}

/** The most IANA fields a template can have and still be announced in a message of `maxMessageSize`. */
export function maxTemplateFields(maxMessageSize: number): number {
  return Math.max(0, Math.floor((maxMessageSize - MESSAGE_AND_SET_HEADERS_LENGTH - TEMPLATE_RECORD_HEADER_LENGTH) / FIELD_SPECIFIER_LENGTH))
}

/** The memory messages are carved from, a chunk at a time. */
export const CHUNK_BYTES = 256 * 1024
/**
 * Chunks kept for reuse once every message carved from them is released: about what a
 * transport's window holds at most with the default spool (32 MiB), so that a daemon sending
 * steadily reuses the same memory instead of leaving up to 64 MiB of dead chunks for the garbage
 * collector (it collects memory outside the JS heap only every 64 MiB or so). One store for
 * every builder of the process, not one each: a builder whose collector was down once would
 * otherwise keep its spool's high mark of chunks for good, one such store per collector, past
 * any bound on what the spools hold together.
 */
export const MAX_FREE_CHUNKS = 128
/** Chunks whose messages were all released, for any builder to reuse (all are CHUNK_BYTES). */
const freeChunks: MessageChunk[] = []

/** A chunk messages are carved from, and how many of those messages someone still holds. */
interface MessageChunk {
  memory: Buffer
  held: number
  /** The builder has moved on to another chunk: once nothing is held, this one can be reused. */
  sealed: boolean
  /** A message of it was released twice (a bug): it is never reused, lest a message still held be overwritten. */
  poisoned: boolean
  /**
   * A bit per 8-byte slot where a message starts (messages start 8-byte aligned): set once it is
   * released, so that a second release is seen. Made at the first release: a chunk whose
   * messages are never released (a transport that keeps nothing) costs nothing more.
   */
  released?: Uint8Array
  /** Where it goes for reuse: the shared store (CHUNK_BYTES), or none (a chunk of a larger size). */
  free: MessageChunk[] | undefined
}

/**
 * Where a chunk's memory names its bookkeeping (a message is a view of that memory, so
 * `message.buffer` finds it). A property of the memory rather than a WeakMap: a WeakMap entry per
 * chunk made each message about 0.1 µs slower to build (measured), through the garbage
 * collector's handling of weak entries; the property goes with the memory when it is collected.
 */
const CHUNK = Symbol('flowctl.messageChunk')

type ChunkMemory = ArrayBufferLike & {[CHUNK]?: MessageChunk}

/**
 * Says that nobody holds `message` any longer (it was sent and can no longer be refused, or it
 * was dropped): its memory may be reused for a new message. Call it once per message, and only
 * for messages a MessageBuilder made; for any other buffer it does nothing. A message never
 * released is simply collected.
 */
export function releaseMessage(message: Buffer): void {
  const chunk = (message.buffer as ChunkMemory)[CHUNK]
  if (!chunk || chunk.poisoned) return
  const slot = message.byteOffset >> 3
  const bit = 1 << (slot & 7)
  const released = (chunk.released ??= new Uint8Array(Math.ceil(chunk.memory.length / 64)))
  if (released[slot >> 3] & bit || chunk.held <= 0) {
    chunk.poisoned = true
    return
  }
  released[slot >> 3] |= bit
  if (--chunk.held === 0 && chunk.sealed) giveBack(chunk)
}

/** A chunk nothing is held in any more goes back to the shared store (or, past MAX_FREE_CHUNKS, to the garbage collector). */
function giveBack(chunk: MessageChunk): void {
  if (chunk.poisoned || !chunk.free || chunk.free.length >= MAX_FREE_CHUNKS) return
  chunk.sealed = false
  chunk.released?.fill(0)
  chunk.free.push(chunk)
}

export class MessageBuilder {
  buf: Buffer
  /** Next byte to write. */
  pos = 0
  private setStart = -1
  private readonly maxSize: number

  /** Messages are carved one after another out of large chunks: few allocations, few addresses for sendmmsg. */
  private chunk: MessageChunk
  private chunkPos = 0

  constructor(maxSize: number) {
    this.maxSize = maxSize
    this.chunk = this.newChunk()
    this.buf = this.chunk.memory.subarray(0, maxSize)
  }

  private newChunk(): MessageChunk {
    const reused = this.maxSize <= CHUNK_BYTES ? freeChunks.pop() : undefined
    if (reused) return reused
    // Not from Node's shared pool: each chunk has memory of its own, which identifies it.
    const memory = Buffer.allocUnsafeSlow(Math.max(CHUNK_BYTES, this.maxSize))
    const chunk: MessageChunk = {
      memory,
      held: 0,
      sealed: false,
      poisoned: false,
      released: undefined,
      free: memory.length === CHUNK_BYTES ? freeChunks : undefined,
    }
    ;(memory.buffer as ChunkMemory)[CHUNK] = chunk
    return chunk
  }

  /**
   * Starts a message in memory of its own (the previous ones may still be queued or spooled).
   * The sequence number is that of the first data record in it, as RFC 7011 §3.1 counts.
   */
  begin(exportTimeSeconds: number, sequenceNumber: number, observationDomainId: number): void {
    if (this.chunk.memory.length - this.chunkPos < this.maxSize) {
      const old = this.chunk
      old.sealed = true
      this.chunk = this.newChunk()
      this.chunkPos = 0
      if (old.held === 0) giveBack(old)
    }
    this.buf = this.chunk.memory.subarray(this.chunkPos, this.chunkPos + this.maxSize)
    this.buf.writeUInt16BE(IPFIX_VERSION, 0)
    this.buf.writeUInt32BE(exportTimeSeconds >>> 0, 4)
    this.buf.writeUInt32BE(sequenceNumber >>> 0, 8)
    this.buf.writeUInt32BE(observationDomainId >>> 0, 12)
    this.pos = MESSAGE_HEADER_LENGTH
    this.setStart = -1
  }

  /** Bytes still free in the message. */
  get free(): number {
    return this.maxSize - this.pos
  }

  openSet(setId: number): void {
    if (this.setStart >= 0) this.closeSet()
    this.setStart = this.pos
    this.buf.writeUInt16BE(setId, this.pos)
    this.pos += SET_HEADER_LENGTH
  }

  /** The id of the open set, or -1. */
  get openSetId(): number {
    return this.setStart >= 0 ? this.buf.readUInt16BE(this.setStart) : -1
  }

  closeSet(): void {
    if (this.setStart < 0) return
    // No padding: RFC 7011 §3.3.1 makes it optional, and every record here is whole bytes.
    this.buf.writeUInt16BE(this.pos - this.setStart, this.setStart + 2)
    this.setStart = -1
  }

  /** Closes the message and returns it (a view of this message's own buffer). */
  finish(): Buffer {
    this.closeSet()
    this.buf.writeUInt16BE(this.pos, 2)
    const message = this.buf.subarray(0, this.pos)
    this.chunkPos += (this.pos + 7) & ~7
    this.chunk.held++
    this.pos = 0
    return message
  }
}
