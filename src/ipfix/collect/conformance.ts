/**
 * Judges what an exporter sends against RFC 7011, per exporter and Observation Domain, from the
 * messages a collector receives:
 *
 * - sequence: the header sequence number is the count, modulo 2^32, of the data records (options
 *   data records included) sent before in the domain (§3.1); each gap is reported with the
 *   number expected, the number received and the records missing (or duplicated/reordered),
 *   and whether the exporter seems to count messages instead of data records. A
 *   message with a data set of unknown template carries an unknown number of records: the check
 *   restarts from the next message.
 * - templates before data: a data set whose template had not been received (§8: the template
 *   SHOULD come first; over UDP, in an earlier message or earlier in the same one).
 * - sets: a set with no record (§3.3: one or more records); nonzero padding (§3.3.1).
 * - message size: at most `maxMessageSize` bytes (default 1400, to stay under the path MTU, §10.3.3).
 * - times: dateTimeSeconds/Milliseconds/Microseconds/Nanoseconds values within ±1 day
 *   (`timeToleranceSeconds`) of the message's export time: catches an NTP timestamp written from
 *   the UNIX epoch, milliseconds sent as seconds, a zero time.
 * - template withdrawals over UDP (§8.4: MUST NOT be sent), unless `udp: false`.
 * - malformed messages (§9.1): anything the decoder rejects.
 *
 * The verdict is FAIL when any check found a problem, or when no message arrived at all.
 */
import {keyElementName} from '../wire/codec.js'
import type {FieldValue, RecordFields} from '../wire/field-values.js'
import type {DecodeError} from '../wire/errors.js'
import type {DecodedMessage} from './decoder.js'
import {elementByName, type AbstractType} from '../wire/elements.js'

export type CheckName = 'sequence' | 'templateBeforeData' | 'setLength' | 'padding' | 'messageSize' | 'time' | 'withdrawal' | 'malformed'

const CHECK_TITLES: Record<CheckName, string> = {
  sequence: 'sequence numbers',
  templateBeforeData: 'templates before data',
  setLength: 'set lengths',
  padding: 'zero padding',
  messageSize: 'message size',
  time: 'times',
  withdrawal: 'no withdrawals over UDP',
  malformed: 'well-formed messages',
}

const CHECKS = Object.keys(CHECK_TITLES) as CheckName[]

export interface ConformanceOptions {
  /** Largest acceptable message, in bytes (default 1400). */
  maxMessageSize?: number
  /** How far a time may be from the message's export time (default 86400 s, one day). */
  timeToleranceSeconds?: number
  /** Messages arrive over UDP, where template withdrawals must not be sent (default true). */
  udp?: boolean
  /** Examples kept per check and domain (default 10); every problem is counted. */
  maxExamples?: number
  /**
   * Exporter and domain pairs judged one by one (default 256): past it, the one heard from
   * longest ago is dropped from the report, and only whether it had failed is kept (in the
   * verdict). Bounds the checker's memory and the report's length whatever arrives.
   */
  maxDomains?: number
}

/** Template IDs a domain's report lists at most (the rest are counted). */
const MAX_TEMPLATE_IDS = 1024
/** Template IDs printed per domain in the report for people. */
const PRINTED_TEMPLATE_IDS = 32

interface SequenceGap {
  expected: number
  got: number
  /** Records lost between the two messages (0 when `duplicated` > 0). */
  missing: number
  /** Records received again or out of order (0 when `missing` > 0). */
  duplicated: number
  exportTime: number
}

interface CheckResult {
  check: CheckName
  title: string
  /** Problems found (0: the check passed). */
  count: number
  /** The first problems, one line each. */
  examples: string[]
}

interface DomainReport {
  exporter: string
  /** null for malformed messages too short to name their domain. */
  observationDomainId: number | null
  messages: number
  malformedMessages: number
  bytes: number
  dataRecords: number
  optionsRecords: number
  /** Template IDs received (data and options templates). */
  templateIds: number[]
  sequence: {
    gaps: SequenceGap[]
    gapCount: number
    missing: number
    duplicated: number
    /** Times the check restarted because a message carried records of unknown template. */
    restarts: number
    /**
     * Gaps where the number received was the previous message's plus one: the exporter seems to
     * count messages, not data records.
     */
    countingMessages: number
  }
  /** Template IDs received beyond the MAX_TEMPLATE_IDS listed. */
  moreTemplateIds: number
  checks: CheckResult[]
  verdict: 'PASS' | 'FAIL'
}

export interface ConformanceReport {
  verdict: 'PASS' | 'FAIL'
  /** One line per failed check and domain (or why there is nothing to judge). */
  reasons: string[]
  messages: number
  malformedMessages: number
  domains: DomainReport[]
  /** Domains dropped from the report (over maxDomains), and how many of them had failed. */
  dropped: {domains: number; failed: number}
}

interface DomainState {
  report: DomainReport
  templateIds: Set<number>
  expected: number | undefined
  /** The sequence number of the last well-formed message of the domain. */
  lastSeq: number | undefined
  results: Map<CheckName, CheckResult>
}

const TIME_TYPES = new Set<AbstractType>(['dateTimeSeconds', 'dateTimeMilliseconds', 'dateTimeMicroseconds', 'dateTimeNanoseconds'])
/** Times that are legitimately far from the export time: the exporter's boot time. */
const TIME_EXEMPT = new Set(['systemInitTimeMilliseconds'])

/** A time field's value in seconds since 1970, or undefined if the key names no time element. */
function timeSeconds(key: string, value: FieldValue): number | undefined {
  const element = elementByName(keyElementName(key))
  const type = element?.type
  if (!type || !TIME_TYPES.has(type) || TIME_EXEMPT.has(element.name)) return undefined
  if (type === 'dateTimeSeconds' && typeof value === 'number') return value
  if (type === 'dateTimeMilliseconds' && typeof value === 'number') return value / 1000
  if (typeof value === 'bigint') return Number(value / 1000n) / 1e6
  return undefined
}

function isoTime(seconds: number): string {
  const d = new Date(seconds * 1000)
  return Number.isNaN(d.getTime()) ? `${seconds} s` : d.toISOString()
}

function offsetText(seconds: number): string {
  const abs = Math.abs(seconds)
  const text = abs >= 86400 * 365 ? `${(abs / (86400 * 365.25)).toFixed(1)} years` : abs >= 86400 ? `${(abs / 86400).toFixed(1)} days` : `${Math.round(abs)} s`
  return `${text} ${seconds < 0 ? 'before' : 'after'}`
}

export class ConformanceChecker {
  private readonly maxMessageSize: number
  private readonly tolerance: number
  private readonly udp: boolean
  private readonly maxExamples: number
  private readonly maxDomains: number
  /** Least recently heard from first. */
  private readonly domains = new Map<string, DomainState>()
  private readonly dropped = {domains: 0, failed: 0}
  private messages = 0
  private malformed = 0

  constructor(options: ConformanceOptions = {}) {
    this.maxMessageSize = options.maxMessageSize ?? 1400
    this.tolerance = options.timeToleranceSeconds ?? 86400
    this.udp = options.udp ?? true
    this.maxExamples = options.maxExamples ?? 10
    this.maxDomains = options.maxDomains ?? 256
  }

  private domain(exporter: string, observationDomainId: number | null): DomainState {
    const key = `${exporter}|${observationDomainId ?? '-'}`
    let d = this.domains.get(key)
    if (d) {
      this.domains.delete(key)
      this.domains.set(key, d)
    } else {
      if (this.domains.size >= this.maxDomains) {
        const [oldestKey, oldest] = this.domains.entries().next().value!
        this.domains.delete(oldestKey)
        this.dropped.domains++
        if ([...oldest.results.values()].some((r) => r.count > 0)) this.dropped.failed++
      }
      d = {
        report: {
          exporter,
          observationDomainId,
          messages: 0,
          malformedMessages: 0,
          bytes: 0,
          dataRecords: 0,
          optionsRecords: 0,
          templateIds: [],
          moreTemplateIds: 0,
          sequence: {gaps: [], gapCount: 0, missing: 0, duplicated: 0, restarts: 0, countingMessages: 0},
          checks: [],
          verdict: 'PASS',
        },
        templateIds: new Set(),
        expected: undefined,
        lastSeq: undefined,
        results: new Map(CHECKS.map((check) => [check, {check, title: CHECK_TITLES[check], count: 0, examples: []}])),
      }
      this.domains.set(key, d)
    }
    return d
  }

  private problem(d: DomainState, check: CheckName, text: string): void {
    const r = d.results.get(check)!
    r.count++
    if (r.examples.length < this.maxExamples) r.examples.push(text)
  }

  /** Judges one received message: its decoding, or the DecodeError the decoder threw. */
  feed(raw: Buffer, exporter: string, result: DecodedMessage | DecodeError | Error): void {
    this.messages++
    if (!(result instanceof Error)) {
      this.judge(raw, exporter, result)
      return
    }
    this.malformed++
    const odid = raw.length >= 16 && raw.readUInt16BE(0) === 10 ? raw.readUInt32BE(12) : null
    const d = this.domain(exporter, odid)
    d.report.messages++
    d.report.malformedMessages++
    d.report.bytes += raw.length
    this.problem(d, 'malformed', `${raw.length}-byte message: ${result.message}`)
    if (raw.length > this.maxMessageSize) this.problem(d, 'messageSize', `malformed message of ${raw.length} bytes exceeds ${this.maxMessageSize}`)
  }

  private judge(raw: Buffer, exporter: string, m: DecodedMessage): void {
    const {header} = m
    const d = this.domain(exporter, header.observationDomainId)
    const at = `message seq ${header.sequenceNumber}`
    d.report.messages++
    d.report.bytes += raw.length

    if (raw.length > this.maxMessageSize) this.problem(d, 'messageSize', `${at}: ${raw.length} bytes exceeds the maximum of ${this.maxMessageSize}`)

    // Sequence numbers (RFC 7011 §3.1).
    if (d.expected !== undefined && header.sequenceNumber !== d.expected) {
      const diff = (header.sequenceNumber - d.expected) >>> 0
      const gap: SequenceGap =
        diff < 0x8000_0000
          ? {expected: d.expected, got: header.sequenceNumber, missing: diff, duplicated: 0, exportTime: header.exportTime}
          : {expected: d.expected, got: header.sequenceNumber, missing: 0, duplicated: 0x1_0000_0000 - diff, exportTime: header.exportTime}
      d.report.sequence.gapCount++
      d.report.sequence.missing += gap.missing
      d.report.sequence.duplicated += gap.duplicated
      if (d.report.sequence.gaps.length < this.maxExamples) d.report.sequence.gaps.push(gap)
      // The classic mistake (NetFlow v9 counts packets): one more than the previous message's
      // number although that message did not carry exactly one data record.
      const countingMessages = d.lastSeq !== undefined && header.sequenceNumber === (d.lastSeq + 1) >>> 0
      if (countingMessages) d.report.sequence.countingMessages++
      this.problem(
        d,
        'sequence',
        (gap.missing
          ? `expected sequence number ${gap.expected}, got ${gap.got}: ${gap.missing} record${gap.missing === 1 ? '' : 's'} missing`
          : `expected sequence number ${gap.expected}, got ${gap.got}: ${gap.duplicated} record${gap.duplicated === 1 ? '' : 's'} duplicated or out of order`) +
          (countingMessages ? ` (the previous message's number plus one: it counts messages, not data records)` : ''),
      )
    }
    d.lastSeq = header.sequenceNumber
    if (m.unknownSets.length) {
      if (d.expected !== undefined) d.report.sequence.restarts++
      d.expected = undefined
    } else {
      d.expected = (header.sequenceNumber + m.records.length) >>> 0
    }

    for (const t of m.templates) {
      if (d.templateIds.size < MAX_TEMPLATE_IDS || d.templateIds.has(t.id)) d.templateIds.add(t.id)
      else d.report.moreTemplateIds++
    }
    for (const u of m.unknownSets) {
      this.problem(d, 'templateBeforeData', `${at}: data set of template ${u.templateId} at byte ${u.offset} (${u.length} bytes) came before its template`)
    }

    for (const s of m.sets) {
      if (s.kind !== 'data' || !m.unknownSets.some((u) => u.offset === s.offset)) {
        if (s.records === 0) this.problem(d, 'setLength', `${at}: set ${s.id} at byte ${s.offset} (length ${s.length}) has no record`)
      }
      if (s.padding > 0 && !s.paddingZero)
        this.problem(
          d,
          'padding',
          `${at}: set ${s.id} at byte ${s.offset} has ${s.padding} padding ${s.padding === 1 ? 'byte that is' : 'bytes that are'} not zero`,
        )
    }

    if (this.udp && m.withdrawals.length) {
      for (const w of m.withdrawals) {
        this.problem(
          d,
          'withdrawal',
          `${at}: withdrawal of ${w.all ? `all ${w.options ? 'options ' : ''}templates` : `template ${w.templateId}`} at byte ${w.offset} (RFC 7011 §8.4: not over UDP)`,
        )
      }
    }

    for (const r of m.records) {
      if (r.options) d.report.optionsRecords++
      else d.report.dataRecords++
      this.checkTimes(d, at, r.templateId, r.fields, header.exportTime)
    }
  }

  private checkTimes(d: DomainState, at: string, templateId: number, fields: RecordFields, exportTime: number): void {
    for (const [key, value] of Object.entries(fields)) {
      if (value && typeof value === 'object' && !Buffer.isBuffer(value)) {
        if (value.kind === 'subTemplateList') for (const f of value.records) this.checkTimes(d, at, value.templateId, f, exportTime)
        else if (value.kind === 'subTemplateMultiList')
          for (const e of value.entries) for (const f of e.records) this.checkTimes(d, at, e.templateId, f, exportTime)
        continue
      }
      const s = timeSeconds(key, value)
      if (s === undefined) continue
      const delta = s - exportTime
      if (Math.abs(delta) > this.tolerance) {
        this.problem(d, 'time', `${at}, template ${templateId}: ${key} ${isoTime(s)} is ${offsetText(delta)} the export time ${isoTime(exportTime)}`)
      }
    }
  }

  /** The summary so far: per exporter and domain, each check's count and first examples, and the verdict. */
  report(): ConformanceReport {
    const domains: DomainReport[] = []
    const reasons: string[] = []
    for (const d of this.domains.values()) {
      const checks = CHECKS.map((c) => ({...d.results.get(c)!, examples: [...d.results.get(c)!.examples]}))
      const failed = checks.filter((c) => c.count > 0)
      const report: DomainReport = {
        ...d.report,
        templateIds: [...d.templateIds].sort((a, b) => a - b),
        sequence: {...d.report.sequence, gaps: [...d.report.sequence.gaps]},
        checks,
        verdict: failed.length ? 'FAIL' : 'PASS',
      }
      domains.push(report)
      const where = domainName(report)
      for (const c of failed) reasons.push(`${where}: ${reasonText(c, report, this.tolerance)}`)
    }
    if (this.dropped.failed) {
      reasons.push(
        `${this.dropped.failed} of the ${this.dropped.domains} exporter domains dropped from this report (more than ${this.maxDomains} were heard from) had failed`,
      )
    }
    if (this.messages === 0) reasons.push('no IPFIX message was received')
    return {verdict: reasons.length ? 'FAIL' : 'PASS', reasons, messages: this.messages, malformedMessages: this.malformed, domains, dropped: {...this.dropped}}
  }

  /** The report as lines for people. */
  formatReport(): string[] {
    const r = this.report()
    const lines = [`IPFIX conformance: ${r.verdict} (${r.messages} message${r.messages === 1 ? '' : 's'}, ${r.malformedMessages} malformed)`]
    for (const d of r.domains) {
      lines.push(
        `${domainName(d)}: ${d.messages} message${d.messages === 1 ? '' : 's'}, ${d.bytes} bytes, ${d.dataRecords} data record${d.dataRecords === 1 ? '' : 's'}, ` +
          `${d.optionsRecords} options record${d.optionsRecords === 1 ? '' : 's'}, templates ${templateList(d)}: ${d.verdict}`,
      )
      for (const c of d.checks) {
        lines.push(`  ${c.title}: ${c.count === 0 ? 'ok' : reasonText(c, d, this.tolerance)}`)
        for (const e of c.examples) lines.push(`    ${e}`)
        if (c.count > c.examples.length) lines.push(`    ... and ${c.count - c.examples.length} more`)
      }
    }
    if (r.dropped.domains) {
      lines.push(
        `${r.dropped.domains} more exporter domain${r.dropped.domains === 1 ? '' : 's'} not shown (only the ${this.maxDomains} heard from last are kept; the message counts above include them)`,
      )
    }
    if (r.verdict === 'FAIL') {
      lines.push('FAIL because:')
      for (const reason of r.reasons) lines.push(`  - ${reason}`)
    }
    return lines
  }
}

function templateList(d: DomainReport): string {
  if (!d.templateIds.length) return 'none'
  const all = d.templateIds.length + d.moreTemplateIds
  const shown = d.templateIds.slice(0, PRINTED_TEMPLATE_IDS).join(' ')
  return all > PRINTED_TEMPLATE_IDS ? `${shown} ... (${all} in all)` : shown
}

function domainName(d: DomainReport): string {
  return `${d.exporter} domain ${d.observationDomainId ?? '?'}`
}

function reasonText(c: CheckResult, d: DomainReport, tolerance: number): string {
  const n = c.count
  switch (c.check) {
    case 'sequence': {
      const text = `${n} sequence gap${n === 1 ? '' : 's'} (${d.sequence.missing} record${d.sequence.missing === 1 ? '' : 's'} missing, ${d.sequence.duplicated} duplicated or reordered)`
      const m = d.sequence.countingMessages
      return m ? `${text}; ${m === n ? (n === 1 ? 'it looks' : 'all look') : `${m} look`} like a count of messages, not of data records (RFC 7011 §3.1)` : text
    }
    case 'templateBeforeData':
      return `${n} data set${n === 1 ? '' : 's'} before ${n === 1 ? 'its' : 'their'} template`
    case 'setLength':
      return `${n} set${n === 1 ? '' : 's'} with no record`
    case 'padding':
      return `${n} set${n === 1 ? '' : 's'} with nonzero padding`
    case 'messageSize':
      return `${n} message${n === 1 ? '' : 's'} over the size limit`
    case 'time':
      return `${n} time${n === 1 ? '' : 's'} more than ${tolerance === 86400 ? 'a day' : `${tolerance} s`} from the export time`
    case 'withdrawal':
      return `${n} template withdrawal${n === 1 ? '' : 's'} over UDP`
    case 'malformed':
      return `${n} malformed message${n === 1 ? '' : 's'}`
  }
}
