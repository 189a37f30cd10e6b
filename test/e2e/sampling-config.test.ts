/**
 * `sampling: N` of a meter in the daemon's config: set on the meter when the daemon finds it, and
 * changed by a SIGHUP reload, losing no count. A meter attached without --sampling (1:1) on a veth,
 * real UDP, a real daemon exporting to an embedded collector and writing a flow log.
 *
 * Oracles: the traffic agent says what it sent, and the link carries nothing else (static
 * neighbours, no IPv6; only egress is metered), so every packet is either in a record the daemon
 * exported (raw, at the rate the record says) or counted as not sampled by the meter: the two add
 * up to what was sent, exactly. Each phase's share counted is random: within 5 standard deviations
 * of the binomial's mean. The collector must have been told each rate before the data counted at it.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {MeterSet} from '../../src/bpf/meter-set.js'
import {readMeterStats} from '../../src/bpf/meter-stats.js'
import type {MeterStatus} from '../../src/bpf/status.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent, type RunningAgent} from '../../src/lab/traffic.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {cli, cliJson, cliOk, PrivateDirs, requireE2e} from '../helpers/e2e.js'
import {Sink} from '../ipfix/flows.js'

const PORT = 7500
const FLOWS = 100
const ROUNDS = 100
const DOMAIN = 23

interface LoggedFlow {
  dport: number
  pkts: number
  samplingInterval: number
  direction: string
}

describe('sampling: N of a meter in the daemon config @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`samplingcfg-${id}`)
  const lab = new Lab(`c${id}`)
  let a = ''
  let tmp = ''
  let sink: RunningAgent<{packets: number}> | undefined
  let collector: Sink | undefined
  let daemon: DaemonProcess | undefined

  before(async function () {
    requireE2e(this)
    privateDirs.apply()
    tmp = mkdtempSync(join(tmpdir(), 'fct-samplingcfg-'))
    a = await lab.namespace('a')
    const b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.76.1/24', '198.18.76.2/24'], quiet: true})
    sink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: PORT})
  })

  after(async function () {
    if (daemon) await daemon.stop()
    await collector?.stop()
    sink?.stop()
    if (a) await cli(['meter', 'detach', '--all'])
    await lab.destroy()
    privateDirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  const samplingNow = async () => (await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a])).map((s) => s.samplingInterval)

  it('sets the rate when the daemon finds the meter and changes it on a reload; every packet is in a record at its rate or not sampled', async function () {
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress'])
    assert.deepEqual(await samplingNow(), [1])
    collector = await Sink.start()
    const config = join(tmp, 'config.yaml')
    const flowLog = join(tmp, 'flows.json')
    const write = (sampling: number) =>
      writeFileSync(
        config,
        [
          'collectors:',
          `- address: 127.0.0.1:${collector!.port}`,
          `observationDomainId: ${DOMAIN}`,
          'drainIntervalSeconds: 0.5',
          'idleTimeoutSeconds: 1',
          `meters:\n- netns: ${a}\n  sampling: ${sampling}`,
          `logs:\n- file: ${flowLog}`,
          "metrics:\n  listen: ''",
          `stateFile: ${join(tmp, 'state.json')}`,
        ].join('\n') + '\n',
      )
    write(10)
    daemon = new DaemonProcess(config)
    await daemon.waitForLog('started')
    assert.deepEqual((await daemon.waitForLog('sampling-set')).to, 10)
    assert.deepEqual(await samplingNow(), [10])
    const first = await runAgent<{packets: number}>(a, {mode: 'udp-rounds', host: '198.18.76.2', port: PORT, flows: FLOWS, count: ROUNDS, size: 50})

    write(5)
    daemon.signal('SIGHUP')
    await daemon.waitForLog('reloaded')
    const set = await daemon.waitForLog('sampling-set', (l) => l.to === 5)
    assert.deepEqual([set.from, set.to], [10, 5])
    assert.deepEqual(await samplingNow(), [5])
    const second = await runAgent<{packets: number}>(a, {mode: 'udp-rounds', host: '198.18.76.2', port: PORT, flows: FLOWS, count: ROUNDS, size: 50})
    // A reload with the rate the meter has already changes nothing.
    daemon.signal('SIGHUP')
    await daemon.waitForLog('reloaded', (l) => l !== daemon!.log.find((x) => x.event === 'reloaded'))
    assert.equal(daemon.count('sampling-set'), 2)

    assert.equal(await daemon.stop(), 0)
    daemon = undefined
    await collector.stop()
    const sent = first.packets + second.packets
    assert.equal(sent, 2 * FLOWS * ROUNDS)

    const flows = readFileSync(flowLog, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as LoggedFlow)
      .filter((f) => f.dport === PORT && f.direction === 'egress')
    const counted = (rate: number) => flows.filter((f) => f.samplingInterval === rate).reduce((n, f) => n + f.pkts, 0)
    assert.deepEqual([...new Set(flows.map((f) => f.samplingInterval))].sort(), [10, 5])
    const notSampled = readMeterStats(MeterSet.for(privateDirs.paths, a))!.packetsNotSampled
    assert.equal(counted(10) + counted(5) + notSampled, sent, 'every packet sent is in a record or was not sampled')
    const near = (got: number, n: number, p: number) =>
      assert.ok(Math.abs(got - n * p) <= 5 * Math.sqrt(n * p * (1 - p)), `${got} of ${n} counted at 1:${Math.round(1 / p)}`)
    near(counted(10), first.packets, 0.1)
    near(counted(5), second.packets, 0.2)

    // The collector got the same records, each after the options record of the rate it was
    // counted at (the collectors apply the last rate they read to the data after it).
    const after = new Map<number, number>()
    let rate = 0
    for (const r of collector.records) {
      if (r.options && 'samplingInterval' in r.fields) rate = r.fields.samplingInterval as number
      else if (!r.options && r.fields.destinationTransportPort === PORT) after.set(rate, (after.get(rate) ?? 0) + Number(r.fields.packetDeltaCount))
    }
    assert.deepEqual(
      [...after].sort((x, y) => x[0] - y[0]),
      [
        [5, counted(5)],
        [10, counted(10)],
      ],
    )
  })
})
