import assert from 'node:assert/strict'

import type {Flow} from '../../src/view/flow.js'
import {writeFlowJson, writeFlowTable} from '../../src/view/render.js'
import {collector, fromArray} from '../helpers/unit.js'

const HEADER = ['NETNS', 'INTERFACE', 'DIR', 'PROTO', 'SRC', 'DST', 'PACKETS', 'BYTES', 'TCP FLAGS', 'START', 'END']
const RIGHT = new Set(['PACKETS', 'BYTES'])

function flow(over: Partial<Flow> = {}): Flow {
  return {
    netns: 'root',
    interface: 'eth0',
    ifindex: 2,
    direction: 'ingress',
    ipVersion: 4,
    src: '10.0.0.1',
    dst: '10.0.0.2',
    sport: 40000,
    dport: 80,
    proto: 6,
    protoName: 'tcp',
    vlanId: 0,
    innerVlanId: 0,
    samplingInterval: 1,
    tos: 0,
    peerIfindex: 0,
    nextHop: '',
    forwardingStatus: 0,
    minTtl: 64,
    maxTtl: 64,
    packets: 3,
    bytes: 180,
    tcpFlags: 0x12,
    tcpFlagsText: '...A..S.',
    start: 1_700_000_000_123, // 2023-11-14T22:13:20.123Z
    end: 1_700_000_001_456,
    ...over,
  }
}

const FLOWS: Flow[] = [
  flow(),
  flow({
    netns: 'lab-namespace-b',
    interface: 'veth-router0',
    direction: 'egress',
    ipVersion: 6,
    src: '2001:db8::1',
    dst: '2001:db8::2',
    sport: 53,
    dport: 5353,
    proto: 17,
    protoName: 'udp',
    packets: 1234567,
    bytes: 98765432100,
    tcpFlags: 0,
    tcpFlagsText: '........',
    samplingInterval: 10,
  }),
  flow({proto: 1, protoName: 'icmp', sport: 0, dport: 2048, icmpType: 8, icmpCode: 0, tcpFlags: 0, tcpFlagsText: '........', start: 0, end: 0}),
]

/** What each cell should read, written by hand (TZ is UTC in these tests). */
const CELLS: string[][] = [
  ['root', 'eth0', 'ingress', 'tcp', '10.0.0.1:40000', '10.0.0.2:80', '3', '180', '...A..S.', '2023-11-14 22:13:20.123', '2023-11-14 22:13:21.456'],
  [
    'lab-namespace-b',
    'veth-router0',
    'egress',
    'udp',
    '[2001:db8::1]:53',
    '[2001:db8::2]:5353',
    '1234567 (1:10)',
    '98765432100',
    '',
    '2023-11-14 22:13:20.123',
    '2023-11-14 22:13:21.456',
  ],
  ['root', 'eth0', 'ingress', 'icmp', '10.0.0.1', '10.0.0.2:8/0', '3', '180', '', '-', '-'],
]

/**
 * Checks that `lines` is the header and then rows whose cells sit under their header names:
 * left-aligned cells start where their header name starts, right-aligned ones end where it ends,
 * with at least two blanks before the next column.
 */
function assertAligned(lines: string[], cells: string[][]): void {
  const header = lines[0]
  let from = 0
  const cols = HEADER.map((name) => {
    const at = header.indexOf(name, from)
    assert.ok(at >= 0, `header ${name} missing in ${JSON.stringify(header)}`)
    from = at + name.length
    return {name, start: at, end: at + name.length}
  })
  assert.equal(header.slice(0, cols[0].start).trim(), '')
  assert.equal(lines.length, cells.length + 1)
  cells.forEach((row, r) => {
    const line = lines[r + 1]
    row.forEach((cell, i) => {
      const c = cols[i]
      if (cell === '') return
      const start = RIGHT.has(c.name) ? c.end - cell.length : c.start
      assert.equal(line.slice(start, start + cell.length), cell, `row ${r} column ${c.name} in ${JSON.stringify(line)}`)
      if (start > 0) assert.equal(line[start - 1], ' ', `row ${r} column ${c.name} is not separated`)
      const next = i + 1 < cols.length ? cols[i + 1] : undefined
      if (next && !RIGHT.has(next.name)) assert.ok(start + cell.length + 2 <= next.start, `row ${r}: column ${c.name} runs into ${next.name}`)
    })
    assert.equal(line, line.trimEnd(), 'trailing blanks')
  })
}

describe('flow/render', function () {
  let tz: string | undefined
  before(function () {
    tz = process.env.TZ
    process.env.TZ = 'UTC'
  })
  after(function () {
    if (tz === undefined) delete process.env.TZ
    else process.env.TZ = tz
  })

  describe('writeFlowJson', function () {
    it('writes a JSON array of the flows', async function () {
      const out = collector()
      const n = await writeFlowJson(fromArray(FLOWS), out)
      assert.equal(n, 3)
      assert.deepEqual(JSON.parse(out.text()), FLOWS)
    })

    it('writes a valid empty array for zero flows', async function () {
      const out = collector()
      assert.equal(await writeFlowJson(fromArray([]), out), 0)
      assert.deepEqual(JSON.parse(out.text()), [])
    })

    it('writes a valid array for one flow', async function () {
      const out = collector()
      assert.equal(await writeFlowJson(fromArray([FLOWS[1]]), out), 1)
      assert.deepEqual(JSON.parse(out.text()), [FLOWS[1]])
    })

    it('waits for a slow reader (backpressure) and still writes everything', async function () {
      const many = Array.from({length: 200}, (_, i) => flow({sport: i}))
      const out = collector({highWaterMark: 16, slow: true})
      assert.equal(await writeFlowJson(fromArray(many), out), 200)
      assert.deepEqual(JSON.parse(out.text()), many)
    })
  })

  describe('writeFlowTable', function () {
    it('writes nothing for zero flows', async function () {
      const out = collector()
      assert.equal(await writeFlowTable(fromArray([]), out), 0)
      assert.equal(out.text(), '')
    })

    it('writes a header and one aligned row per flow', async function () {
      const out = collector()
      assert.equal(await writeFlowTable(fromArray(FLOWS), out), 3)
      const text = out.text()
      assert.ok(text.endsWith('\n'))
      assertAligned(text.slice(0, -1).split('\n'), CELLS)
    })

    it("-o wide: says every flow's sampling in a column of its own", async function () {
      const out = collector()
      await writeFlowTable(fromArray(FLOWS), out, {wide: true})
      const [header, ...rows] = out.text().slice(0, -1).split('\n')
      const at = header.indexOf('SAMPLING')
      assert.ok(at > 0)
      assert.deepEqual(
        rows.map((r) => r.slice(at, at + 'SAMPLING'.length).trim()),
        ['1:1', '1:10', '1:1'],
      )
    })

    it('keeps the columns aligned past the rows it sizes them by', async function () {
      // 1000 narrow flows size the columns; the rows after them are streamed with those widths.
      const narrow = Array.from({length: 1003}, (_, i) => flow({packets: i, bytes: i * 10}))
      const out = collector({highWaterMark: 64, slow: true})
      assert.equal(await writeFlowTable(fromArray(narrow), out), 1003)
      const lines = out.text().slice(0, -1).split('\n')
      assert.equal(lines.length, 1004)
      assert.equal(lines.filter((l) => l.startsWith('NETNS')).length, 1, 'one header only')
      const cells = narrow.map((_f, i) => [
        'root',
        'eth0',
        'ingress',
        'tcp',
        '10.0.0.1:40000',
        '10.0.0.2:80',
        String(i),
        String(i * 10),
        '...A..S.',
        '2023-11-14 22:13:20.123',
        '2023-11-14 22:13:21.456',
      ])
      assertAligned(lines, cells)
    })
  })
})
