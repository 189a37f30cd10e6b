/**
 * The one encode loop: records of any kind (flows of a FlowBatch, records given by element
 * name, template records, the statistics record) packed into IPFIX messages of at most the
 * maximum message size, each message headed with the sequence number of its first data record
 * (RFC 7011 §3.1). A run says how long each record is, which set it goes in, and writes it; the
 * loop decides where messages and sets begin and end.
 */
import {MESSAGE_HEADER_LENGTH, SET_HEADER_LENGTH, type MessageBuilder} from '../wire/message.js'

/** Records to pack, in order. */
export interface RecordRun {
  readonly count: number
  /** Data records advance the sequence number; template records do not. */
  readonly data: boolean
  /**
   * Set when every record has this length and goes in the same set: the loop then hands `write`
   * as many records as fit in the message at once.
   */
  readonly fixedLength?: number
  setId(i: number): number
  length(i: number): number
  /** Writes records i .. i+n-1 at `pos` (they fit, in the set already open); returns the end. */
  write(i: number, n: number, buf: Buffer, pos: number): number
}

/** Where the messages go, with how many data records each holds. */
export type MessageSink = (message: Buffer, dataRecords: number) => void

export interface MessageHeading {
  exportTimeSeconds: number
  /** The sequence number of the first data record of the run. */
  sequence: number
  domain: number
}

/**
 * Packs the run into messages and hands each to `emit`. Returns the data records written: the
 * amount the sequence number advances. A record that cannot fit even an empty message is
 * skipped (callers leave such templates out beforehand, so it never happens to flows).
 */
export function packRecords(builder: MessageBuilder, run: RecordRun, heading: MessageHeading, emit: MessageSink): number {
  const {exportTimeSeconds, domain} = heading
  let sequence = heading.sequence
  let inMessage = 0
  let written = 0
  builder.begin(exportTimeSeconds, sequence, domain)
  for (let i = 0; i < run.count;) {
    const setId = run.setId(i)
    const length = run.length(i)
    const sameSet = builder.openSetId === setId
    if (builder.free < (sameSet ? length : SET_HEADER_LENGTH + length)) {
      if (builder.pos > MESSAGE_HEADER_LENGTH) {
        const dataRecords = run.data ? inMessage : 0
        emit(builder.finish(), dataRecords)
        sequence += dataRecords
        inMessage = 0
        builder.begin(exportTimeSeconds, sequence, domain)
      } else i++ // fits no message at all
      continue
    }
    if (!sameSet) builder.openSet(setId)
    const n = run.fixedLength ? Math.min(run.count - i, Math.floor(builder.free / length)) : 1
    builder.pos = run.write(i, n, builder.buf, builder.pos)
    i += n
    inMessage += n
    written += run.data ? n : 0
  }
  if (builder.pos > MESSAGE_HEADER_LENGTH) emit(builder.finish(), run.data ? inMessage : 0)
  else builder.finish()
  return written
}
