/**
 * ConformanceChecker on streams of hand-built messages (test/ipfix/messages.ts) fed through the
 * collector's own path (IpfixCollector.handle, no socket): a well-formed stream passes, and each
 * defect an exporter can have fails the verdict with a finding that names it.
 */
import assert from 'node:assert/strict'

import {IpfixCollector} from '../../../src/ipfix/collect/collector.js'
import {ConformanceChecker, type CheckName, type ConformanceOptions, type ConformanceReport} from '../../../src/ipfix/collect/conformance.js'
import {hex, ID, message, optionsTemplateRecord, set, spec, templateRecord, u16, u32, u8, type HeaderFields} from '../messages.js'

const EXPORTER = '198.18.0.1:50101'
const T0 = 1_700_000_000 // export time of the well-formed stream (2023-11-14T22:13:20Z)

/** Template 256: sourceIPv4Address/4, sourceTransportPort/2, packetDeltaCount/4, flowStartMilliseconds/8 (18-byte records). */
const TSET = set(
  2,
  templateRecord(256, spec(ID.sourceIPv4Address, 4), spec(ID.sourceTransportPort, 2), spec(ID.packetDeltaCount, 4), spec(ID.flowStartMilliseconds, 8)),
)
/** Options template 300: observationDomainId (scope), systemInitTimeMilliseconds. */
const OSET = set(3, optionsTemplateRecord(300, 1, spec(ID.observationDomainId, 4), spec(ID.systemInitTimeMilliseconds, 8)))

function u64(n: number): Buffer {
  return u32(Math.floor(n / 2 ** 32), n % 2 ** 32)
}

/** One 18-byte record of template 256; `startMs` defaults to a second before T0. */
function rec(port: number, startMs = (T0 - 1) * 1000): Buffer {
  return Buffer.concat([u8(10, 0, 0, 1), u16(port), u32(1), u64(startMs)])
}

function data(h: HeaderFields, n: number, startMs?: number): Buffer {
  return message({exportTime: T0, ...h}, set(256, ...Array.from({length: n}, (_, i) => rec(1000 + i, startMs))))
}

/** A well-formed stream: templates (seq 0), 3 records (seq 0), 2 records (seq 3), an options record (seq 5), 1 record (seq 6). */
function goodStream(odid = 1): Buffer[] {
  return [
    message({exportTime: T0, seq: 0, odid}, TSET, OSET),
    data({seq: 0, odid}, 3),
    data({seq: 3, odid}, 2),
    // systemInitTimeMilliseconds is exempt from the time check: a boot time may be long ago.
    message({exportTime: T0, seq: 5, odid}, set(300, u32(odid), u64((T0 - 86400 * 400) * 1000))),
    data({seq: 6, odid}, 1),
  ]
}

function judge(messages: Buffer[], options: ConformanceOptions = {}, exporter = EXPORTER): {checker: ConformanceChecker; report: ConformanceReport} {
  const checker = new ConformanceChecker(options)
  const collector = new IpfixCollector({port: 0, checker})
  for (const m of messages) collector.handle(m, exporter)
  return {checker, report: checker.report()}
}

/** The checks that found problems, with their counts, over all domains. */
function failed(report: ConformanceReport): Partial<Record<CheckName, number>> {
  const out: Partial<Record<CheckName, number>> = {}
  for (const d of report.domains) for (const c of d.checks) if (c.count) out[c.check] = (out[c.check] ?? 0) + c.count
  return out
}

function examples(report: ConformanceReport, check: CheckName): string[] {
  return report.domains.flatMap((d) => d.checks.filter((c) => c.check === check).flatMap((c) => c.examples))
}

/** Asserts FAIL because of exactly `check`, and returns the findings. */
function failsOn(
  messages: Buffer[],
  check: CheckName,
  options: ConformanceOptions = {},
): {reasons: string[]; examples: string[]; report: ConformanceReport; lines: string[]} {
  const {checker, report} = judge(messages, options)
  assert.equal(report.verdict, 'FAIL', checker.formatReport().join('\n'))
  assert.deepEqual(Object.keys(failed(report)), [check], checker.formatReport().join('\n'))
  return {reasons: report.reasons, examples: examples(report, check), report, lines: checker.formatReport()}
}

describe('ipfix/conformance', function () {
  describe('a well-formed stream', function () {
    it('passes, with the counts of what it saw', function () {
      const {checker, report} = judge(goodStream())
      assert.equal(report.verdict, 'PASS', checker.formatReport().join('\n'))
      assert.deepEqual(report.reasons, [])
      assert.equal(report.messages, 5)
      assert.equal(report.domains.length, 1)
      const d = report.domains[0]
      assert.deepEqual([d.exporter, d.observationDomainId, d.messages, d.dataRecords, d.optionsRecords, d.templateIds], [EXPORTER, 1, 5, 6, 1, [256, 300]])
      assert.deepEqual(d.sequence, {gaps: [], gapCount: 0, missing: 0, duplicated: 0, restarts: 0, countingMessages: 0})
      assert.deepEqual(failed(report), {})
    })

    it('prints a report with every check ok and the verdict', function () {
      const lines = judge(goodStream()).checker.formatReport()
      const bytes = goodStream().reduce((n, m) => n + m.length, 0)
      assert.deepEqual(lines, [
        'IPFIX conformance: PASS (5 messages, 0 malformed)',
        `${EXPORTER} domain 1: 5 messages, ${bytes} bytes, 6 data records, 1 options record, templates 256 300: PASS`,
        '  sequence numbers: ok',
        '  templates before data: ok',
        '  set lengths: ok',
        '  zero padding: ok',
        '  message size: ok',
        '  times: ok',
        '  no withdrawals over UDP: ok',
        '  well-formed messages: ok',
      ])
    })

    it('keeps the numbering of each domain and exporter apart', function () {
      const checker = new ConformanceChecker()
      const collector = new IpfixCollector({port: 0, checker})
      const a = goodStream(1)
      const b = goodStream(2)
      // Interleaved: a shared counter would see gaps everywhere.
      a.forEach((m, i) => {
        collector.handle(m, EXPORTER)
        collector.handle(b[i], EXPORTER)
        collector.handle(m, '198.18.0.9:4739')
      })
      const report = checker.report()
      assert.equal(report.verdict, 'PASS', checker.formatReport().join('\n'))
      assert.equal(report.domains.length, 3)
    })

    it('follows the sequence number through its wrap at 2^32', function () {
      const {checker, report} = judge([message({exportTime: T0, seq: 0xfffffffe}, TSET), data({seq: 0xfffffffe}, 3), data({seq: 1}, 1)])
      assert.equal(report.verdict, 'PASS', checker.formatReport().join('\n'))
    })

    it('accepts zero padding', function () {
      const {report} = judge([message({exportTime: T0}, TSET), message({exportTime: T0}, set(256, rec(1), hex('00 00 00')))])
      assert.equal(report.verdict, 'PASS')
    })
  })

  describe('each defect fails the verdict with a finding naming it', function () {
    it('no message at all', function () {
      const {report} = judge([])
      assert.equal(report.verdict, 'FAIL')
      assert.deepEqual(report.reasons, ['no IPFIX message was received'])
    })

    it('a sequence gap: records lost', function () {
      const stream = goodStream()
      stream.splice(2, 1) // the 2 records of seq 3 never arrive
      const r = failsOn(stream, 'sequence')
      assert.deepEqual(r.examples, ['expected sequence number 3, got 5: 2 records missing'])
      assert.deepEqual(r.reasons, [`${EXPORTER} domain 1: 1 sequence gap (2 records missing, 0 duplicated or reordered)`])
      assert.deepEqual(r.report.domains[0].sequence.gaps, [{expected: 3, got: 5, missing: 2, duplicated: 0, exportTime: T0}])
    })

    it('a message received twice', function () {
      const stream = goodStream()
      stream.splice(2, 0, stream[1])
      const r = failsOn(stream, 'sequence')
      assert.deepEqual(r.examples, ['expected sequence number 3, got 0: 3 records duplicated or out of order'])
    })

    it('a sequence number that counts messages instead of data records', function () {
      // What a NetFlow v9 habit gives: 0, 1, 2, 3 for messages of 0, 3, 2 and 1 records.
      const stream = [message({exportTime: T0, seq: 0}, TSET), data({seq: 1}, 3), data({seq: 2}, 2), data({seq: 3}, 1)]
      const r = failsOn(stream, 'sequence')
      assert.deepEqual(r.examples, [
        "expected sequence number 0, got 1: 1 record missing (the previous message's number plus one: it counts messages, not data records)",
        "expected sequence number 4, got 2: 2 records duplicated or out of order (the previous message's number plus one: it counts messages, not data records)",
        "expected sequence number 4, got 3: 1 record duplicated or out of order (the previous message's number plus one: it counts messages, not data records)",
      ])
      assert.deepEqual(r.reasons, [
        `${EXPORTER} domain 0: 3 sequence gaps (1 record missing, 3 duplicated or reordered); all look like a count of messages, not of data records (RFC 7011 §3.1)`,
      ])
      assert.equal(r.report.domains[0].sequence.countingMessages, 3)
    })

    it('data before its template', function () {
      const stream = [data({seq: 0}, 3), message({exportTime: T0, seq: 0}, TSET), data({seq: 0}, 1)]
      const r = failsOn(stream, 'templateBeforeData')
      assert.deepEqual(r.examples, ['message seq 0: data set of template 256 at byte 16 (58 bytes) came before its template'])
      assert.deepEqual(r.reasons, [`${EXPORTER} domain 0: 1 data set before its template`])
    })

    it('data of a template never sent, after which the sequence check restarts', function () {
      // The unknown set's records cannot be counted, so the next number is not judged (seq 40 is
      // no gap), but the one after it is again.
      const stream = [
        message({exportTime: T0}, TSET),
        data({seq: 0}, 3),
        message({exportTime: T0, seq: 3}, set(999, hex('01 02 03 04'))),
        data({seq: 40}, 1),
        data({seq: 41}, 1),
      ]
      const r = failsOn(stream, 'templateBeforeData')
      assert.deepEqual(r.examples, ['message seq 3: data set of template 999 at byte 16 (8 bytes) came before its template'])
      assert.deepEqual(r.report.domains[0].sequence.restarts, 1)
      // Judged again from there: seq 41 twice is a duplicate.
      const again = judge([...stream, data({seq: 41}, 1)]).report
      assert.deepEqual(failed(again), {sequence: 1, templateBeforeData: 1})
      assert.deepEqual(examples(again, 'sequence'), ['expected sequence number 42, got 41: 1 record duplicated or out of order'])
    })

    it('a message larger than the maximum size', function () {
      const stream = [message({exportTime: T0}, TSET), data({seq: 0}, 10)] // 16 + 4 + 180 = 200 bytes
      const r = failsOn(stream, 'messageSize', {maxMessageSize: 199})
      assert.deepEqual(r.examples, ['message seq 0: 200 bytes exceeds the maximum of 199'])
      assert.deepEqual(r.reasons, [`${EXPORTER} domain 0: 1 message over the size limit`])
      assert.equal(judge(stream, {maxMessageSize: 200}).report.verdict, 'PASS')
    })

    it('non-zero padding in a data set', function () {
      const r = failsOn([message({exportTime: T0}, TSET), message({exportTime: T0}, set(256, rec(1), hex('00 01')))], 'padding')
      assert.deepEqual(r.examples, ['message seq 0: set 256 at byte 16 has 2 padding bytes that are not zero'])
      assert.deepEqual(r.reasons, [`${EXPORTER} domain 0: 1 set with nonzero padding`])
    })

    it('non-zero padding in a template set', function () {
      const r = failsOn([message({exportTime: T0}, set(2, TSET.subarray(4), hex('ff')))], 'padding')
      assert.deepEqual(r.examples, ['message seq 0: set 2 at byte 16 has 1 padding byte that is not zero'])
    })

    it('padding too long to be padding (a malformed template set)', function () {
      const r = failsOn([message({exportTime: T0}, set(2, TSET.subarray(4), hex('00 00 00 00')))], 'malformed')
      assert.deepEqual(r.examples, [
        '44-byte message: template set ends in 4 zero bytes: too many for padding, which must be shorter than the smallest record (RFC 7011 §3.3.1) (at byte 40)',
      ])
    })

    it('a time far from the export time: the export time 400 days off', function () {
      const stream = [message({exportTime: T0 - 400 * 86400}, TSET), data({seq: 0, exportTime: T0 - 400 * 86400}, 1)]
      const r = failsOn(stream, 'time')
      assert.deepEqual(r.examples, [
        'message seq 0, template 256: flowStartMilliseconds 2023-11-14T22:13:19.000Z is 1.1 years after the export time 2022-10-10T22:13:20.000Z',
      ])
      assert.deepEqual(r.reasons, [`${EXPORTER} domain 0: 1 time more than a day from the export time`])
    })

    it('a time far from the export time: seconds sent as milliseconds', function () {
      const r = failsOn([message({exportTime: T0}, TSET), data({seq: 0}, 1, T0)], 'time', {timeToleranceSeconds: 600})
      assert.deepEqual(r.examples, [
        'message seq 0, template 256: flowStartMilliseconds 1970-01-20T16:13:20.000Z is 53.8 years before the export time 2023-11-14T22:13:20.000Z',
      ])
      assert.deepEqual(r.reasons, [`${EXPORTER} domain 0: 1 time more than 600 s from the export time`])
    })

    it('a set with no record', function () {
      const r = failsOn([message({exportTime: T0}, TSET), message({exportTime: T0}, set(256))], 'setLength')
      assert.deepEqual(r.examples, ['message seq 0: set 256 at byte 16 (length 4) has no record'])
    })

    it('a template withdrawal over UDP', function () {
      const r = failsOn([message({exportTime: T0}, TSET), message({exportTime: T0}, set(2, u16(256, 0)))], 'withdrawal')
      assert.deepEqual(r.examples, ['message seq 0: withdrawal of template 256 at byte 20 (RFC 7011 §8.4: not over UDP)'])
      assert.equal(judge([message({exportTime: T0}, TSET), message({exportTime: T0}, set(2, u16(256, 0)))], {udp: false}).report.verdict, 'PASS')
    })

    it('a malformed message, in the domain its header names', function () {
      const stream = [...goodStream(), message({exportTime: T0, seq: 7, odid: 1}, u16(256, 40))]
      const r = failsOn(stream, 'malformed')
      assert.deepEqual(r.examples, ['20-byte message: set 256 of 40 bytes runs past the end of the message (4 bytes left) (at byte 18)'])
      assert.deepEqual(r.reasons, [`${EXPORTER} domain 1: 1 malformed message`])
      assert.equal(r.report.malformedMessages, 1)
      assert.ok(r.lines.includes('FAIL because:'), r.lines.join('\n'))
    })

    it('a datagram that is not IPFIX, in no domain', function () {
      const r = failsOn([hex('00 05 00 01')], 'malformed')
      assert.equal(r.report.domains[0].observationDomainId, null)
      assert.deepEqual(r.reasons, [`${EXPORTER} domain ?: 1 malformed message`])
    })

    it('counts every problem but keeps only maxExamples examples', function () {
      const stream = [message({exportTime: T0}, TSET), ...Array.from({length: 5}, () => data({seq: 0}, 1))]
      const {checker, report} = judge(stream, {maxExamples: 2})
      const seq = report.domains[0].checks.find((c) => c.check === 'sequence')!
      assert.deepEqual([seq.count, seq.examples.length], [4, 2])
      assert.ok(checker.formatReport().includes('    ... and 2 more'))
    })
  })
})
