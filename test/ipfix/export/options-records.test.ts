/**
 * The exporter's options records for collectors, without a network: the sampling rate and the
 * interface names as bytes (checked against the layouts worked out by hand from RFC 7011 and the
 * research of docs/collectors.md), the encode loop's rules for them (an options template in a set
 * of its own, the rate in the message of the data it scales), what a batch makes due, and tshark's
 * decoding of them.
 */
import assert from 'node:assert/strict'

import {IpfixDecoder} from '../../../src/ipfix/collect/decoder.js'
import {packRecords, type RecordRun} from '../../../src/ipfix/export/encode.js'
import {optionsTemplateIds} from '../../../src/ipfix/export/flow-templates.js'
import {
  InterfaceAnnouncements,
  interfaceNamesRuns,
  interfaceNamesTemplate,
  nfdumpInterfaceNamesTemplate,
  utf8Prefix,
  type InterfaceLabel,
} from '../../../src/ipfix/export/interface-options.js'
import {rateGroups} from '../../../src/ipfix/export/rate-groups.js'
import {advertisedInterval, samplingRecordRun, samplingTemplate} from '../../../src/ipfix/export/sampling-options.js'
import {MessageBuilder, OPTIONS_TEMPLATE_SET_ID} from '../../../src/ipfix/wire/message.js'
import {encodeTemplateRecord, templateRecordSize, type Template} from '../../../src/ipfix/wire/template.js'
import {FlowBatch} from '../../../src/flow/batch.js'
import {requireTshark, tsharkDissectIpfix} from '../../helpers/tshark.js'
import {hex, message, optionsTemplateRecord, set, spec, u32} from '../messages.js'

const HEADING = {exportTimeSeconds: 1_700_000_000, sequence: 0, domain: 7}

/** Template records, each in an options template set of its own. */
function optionsTemplates(...templates: Template[]): RecordRun {
  return {
    count: templates.length,
    data: false,
    setPerRecord: true,
    setId: () => OPTIONS_TEMPLATE_SET_ID,
    length: (i) => templateRecordSize(templates[i]),
    write: (i, _n, buf, pos) => encodeTemplateRecord(templates[i], buf, pos),
  }
}

/** `count` data records of `length` bytes (each byte its index) in set `setId`. */
function filler(setId: number, count: number, length: number): RecordRun {
  return {
    count,
    data: true,
    fixedLength: length,
    setId: () => setId,
    length: () => length,
    write(i, n, buf, pos) {
      for (let k = 0; k < n; k++) buf.fill((i + k) & 0xff, pos + k * length, pos + (k + 1) * length)
      return pos + n * length
    },
  }
}

function pack(maxSize: number, runs: RecordRun[], heading = HEADING): {message: Buffer; dataRecords: number}[] {
  const out: {message: Buffer; dataRecords: number}[] = []
  packRecords(new MessageBuilder(maxSize), runs, heading, (m, dataRecords) => out.push({message: Buffer.from(m), dataRecords}))
  return out
}

/** The set ids of a message, in order. */
function setIds(m: Buffer): number[] {
  const ids: number[] = []
  for (let off = 16; off < m.length; off += m.readUInt16BE(off + 2)) ids.push(m.readUInt16BE(off))
  return ids
}

const LABELS: Record<number, InterfaceLabel> = {
  2: {name: 'a0', description: 'uplink to core'},
  3: {name: 'a1', description: 'a1'},
}

describe('ipfix options records for collectors: the sampling rate and interface names', function () {
  it('advertises the rate in the one shape every collector reads: scope observationDomainId (149), samplingInterval (34) in 4 bytes', function () {
    const t = samplingTemplate(300)
    const [{message: m, dataRecords}] = pack(1400, [optionsTemplates(t), samplingRecordRun(t, 7, 10)])
    assert.deepEqual(
      m,
      message({exportTime: 1_700_000_000, seq: 0, odid: 7}, set(3, optionsTemplateRecord(300, 1, spec(149, 4), spec(34, 4))), set(300, u32(7, 10))),
    )
    // The bytes the research sent to nfcapd and nfacctd (docs/collectors.md): set 3 of 18 bytes, the record of 12.
    assert.deepEqual(m.subarray(16, 34), hex('0003 0012 012c 0002 0001 0095 0004 0022 0004'))
    assert.deepEqual(m.subarray(34), hex('012c 000c 0000 0007 0000 000a'))
    assert.equal(dataRecords, 1, 'an options data record counts in the sequence (RFC 7011 §3.1)')
  })

  it('never advertises a rate of 0: an interval the meter never gives reads as every packet', function () {
    assert.deepEqual([0, 1, 10, 65535, 1.5, -3, NaN].map(advertisedInterval), [1, 1, 10, 65535, 1, 1, 1])
    const [{message: m}] = pack(1400, [samplingRecordRun(samplingTemplate(300), 7, 0)])
    assert.equal(m.readUInt32BE(m.length - 4), 1)
  })

  it('puts each options template in a set of its own (nfdump reads the first of a set only)', function () {
    const ids = optionsTemplateIds([{id: 256}, {id: 65000}])
    assert.deepEqual(ids, {stats: 65001, sampling: 65002, interfaceNames: 65003, nfdumpInterfaceNames: 65004})
    const [{message: m}] = pack(1400, [
      optionsTemplates(samplingTemplate(ids.sampling), interfaceNamesTemplate(ids.interfaceNames), nfdumpInterfaceNamesTemplate(ids.nfdumpInterfaceNames)),
    ])
    assert.deepEqual(setIds(m), [3, 3, 3])
    const decoded = new IpfixDecoder().decode(m, 'test')
    assert.deepEqual(
      decoded.templates.map((t) => [t.id, t.scopeFieldCount, t.fields.map((f) => [f.element.id, f.length])]),
      [
        [
          65002,
          1,
          [
            [149, 4],
            [34, 4],
          ],
        ],
        [
          65003,
          1,
          [
            [10, 4],
            [82, 65535],
            [83, 65535],
          ],
        ],
        [
          65004,
          1,
          [
            [149, 4],
            [10, 4],
            [83, 64],
          ],
        ],
      ],
    )
  })

  it('keeps the rate in the message of the data it scales: a message is begun for both when they do not fit together', function () {
    const t = samplingTemplate(300)
    // 100-byte messages: header 16, a rate set 12, then room for one 60-byte record with its set header.
    const fits = pack(100, [filler(400, 1, 60), samplingRecordRun(t, 7, 10), filler(256, 2, 60)])
    assert.deepEqual(
      fits.map((m) => setIds(m.message)),
      [[400], [300, 256], [256]],
      'the rate did not stay behind at the end of the first message, away from its data',
    )
    assert.deepEqual(
      fits.map((m) => [m.message.readUInt32BE(8), m.dataRecords]),
      [
        [0, 1],
        [1, 2],
        [3, 1],
      ],
      'each message headed by the sequence number of its first data record',
    )
    // A data record too long to go with the rate in any message: the rate goes alone, first.
    const alone = pack(100, [samplingRecordRun(t, 7, 10), filler(256, 1, 76)])
    assert.deepEqual(
      alone.map((m) => setIds(m.message)),
      [[300], [256]],
    )
  })

  it('names interfaces in both shapes: the standard one and nfdump 1.7.1 (fixed 64-byte description, one byte short for its end)', function () {
    const a = interfaceNamesTemplate(301)
    const b = nfdumpInterfaceNamesTemplate(302)
    const long = 'é'.repeat(40) // 80 bytes of UTF-8
    const entries = [
      {ifindex: 2, label: LABELS[2]},
      {ifindex: 9, label: {name: 'wan0', description: long}},
    ]
    const [{message: m, dataRecords}] = pack(1400, [optionsTemplates(a, b), ...interfaceNamesRuns(a, b, 7, entries)])
    assert.equal(dataRecords, 4)
    const decoded = new IpfixDecoder().decode(m, 'test')
    assert.deepEqual(
      decoded.records.map((r) => [r.templateId, r.fields]),
      [
        [301, {ingressInterface: 2, interfaceName: 'a0', interfaceDescription: 'uplink to core'}],
        [301, {ingressInterface: 9, interfaceName: 'wan0', interfaceDescription: long}],
        [302, {observationDomainId: 7, ingressInterface: 2, interfaceDescription: 'uplink to core'}],
        [302, {observationDomainId: 7, ingressInterface: 9, interfaceDescription: 'é'.repeat(31)}],
      ],
    )
    // nfdump's record by hand: domain, ifindex, the text NUL-padded to 64 bytes.
    const nfdumpSet = m.subarray(m.length - 2 * 72 - 4)
    assert.deepEqual(nfdumpSet.subarray(0, 4 + 72), Buffer.concat([hex('012e 0094'), u32(7, 2), Buffer.from('uplink to core'.padEnd(64, '\0'))]))
    assert.equal(utf8Prefix('aé', 2), 'a', 'a character is never cut')
  })

  it('makes due the interfaces of both sides of every record, once per domain, again when renamed or after the templates', function () {
    const labels = {...LABELS}
    const looked: number[] = []
    const announcements = new InterfaceAnnouncements({
      label: (domain, ifindex) => {
        looked.push(ifindex)
        return domain === 7 ? labels[ifindex] : undefined
      },
    })
    const b = new FlowBatch(4, 4)
    b.observationDomainId = 7
    b.length = 4
    b.ifindex.set([2, 2, 2, 3])
    b.peerIfindex.set([3, 3, 0, 0])
    assert.deepEqual(
      announcements.due(b).map((e) => [e.ifindex, e.label.name]),
      [
        [2, 'a0'],
        [3, 'a1'],
      ],
    )
    assert.deepEqual(looked, [2, 3], 'a run of one ifindex is looked up once, 0 never')
    assert.deepEqual(announcements.due(b), [], 'announced already')
    labels[3] = {name: 'a1', description: 'to the lab'}
    assert.deepEqual(
      announcements.due(b).map((e) => [e.ifindex, e.label.description]),
      [[3, 'to the lab']],
      'a new alias is announced',
    )
    announcements.forget(7)
    assert.equal(announcements.due(b).length, 2, 'after the templates, everything again')
    b.observationDomainId = 8
    assert.deepEqual(announcements.due(b), [], 'unknown in domain 8: nothing to announce')
  })

  it('groups a batch by the rate its flows were counted at: one group without a list when all share it, the last advertised first', function () {
    const b = new FlowBatch(4, 6)
    b.length = 6
    assert.deepEqual(rateGroups(b), [{interval: 1}], 'a batch nobody set a rate in counts every packet')
    b.samplingInterval.fill(10)
    assert.deepEqual(rateGroups(b, 1), [{interval: 10}])
    b.samplingInterval.set([10, 1, 10, 100, 1, 10])
    const show = (g: ReturnType<typeof rateGroups>) => g.map((x) => [x.interval, [...(x.rows ?? [])]])
    assert.deepEqual(show(rateGroups(b)), [
      [10, [0, 2, 5]],
      [1, [1, 4]],
      [100, [3]],
    ])
    assert.deepEqual(show(rateGroups(b, 100)), [
      [100, [3]],
      [10, [0, 2, 5]],
      [1, [1, 4]],
    ])
    b.length = 0
    assert.deepEqual(rateGroups(b), [])
  })

  describe('as tshark decodes them', function () {
    before(async function () {
      await requireTshark(this)
    })

    it('shows the rate (cflow.sampling_interval) and the interface names (cflow.if_name, cflow.if_descr), with no problem', async function () {
      const ids = optionsTemplateIds([{id: 256}])
      const s = samplingTemplate(ids.sampling)
      const a = interfaceNamesTemplate(ids.interfaceNames)
      const b = nfdumpInterfaceNamesTemplate(ids.nfdumpInterfaceNames)
      const entries = [2, 3].map((ifindex) => ({ifindex, label: LABELS[ifindex]}))
      const messages = pack(1400, [optionsTemplates(s, a, b), ...interfaceNamesRuns(a, b, 7, entries), samplingRecordRun(s, 7, 10)])
      const {records, problems} = await tsharkDissectIpfix(
        messages.map((m) => m.message),
        4739,
      )
      assert.deepEqual(problems, [])
      assert.deepEqual(
        records.map((r) => [r.templateId, r.options, r.fields]),
        [
          [ids.interfaceNames, true, {ingressInterface: 2, interfaceName: 'a0', interfaceDescription: 'uplink to core'}],
          [ids.interfaceNames, true, {ingressInterface: 3, interfaceName: 'a1', interfaceDescription: 'a1'}],
          [ids.nfdumpInterfaceNames, true, {observationDomainId: 7, ingressInterface: 2, interfaceDescription: 'uplink to core'}],
          [ids.nfdumpInterfaceNames, true, {observationDomainId: 7, ingressInterface: 3, interfaceDescription: 'a1'}],
          [ids.sampling, true, {observationDomainId: 7, samplingInterval: 10}],
        ],
      )
    })
  })
})
