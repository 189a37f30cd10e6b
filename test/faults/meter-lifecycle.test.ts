/**
 * A meter set's life beside a running daemon (issue 25, items 1 and 2): two metered namespaces A
 * and B, `flowctl daemon` as a child process exporting to a real collector, and B's meter
 * detached, detached and attached again within one drain interval, or its pins removed under the
 * daemon as a bpffs remount would. Every packet sent is counted at the collector exactly (the
 * sum of packetDeltaCount over the flow's records), and namespace A never stalls.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import type {Flow} from '../../src/view/flow.js'
import {DaemonProcess, type LogLine} from '../helpers/daemon.js'
import {cliJson, cliOk, PrivateDirs, requireE2e} from '../helpers/e2e.js'
import {Sink} from '../ipfix/flows.js'

/** A metered namespace: its client side (the meter on veth0, egress) and where it sends to. */
interface Side {
  netns: string
  server: string
}

describe('meter detach and attach beside a running daemon @e2e', function () {
  this.timeout(240_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(id)
  const lab = new Lab()
  let tmp = ''
  let a: Side
  let b: Side
  const daemons: DaemonProcess[] = []
  const collectors: Sink[] = []
  const agents: {stop(): void}[] = []
  let configCount = 0

  /** One collector; drains every `drain` s, flows idle for `idle` s end. */
  function config(port: number, drain: number, idle: number): string {
    const file = join(tmp, `config-${++configCount}.yaml`)
    writeFileSync(
      file,
      `collectors:\n- address: 127.0.0.1:${port}\ndrainIntervalSeconds: ${drain}\nidleTimeoutSeconds: ${idle}\nactiveTimeoutSeconds: 120\n` +
        `metrics:\n  listen: ''\nstateFile: ${join(tmp, `state-${configCount}.json`)}\n`,
    )
    return file
  }

  async function collector(): Promise<Sink> {
    const c = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    collectors.push(c)
    return c
  }

  function daemon(configFile: string): DaemonProcess {
    const d = new DaemonProcess(configFile)
    daemons.push(d)
    return d
  }

  /** Sends `count` UDP datagrams out of the side's metered veth0; resolves with the source port and the count sent. */
  async function traffic(side: Side, count: number, sport?: number): Promise<{sport: number; packets: number}> {
    return runAgent<{sport: number; packets: number}>(side.netns, {mode: 'udp-send', host: side.server, port: 5001, count, size: 100, sport})
  }

  /** Packets the collector got for a flow, over all its records. */
  const packetsOf = (sink: Sink, sport: number): number =>
    sink.flows.filter((f) => f.sourceTransportPort === sport && f.protocolIdentifier === 17).reduce((sum, f) => sum + Number(f.packetDeltaCount), 0)

  /** Waits for the daemon to log `event` at or after log line `from` (a mark taken before the cause). */
  const logAfter = (d: DaemonProcess, from: number, event: string, match: (l: LogLine) => boolean = () => true): Promise<LogLine> =>
    d.waitForLog(event, (l) => d.log.indexOf(l) >= from && match(l), 30_000)

  async function attach(side: Side, capacity = 65536): Promise<void> {
    await attachMeters(privateDirs.paths, {targets: [{netns: side.netns, ifname: 'veth0'}], directions: ['egress'], capacity, pref: 1, handle: 1, force: false})
  }

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-meterlife-'))
    privateDirs.apply()
    const server = await lab.namespace('server')
    const nsA = await lab.namespace('a')
    const nsB = await lab.namespace('b')
    await lab.veth(nsA, 'veth0', server, 'vetha', {v4: ['198.18.1.1/24', '198.18.1.2/24'], quiet: true})
    await lab.veth(nsB, 'veth0', server, 'vethb', {v4: ['198.18.2.1/24', '198.18.2.2/24'], quiet: true})
    a = {netns: nsA, server: '198.18.1.2'}
    b = {netns: nsB, server: '198.18.2.2'}
    agents.push(await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5001}))
  })

  beforeEach(async function () {
    await attach(a)
    await attach(b)
  })

  afterEach(async function () {
    for (const d of daemons.splice(0)) await d.stop('SIGKILL').catch(() => {})
    for (const c of collectors.splice(0)) await c.stop()
    for (const side of [a, b]) {
      if (side) await detachMeters(privateDirs.paths, {targets: [{netns: side.netns, ifname: '*'}], all: false, directions: ['egress']}).catch(() => {})
    }
  })

  after(async function () {
    for (const agent of agents) agent.stop()
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it('exports the flows of a namespace detached beside it exactly (held and not yet drained), and the other namespace never stalls', async function () {
    const sink = await collector()
    const d = daemon(config(sink.port, 2, 4))
    await d.waitForLog('started')
    // A flow the daemon holds (a drain took it), then packets it has not drained yet: more of
    // that flow and a new one. Then detach at once.
    const held = await traffic(b, 1500)
    const mark = d.log.length
    await logAfter(d, mark, 'drain', (l) => l.netns === b.netns && Number(l.taken) > 0)
    const more = await traffic(b, 700, held.sport)
    const fresh = await traffic(b, 900)
    const out = await cliOk(['meter', 'detach', '--netns', b.netns])
    assert.doesNotMatch(out, /went with them/, 'a daemon runs: nothing is said to be discarded')
    const gone = await d.waitForLog('meter-gone', (l) => l.netns === b.netns, 30_000)
    assert.equal(gone.pins, 'removed')
    assert.equal(gone.unread, undefined, JSON.stringify(gone))
    await sink.until(
      () => packetsOf(sink, held.sport) === held.packets + more.packets && packetsOf(sink, fresh.sport) === fresh.packets,
      `B's ${held.packets + more.packets} + ${fresh.packets} packets`,
      30_000,
    )
    // A goes on being drained and exported after B is gone.
    const after = await traffic(a, 400)
    await sink.until(() => packetsOf(sink, after.sport) === after.packets, `A's ${after.packets} packets after the detach`, 30_000)
    assert.equal(d.count('drain-failed'), 0, d.tail)
    assert.equal(d.count('meter-gone'), 1, d.tail)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
    // Exactly once: the stop exported nothing of these again.
    assert.equal(packetsOf(sink, held.sport), held.packets + more.packets)
    assert.equal(packetsOf(sink, fresh.sport), fresh.packets)
    assert.equal(packetsOf(sink, after.sport), after.packets)
  })

  it('follows a namespace detached and attached again (another --capacity) within one drain interval: old and new packets exact, no stale flows left', async function () {
    const sink = await collector()
    const d = daemon(config(sink.port, 2, 3))
    await d.waitForLog('started')
    const before = await traffic(b, 1000)
    // Stopped, the daemon sees the detach and the attach as one change, however slow the
    // machine is: both happen within one of its drain intervals.
    const mark = d.log.length
    d.signal('SIGSTOP')
    try {
      await cliOk(['meter', 'detach', '--netns', b.netns])
      await cliOk(['meter', 'attach', '--netns', b.netns, '-n', 'veth0', '--direction', 'egress', '--capacity', '131072'])
    } finally {
      d.signal('SIGCONT')
    }
    const gone = await logAfter(d, mark, 'meter-gone', (l) => l.netns === b.netns)
    assert.equal(gone.pins, 'replaced')
    await logAfter(d, mark, 'meter-found', (l) => l.netns === b.netns)
    const afterAttach = await traffic(b, 5000)
    await sink.until(
      () => packetsOf(sink, before.sport) === before.packets && packetsOf(sink, afterAttach.sport) === afterAttach.packets,
      `B's ${before.packets} packets before and ${afterAttach.packets} after`,
      30_000,
    )
    // The drain that exported the new flow has committed (it logs after its commit).
    await logAfter(d, mark, 'drain', (l) => l.netns === b.netns && Number(l.exported) > 0)
    // Read the kernel with the daemon held still (a dump beside a drain is issue 25's item 7).
    d.signal('SIGSTOP')
    let flows: Flow[]
    try {
      flows = await cliJson<Flow[]>(['dump', '--netns', b.netns])
    } finally {
      d.signal('SIGCONT')
    }
    const stale = flows.filter((f) => f.sport === before.sport || f.sport === afterAttach.sport)
    assert.deepEqual(stale, [], 'no flow left in the kernel once exported')
    assert.equal(MeterSet.for(privateDirs.paths, b.netns).capacity(), 131072)
    assert.equal(d.count('drain-failed'), 0, d.tail)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
    assert.equal(packetsOf(sink, before.sport), before.packets)
    assert.equal(packetsOf(sink, afterAttach.sport), afterAttach.packets)
  })

  it('exports what a namespace held when its pins vanish as on a bpffs remount, goes on with the others, and finds it again once re-attached', async function () {
    const sink = await collector()
    const d = daemon(config(sink.port, 2, 4))
    await d.waitForLog('started')
    const held = await traffic(b, 800)
    const mark = d.log.length
    await logAfter(d, mark, 'drain', (l) => l.netns === b.netns && Number(l.taken) > 0)
    const fresh = await traffic(b, 300)
    rmSync(MeterSet.for(privateDirs.paths, b.netns).dir, {recursive: true})
    const gone = await d.waitForLog('meter-gone', (l) => l.netns === b.netns, 30_000)
    assert.equal(gone.pins, 'removed')
    await sink.until(
      () => packetsOf(sink, held.sport) === held.packets && packetsOf(sink, fresh.sport) === fresh.packets,
      `B's ${held.packets} + ${fresh.packets} packets`,
      30_000,
    )
    const other = await traffic(a, 200)
    await sink.until(() => packetsOf(sink, other.sport) === other.packets, `A's ${other.packets} packets`, 30_000)
    // Attached again, B is found and exported again.
    const again = d.log.length
    await cliOk(['meter', 'attach', '--netns', b.netns, '-n', 'veth0', '--direction', 'egress'])
    await logAfter(d, again, 'meter-found', (l) => l.netns === b.netns)
    const later = await traffic(b, 250)
    await sink.until(() => packetsOf(sink, later.sport) === later.packets, `B's ${later.packets} packets after the re-attach`, 30_000)
    assert.equal(d.count('drain-failed'), 0, d.tail)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
    for (const flow of [held, fresh, other, later]) assert.equal(packetsOf(sink, flow.sport), flow.packets)
  })

  it('applies a reload that moves a collector whole while a set it drains has lost its pins', async function () {
    const first = await collector()
    const second = await collector()
    const named = (port: number) => {
      const file = join(tmp, `config-${++configCount}.yaml`)
      // 60 s drains: no drain comes between the pins vanishing and the reload, so the reload meets the dead set.
      writeFileSync(
        file,
        `collectors:\n- name: central\n  address: 127.0.0.1:${port}\ndrainIntervalSeconds: 60\nidleTimeoutSeconds: 120\nactiveTimeoutSeconds: 120\n` +
          `metrics:\n  listen: ''\nstateFile: ${join(tmp, 'state-moved.json')}\n`,
      )
      return file
    }
    const file = named(first.port)
    const d = daemon(file)
    await d.waitForLog('started')
    const sent = await traffic(a, 300)
    rmSync(MeterSet.for(privateDirs.paths, b.netns).dir, {recursive: true})
    writeFileSync(file, readFileSync(named(second.port)))
    const mark = d.log.length
    d.signal('SIGHUP')
    await logAfter(d, mark, 'reloaded')
    assert.equal(d.count('reload-refused'), 0, d.tail)
    const moved = await logAfter(d, mark, 'collector-moved')
    assert.equal(moved.to, `127.0.0.1:${second.port}`)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
    // A's flow went out at the stop, to where the collector moved.
    await second.until(() => packetsOf(second, sent.sport) === sent.packets, `A's ${sent.packets} packets at the new address`, 30_000)
    assert.equal(packetsOf(first, sent.sport), 0)
  })

  it('says how many flows went with the maps when no daemon runs to export them', async function () {
    for (let i = 0; i < 3; i++) await traffic(b, 5)
    const out = await cliOk(['meter', 'detach', '--netns', b.netns])
    assert.match(out, new RegExp(`^${b.netns}: maps removed; 3 flows not exported yet went with them \\(no daemon is running to export them\\)$`, 'm'), out)
  })
})
