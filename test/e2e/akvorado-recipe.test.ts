/**
 * The README's akvorado recipe, point by point, against what flowctl sends (akvorado itself cannot
 * be installed here): a namespace router whose meter samples 1 in 100 of real UDP, a daemon
 * exporting from a fixed source address and port to an embedded collector, tshark decoding what
 * arrived, and net-snmp's agent run in the router's namespace as akvorado would poll it.
 *
 * akvorado (outlet/flow/decoder/netflow, outlet/core/enricher.go, outlet/metadata/provider/snmp)
 * drops a flow with no sampling rate (it reads samplingInterval from the options records before
 * the data, or from the data record), drops one whose interfaces are both 0, keys everything by
 * the exporter's address, and names interfaces by polling IF-MIB at that address for the ifindexes
 * the records carry.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa, type ResultPromise} from 'execa'

import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent, type RunningAgent} from '../../src/lab/traffic.js'
import {freeUdpPort} from '../helpers/collectors.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {cli, cliOk, PrivateDirs, requireE2e, sleep} from '../helpers/e2e.js'
import {requireTshark, tsharkDissectIpfix, type TsharkDecodedRecord} from '../helpers/tshark.js'
import {Sink} from '../ipfix/flows.js'

const PORT = 7400
const DOMAIN = 31
/** IF-MIB ifXTable ifName, by ifindex. */
const IF_NAME = '1.3.6.1.2.1.31.1.1.1.1'

describe('the akvorado recipe against what flowctl sends @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`akv-${id}`)
  const lab = new Lab(`k${id}`)
  let tmp = ''
  let r = ''
  let sinkAgent: RunningAgent<{packets: number}> | undefined
  let snmpd: ResultPromise | undefined
  let collector: Sink | undefined
  let daemon: DaemonProcess | undefined
  let source = 0
  let records: TsharkDecodedRecord[] = []

  before(async function () {
    requireE2e(this)
    await requireTshark(this)
    const snmpget = await execa('snmpget', ['--version'], {reject: false}).catch(() => undefined)
    if (snmpget?.exitCode !== 0) {
      if (process.env.CI === 'true') throw new Error('precondition failed in CI: snmpget is not installed (run misc/setup.sh)')
      this.skip()
    }
    privateDirs.apply()
    tmp = mkdtempSync(join(tmpdir(), 'fct-akv-'))
    const a = await lab.namespace('a')
    r = await lab.namespace('r')
    const b = await lab.namespace('b')
    await lab.veth(a, 'a0', r, 'r0', {v4: ['198.18.74.2/24', '198.18.74.1/24'], quiet: true})
    await lab.veth(r, 'r1', b, 'b0', {v4: ['198.18.75.1/24', '198.18.75.2/24'], quiet: true})
    await lab.sysctl(r, 'net.ipv4.ip_forward', '1')
    await lab.exec(a, 'ip', ['route', 'add', 'default', 'via', '198.18.74.1'])
    await lab.exec(b, 'ip', ['route', 'add', 'default', 'via', '198.18.75.1'])
    await lab.exec(r, 'ip', ['link', 'set', 'lo', 'up'])
    sinkAgent = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: PORT})

    // net-snmp's agent in the router's namespace, on its loopback.
    const conf = join(tmp, 'snmpd.conf')
    writeFileSync(conf, 'agentAddress udp:127.0.0.1:161\nrocommunity flowctl 127.0.0.1\n')
    snmpd = execa('nsenter', [`--net=/run/netns/${r}`, '--', 'snmpd', '-f', '-Lo', '-C', '-c', conf, '-p', join(tmp, 'snmpd.pid')], {reject: false})

    await cliOk(['meter', 'attach', '--netns', r, '-n', 'r0', '--direction', 'ingress', '--sampling', '100'])
    collector = await Sink.start({maxMessageSize: 1400})
    source = await freeUdpPort()
    const config = join(tmp, 'config.yaml')
    writeFileSync(
      config,
      [
        'collectors:',
        `- address: 127.0.0.1:${collector.port}`,
        `  source: 127.0.0.1:${source}`,
        `observationDomainId: ${DOMAIN}`,
        'drainIntervalSeconds: 0.5',
        'idleTimeoutSeconds: 1',
        `meters:\n- netns: ${r}`,
        "metrics:\n  listen: ''",
        `stateFile: ${join(tmp, 'state.json')}`,
      ].join('\n') + '\n',
    )
    daemon = new DaemonProcess(config)
    await daemon.waitForLog('started')
    await runAgent(a, {mode: 'udp-rounds', host: '198.18.75.2', port: PORT, flows: 200, count: 50, size: 64})
    await daemon.stop()
    daemon = undefined
    await collector.stop()
    const dissection = await tsharkDissectIpfix(collector.datagrams, collector.port)
    assert.deepEqual(dissection.problems, [])
    records = dissection.records
  })

  after(async function () {
    if (daemon) await daemon.stop()
    await collector?.stop()
    if (snmpd?.pid !== undefined && snmpd.exitCode === null) process.kill(snmpd.pid, 'SIGTERM')
    await snmpd
    sinkAgent?.stop()
    if (r) await cli(['meter', 'detach', '--all'])
    await lab.destroy()
    privateDirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  const flows = () => records.filter((x) => !x.options && x.fields.destinationTransportPort === PORT)

  it('a sampling rate: samplingInterval in an options record before the data of the domain', function () {
    const data = flows()
    // 200 flows of 50 packets at 1:100: a flow has a record when one of its packets is drawn
    // (1 - 0.99^50, about 0.39), so about 79 records, 7 either way.
    assert.ok(data.length >= 40, `${data.length} flow records`)
    const first = records.indexOf(data[0])
    const rate = records.findIndex((x) => x.options && x.fields.observationDomainId === DOMAIN && x.fields.samplingInterval === 100)
    assert.ok(rate >= 0 && rate < first, 'the options record comes first')
    assert.deepEqual([...new Set(records.filter((x) => x.options && 'samplingInterval' in x.fields).map((x) => x.fields.samplingInterval))], [100])
    // No sampler or selector id anywhere: akvorado would then look the rate up under that id.
    assert.ok(!records.some((x) => 'samplerId' in x.raw || 'cflow.sampler_id' in x.raw || 'cflow.selector_id' in x.raw))
  })

  it('a non-zero interface index: every record names at least one interface (here both: in by r0, out of r1)', async function () {
    const [r0, r1] = [await lab.ifindex(r, 'r0'), await lab.ifindex(r, 'r1')]
    for (const f of flows()) assert.deepEqual([f.fields.ingressInterface, f.fields.egressInterface], [r0, r1])
  })

  it('a stable source address: every datagram came from the configured source address and port', function () {
    assert.deepEqual([...new Set(collector!.received.map((x) => x.message.exporter))], [`127.0.0.1:${source}`])
  })

  it("SNMP names: IF-MIB of an snmpd in the meter's namespace names each ifindex the records carry as flowctl does", async function () {
    const snmp = async (oid: string): Promise<string> => {
      // The agent may still be starting.
      for (let i = 0; ; i++) {
        const out = await execa('nsenter', [`--net=/run/netns/${r}`, '--', 'snmpget', '-v2c', '-c', 'flowctl', '-Oqv', '127.0.0.1', oid], {reject: false})
        if (out.exitCode === 0)
          return String(out.stdout)
            .trim()
            .replace(/^"(.*)"$/, '$1')
        if (i > 40) throw new Error(`snmpget ${oid}: ${String(out.stderr)}`)
        await sleep(250)
      }
    }
    const ifindexes = new Set(flows().flatMap((f) => [f.fields.ingressInterface as number, f.fields.egressInterface as number]))
    const announced = new Map(
      records.filter((x) => x.options && 'interfaceName' in x.fields).map((x) => [x.fields.ingressInterface as number, x.fields.interfaceName as string]),
    )
    for (const ifindex of ifindexes) {
      const name = await snmp(`${IF_NAME}.${ifindex}`)
      assert.equal(name, announced.get(ifindex), `ifName.${ifindex}`)
    }
    assert.deepEqual([...ifindexes].map((i) => announced.get(i)).sort(), ['r0', 'r1'])
  })
})
