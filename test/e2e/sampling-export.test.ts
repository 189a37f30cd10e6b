/**
 * A sampled meter's export as real collectors read it: a namespace router whose meter counts 1
 * packet in 10 of real UDP coming in by r0 and routed out of r1, a real daemon exporting to nfcapd
 * (nfdump), nfacctd (pmacct, with renormalisation, and a second one without it) and to an
 * embedded collector whose datagrams tshark decodes, all on loopback.
 *
 * Oracles: the traffic agent says what it sent (packets, and their IP bytes: 20 + 8 + payload),
 * and only that crosses the metered direction (static neighbours, no IPv6; only ingress of r0 is
 * metered). Collectors that scale by the advertised rate must come within 5 % of it (the
 * estimate's own standard error is under 1 % at this size); an unsampled export must be read as
 * rate 1, not as "no rate". tshark is an independent decoder of what flowctl sent: the rate in
 * the options record before the data, and the names of both interfaces.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent, type RunningAgent} from '../../src/lab/traffic.js'
import {Nfacctd, Nfcapd} from '../helpers/collectors.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {cli, cliOk, PrivateDirs, requireE2e, sleep} from '../helpers/e2e.js'
import {sample} from '../helpers/prom.js'
import {requireTshark, tsharkDissectIpfix, type TsharkDecodedRecord} from '../helpers/tshark.js'
import {Sink} from '../ipfix/flows.js'

const PORT = 7300
const PAYLOAD = 72
const IP_BYTES = 20 + 8 + PAYLOAD
const DOMAIN = 22

describe('a sampled export read by nfdump, pmacct and tshark @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`sampx-${id}`)
  const lab = new Lab(`x${id}`)
  let a = ''
  let r = ''
  let b = ''
  let tmp = ''
  let sink: RunningAgent<{packets: number}> | undefined
  let daemon: DaemonProcess | undefined
  const stoppable: {stop(): Promise<void>}[] = []

  before(async function () {
    requireE2e(this)
    await requireTshark(this)
    privateDirs.apply()
    tmp = mkdtempSync(join(tmpdir(), 'fct-sampx-'))
    a = await lab.namespace('a')
    r = await lab.namespace('r')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', r, 'r0', {v4: ['198.18.72.2/24', '198.18.72.1/24'], quiet: true})
    await lab.veth(r, 'r1', b, 'b0', {v4: ['198.18.73.1/24', '198.18.73.2/24'], quiet: true})
    await lab.sysctl(r, 'net.ipv4.ip_forward', '1')
    await lab.exec(a, 'ip', ['route', 'add', 'default', 'via', '198.18.72.1'])
    await lab.exec(b, 'ip', ['route', 'add', 'default', 'via', '198.18.73.1'])
    await lab.exec(r, 'ip', ['link', 'set', 'r0', 'alias', 'customer A'])
    sink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: PORT})
  })

  afterEach(async function () {
    if (daemon) await daemon.stop()
    daemon = undefined
    for (const c of stoppable.splice(0)) await c.stop()
  })

  after(async function () {
    sink?.stop()
    if (a) await cli(['meter', 'detach', '--all'])
    await lab.destroy()
    privateDirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  /** The collectors of one run, each in a directory of its own. */
  async function collectors(name: string) {
    const nfcapd = await Nfcapd.start(join(tmp, `${name}-nfcapd`))
    stoppable.push(nfcapd)
    const scaled = await Nfacctd.start(join(tmp, `${name}-nfacctd`), {renormalize: true})
    stoppable.push(scaled)
    const raw = await Nfacctd.start(join(tmp, `${name}-nfacctd-raw`), {renormalize: false})
    stoppable.push(raw)
    const embedded = await Sink.start()
    stoppable.push(embedded)
    return {nfcapd, scaled, raw, embedded}
  }

  function startDaemon(ports: number[]): DaemonProcess {
    const file = join(tmp, `config-${ports[0]}.yaml`)
    writeFileSync(
      file,
      [
        'collectors:',
        ...ports.map((p) => `- address: 127.0.0.1:${p}`),
        `observationDomainId: ${DOMAIN}`,
        'drainIntervalSeconds: 0.5',
        'idleTimeoutSeconds: 2',
        `meters:\n- netns: ${r}`,
        `stateFile: ${join(tmp, `state-${ports[0]}.json`)}`,
        "metrics:\n  listen: '127.0.0.1:0'",
      ].join('\n') + '\n',
    )
    daemon = new DaemonProcess(file)
    return daemon
  }

  /** Stops the daemon (it exports every flow it holds) and then the collectors (they write what they hold). */
  async function stopAll(): Promise<void> {
    await daemon!.stop()
    daemon = undefined
    for (const c of stoppable.splice(0)) await c.stop()
  }

  /** Polls `done` every 250 ms, for up to a minute. */
  async function until(what: string, done: () => Promise<boolean>): Promise<void> {
    for (let i = 0; i < 240; i++) {
      if (await done()) return
      await sleep(250)
    }
    assert.fail(`waited a minute for ${what}`)
  }

  /** An nfdump line of fields joined by '|', each trimmed (nfdump pads them). */
  const cells = (line: string) => line.split('|').map((x) => x.trim())
  const ours = (line: string) => Number(cells(line)[2]) === PORT

  it('at 1:10, 100,000 packets over 1,000 flows: nfdump and nfacctd totals within 5 % of what was sent; tshark shows the rate and both interfaces by name', async function () {
    await cliOk(['meter', 'attach', '--netns', r, '-n', 'r0', '--direction', 'ingress', '--sampling', '10'])
    const c = await collectors('s10')
    const d = startDaemon([c.nfcapd.port, c.scaled.port, c.raw.port, c.embedded.port])
    await d.waitForLog('started')
    const url = String((await d.waitForLog('metrics-listening', () => true, 30_000)).url)
    const metric = async (name: string, labels: Record<string, string>) => sample(await (await fetch(url)).text(), name, labels)
    const r0 = {netns: r, interface: 'r0', direction: 'ingress'}
    // The accuracy check pairs the meter with the kernel from its second reading of the counters on.
    await until('the accuracy check to start', async () => (await metric('flowctl_interface_kernel_packets_total', r0)) !== undefined)
    const sent = await runAgent<{packets: number}>(a, {mode: 'udp-rounds', host: '198.18.73.2', port: PORT, flows: 1000, count: 100, size: PAYLOAD})
    assert.equal(sent.packets, 100_000)
    const sentBytes = sent.packets * IP_BYTES
    // The kernel's counters have it all, and a reading after the drain that took the last packets.
    await until('the kernel to count it', async () => (await metric('flowctl_interface_kernel_packets_total', r0))! >= sent.packets)
    // That reading came after the drain that took the last packets: the daemon's metrics hear of
    // a set's idle drains for 6 s after its last active one, past the check's 5 s between readings.
    assert.equal(await metric('flowctl_meter_sampling_interval', {netns: r}), 10)
    const ratio = (await metric('flowctl_interface_accuracy_ratio', r0))!
    const error = (await metric('flowctl_interface_accuracy_sampling_error_ratio', r0))!
    assert.ok(error > 0.005 && error < 0.015, `the sampling error of ~10,000 packets counted at 1:10: ${error}`)
    assert.ok(Math.abs(ratio - 1) <= 5 * error, `the accuracy ratio ${ratio}: sampling is not loss (error ${error})`)
    await stopAll()

    const within = (what: string, got: number, want: number) => {
      // Said in the run's output: the numbers the collectors read back, for the record.
      process.stderr.write(`      (${what}: ${got}, sent ${want}, ${(((got - want) / want) * 100).toFixed(2)} %)\n`)
      assert.ok(Math.abs(got - want) <= 0.05 * want, `${what}: ${got}, sent ${want} (${(((got - want) / want) * 100).toFixed(2)} %)`)
    }
    // nfcapd scales as it writes: nfdump reads the estimate.
    const lines = (await c.nfcapd.flows('%pr|%sap|%dp|%pkt|%byt')).filter(ours)
    assert.ok(lines.length > 900, `${lines.length} flows at nfdump`)
    within(
      'nfdump packets',
      lines.reduce((n, l) => n + Number(cells(l)[3]), 0),
      sent.packets,
    )
    within(
      'nfdump bytes',
      lines.reduce((n, l) => n + Number(cells(l)[4]), 0),
      sentBytes,
    )
    assert.match(await c.nfcapd.exporters(), /packet interval: 1, packet space: 9/)
    // nfacctd with nfacctd_renormalize: true scales; without, it says the rate it read.
    const rows = c.scaled.rows().filter((r) => Number(r.DST_PORT) === PORT)
    within(
      'nfacctd packets',
      rows.reduce((n, r) => n + Number(r.PACKETS), 0),
      sent.packets,
    )
    within(
      'nfacctd bytes',
      rows.reduce((n, r) => n + Number(r.BYTES), 0),
      sentBytes,
    )
    assert.deepEqual([...new Set(c.raw.rows().map((r) => r.SAMPLING_RATE))], ['10'])

    // What tshark makes of the export, as the embedded collector received it.
    const {records, problems} = await tsharkDissectIpfix(c.embedded.datagrams, c.embedded.port)
    assert.deepEqual(problems, [])
    assert.equal(c.embedded.checker.report().verdict, 'PASS', c.embedded.checker.formatReport().join('\n'))
    const rates = records.filter((r) => r.options && 'samplingInterval' in r.fields && !('destinationTransportPort' in r.fields))
    assert.ok(rates.length >= 1)
    assert.deepEqual([...new Set(rates.map((r) => `${r.fields.observationDomainId}:${r.fields.samplingInterval}`))], [`${DOMAIN}:10`])
    const flows = records.filter((r) => !r.options && r.fields.destinationTransportPort === PORT)
    assert.ok(flows.length > 900)
    // The first data record of the domain came after its rate.
    const firstFlow = records.indexOf(flows[0])
    assert.ok(records.indexOf(rates[0]) < firstFlow, 'the rate before the data')
    // Both interfaces of every record: in by r0 (which has an alias), out of r1 (which has none).
    const names = interfaceNames(records)
    const sides = [...new Set(flows.map((f) => `${f.fields.ingressInterface}>${f.fields.egressInterface}`))]
    assert.equal(sides.length, 1, sides.join(' '))
    const [inIndex, outIndex] = sides[0].split('>').map(Number)
    assert.deepEqual(names.get(inIndex), {name: 'r0', description: 'customer A', nfdump: 'customer A'})
    assert.deepEqual(names.get(outIndex), {name: 'r1', description: 'r1', nfdump: 'r1'})
    for (const ifindex of [inIndex, outIndex]) {
      const named = records.findIndex((x) => x.options && x.fields.ingressInterface === ifindex && 'interfaceName' in x.fields)
      assert.ok(named >= 0 && named < firstFlow, `interface ${ifindex} named before the data that names it`)
    }
    // nfdump read the names too (its shape): in and out interface of every flow.
    const named = (await c.nfcapd.flows('%dp|%inam|%onam')).map(cells).filter((x) => Number(x[0]) === PORT)
    assert.ok(named.length > 900)
    assert.deepEqual([...new Set(named.map((x) => `${x[1]} > ${x[2]}`))], ['customer A > r1'])
  })

  it('an unsampled export is read as rate 1 by nfdump and nfacctd, not as "no rate"', async function () {
    await cliOk(['meter', 'attach', '--netns', r, '-n', 'r0', '--direction', 'ingress', '--sampling', '1'])
    const c = await collectors('s1')
    const d = startDaemon([c.nfcapd.port, c.scaled.port, c.raw.port, c.embedded.port])
    await d.waitForLog('started')
    const sent = await runAgent<{packets: number}>(a, {mode: 'udp-rounds', host: '198.18.73.2', port: PORT, flows: 50, count: 20, size: PAYLOAD})
    await stopAll()
    const lines = (await c.nfcapd.flows('%pr|%sap|%dp|%pkt|%byt')).filter(ours)
    assert.equal(
      lines.reduce((n, l) => n + Number(cells(l)[3]), 0),
      sent.packets,
      'nfdump: every packet, counted once',
    )
    assert.match(await c.nfcapd.exporters(), /packet interval: 1, packet space: 0/, 'nfcapd read a sampler of rate 1')
    const raw = c.raw.rows().filter((r) => Number(r.DST_PORT) === PORT)
    assert.deepEqual([...new Set(raw.map((r) => r.SAMPLING_RATE))], ['1'], 'nfacctd without renormalisation: rate 1 (0 would be no rate)')
    assert.equal(
      c.scaled.rows().reduce((n, r) => (Number(r.DST_PORT) === PORT ? n + Number(r.PACKETS) : n), 0),
      sent.packets,
    )
    const {records} = await tsharkDissectIpfix(c.embedded.datagrams, c.embedded.port)
    assert.deepEqual([...new Set(records.filter((r) => r.options && 'samplingInterval' in r.fields).map((r) => r.fields.samplingInterval))], [1])
  })
})

/** The interfaces the options records name, by ifindex: the standard shape's name and description, and nfdump's description. */
function interfaceNames(records: TsharkDecodedRecord[]): Map<number, {name?: string; description?: string; nfdump?: string}> {
  const out = new Map<number, {name?: string; description?: string; nfdump?: string}>()
  for (const r of records) {
    if (!r.options || !('interfaceDescription' in r.fields)) continue
    const ifindex = r.fields.ingressInterface as number
    const entry = out.get(ifindex) ?? {}
    out.set(ifindex, entry)
    if ('interfaceName' in r.fields) {
      entry.name = r.fields.interfaceName as string
      entry.description = r.fields.interfaceDescription as string
    } else entry.nfdump = r.fields.interfaceDescription as string
  }
  return out
}
