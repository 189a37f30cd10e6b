/**
 * The collector side stays bounded whatever arrives (issue 13): the decoder's templates, domains
 * and exporters, and the conformance report, each with a limit and a count of what was evicted.
 */
import assert from 'node:assert/strict'

import {ConformanceChecker} from '../../src/ipfix/conformance.js'
import {DEFAULT_DECODER_LIMITS, IpfixDecoder} from '../../src/ipfix/decoder.js'
import {message, set, spec, templateFlood, templateRecord, u16} from './messages.js'

describe('ipfix limits', function () {
  it('keeps at most the default number of domains and templates under the flood of new domains of 4 templates of 60 enterprise fields', function () {
    const decoder = new IpfixDecoder({applyWithdrawals: false})
    const n = 6000
    for (let odid = 1; odid <= n; odid++) decoder.decode(templateFlood(odid), '198.18.0.1:4739')
    const {domains, templates} = DEFAULT_DECODER_LIMITS
    // 4 templates a domain: the total (16384) and the domain count (4096) bind at the same point.
    const kept = Math.min(domains, templates / 4)
    assert.deepEqual(decoder.stats(), {exporters: 1, domains: kept, templates: kept * 4, evicted: {templates: 0, domains: n - kept, exporters: 0}})
    // The most recent domains are the ones kept; the oldest are gone.
    assert.equal(decoder.templates('198.18.0.1:4739', n).length, 4)
    assert.equal(decoder.templates('198.18.0.1:4739', n - kept + 1).length, 4)
    assert.equal(decoder.templates('198.18.0.1:4739', n - kept).length, 0)
    assert.equal(decoder.templates('198.18.0.1:4739', 1).length, 0)
  })

  it('bounds the templates of one domain, forgetting the one defined longest ago', function () {
    const decoder = new IpfixDecoder({limits: {templatesPerDomain: 10}})
    for (let i = 0; i < 4; i++) decoder.decode(templateFlood(7, {templates: 5, fields: 2, firstId: 256 + 5 * i}), 'x:1')
    // 20 defined, 10 kept: 266-275. Then 266 defined again becomes the newest, so 267 goes next.
    assert.deepEqual(decoder.templates('x:1', 7).map((t) => t.id), [266, 267, 268, 269, 270, 271, 272, 273, 274, 275])
    decoder.decode(templateFlood(7, {templates: 1, fields: 2, firstId: 266}), 'x:1')
    decoder.decode(templateFlood(7, {templates: 1, fields: 2, firstId: 300}), 'x:1')
    assert.deepEqual(decoder.templates('x:1', 7).map((t) => t.id), [268, 269, 270, 271, 272, 273, 274, 275, 266, 300])
    assert.deepEqual(decoder.stats().evicted, {templates: 11, domains: 0, exporters: 0})
  })

  it('bounds the exporters (least recently heard from first), and a domain that defines nothing costs nothing', function () {
    const decoder = new IpfixDecoder({limits: {exporters: 3}})
    const tpl = message({odid: 1}, set(2, templateRecord(256, spec(8, 4))))
    for (const e of ['a:1', 'b:1', 'c:1']) decoder.decode(tpl, e)
    decoder.decode(message({odid: 1}, set(256, u16(0, 0))), 'a:1') // data only: a is now the most recent
    decoder.decode(tpl, 'd:1')
    assert.deepEqual(decoder.stats(), {exporters: 3, domains: 3, templates: 3, evicted: {templates: 0, domains: 0, exporters: 1}})
    assert.equal(decoder.template('b:1', 1, 256), undefined, 'b went first')
    assert.ok(decoder.template('a:1', 1, 256))
    for (let odid = 2; odid < 100; odid++) decoder.decode(message({odid}, set(300, u16(1, 2))), 'a:1')
    assert.equal(decoder.stats().domains, 3, 'data of unknown templates leaves no domain behind')
    decoder.reset('a:1')
    assert.deepEqual(decoder.stats(), {exporters: 2, domains: 2, templates: 2, evicted: {templates: 0, domains: 0, exporters: 1}})
  })

  it('--check keeps the last domains heard from, and an evicted failure still fails the verdict', function () {
    const checker = new ConformanceChecker({maxDomains: 50, maxMessageSize: 65535})
    const decoder = new IpfixDecoder({applyWithdrawals: false})
    const feed = (raw: Buffer, exporter: string) => checker.feed(raw, exporter, decoder.decode(raw, exporter))
    // Domain 1 fails (a data set before its template), then 1000 good domains push it out.
    feed(message({odid: 1}, set(256, u16(1, 2))), 'e:1')
    for (let odid = 2; odid <= 1001; odid++) feed(templateFlood(odid), 'e:1')
    const report = checker.report()
    assert.equal(report.domains.length, 50)
    assert.deepEqual(report.dropped, {domains: 951, failed: 1})
    assert.equal(report.verdict, 'FAIL')
    assert.deepEqual(report.reasons, ['1 of the 951 exporter domains dropped from this report (more than 50 were heard from) had failed'])
    assert.equal(report.messages, 1001)
    const lines = checker.formatReport()
    assert.ok(lines.length < 50 * 12 + 10, `${lines.length} lines`)
    assert.ok(lines.some((l) => l.startsWith('951 more exporter domains not shown')))
  })

  it('lists at most 1024 template IDs per domain and prints the first 32', function () {
    const checker = new ConformanceChecker()
    const decoder = new IpfixDecoder({applyWithdrawals: false, limits: {templatesPerDomain: 5000, templates: 5000}})
    for (let i = 0; i < 30; i++) {
      const raw = templateFlood(3, {templates: 50, fields: 1, firstId: 256 + 50 * i})
      checker.feed(raw, 'e:1', decoder.decode(raw, 'e:1'))
    }
    const d = checker.report().domains[0]
    assert.equal(d.templateIds.length, 1024)
    assert.equal(d.moreTemplateIds, 1500 - 1024)
    assert.ok(checker.formatReport()[1].includes('... (1500 in all): PASS'), checker.formatReport()[1])
  })
})
