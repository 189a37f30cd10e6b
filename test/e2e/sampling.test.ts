/**
 * Packet sampling end to end: a meter attached with --sampling, real UDP through a veth, and the
 * counts read back with `flowctl dump` and the meter set's per-CPU counters.
 *
 * Oracles: the traffic agent sends a known number of datagrams, and the link carries nothing else
 * (static neighbours, no IPv6, offloads off; only egress is metered), so every packet the meter
 * saw is either in a flow, counted raw, or in meter_stats.packets_not_sampled: the two add up to
 * what was sent, exactly. The share counted is random: it must lie within 5 standard deviations
 * of the binomial's mean.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'

import {MeterSet} from '../../src/bpf/meter-set.js'
import {readMeterStats} from '../../src/bpf/meter-stats.js'
import type {MeterStatus} from '../../src/bpf/status.js'
import {Lab} from '../../src/lab/lab.js'
import type {AgentSpec} from '../../src/lab/agent.js'
import {runAgent, startAgent, type RunningAgent} from '../../src/lab/traffic.js'
import type {Flow} from '../../src/view/flow.js'
import {cli, cliJson, cliOk, PrivateDirs, requireE2e, sleep} from '../helpers/e2e.js'

const FLOWS = 100
const PORT = 7100

describe('packet sampling end to end @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`sampling-${id}`)
  const lab = new Lab(`s${id}`)
  let a = ''
  let b = ''
  let set: MeterSet
  let sink: RunningAgent<{packets: number}> | undefined
  /** Datagrams sent so far, by every test in turn. */
  let sent = 0

  before(async function () {
    requireE2e(this)
    privateDirs.apply()
    a = await lab.namespace('a')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.70.1/24', '198.18.70.2/24'], quiet: true})
    sink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: PORT})
    set = MeterSet.for(privateDirs.paths, a)
  })

  after(async function () {
    sink?.stop()
    if (a) await cli(['meter', 'detach', '--all'])
    await lab.destroy()
    privateDirs.remove()
  })

  /** `rounds` datagrams of 50 bytes from each of FLOWS sockets of a to b, in turns, `gapMs` between rounds. */
  function flowTraffic(rounds: number, gapMs?: number): AgentSpec {
    return {mode: 'udp-rounds', host: '198.18.70.2', port: PORT, flows: FLOWS, count: rounds, size: 50, gapMs}
  }

  /** Polls `done` every 10 ms, for up to a minute. */
  async function until(what: string, done: () => boolean): Promise<void> {
    for (let i = 0; i < 6000; i++) {
      if (done()) return
      await sleep(10)
    }
    assert.fail(`waited a minute for ${what}`)
  }

  async function egressFlows(): Promise<Flow[]> {
    return (await cliJson<Flow[]>(['dump', '--netns', a])).filter((f) => f.direction === 'egress' && f.proto === 17 && f.dport === PORT)
  }

  function notSampled(): number {
    return readMeterStats(set)!.packetsNotSampled
  }

  it('at 1:10 counts a random tenth of the packets, raw, every flow saying 10, and the rest as not sampled, exactly', async function () {
    const out = await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--sampling', '10'])
    assert.match(out, /a0:egress attached \(program \d+, sampling 1:10\)/)
    const r = await runAgent<{packets: number; sports: number[]}>(a, flowTraffic(200))
    sent += r.packets
    assert.equal(r.packets, 20_000)

    const flows = await egressFlows()
    const counted = flows.reduce((sum, f) => sum + f.packets, 0)
    assert.equal(counted + notSampled(), 20_000)
    const sigma = Math.sqrt(20_000 * 0.1 * 0.9)
    assert.ok(Math.abs(counted - 2000) <= 5 * sigma, `${counted} of 20000 counted`)
    assert.deepEqual([...new Set(flows.map((f) => f.samplingInterval))], [10])
    // Each of the 100 flows sent 200 datagrams: none is missing (P = 0.9^200 each), none doubled.
    assert.deepEqual(flows.map((f) => f.sport).sort(), [...r.sports].sort())
    for (const f of flows) assert.equal(f.bytes, f.packets * (20 + 8 + 50))

    const status = await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a])
    assert.deepEqual(
      status.map((s) => [s.interface, s.direction, s.samplingInterval]),
      [['a0', 'egress', 10]],
    )
    assert.match(await cliOk(['meter', 'status', '--netns', a]), /SAMPLING[\s\S]*\s1:10\s/)
    // The table says a count is sampled where it stands.
    assert.match(await cliOk(['dump', '--netns', a, '-p', 'udp', '-S', String(flows[0].sport)]), new RegExp(`\\s${flows[0].packets} \\(1:10\\)\\s`))
  })

  it('changed to 1:1 mid-stream, in place: new records at 1 beside the ones at 10, and the totals stay exact', async function () {
    const progId = (await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a]))[0].progId
    const before = readMeterStats(set)!
    // A stream that runs until it is stopped (a round of 100 datagrams every 5 ms at most).
    const stream = await startAgent<{packets: number}>(a, flowTraffic(1_000_000, 5))
    await until('the stream to be under way', () => notSampled() - before.packetsNotSampled >= 1000)
    const out = await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--sampling', '1'])
    assert.match(out, /a0:egress unchanged \(program \d+\)$/m)
    // Until each of its flows has a record at 1 (the meter counts each flow it creates).
    await until('records at 1', () => readMeterStats(set)!.flowsCreated[4] >= before.flowsCreated[4] + FLOWS)
    stream.stop()
    sent += (await stream.result).packets
    const afterStream = notSampled()

    const flows = await egressFlows()
    const total = flows.reduce((sum, f) => sum + f.packets, 0)
    assert.equal(total + afterStream, sent, 'every packet sent is in a record or was not sampled')
    const atOne = flows.filter((f) => f.samplingInterval === 1)
    const atTen = flows.filter((f) => f.samplingInterval === 10)
    assert.equal(atOne.length + atTen.length, flows.length, 'no rate but 10 and 1')
    assert.equal(atOne.length, FLOWS)
    // A 5-tuple has at most one record per rate.
    assert.equal(new Set(atOne.map((f) => f.sport)).size, atOne.length)
    assert.equal(new Set(atTen.map((f) => f.sport)).size, atTen.length)

    // At 1:1 the sampler skips nothing, and every packet lands in the records at 1.
    const onesBefore = atOne.reduce((sum, f) => sum + f.packets, 0)
    const more = await runAgent<{packets: number}>(a, flowTraffic(10))
    sent += more.packets
    const onesAfter = (await egressFlows()).filter((f) => f.samplingInterval === 1).reduce((sum, f) => sum + f.packets, 0)
    assert.equal(onesAfter - onesBefore, more.packets)
    assert.equal(notSampled(), afterStream)
    assert.equal((await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a]))[0].progId, progId, 'the same program: only the setting changed')
  })

  it('refuses a rate out of range when the flags are parsed, changing nothing', async function () {
    for (const n of ['0', '65536']) {
      const r = await cli(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--sampling', n])
      assert.equal(r.exitCode, 2)
      assert.match(r.stderr.trim(), /^flowctl: Parsing --sampling: Expected an integer (greater|less) than or equal to (1|65535) but received: \d+$/)
    }
    const status = await cliJson<MeterStatus[]>(['meter', 'status', '--netns', a])
    assert.deepEqual(
      status.map((s) => s.samplingInterval),
      [1],
    )
  })
})
