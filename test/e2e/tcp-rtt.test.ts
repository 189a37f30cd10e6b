/**
 * TCP handshake round trips end to end: a real TCP connection from a client namespace through a
 * router namespace to a server namespace, the meter on both router interfaces in both directions,
 * the daemon exporting to a collector (the round trips as enterprise-specific elements under the
 * configured PEN), to a JSON flow log and to the metrics. The precise values against known link
 * delays are checked on the delay-line lab; here: both round trips are there, above 0, and
 * together no longer than the client's own connect time.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {renderFields} from '../../src/ipfix/collect/render.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {requireE2e, PrivateDirs, sleep} from '../helpers/e2e.js'
import {sample} from '../helpers/prom.js'
import {Sink} from '../ipfix/flows.js'

const PEN = 32473 // RFC 5612's example PEN
const PORT = 7400

describe('TCP handshake round trips through a namespace router @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`rtt-${id}`)
  const lab = new Lab(id)
  let tmp = ''
  let router = ''
  let flowLog = ''
  let sink: Sink | undefined
  let daemon: DaemonProcess | undefined
  let metricsText = ''
  let sent: {localPort: number; connectMs: number} | undefined
  let sent6: {localPort: number; connectMs: number} | undefined
  let sinkRecords: Record<string, unknown>[] = []
  let rawRecords: Record<string, unknown>[] = []

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-rtt-'))
    flowLog = join(tmp, 'flows.log')
    privateDirs.apply()
    const routed = await lab.router(54, {ipv6: true})
    const {client, server} = routed
    router = routed.router
    await attachMeters(privateDirs.paths, {
      targets: [
        {netns: router, ifname: 'r0'},
        {netns: router, ifname: 'r1'},
      ],
      directions: ['ingress', 'egress'],
      pref: 1,
      handle: 1,
      force: false,
    })

    sink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    const config = join(tmp, 'config.yaml')
    const fields =
      'sourceTransportPort, destinationTransportPort, protocolIdentifier, packetDeltaCount, flowDirection, tcpRttClientMicroseconds, tcpRttServerMicroseconds'
    writeFileSync(
      config,
      [
        `enterpriseNumber: ${PEN}`,
        `collectors:\n- address: 127.0.0.1:${sink.port}`,
        `templates:\n- id: 300\n  fields: [sourceIPv4Address, destinationIPv4Address, ${fields}]`,
        'drainIntervalSeconds: 0.5',
        `logs:\n- file: ${flowLog}`,
        "metrics:\n  listen: '127.0.0.1:0'",
        `stateFile: ${join(tmp, 'state.json')}`,
      ].join('\n') + '\n',
    )
    daemon = new DaemonProcess(config)
    const url = String((await daemon.waitForLog('metrics-listening', () => true, 30_000)).url)
    await daemon.waitForLog('started')
    const tcpSink = await startAgent(server, {mode: 'tcp-sink', host: '0.0.0.0', port: PORT})
    sent = await runAgent<{localPort: number; connectMs: number}>(client, {mode: 'tcp-send', host: '198.18.55.2', port: PORT, bytes: 20_000})
    await tcpSink.result
    // And one over IPv6 (in the flow log and the metrics: the IPFIX template here is IPv4's).
    const tcpSink6 = await startAgent(server, {mode: 'tcp-sink', host: '::', port: PORT + 1})
    sent6 = await runAgent<{localPort: number; connectMs: number}>(client, {mode: 'tcp-send', host: 'fd00:55::2', port: PORT + 1, bytes: 20_000})
    await tcpSink6.result
    // The connection's handshake is paired at the next drain (every 0.5 s): wait for its observation.
    const deadline = Date.now() + 30_000
    for (;;) {
      metricsText = await (await fetch(url)).text()
      if ((sample(metricsText, 'flowctl_tcp_handshake_rtt_seconds_count', {side: 'server'}) ?? 0) >= 2 || Date.now() > deadline) break
      await sleep(200)
    }
    assert.equal(await daemon.stop(), 0, daemon.tail)
    // The last records leave at the stop, over loopback.
    await sink
      .until(() => sink!.records.filter((r) => !r.options && r.fields.protocolIdentifier === 6).length >= 8, 'the connection records', 5000)
      .catch(() => {})
    rawRecords = sink.records.filter((r) => !r.options).map((r) => renderFields(r.fields))
    sinkRecords = sink.records.filter((r) => !r.options).map((r) => renderFields(r.fields, {enterpriseNumber: PEN}))
  })

  after(async function () {
    await daemon?.stop('SIGKILL').catch(() => {})
    await sink?.stop()
    if (router) await detachMeters(privateDirs.paths, {targets: [{netns: router, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  const ofConnection = (r: Record<string, unknown>) =>
    r.protocolIdentifier === 6 &&
    ((r.sourceTransportPort === sent!.localPort && r.destinationTransportPort === PORT) ||
      (r.sourceTransportPort === PORT && r.destinationTransportPort === sent!.localPort))

  function checkRtts(clientUs: unknown, serverUs: unknown, where: string, connection = sent!): void {
    assert.equal(typeof clientUs, 'number', where)
    assert.equal(typeof serverUs, 'number', where)
    const [c, s] = [clientUs as number, serverUs as number]
    assert.ok(c > 0 && s > 0, `${where}: both round trips above 0 (client ${c} µs, server ${s} µs)`)
    // Each rounded to the microsecond: the sum may pass the whole by one.
    assert.ok(c + s <= connection.connectMs * 1000 + 2, `${where}: client ${c} µs + server ${s} µs within the connect time ${connection.connectMs} ms`)
  }

  it('exports both round trips in IPFIX under the configured PEN, as elements 1 and 2, in the first record of each direction at each meter point', function () {
    const timed = sinkRecords.filter((r) => ofConnection(r) && typeof r.tcpRttServerMicroseconds === 'number' && r.tcpRttServerMicroseconds > 0)
    assert.equal(timed.length, 4, `one record per direction and meter point (r0, r1 x in, out): ${JSON.stringify(sinkRecords.filter(ofConnection))}`)
    const values = new Set(timed.map((r) => `${String(r.tcpRttClientMicroseconds)}/${String(r.tcpRttServerMicroseconds)}`))
    assert.equal(values.size, 1, 'the same round trips on every flow of the connection')
    checkRtts(timed[0].tcpRttClientMicroseconds, timed[0].tcpRttServerMicroseconds, 'IPFIX')
    // Undecoded, they are enterprise fields e<PEN>.ie1 and .ie2 of 4 bytes.
    const raw = rawRecords.find((r) => ofConnection(r) && r[`e${PEN}.ie2`] !== '00000000')!
    assert.equal(raw[`e${PEN}.ie1`], (timed[0].tcpRttClientMicroseconds as number).toString(16).padStart(8, '0'))
    // Other records of the connection say 0: none.
    for (const r of sinkRecords.filter((x) => !ofConnection(x) && x.protocolIdentifier !== 6)) assert.equal(r.tcpRttServerMicroseconds, 0)
  })

  it('writes both round trips in the JSON flow log, for IPv4 and IPv6', function () {
    const lines = readFileSync(flowLog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    for (const [family, connection] of [
      [4, sent!],
      [6, sent6!],
    ] as const) {
      const conn = lines.filter((l) => l.proto === 6 && l.ipVersion === family && (l.sport === connection.localPort || l.dport === connection.localPort))
      const timed = conn.filter((l) => 'tcpRttServerMicroseconds' in l)
      assert.equal(timed.length, 4, JSON.stringify(conn))
      checkRtts(timed[0].tcpRttClientMicroseconds, timed[0].tcpRttServerMicroseconds, `flow log, IPv${family}`, connection)
    }
  })

  it('observes each connection once per side in flowctl_tcp_handshake_rtt_seconds, labelled with the interfaces in and out', function () {
    for (const side of ['client', 'server']) {
      assert.equal(sample(metricsText, 'flowctl_tcp_handshake_rtt_seconds_count', {side, in: 'r0', out: 'r1'}), 2, metricsText)
      assert.ok((sample(metricsText, 'flowctl_tcp_handshake_rtt_seconds_sum', {side, in: 'r0', out: 'r1'}) ?? 0) > 0)
    }
    const sum = (side: string) => sample(metricsText, 'flowctl_tcp_handshake_rtt_seconds_sum', {side, in: 'r0', out: 'r1'})!
    assert.ok(sum('client') + sum('server') <= (sent!.connectMs + sent6!.connectMs) / 1000 + 4e-6)
  })
})
