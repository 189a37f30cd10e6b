/**
 * The one encode loop: records of any kind (flows of a FlowBatch, records given by element
 * name, template records, options records) packed into IPFIX messages of at most the maximum
 * message size, each message headed with the sequence number of its first data record (RFC
 * 7011 §3.1). A run says how long each record is, which set it goes in, and writes it; the loop
 * decides where messages and sets begin and end. Several runs packed in one call share messages:
 * an options record and the data it describes go out together.
 */
import {MESSAGE_HEADER_LENGTH, SET_HEADER_LENGTH, type MessageBuilder} from '../wire/message.js'

/** Records to pack, in order. */
export interface RecordRun {
  readonly count: number
  /** Data records (options data records too) advance the sequence number; template records do not. */
  readonly data: boolean
  /**
   * Set when every record has this length and goes in the same set: the loop then hands `write`
   * as many records as fit in the message at once.
   */
  readonly fixedLength?: number
  /**
   * Every record of the run opens a set of its own, even after a record of the same set id:
   * nfdump reads only the first template of an Options Template Set, so each options template
   * goes in a set of its own.
   */
  readonly setPerRecord?: boolean
  /**
   * The run's last record goes in the same message as the first record of the run after it (a
   * message is begun for both when they do not fit together in the one being filled): a
   * sampling rate goes with the data it scales, which goflow2 scales by the rate in its message.
   */
  readonly keepWithNext?: boolean
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

/** Bytes record `i` of `run` takes in the message being built: its length, and a set header unless it joins the open set. */
function bytesNeeded(run: RecordRun, i: number, joinsOpenSet: boolean): number {
  return (joinsOpenSet ? 0 : SET_HEADER_LENGTH) + run.length(i)
}

/**
 * Packs the runs, in order, into messages and hands each to `emit`. Returns the data records
 * written: the amount the sequence number advances. A record that cannot fit even an empty
 * message is skipped (callers leave such templates out beforehand, so it never happens to flows).
 */
export function packRecords(builder: MessageBuilder, runs: RecordRun | readonly RecordRun[], heading: MessageHeading, emit: MessageSink): number {
  const list = Array.isArray(runs) ? (runs as readonly RecordRun[]) : [runs as RecordRun]
  const {exportTimeSeconds, domain} = heading
  let sequence = heading.sequence
  let dataInMessage = 0
  let written = 0
  builder.begin(exportTimeSeconds, sequence, domain)
  const next = () => {
    emit(builder.finish(), dataInMessage)
    sequence += dataInMessage
    dataInMessage = 0
    builder.begin(exportTimeSeconds, sequence, domain)
  }
  for (let r = 0; r < list.length; r++) {
    const run = list[r]
    for (let i = 0; i < run.count;) {
      const setId = run.setId(i)
      const sameSet = builder.openSetId === setId && !(run.setPerRecord ?? false)
      let needed = bytesNeeded(run, i, sameSet)
      const follower = i === run.count - 1 && run.keepWithNext ? list.slice(r + 1).find((x) => x.count > 0) : undefined
      if (follower) needed += bytesNeeded(follower, 0, false)
      if (builder.free < needed) {
        if (builder.pos > MESSAGE_HEADER_LENGTH) next()
        else if (builder.free < bytesNeeded(run, i, sameSet))
          i++ // fits no message at all
        else {
          // It and its follower fit no message together: it goes alone, the follower after it.
          builder.openSet(setId)
          builder.pos = run.write(i, 1, builder.buf, builder.pos)
          if (run.data) {
            dataInMessage++
            written++
          }
          i++
        }
        continue
      }
      if (!sameSet) builder.openSet(setId)
      // Records of a fixed length go in at once, as many as fit (a run kept with the next one goes
      // record by record: its last record was checked above with its follower).
      const n = run.fixedLength && !run.setPerRecord && !run.keepWithNext ? Math.min(run.count - i, Math.floor(builder.free / run.fixedLength)) : 1
      builder.pos = run.write(i, n, builder.buf, builder.pos)
      i += n
      if (run.data) {
        dataInMessage += n
        written += n
      }
    }
  }
  if (builder.pos > MESSAGE_HEADER_LENGTH) emit(builder.finish(), dataInMessage)
  else builder.finish()
  return written
}
