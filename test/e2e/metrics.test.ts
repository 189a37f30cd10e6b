/**
 * The daemon's metrics and flow logs end to end: a metered veth pair in a namespace lab, real
 * traffic, `flowctl daemon -c FILE` as a child, /metrics scraped over HTTP, the collector's
 * datagrams and the flow log's lines compared with them.
 *
 * Oracles: the traffic agents send known datagrams (UDP and ICMP packets and IP bytes are computed
 * from what was sent), and for TCP the veth's own counters: the links carry nothing but our IP
 * traffic (static neighbours, no IPv6, offloads off), so the link's packets are the flows' packets
 * and its bytes their IP bytes plus 14 bytes of Ethernet header each.
 *
 * Pins, run state and daemon state live in private directories (FLOWCTL_*), the namespaces are
 * fct-<random>, the metrics port is the kernel's choice (listen 127.0.0.1:0, read from the log).
 */
import assert from 'node:assert/strict'
import {createSocket, type Socket} from 'node:dgram'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {IpfixDecoder} from '../../src/ipfix/collect/decoder.js'
import {Lab} from '../../src/lab/lab.js'
import {ping, runAgent, startAgent} from '../../src/lab/traffic.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {cli, cliOk, requireE2e, sleep, PrivateDirs} from '../helpers/e2e.js'
import {sample} from '../helpers/prom.js'
import {Sink as IpfixSink} from '../ipfix/flows.js'

const ETH = 14

/** A UDP socket standing for the collector: every datagram, and the data records in them. */
class Sink {
  private socket?: Socket
  readonly decoder = new IpfixDecoder({applyWithdrawals: false})
  messages = 0
  bytes = 0
  records = 0

  async start(): Promise<number> {
    const socket = createSocket('udp4')
    this.socket = socket
    socket.on('message', (msg, rinfo) => {
      this.messages++
      this.bytes += msg.length
      this.records += this.decoder.decode(msg, `${rinfo.address}:${rinfo.port}`).records.length
    })
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r))
    return socket.address().port
  }

  close(): void {
    this.socket?.close()
  }
}

describe('daemon metrics and flow logs end to end @e2e', function () {
  this.timeout(240_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(id)
  const dirs = privateDirs.env
  const lab = new Lab(id)
  let tmp = ''
  let flowLog = ''
  let configFile = ''
  const sink = new Sink()
  let a = ''
  let b = ''
  let daemon: DaemonProcess | undefined
  let url = ''
  let collector = ''
  let configYaml = ''
  const udpSports = [40001, 40002, 40003]
  let tcpPort = 0
  let tcpLink = {tx: {packets: 0, bytes: 0}, rx: {packets: 0, bytes: 0}}

  async function scrape(): Promise<string> {
    const res = await fetch(url)
    assert.equal(res.status, 200)
    return res.text()
  }

  async function waitForMetric(what: string, done: (text: string) => boolean, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const text = await scrape()
      if (done(text)) return text
      if (Date.now() > deadline)
        throw new Error(
          `timed out waiting for ${what}:\n${text
            .split('\n')
            .filter((l) => l.startsWith('flowctl_') && !l.startsWith('flowctl_process') && !l.startsWith('flowctl_nodejs'))
            .join('\n')}\n${daemon?.tail}`,
        )
      await sleep(200)
    }
  }

  const exported = (text: string) =>
    ['idle_timeout', 'active_timeout', 'end_of_flow', 'forced_end', 'lack_of_resources'].reduce(
      (n, reason) => n + (sample(text, 'flowctl_flows_exported_total', {netns: a, reason}) ?? 0),
      0,
    )

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-metrics-'))
    flowLog = join(tmp, 'flows.log')
    configFile = join(tmp, 'config.yaml')
    privateDirs.apply()
    a = await lab.namespace('a')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.20.1/24', '198.18.20.2/24'], quiet: true})
    await lab.veth(a, 'a1', b, 'b1', {v4: ['198.18.21.1/24', '198.18.21.2/24'], quiet: true})
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '-n', 'a1'])

    collector = `127.0.0.1:${await sink.start()}`
    // A hook that adds a field (a program, no shell), and one that prints garbage.
    const enrich = join(tmp, 'enrich.mjs')
    writeFileSync(
      enrich,
      "let s='';process.stdin.on('data',(d)=>(s+=d)).on('end',()=>process.stdout.write(JSON.stringify(JSON.parse(s).map((r)=>({...r,site:'lab'})))))\n",
    )
    configYaml = [
      `collectors:\n- address: ${collector}`,
      'drainIntervalSeconds: 0.5',
      'idleTimeoutSeconds: 3',
      'activeTimeoutSeconds: 60',
      `meters:\n- netns: ${a}`,
      `logs:\n- file: ${flowLog}\n  hooks:\n  - name: enrich\n    command: [${process.execPath}, ${enrich}]\n  - name: broken\n    shell: cat >/dev/null; echo garbage`,
      "metrics:\n  listen: '127.0.0.1:0'",
      `stateFile: ${dirs.FLOWCTL_STATE_DIR}/daemon-state.json`,
    ].join('\n')
    writeFileSync(configFile, `${configYaml}\n`)
    daemon = new DaemonProcess(configFile)
    url = String((await daemon.waitForLog('metrics-listening', () => true, 30_000)).url)
    await daemon.waitForLog('started')
    // The first drain (what was counted before the daemon) is behind us before the traffic.
    await waitForMetric('a first drain', (t) => (sample(t, 'flowctl_drains_total', {netns: a}) ?? 0) >= 2)

    // UDP: 3 flows x 20 datagrams of 100 bytes, a -> b on a0.
    const udpSink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: 7000})
    for (const sport of udpSports) await runAgent(a, {mode: 'udp-send', host: '198.18.20.2', port: 7000, sport, count: 20, size: 100})
    udpSink.stop()
    // ICMP echo: 4 requests and 4 replies of 84 IP bytes.
    await ping(a, '198.18.20.2', 4, 56, 0.05)
    // TCP on its own link: 100 kB, then FIN both ways.
    const before = await lab.linkStats(a, 'a1')
    const server = await startAgent(b, {mode: 'tcp-sink', host: '198.18.21.2', port: 8000})
    tcpPort = (await runAgent<{localPort: number}>(a, {mode: 'tcp-send', host: '198.18.21.2', port: 8000, bytes: 100_000})).localPort
    await server.result
    await sleep(200) // the last ACK
    const after = await lab.linkStats(a, 'a1')
    tcpLink = {
      tx: {packets: after.txPackets - before.txPackets, bytes: after.txBytes - before.txBytes},
      rx: {packets: after.rxPackets - before.rxPackets, bytes: after.rxBytes - before.rxBytes},
    }
  })

  after(async function () {
    sink.close()
    if (daemon) await daemon.stop('SIGKILL').catch(() => {})
    if (a) await cli(['meter', 'detach', '--netns', a]).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it('counts the packets and IP bytes of the exported flows exactly, per interface, direction and protocol', async function () {
    const text = await waitForMetric('7 flows exported', (t) => exported(t) >= 7)
    const m = (name: string, labels: Record<string, string>) => sample(text, name, {netns: a, ...labels}) ?? 0
    assert.equal(m('flowctl_metered_packets_total', {interface: 'a0', direction: 'egress', protocol: 'udp'}), 60)
    assert.equal(m('flowctl_metered_bytes_total', {interface: 'a0', direction: 'egress', protocol: 'udp'}), 60 * (20 + 8 + 100))
    assert.equal(m('flowctl_metered_packets_total', {interface: 'a0', direction: 'ingress', protocol: 'udp'}), 0, 'the sink listens: nothing came back')
    for (const direction of ['egress', 'ingress']) {
      assert.equal(m('flowctl_metered_packets_total', {interface: 'a0', direction, protocol: 'icmp'}), 4)
      assert.equal(m('flowctl_metered_bytes_total', {interface: 'a0', direction, protocol: 'icmp'}), 4 * 84)
    }
    assert.equal(m('flowctl_metered_packets_total', {interface: 'a1', direction: 'egress', protocol: 'tcp'}), tcpLink.tx.packets)
    assert.equal(m('flowctl_metered_bytes_total', {interface: 'a1', direction: 'egress', protocol: 'tcp'}), tcpLink.tx.bytes - ETH * tcpLink.tx.packets)
    assert.equal(m('flowctl_metered_packets_total', {interface: 'a1', direction: 'ingress', protocol: 'tcp'}), tcpLink.rx.packets)
    assert.equal(m('flowctl_metered_bytes_total', {interface: 'a1', direction: 'ingress', protocol: 'tcp'}), tcpLink.rx.bytes - ETH * tcpLink.rx.packets)
    // 3 UDP and 2 ICMP flows went quiet; the TCP connection ended with FIN both ways.
    assert.equal(m('flowctl_flows_exported_total', {reason: 'idle_timeout'}), 5)
    assert.equal(m('flowctl_flows_exported_total', {reason: 'end_of_flow'}), 2)
    assert.equal(exported(text), 7)
  })

  it("counts drains, their duration, the maps' capacity and fill, and nothing not metered", async function () {
    const text = await scrape()
    const drains = sample(text, 'flowctl_drains_total', {netns: a})!
    assert.ok(drains >= 4, `${drains} drains`)
    const count = sample(text, 'flowctl_drain_duration_seconds_count', {netns: a})!
    assert.ok(Math.abs(count - drains) <= 1, 'one duration per drain')
    assert.equal(sample(text, 'flowctl_drain_duration_seconds_bucket', {netns: a, le: '+Inf'}), count)
    assert.ok(sample(text, 'flowctl_drain_entries_total', {netns: a})! >= 7)
    for (const family of ['ipv4', 'ipv6']) {
      assert.equal(sample(text, 'flowctl_meter_map_capacity_flows', {netns: a, family}), 1048576)
      assert.ok(sample(text, 'flowctl_meter_map_fill_ratio', {netns: a, family})! < 0.01)
    }
    for (const iface of ['a0', 'a1']) {
      for (const direction of ['ingress', 'egress']) {
        assert.equal(sample(text, 'flowctl_not_metered_packets_total', {netns: a, interface: iface, direction}), 0)
        assert.equal(sample(text, 'flowctl_not_metered_bytes_total', {netns: a, interface: iface, direction}), 0)
      }
    }
    assert.equal(sample(text, 'flowctl_flows_pending', {netns: a}), 0)
  })

  it('reports what it sent to the collector exactly as the collector received it', async function () {
    let text = ''
    const deadline = Date.now() + 20_000
    for (;;) {
      text = await scrape()
      const messages = sample(text, 'flowctl_ipfix_messages_total', {collector})
      if (messages === sink.messages && sample(text, 'flowctl_ipfix_sent_bytes_total', {collector}) === sink.bytes) break
      if (Date.now() > deadline)
        assert.fail(
          `metrics say ${messages} messages / ${sample(text, 'flowctl_ipfix_sent_bytes_total', {collector})} B, the collector got ${sink.messages} / ${sink.bytes} B`,
        )
      await sleep(200)
    }
    assert.equal(sample(text, 'flowctl_ipfix_records_total', {collector}), sink.records)
    assert.ok(sink.records >= 7, `${sink.records} records`)
    assert.equal(sample(text, 'flowctl_ipfix_send_errors_total', {collector}), 0)
    // A collector that answers: nothing held, nothing dropped.
    assert.deepEqual(
      ['flowctl_ipfix_spool_messages', 'flowctl_ipfix_spool_bytes', 'flowctl_ipfix_spool_dropped_messages_total'].map((m) => sample(text, m, {collector})),
      [0, 0, 0],
    )
    assert.ok(sample(text, 'flowctl_ipfix_template_refreshes_total', {collector})! >= 1)
  })

  it("compares what the meter saw with the interfaces' own counters: equal, Ethernet headers aside", async function () {
    // The kernel is read right after each drain: wait until one has passed since the traffic.
    const text = await waitForMetric('meter and kernel to agree', (t) =>
      ['a0', 'a1'].every((iface) =>
        ['ingress', 'egress'].every((direction) => {
          const l = {netns: a, interface: iface, direction}
          const packets = sample(t, 'flowctl_interface_meter_packets_total', l) ?? -1
          return packets > 0 && packets === sample(t, 'flowctl_interface_kernel_packets_total', l)
        }),
      ),
    )
    for (const iface of ['a0', 'a1']) {
      for (const direction of ['ingress', 'egress']) {
        const l = {netns: a, interface: iface, direction}
        const packets = sample(text, 'flowctl_interface_meter_packets_total', l)!
        const bytes = sample(text, 'flowctl_interface_meter_bytes_total', l)!
        assert.equal(bytes + ETH * packets, sample(text, 'flowctl_interface_kernel_bytes_total', l), `${iface} ${direction}`)
        assert.equal(sample(text, 'flowctl_interface_accuracy_ratio', l), 1, `${iface} ${direction}`)
      }
    }
    // What the meter saw on a1 is the TCP connection, exactly.
    assert.equal(sample(text, 'flowctl_interface_meter_packets_total', {netns: a, interface: 'a1', direction: 'egress'}), tcpLink.tx.packets)
  })

  it('writes each exported flow to the flow log, enriched by the working hook, and counts the broken one', async function () {
    const text = await waitForMetric('7 records in the flow log', (t) => sample(t, 'flowctl_flow_log_records_total', {output: flowLog}) === 7)
    const records = readFileSync(flowLog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    assert.equal(records.length, 7)
    for (const r of records) {
      assert.equal(r.site, 'lab', 'enriched')
      assert.equal(r.netns, a)
      for (const key of [
        'src',
        'dst',
        'proto',
        'sport',
        'dport',
        'ingressIfindex',
        'egressIfindex',
        'pkts',
        'bytes',
        'start',
        'end',
        'finished',
        'interface',
        'direction',
        'tcpFlags',
        'endReason',
      ]) {
        assert.ok(key in r, `${key} in ${JSON.stringify(r)}`)
      }
    }
    const udp = records.filter((r) => r.proto === 17)
    assert.deepEqual(udp.map((r) => r.sport).sort(), udpSports)
    assert.ok(udp.every((r) => r.pkts === 20 && r.bytes === 20 * 128 && r.interface === 'a0' && r.direction === 'egress' && r.endReason === 'idleTimeout'))
    const tcpOut = records.find((r) => r.proto === 6 && r.sport === tcpPort)!
    assert.deepEqual([tcpOut.interface, tcpOut.finished, tcpOut.endReason, tcpOut.pkts], ['a1', 1, 'endOfFlowDetected', tcpLink.tx.packets])
    const failures = sample(text, 'flowctl_hook_failures_total', {output: flowLog, hook: 'broken', reason: 'garbage'})!
    assert.ok(failures >= 1, `${failures} failures`)
    assert.equal(sample(text, 'flowctl_hook_failures_total', {output: flowLog, hook: 'enrich', reason: 'garbage'}), 0)
    assert.ok(daemon!.log.some((l) => l.event === 'hook-failed' && l.hook === 'broken'))
  })

  it('reopens the flow log on SIGHUP after rotation, and counts reloads by result', async function () {
    renameSync(flowLog, `${flowLog}.1`)
    daemon!.child.kill('SIGHUP')
    await waitForMetric('a reload', (t) => sample(t, 'flowctl_config_reloads_total', {result: 'ok'}) === 1)
    const udpSink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: 7000})
    await runAgent(a, {mode: 'udp-send', host: '198.18.20.2', port: 7000, sport: 40009, count: 5, size: 50})
    udpSink.stop()
    const text = await waitForMetric('the new flow in the log', (t) => sample(t, 'flowctl_flow_log_records_total', {output: flowLog}) === 8)
    const rotated = readFileSync(`${flowLog}.1`, 'utf8').trim().split('\n')
    const current = readFileSync(flowLog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    assert.equal(rotated.length, 7)
    assert.equal(current.length, 1)
    assert.deepEqual([current[0].sport, current[0].pkts, current[0].bytes, current[0].site], [40009, 5, 5 * 78, 'lab'])
    assert.equal(sample(text, 'flowctl_metered_packets_total', {netns: a, interface: 'a0', direction: 'egress', protocol: 'udp'}), 65)

    // A config that does not load is refused; the daemon keeps running.
    writeFileSync(configFile, 'collectors: [\n')
    daemon!.child.kill('SIGHUP')
    await waitForMetric('a refused reload', (t) => sample(t, 'flowctl_config_reloads_total', {result: 'refused'}) === 1)
    writeFileSync(configFile, `${configYaml}\n`)
  })

  it('refuses to start on a metrics port in use, with one line naming metrics.listen', async function () {
    const port = new URL(url).port
    const other = join(tmp, 'other.yaml')
    writeFileSync(other, `collectors:\n- address: ${collector}\nmetrics:\n  listen: 127.0.0.1:${port}\nstateFile: ${tmp}/other-state.json\n`)
    const r = await cli(['daemon', '-c', other])
    assert.equal(r.exitCode, 1)
    const lines = r.stderr.trim().split('\n')
    assert.equal(lines.length, 1, r.stderr)
    assert.match(
      lines[0],
      new RegExp(
        `^flowctl: metrics\\.listen: cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use \\(another flowctl daemon, pid \\d+, is running\\) \\(EADDRINUSE\\); set another metrics\\.listen \\(${other}\\)`,
      ),
    )
  })

  it('exits 0 on SIGTERM', async function () {
    assert.equal(await daemon!.stop(), 0, daemon!.tail)
    daemon = undefined
  })
})

describe('packets not metered, one count for status, the metrics and the collectors @e2e', function () {
  this.timeout(240_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(id)
  const dirs = privateDirs.env
  const lab = new Lab(id)
  let tmp = ''
  let a = ''
  let b = ''
  let collector: IpfixSink | undefined
  let daemon: DaemonProcess | undefined

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-overflow-'))
    privateDirs.apply()
    a = await lab.namespace('a')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.22.1/24', '198.18.22.2/24'], quiet: true})
  })

  after(async function () {
    if (daemon) await daemon.stop('SIGKILL').catch(() => {})
    await collector?.stop()
    if (a) await cli(['meter', 'detach', '--netns', a]).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it('what found the flow map full is the same in `meter status`, in /metrics and in the IPFIX statistics', async function () {
    // 40 flows of one datagram each into a map of 16: 24 datagrams of 92 IP bytes are not metered.
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--capacity', '16'])
    const udpSink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: 7100})
    for (let i = 0; i < 40; i++) await runAgent(a, {mode: 'udp-send', host: '198.18.22.2', port: 7100, sport: 41000 + i, count: 1, size: 64})
    udpSink.stop()
    const notMetered = {packets: 24, bytes: 24 * (20 + 8 + 64)}
    const [status] = JSON.parse(await cliOk(['meter', 'status', '--netns', a, '--json'])) as {overflowPackets: number; overflowBytes: number}[]
    assert.deepEqual({packets: status.overflowPackets, bytes: status.overflowBytes}, notMetered)

    collector = await IpfixSink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    const configFile = join(tmp, 'config.yaml')
    writeFileSync(
      configFile,
      [
        `collectors:\n- address: 127.0.0.1:${collector.port}`,
        'drainIntervalSeconds: 1',
        'statsIntervalSeconds: 1',
        `meters:\n- netns: ${a}`,
        "metrics:\n  listen: '127.0.0.1:0'",
        `stateFile: ${dirs.FLOWCTL_STATE_DIR}/daemon-state.json`,
        '',
      ].join('\n'),
    )
    daemon = new DaemonProcess(configFile)
    const url = String((await daemon.waitForLog('metrics-listening', () => true, 30_000)).url)
    await daemon.waitForLog('started')
    const text = await (await fetch(url)).text()
    const labels = {netns: a, interface: 'a0', direction: 'egress'}
    assert.deepEqual(
      {packets: sample(text, 'flowctl_not_metered_packets_total', labels), bytes: sample(text, 'flowctl_not_metered_bytes_total', labels)},
      notMetered,
    )
    await collector.until(() => collector!.records.some((r) => r.options), 'a statistics record', 15_000)
    assert.equal(await daemon.stop(), 0, daemon.tail)
    daemon = undefined
    const stats = collector.records.filter((r) => r.options).at(-1)!
    assert.deepEqual(
      {packets: stats.fields.ignoredPacketTotalCount, bytes: stats.fields.ignoredOctetTotalCount},
      {packets: BigInt(notMetered.packets), bytes: BigInt(notMetered.bytes)},
    )
  })
})
