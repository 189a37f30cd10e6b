/**
 * `flowctl ipfix listen` run as a user runs it (bin/run.js, a child process, no root), fed over
 * loopback UDP by CollectorExporter, by raw datagrams, and by `flowctl ipfix send`.
 */
import assert from 'node:assert/strict'
import {createSocket} from 'node:dgram'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {listen} from '../helpers/listen.js'
import {REPO_ROOT} from '../helpers/unit.js'
import {batchOf, expectedJson, exporterTo, sampleFlows} from '../ipfix/flows.js'
import {hex, ID, message, set, spec, templateRecord, u16, u32} from '../ipfix/messages.js'

const CLI = `${REPO_ROOT}bin/run.js`

/** Sends raw datagrams from one socket (one exporter), in order. */
async function sendRaw(port: number, datagrams: Buffer[]): Promise<number> {
  const socket = createSocket('udp4')
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve))
  for (const d of datagrams) await new Promise<void>((resolve, reject) => socket.send(d, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())))
  const local = socket.address().port
  socket.close()
  return local
}

/** Exports the sample flows (3 IPv4 then 3 IPv6) with CollectorExporter; returns its source port. */
async function exportSamples(port: number, domain = 1): Promise<number> {
  const e = exporterTo(port)
  await e.open()
  e.exportBatch(batchOf(sampleFlows(4), domain))
  e.exportBatch(batchOf(sampleFlows(6), domain))
  await e.flushed()
  const local = e.localPort!
  e.close()
  return local
}

const T = set(2, templateRecord(300, spec(ID.sourceIPv4Address, 4), spec(ID.packetDeltaCount, 4)))
function data(seq: number, ...packets: number[]): Buffer {
  return message({seq, exportTime: Math.floor(Date.now() / 1000)}, set(300, ...packets.map((p) => u32(0x0a000001, p))))
}

describe('commands/ipfix listen', function () {
  this.timeout(60_000)

  it('--json --count N prints each record as one JSON object and stops after N', async function () {
    const l = await listen(['--json', '--count', '6'])
    const from = await exportSamples(l.port, 3)
    const r = await l.done
    assert.equal(r.code, 0, r.stderr)
    const lines = r.stdout.trim().split('\n')
    assert.equal(lines.length, 6, r.stdout)
    const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>)
    const flows = [...sampleFlows(4), ...sampleFlows(6)]
    records.forEach((rec, i) => {
      const {exporter, observationDomainId, templateId, sequenceNumber, exportTime, ...fields} = rec
      assert.equal(exporter, `127.0.0.1:${from}`)
      assert.deepEqual([observationDomainId, templateId, sequenceNumber], [3, i < 3 ? 256 : 257, i < 3 ? 0 : 3])
      assert.ok(Math.abs(Number(exportTime) - Date.now() / 1000) < 60, `export time ${String(exportTime)}`)
      assert.deepEqual(fields, expectedJson(flows[i]))
    })
  })

  it('prints one line per record without --json', async function () {
    const l = await listen(['--count', '1'])
    const from = await sendRaw(l.port, [message({}, T), data(0, 7)])
    const r = await l.done
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, new RegExp(`^127\\.0\\.0\\.1:${from} od=0 tpl=300 seq=0 sourceIPv4Address=10\\.0\\.0\\.1 packetDeltaCount=7\\n$`))
  })

  it('prints the router fields of the default templates in lines: next hops as addresses, both interfaces, TTLs', async function () {
    const l = await listen(['--count', '6'])
    await exportSamples(l.port)
    const r = await l.done
    assert.equal(r.code, 0, r.stderr)
    const lines = r.stdout.trim().split('\n')
    const flows = [...sampleFlows(4), ...sampleFlows(6)]
    assert.equal(lines.length, flows.length, r.stdout)
    lines.forEach((line, i) => {
      const f = flows[i]
      const [ingress, egress] = f.direction === 0 ? [f.ifindex, f.peerIfindex] : [f.peerIfindex, f.ifindex]
      const v = f.family === 4 ? 'IPv4' : 'IPv6'
      assert.ok(line.includes(` ingressInterface=${ingress} egressInterface=${egress} `), line)
      assert.ok(line.endsWith(` ipNextHop${v}Address=${f.nextHop} minimumTTL=${f.minTtl} maximumTTL=${f.maxTtl}`), line)
    })
    // Directly connected: the zero address, as an address.
    assert.match(lines[1], / ipNextHopIPv4Address=0\.0\.0\.0 /)
    assert.match(lines[4], / ipNextHopIPv6Address=:: /)
  })

  it('reports a malformed datagram in one stderr line and goes on listening', async function () {
    const l = await listen(['--json', '--count', '2'])
    const bad = message({}, u16(300, 2))
    const from = await sendRaw(l.port, [hex('00 09 00 05'), message({}, T), bad, data(0, 1, 2)])
    const r = await l.done
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(
      r.stderr
        .trim()
        .split('\n')
        .filter((line) => line.includes('malformed')),
      [
        `flowctl: malformed IPFIX message from 127.0.0.1:${from} (4 bytes): message of 4 bytes is shorter than the 16-byte IPFIX message header (at byte 0); still listening`,
        `flowctl: malformed IPFIX message from 127.0.0.1:${from} (20 bytes): set 300 has length 2, shorter than its 4-byte header (at byte 18); still listening`,
      ],
    )
    assert.deepEqual(
      r.stdout
        .trim()
        .split('\n')
        .map((line) => (JSON.parse(line) as {packetDeltaCount: number}).packetDeltaCount),
      [1, 2],
    )
  })

  it('--check: PASS and exit 0 for a well-formed stream', async function () {
    const l = await listen(['--json', '--count', '6', '--check'])
    await exportSamples(l.port)
    const r = await l.done
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stderr, /^IPFIX conformance: PASS \(3 messages, 0 malformed\)$/m)
    assert.doesNotMatch(r.stderr, /FAIL/)
  })

  it('--check: the report and exit 1 for a defective stream (a sequence gap)', async function () {
    const l = await listen(['--count', '2', '--check'])
    const from = await sendRaw(l.port, [message({}, T), data(0, 1), data(5, 2)])
    const r = await l.done
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stderr, /^IPFIX conformance: FAIL \(3 messages, 0 malformed\)$/m)
    assert.match(r.stderr, /^ {4}expected sequence number 1, got 5: 4 records missing$/m)
    assert.ok(r.stderr.includes(`FAIL because:\n  - 127.0.0.1:${from} domain 0: 1 sequence gap (4 records missing, 0 duplicated or reordered)`), r.stderr)
  })

  it('--check --duration: a stream that sent nothing fails', async function () {
    const r = await (await listen(['--check', '--duration', '0.5'])).done
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stderr, /^ {2}- no IPFIX message was received$/m)
  })

  describe('fed by flowctl ipfix send', function () {
    let dir: string
    before(async function () {
      dir = await mkdtemp(join(tmpdir(), 'flowctl-ipfix-send-'))
      await writeFile(
        join(dir, 'flows.yaml'),
        `flowsets:
- templateId: 1001
  flows:
  - SourceIPv4Address: 0x0a010001
    DestinationIPv4Address: 10.1.0.2
    ProtocolIdentifier: 6
    PacketDeltaCount: 100
  - sourceIPv4Address: 192.0.2.1
    octetDeltaCount: 123456789012
`,
      )
    })
    after(async function () {
      await rm(dir, {recursive: true, force: true})
    })

    it('receives the flows of a YAML file, fields not given as zero', async function () {
      const l = await listen(['--json', '--count', '2', '--check'])
      await writeFile(
        join(dir, 'config.yaml'),
        `collectors:
- address: 127.0.0.1:${l.port}
templates:
- id: 1001
  fields: [SourceIPv4Address, DestinationIPv4Address, ProtocolIdentifier, OctetDeltaCount, PacketDeltaCount]
`,
      )
      const sent = await execa(process.execPath, [CLI, 'ipfix', 'send', '-c', join(dir, 'config.yaml'), '-f', join(dir, 'flows.yaml')], {
        reject: false,
        timeout: 30_000,
      })
      assert.equal(sent.exitCode, 0, String(sent.stderr))
      assert.match(String(sent.stdout), new RegExp(`^127\\.0\\.0\\.1:${l.port}: 2 records in 2 messages \\(\\d+ bytes\\)$`))
      const r = await l.done
      assert.equal(r.code, 0, r.stderr)
      const fields = r.stdout
        .trim()
        .split('\n')
        .map((line) => {
          const {exporter, observationDomainId, templateId, sequenceNumber, exportTime, ...rest} = JSON.parse(line) as Record<string, unknown>
          void [exporter, exportTime]
          return {observationDomainId, templateId, sequenceNumber, ...rest}
        })
      assert.deepEqual(fields, [
        {
          observationDomainId: 1,
          templateId: 1001,
          sequenceNumber: 0,
          sourceIPv4Address: '10.1.0.1',
          destinationIPv4Address: '10.1.0.2',
          protocolIdentifier: 6,
          octetDeltaCount: 0,
          packetDeltaCount: 100,
        },
        {
          observationDomainId: 1,
          templateId: 1001,
          sequenceNumber: 0,
          sourceIPv4Address: '192.0.2.1',
          destinationIPv4Address: '0.0.0.0',
          protocolIdentifier: 0,
          octetDeltaCount: 123456789012,
          packetDeltaCount: 0,
        },
      ])
      assert.match(r.stderr, /^IPFIX conformance: PASS/m)
    })
  })
})
