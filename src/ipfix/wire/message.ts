/**
 * Builds IPFIX messages (RFC 7011 §3) into one buffer of the maximum message size: a 16-byte
 * header, then sets, each with a 4-byte header and its records. The builder never lets a
 * message outgrow the buffer; callers ask whether a record fits before writing it.
 *
 * The wire sizes live here once: the headers, and `templateFits()`, which the config, the
 * exporter and anything else that must know whether a template can ever be sent all ask.
 */
import {releaseMemory} from '../../sys/heap.js'
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

/**
 * The size of an arena: a block of memory messages are carved from one after another, 8-byte
 * aligned, and that is reused once every message carved from it is released.
 */
export const ARENA_BYTES = 256 * 1024
/**
 * Arenas kept for reuse once every message carved from them is released: about what a
 * transport's window holds at most with the default spool (32 MiB), so that a daemon sending
 * steadily reuses the same memory instead of leaving up to 64 MiB of dead arenas for the garbage
 * collector (it collects memory outside the JS heap only every 64 MiB or so). One store for
 * every builder of the process, not one each: a builder whose collector was down once would
 * otherwise keep its spool's high mark of arenas for good, one such store per collector, past
 * any bound on what the spools hold together.
 */
export const MAX_FREE_ARENAS = 128
/** Arenas whose messages were all released, for any builder to reuse (all are ARENA_BYTES). */
const freeArenas: MessageArena[] = []
/**
 * How often the store lets go of arenas it has not needed: those that sat in it through a whole
 * period. A daemon exporting steadily takes its arenas back within a drain or two, so the store's
 * low mark over a second stays near 0 and nothing is let go; after a burst (a drain that exported
 * a million flows fills the window, then the store, with 32 MiB) the memory goes back to the
 * garbage collector within two periods instead of staying with the process for good, beside a
 * flow cache that may be growing meanwhile.
 */
const FREE_ARENA_TRIM_MS = 1000
/** The fewest arenas the store held since the last trim: that many sat unused all along. */
let freeLowMark = 0
let trimTimer: NodeJS.Timeout | undefined

/** Arenas kept for reuse now. */
export function freeArenaCount(): number {
  return freeArenas.length
}

/**
 * Lets go of the arenas the store held unused since the last call (its oldest ones), and starts
 * the next period. Runs every FREE_ARENA_TRIM_MS while the store holds any.
 */
export function trimFreeArenas(): void {
  // Their memory goes back now: left to the collector, it would stay until V8's next full
  // collection, beside the arenas (or the flow cache's slabs) allocated meanwhile.
  for (const arena of freeArenas.splice(0, freeLowMark)) releaseMemory(arena.memory.buffer)
  freeLowMark = freeArenas.length
  if (freeArenas.length === 0 && trimTimer) {
    clearInterval(trimTimer)
    trimTimer = undefined
  }
}

/** An arena messages are carved from, and how many of those messages someone still holds. */
interface MessageArena {
  memory: Buffer
  held: number
  /** The builder has moved on to another arena: once nothing is held, this one can be reused. */
  sealed: boolean
  /** A message of it was released twice (a bug): it is never reused, lest a message still held be overwritten. */
  poisoned: boolean
  /**
   * A bit per 8-byte slot where a message starts (messages start 8-byte aligned): set once it is
   * released, so that a second release is seen. Made at the first release: an arena whose
   * messages are never released (a transport that keeps nothing) costs nothing more.
   */
  released?: Uint8Array
  /** Where it goes for reuse: the shared store (ARENA_BYTES), or none (an arena of a larger size). */
  free: MessageArena[] | undefined
}

/**
 * Where an arena's memory names its bookkeeping (a message is a view of that memory, so
 * `message.buffer` finds it). A property of the memory rather than a WeakMap: a WeakMap entry per
 * arena made each message about 0.1 µs slower to build (measured), through the garbage
 * collector's handling of weak entries; the property goes with the memory when it is collected.
 */
const ARENA = Symbol('flowctl.messageArena')

type ArenaMemory = ArrayBufferLike & {[ARENA]?: MessageArena}

/**
 * Says that nobody holds `message` any longer (it was sent and can no longer be refused, or it
 * was dropped): its memory may be reused for a new message. Call it once per message, and only
 * for messages a MessageBuilder made; for any other buffer it does nothing. A message never
 * released is simply collected.
 */
export function releaseMessage(message: Buffer): void {
  const arena = (message.buffer as ArenaMemory)[ARENA]
  if (!arena || arena.poisoned) return
  const slot = message.byteOffset >> 3
  const bit = 1 << (slot & 7)
  const released = (arena.released ??= new Uint8Array(Math.ceil(arena.memory.length / 64)))
  if (released[slot >> 3] & bit || arena.held <= 0) {
    arena.poisoned = true
    return
  }
  released[slot >> 3] |= bit
  if (--arena.held === 0 && arena.sealed) giveBack(arena)
}

/** An arena nothing is held in any more goes back to the shared store (or, past MAX_FREE_ARENAS, to the garbage collector). */
function giveBack(arena: MessageArena): void {
  if (arena.poisoned || !arena.free || arena.free.length >= MAX_FREE_ARENAS) return
  arena.sealed = false
  arena.released?.fill(0)
  arena.free.push(arena)
  // (Unref'd: it never keeps a process alive.)
  trimTimer ??= setInterval(trimFreeArenas, FREE_ARENA_TRIM_MS).unref()
}

export class MessageBuilder {
  buf: Buffer
  /** Next byte to write. */
  pos = 0
  private setStart = -1
  private readonly maxSize: number

  /** Messages are carved one after another out of large arenas: few allocations, few addresses for sendmmsg. */
  private arena: MessageArena
  private arenaPos = 0

  constructor(maxSize: number) {
    this.maxSize = maxSize
    this.arena = this.newArena()
    this.buf = this.arena.memory.subarray(0, maxSize)
  }

  private newArena(): MessageArena {
    const reused = this.maxSize <= ARENA_BYTES ? freeArenas.pop() : undefined
    if (reused) {
      freeLowMark = Math.min(freeLowMark, freeArenas.length)
      return reused
    }
    // Not from Node's shared pool: each arena has memory of its own, which identifies it.
    const memory = Buffer.allocUnsafeSlow(Math.max(ARENA_BYTES, this.maxSize))
    const arena: MessageArena = {
      memory,
      held: 0,
      sealed: false,
      poisoned: false,
      released: undefined,
      free: memory.length === ARENA_BYTES ? freeArenas : undefined,
    }
    ;(memory.buffer as ArenaMemory)[ARENA] = arena
    return arena
  }

  /**
   * Starts a message in memory of its own (the previous ones may still be queued or spooled).
   * The sequence number is that of the first data record in it, as RFC 7011 §3.1 counts.
   */
  begin(exportTimeSeconds: number, sequenceNumber: number, observationDomainId: number): void {
    if (this.arena.memory.length - this.arenaPos < this.maxSize) {
      const old = this.arena
      old.sealed = true
      this.arena = this.newArena()
      this.arenaPos = 0
      if (old.held === 0) giveBack(old)
    }
    this.buf = this.arena.memory.subarray(this.arenaPos, this.arenaPos + this.maxSize)
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
    this.arenaPos += (this.pos + 7) & ~7
    this.arena.held++
    this.pos = 0
    return message
  }
}
