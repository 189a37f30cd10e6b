/**
 * The README's pipeline recipe (goflow2 -> Kafka -> ClickHouse), on the side this machine can
 * run: its table of fields names IPFIX elements by the IDs the registry gives them, flowctl's
 * default IPv4 template carries each of them, a flow sent through flowctl's exporter
 * (`flowctl ipfix send`, the daemon's encoder and templates) reaches tshark and our own decoder
 * with every one of them, under that ID and with the value sent, and the recipe's goflow2
 * mapping maps exactly the rows the table marks "(mapping)" to the protobuf fields it names.
 */
import assert from 'node:assert/strict'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {parse} from 'yaml'

import {elementByName} from '../../src/ipfix/wire/elements.js'
import {DEFAULT_TEMPLATES} from '../../src/ipfix/export/exportable-elements.js'
import {cliOk} from '../helpers/e2e.js'
import {requireTshark, tsharkDissectIpfix} from '../helpers/tshark.js'
import {REPO_ROOT} from '../helpers/unit.js'
import {Sink} from '../ipfix/flows.js'

interface RecipeRow {
  what: string
  element: string
  id: number
  goflow2: string
  protobufNumber: number
  column: string
}

function recipeSection(): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8')
  const start = readme.indexOf('\n## Pipeline:')
  assert.ok(start >= 0, 'README.md has a "## Pipeline:" section')
  const end = readme.indexOf('\n## ', start + 1)
  return readme.slice(start, end < 0 ? undefined : end)
}

function recipeRows(section: string): RecipeRow[] {
  const rows = [...section.matchAll(/^\| ([^|]+?) \| `(\w+)` \((\d+)\) \| `(\w+)` \((\d+)\) \| `(\w+) [^`]+` \|$/gm)]
  return rows.map((m) => ({what: m[1], element: m[2], id: Number(m[3]), goflow2: m[4], protobufNumber: Number(m[5]), column: m[6]}))
}

describe('README pipeline recipe: the IPFIX side', function () {
  this.timeout(120_000)
  const section = recipeSection()
  const rows = recipeRows(section)
  const ipv4Template = DEFAULT_TEMPLATES.find((t) => t.id === 256)!

  it("names each element by its registry ID, all in the default IPv4 template, with ClickHouse columns named as goflow2's fields", function () {
    assert.ok(rows.length >= 14, `${rows.length} rows read from the table`)
    for (const what of ['flow start', 'flow end', 'input interface', 'output interface', 'TCP flags', 'ToS byte', 'VLAN']) {
      assert.ok(
        rows.some((r) => r.what === what),
        `the table has a row for ${what}`,
      )
    }
    for (const r of rows) {
      assert.equal(elementByName(r.element)?.id, r.id, `${r.element} is element ${r.id}`)
      assert.ok(ipv4Template.fields.includes(r.element), `${r.element} is in the default template 256`)
      assert.equal(r.column, r.goflow2, `${r.what}: the ClickHouse column is named as the protobuf field`)
    }
    assert.deepEqual(
      ipv4Template.fields.filter((f) => !rows.some((r) => r.element === f)),
      [],
      'every field of the default IPv4 template has a row',
    )
  })

  it('maps exactly the rows marked "(mapping)" in the goflow2 mapping file, to the protobuf numbers of the table', function () {
    const block = /```yaml\n([\s\S]*?)```/.exec(section)
    assert.ok(block, 'the section has the goflow2 mapping.yaml')
    const mapping = parse(block[1]) as {
      formatter: {protobuf: {name: string; index: number; type: string}[]}
      ipfix: {mapping: {field: number; destination: string}[]}
    }
    const mapped = rows.filter((r) => r.what.endsWith('(mapping)'))
    assert.ok(mapped.length >= 2)
    assert.deepEqual(mapping.ipfix.mapping.map((m) => [m.field, m.destination]).sort(), mapped.map((r) => [r.id, r.goflow2]).sort())
    assert.deepEqual(mapping.formatter.protobuf.map((p) => [p.name, p.index, p.type]).sort(), mapped.map((r) => [r.goflow2, r.protobufNumber, 'varint']).sort())
    for (const r of mapped) assert.ok(section.includes(`uint32 ${r.goflow2} = ${r.protobufNumber};`), `the flow.proto addition for ${r.goflow2}`)
  })

  describe("a flow with every field set, through flowctl's exporter", function () {
    let tmp = ''
    let sink: Sink | undefined
    // Distinct values, none of them 0, so that a field read from the wrong place shows.
    const sent: Record<string, number | string> = {
      sourceIPv4Address: '198.18.5.1',
      destinationIPv4Address: '198.18.5.2',
      sourceTransportPort: 40001,
      destinationTransportPort: 443,
      protocolIdentifier: 6,
      tcpControlBits: 0x1b,
      octetDeltaCount: 123_456,
      packetDeltaCount: 100,
      // The times are set in before(): this body runs when mocha loads the files, which can be many
      // minutes before this suite runs, and the sink refuses times far from the export time.
      flowStartMilliseconds: 0,
      flowEndMilliseconds: 0,
      ingressInterface: 7,
      egressInterface: 9,
      flowDirection: 1,
      flowEndReason: 3,
      ipClassOfService: 0xb8,
      vlanId: 100,
      ipNextHopIPv4Address: '198.18.5.254',
      minimumTTL: 61,
      maximumTTL: 63,
    }

    before(async function () {
      await requireTshark(this)
      const now = Date.now()
      sent.flowStartMilliseconds = now - 4_321
      sent.flowEndMilliseconds = now - 123
      tmp = mkdtempSync(join(tmpdir(), 'fct-recipe-'))
      sink = await Sink.start({timeToleranceSeconds: 600})
      // No templates in the config: the defaults, as a daemon with no templates sends them.
      writeFileSync(join(tmp, 'config.yaml'), `collectors:\n- address: 127.0.0.1:${sink.port}\n`)
      writeFileSync(
        join(tmp, 'flows.yaml'),
        `flowsets:\n- templateId: 256\n  flows:\n  - ${Object.entries(sent)
          .map(([k, v]) => `${k}: ${v}`)
          .join('\n    ')}\n`,
      )
      await cliOk(['ipfix', 'send', '-c', join(tmp, 'config.yaml'), '-f', join(tmp, 'flows.yaml')])
      await sink.until(() => sink!.flows.length === 1, 'the flow')
    })

    after(async function () {
      await sink?.stop()
      if (tmp) rmSync(tmp, {recursive: true, force: true})
    })

    it("tshark finds each of the recipe's elements in template 256 under its ID, with the value sent", async function () {
      const dissection = await tsharkDissectIpfix(sink!.datagrams, sink!.port)
      assert.deepEqual(dissection.problems, [])
      const template = [...dissection.templates.entries()].find(([key]) => key.endsWith('/256'))
      assert.ok(template, 'tshark decoded template 256')
      for (const r of rows) assert.ok(template[1].ids.includes(r.id), `template 256 has element ${r.id} (${r.element})`)
      const records = dissection.records.filter((x) => x.templateId === 256)
      assert.equal(records.length, 1)
      for (const r of rows) assert.equal(records[0].fields[r.element], sent[r.element], `tshark: ${r.element} (${r.id})`)
    })

    it("our collector (flowctl ipfix listen's decoder) reads the same", function () {
      const [flow] = sink!.flows
      for (const r of rows) assert.equal(flow[r.element], sent[r.element], `decoder: ${r.element} (${r.id})`)
      assert.deepEqual(sink!.checker.report().reasons, [])
    })
  })
})
