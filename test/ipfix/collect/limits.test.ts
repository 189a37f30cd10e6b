/**
 * The collector side stays bounded whatever arrives (issues 13 and 25): the decoder's templates
 * (in the memory they take), domains and exporters, and the conformance report, each with a limit
 * and a count of what was evicted or refused.
 */
import assert from 'node:assert/strict'
import {setFlagsFromString} from 'node:v8'
import {runInNewContext} from 'node:vm'

import {ConformanceChecker} from '../../../src/ipfix/collect/conformance.js'
import {DEFAULT_DECODER_LIMITS, IpfixDecoder, templateMemory} from '../../../src/ipfix/collect/decoder.js'
import {defaultLength, isSharedElement, resolveElement, VARIABLE_LENGTH} from '../../../src/ipfix/wire/elements.js'
import {IANA_ELEMENTS} from '../../../src/ipfix/wire/iana-elements.js'
import type {Template} from '../../../src/ipfix/wire/template.js'
import {message, set, spec, templateFlood, templateRecord, u16} from '../messages.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** The registry's elements, as the decoder resolves a field specifier of each id. */
const REGISTRY_ELEMENTS = IANA_ELEMENTS.map((e) => resolveElement(e.id))

/** What a template of `fields` distinct shared elements (registry or cached) costs. */
function sharedTemplateCost(fields: number): number {
  const t: Template = {
    id: 256,
    scopeFieldCount: 0,
    fields: REGISTRY_ELEMENTS.slice(0, fields).map((element) => ({element, length: 4})),
  }
  return templateMemory(t)
}

/** A message defining one template of `fields` fields from `field(i)`, and a data message with one record of it. */
function templateAndRecord(odid: number, fields: number, field: (i: number) => Buffer): [Buffer, Buffer] {
  const specs = Array.from({length: fields}, (_, i) => field(i))
  const recordLength = specs.reduce((n, s) => n + s.readUInt16BE(2), 0)
  return [message({odid}, set(2, templateRecord(256, ...specs))), message({odid}, set(256, Buffer.alloc(recordLength)))]
}

describe('ipfix limits', function () {
  it('keeps at most the default template memory and domains under the flood of new domains of 4 templates of 60 enterprise fields', function () {
    const decoder = new IpfixDecoder({applyWithdrawals: false})
    const n = 6000
    for (let odid = 1; odid <= n; odid++) decoder.decode(templateFlood(odid), '198.18.0.1:4739')
    const {domains, templateBytes} = DEFAULT_DECODER_LIMITS
    const stats = decoder.stats()
    // Each domain holds 4 templates of the same cost; the memory binds before the domain count.
    const perDomain = stats.templateBytes / stats.domains
    assert.ok(perDomain >= 4 * sharedTemplateCost(60), `${perDomain} bytes a domain`)
    const kept = Math.min(domains, Math.floor(templateBytes / perDomain))
    assert.ok(kept < domains)
    assert.deepEqual(stats, {
      exporters: 1,
      domains: kept,
      templates: kept * 4,
      templateBytes: kept * perDomain,
      evicted: {templates: 0, domains: n - kept, exporters: 0},
      refused: 0,
    })
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
    assert.deepEqual(
      decoder.templates('x:1', 7).map((t) => t.id),
      [266, 267, 268, 269, 270, 271, 272, 273, 274, 275],
    )
    decoder.decode(templateFlood(7, {templates: 1, fields: 2, firstId: 266}), 'x:1')
    decoder.decode(templateFlood(7, {templates: 1, fields: 2, firstId: 300}), 'x:1')
    assert.deepEqual(
      decoder.templates('x:1', 7).map((t) => t.id),
      [268, 269, 270, 271, 272, 273, 274, 275, 266, 300],
    )
    assert.deepEqual(decoder.stats().evicted, {templates: 11, domains: 0, exporters: 0})
  })

  it('bounds the templates in the memory they take, not in their number: 64 KiB messages of 1024-field templates', function () {
    const templateBytes = 8 * 1024 * 1024
    const decoder = new IpfixDecoder({applyWithdrawals: false, limits: {templateBytes}})
    // 15 templates of 1024 fields of ids the registry lacks: 61 520 bytes, each template about 170 kB.
    for (let odid = 1; odid <= 200; odid++) decoder.decode(templateFlood(odid, {templates: 15, fields: 1024, pen: null, firstId: 256}), 'e:1')
    const stats = decoder.stats()
    assert.ok(stats.templateBytes <= templateBytes, `${stats.templateBytes} bytes kept`)
    assert.ok(stats.templateBytes > templateBytes - 15 * templateMemory(decoder.templates('e:1', 200)[0]), 'full up to one domain')
    assert.equal(stats.refused, 0)
    assert.equal(decoder.templates('e:1', 200).length, 15, 'the last domain is kept whole')
  })

  it('one domain alone over the memory limit forgets its own oldest templates', function () {
    const one = templateMemory(new IpfixDecoder().decode(templateFlood(1, {templates: 1, fields: 100}), 'e:1').templates[0])
    const decoder = new IpfixDecoder({limits: {templateBytes: 10 * one}})
    for (let i = 0; i < 3; i++) decoder.decode(templateFlood(1, {templates: 5, fields: 100, firstId: 256 + 5 * i}), 'e:1')
    assert.deepEqual(
      decoder.templates('e:1', 1).map((t) => t.id),
      [261, 262, 263, 264, 265, 266, 267, 268, 269, 270],
    )
    assert.deepEqual(decoder.stats().evicted, {templates: 5, domains: 0, exporters: 0})
    assert.equal(decoder.stats().templateBytes, 10 * one)
  })

  it('refuses a template of more fields than the limit, or with a field of length 0, forgetting what its ID defined before', function () {
    const decoder = new IpfixDecoder({limits: {templateFields: 100}})
    decoder.decode(templateFlood(1, {templates: 2, fields: 100}), 'e:1')
    const big = decoder.decode(templateFlood(1, {templates: 1, fields: 101}), 'e:1')
    assert.deepEqual(big.templates, [])
    assert.deepEqual(big.refused, [{templateId: 256, fields: 101, reason: 'has 101 fields, more than the 100 a template may have here'}])
    assert.deepEqual(
      decoder.templates('e:1', 1).map((t) => t.id),
      [257],
      'the old 256 is gone: its data is of unknown template now',
    )
    // Zero-length fields would let a 64 KiB data set decode to billions of values.
    const zero = decoder.decode(message({odid: 1}, set(2, templateRecord(300, spec(8, 4), spec(30000, 0), spec(30001, 1)))), 'e:1')
    assert.deepEqual(zero.refused, [
      {templateId: 300, fields: 3, reason: 'field 2 (ie30000) has length 0: its records could decode to more values than they have bytes'},
    ])
    const data = decoder.decode(message({odid: 1}, set(300, Buffer.alloc(60_000))), 'e:1')
    assert.deepEqual(data.records, [])
    assert.deepEqual(data.unknownSets, [{templateId: 300, offset: 16, length: 60_004}])
    assert.equal(decoder.stats().refused, 2)
  })

  it('keeps a bounded cache of synthetic elements: past it, an element belongs to its template', function () {
    const names = Array.from({length: 5000}, (_, i) => resolveElement(7, 4_000_000_000 + i))
    // Other suites may have filled part of the cache already; 5000 new names overflow it anyway.
    assert.equal(isSharedElement(names[4999]), false)
    names.forEach((e, i) => {
      const again = resolveElement(7, 4_000_000_000 + i)
      assert.equal(again === e, isSharedElement(e), `${e.name}: the same object exactly when it is cached`)
      assert.deepEqual(again, e)
    })
  })

  it('templateMemory() is no less than what a kept template takes on the heap, and near it', function () {
    // 60 registry elements of a fixed length whose zero bytes decode (a boolean must be 1 or 2).
    const registry = REGISTRY_ELEMENTS.filter((e) => defaultLength(e) !== VARIABLE_LENGTH && e.type !== 'boolean').slice(0, 60)
    const shapes: {name: string; fields: number; field: (odid: number) => (i: number) => Buffer; near: boolean}[] = [
      // Distinct registry elements: the usual template.
      {name: 'registry elements', fields: 60, field: () => (i) => spec(registry[i].id, defaultLength(registry[i])), near: true},
      // An enterprise element of its own per field (past the shared cache).
      {name: 'own enterprise elements', fields: 300, field: (odid) => (i) => spec(1 + i, 4, (3_000_000_000 + odid * 1000 + i) >>> 0), near: true},
      // The same element repeated: a key string per field ('e…ie1#2').
      {name: 'one enterprise element repeated', fields: 300, field: (odid) => () => spec(1, 4, (3_500_000_000 + odid) >>> 0), near: true},
    ]
    for (const shape of shapes) {
      const decoder = new IpfixDecoder({limits: {templateBytes: 1 << 30, domains: 1e6}})
      const n = Math.ceil(60_000 / shape.fields)
      const messages = Array.from({length: n}, (_, k) => templateAndRecord(k + 1, shape.fields, shape.field(k + 1)))
      gc()
      const before = process.memoryUsage().heapUsed
      for (const [t, d] of messages) {
        decoder.decode(t, 'e:1')
        assert.equal(decoder.decode(d, 'e:1').records.length, 1)
      }
      gc()
      const taken = (process.memoryUsage().heapUsed - before) / n
      const counted = decoder.stats().templateBytes / n
      assert.ok(taken <= counted, `${shape.name}: ${Math.round(taken)} bytes taken, ${Math.round(counted)} counted`)
      if (shape.near) assert.ok(taken >= 0.6 * counted, `${shape.name}: ${Math.round(taken)} bytes taken, ${Math.round(counted)} counted`)
    }
  })

  it('bounds the exporters (least recently heard from first), and a domain that defines nothing costs nothing', function () {
    const decoder = new IpfixDecoder({limits: {exporters: 3}})
    const tpl = message({odid: 1}, set(2, templateRecord(256, spec(8, 4))))
    for (const e of ['a:1', 'b:1', 'c:1']) decoder.decode(tpl, e)
    decoder.decode(message({odid: 1}, set(256, u16(0, 0))), 'a:1') // data only: a is now the most recent
    decoder.decode(tpl, 'd:1')
    const one = templateMemory(decoder.template('d:1', 1, 256)!)
    assert.deepEqual(decoder.stats(), {
      exporters: 3,
      domains: 3,
      templates: 3,
      templateBytes: 3 * one,
      evicted: {templates: 0, domains: 0, exporters: 1},
      refused: 0,
    })
    assert.equal(decoder.template('b:1', 1, 256), undefined, 'b went first')
    assert.ok(decoder.template('a:1', 1, 256))
    for (let odid = 2; odid < 100; odid++) decoder.decode(message({odid}, set(300, u16(1, 2))), 'a:1')
    assert.equal(decoder.stats().domains, 3, 'data of unknown templates leaves no domain behind')
    decoder.reset('a:1')
    assert.deepEqual(decoder.stats(), {
      exporters: 2,
      domains: 2,
      templates: 2,
      templateBytes: 2 * one,
      evicted: {templates: 0, domains: 0, exporters: 1},
      refused: 0,
    })
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
    const decoder = new IpfixDecoder({applyWithdrawals: false, limits: {templatesPerDomain: 5000}})
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
