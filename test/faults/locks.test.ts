/**
 * Who may write a meter set, and reading one beside its writer (issue 25, items 6, 7 and 11): a
 * metered veth between two namespaces, real traffic, `flowctl daemon` as a child exporting to a
 * collector in this process, and a second writer or reader beside it: `flush` from another run
 * directory, a writer holding the set's lock, a stale daemon.pid naming a live process, `dump`
 * (and `meter status`) repeated while the daemon commits a large snapshot ten times a second.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {FlowStore} from '../../src/bpf/flow-store.js'
import {readDrainState} from '../../src/bpf/layout.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {Lab, type VethPair} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import type {Flow} from '../../src/view/flow.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {cli, PrivateDirs, requireE2e, sleep} from '../helpers/e2e.js'
import {sendFrameFile, writeFrameFile} from '../helpers/frames.js'
import * as P from '../helpers/packets.js'
import {Sink} from '../ipfix/flows.js'

type Fields = Record<string, unknown>

describe('meter set locks @e2e', function () {
  this.timeout(300_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(id)
  const dirs = privateDirs.env
  const lab = new Lab()
  let tmp = ''
  let client = ''
  let server = ''
  let pair: VethPair
  const daemons: DaemonProcess[] = []
  const collectors: Sink[] = []
  const agents: {stop(): void}[] = []
  const stores: FlowStore[] = []
  const children: {kill(): boolean}[] = []
  let configCount = 0

  const run = (args: string[], env: Record<string, string> = {}) => cli(args, {env: {...dirs, ...env}})

  function config(port: number, timing = 'drainIntervalSeconds: 1\nidleTimeoutSeconds: 2\nactiveTimeoutSeconds: 60\n'): string {
    const file = join(tmp, `config-${++configCount}.yaml`)
    writeFileSync(file, `collectors:\n- address: 127.0.0.1:${port}\n${timing}metrics:\n  listen: ''\nstateFile: ${join(tmp, `state-${configCount}.json`)}\n`)
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

  /** Sends `count` UDP datagrams from the client to the server's sink; resolves with the source port. */
  async function traffic(count: number): Promise<number> {
    const r = await runAgent<{sport: number}>(client, {mode: 'udp-send', host: '198.18.0.2', port: 5001, count, size: 100})
    return r.sport
  }

  const flowOf = (sink: Sink, sport: number): Fields[] => sink.flows.filter((f) => f.sourceTransportPort === sport && f.protocolIdentifier === 17)
  const packetsOf = (sink: Sink, sport: number): number => flowOf(sink, sport).reduce((n, f) => n + Number(f.packetDeltaCount), 0)

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-locks-'))
    privateDirs.apply()
    client = await lab.namespace('client')
    server = await lab.namespace('server')
    pair = await lab.veth(client, 'veth0', server, 'veth1', {v4: ['198.18.0.1/24', '198.18.0.2/24'], quiet: true})
    await attachMeters(privateDirs.paths, {
      targets: [{netns: server, ifname: 'veth1'}],
      directions: ['ingress'],
      capacity: 65536,
      pref: 1,
      handle: 1,
      force: false,
    })
    agents.push(await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5001}))
  })

  afterEach(async function () {
    for (const s of stores.splice(0)) s.close()
    for (const c of children.splice(0)) c.kill()
    for (const d of daemons.splice(0)) await d.stop('SIGKILL').catch(() => {})
    for (const c of collectors.splice(0)) await c.stop()
  })

  after(async function () {
    for (const a of agents) a.stop()
    if (server) await detachMeters(privateDirs.paths, {targets: [{netns: server, ifname: '*'}], all: false, directions: ['ingress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it('refuses `flush` beside a running daemon, even from another run directory, in one line naming it; the collector gets every packet', async function () {
    const sink = await collector()
    const d = daemon(config(sink.port))
    await d.waitForLog('meter-found')
    const sport = await traffic(2000)
    // The daemon holds the flow now (idle timeout 2 s): a flush that committed beside it would drop its counts.
    const otherRunDir = join(tmp, 'other-run')
    mkdirSync(otherRunDir, {recursive: true})
    const r = await run(['flush', '--netns', server, '-p', 'udp'], {FLOWCTL_RUN_DIR: otherRunDir})
    assert.equal(r.exitCode, 1, `flush exited ${r.exitCode}: ${r.stdout}`)
    assert.equal(
      r.stderr.trim(),
      `flowctl: flowctl daemon (pid ${d.pid}) is exporting the meters pinned under ${dirs.FLOWCTL_PIN_ROOT}: stop it before flushing, or let it export these flows`,
    )
    await sink.until(() => packetsOf(sink, sport) >= 2000, 'the flow at the collector', 20_000)
    await sleep(2500) // two more drains: anything beyond would be a duplicate
    assert.equal(packetsOf(sink, sport), 2000)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
  })

  it('lets one process write a meter set at a time: `flush` is refused and the daemon waits while another holds it', async function () {
    const set = MeterSet.for(privateDirs.paths, server)
    // A writer of the set in this process, as `meter attach --force` is while it carries a layout-1 set over.
    stores.push(FlowStore.open(set))
    const r = await run(['flush', '--netns', server, '--all'])
    assert.equal(r.exitCode, 1, `flush exited ${r.exitCode}: ${r.stdout}`)
    assert.equal(
      r.stderr.trim(),
      `flowctl: another flowctl (pid ${process.pid}) is writing the flows of namespace '${server}' (a flush, or a layout-1 meter carried over): wait for it to finish, then try again`,
    )
    const sink = await collector()
    const d = daemon(config(sink.port))
    await d.waitForLog('started')
    const sport = await traffic(5)
    await sleep(3000) // three drain intervals: the daemon drains nothing it cannot lock
    assert.equal(d.count('meter-found'), 0, d.tail)
    const status = JSON.parse((await run(['meter', 'status', '--netns', server, '--json'])).stdout) as {flows: number}[]
    assert.equal(status[0].flows, 1, 'the flow is still in the live map')
    assert.equal(flowOf(sink, sport).length, 0)
    stores.pop()!.close()
    await d.waitForLog('meter-found')
    await sink.until(() => packetsOf(sink, sport) >= 5, 'the flow at the collector', 20_000)
    await sleep(2500)
    assert.equal(packetsOf(sink, sport), 5)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
  })

  it('trusts the lock, not daemon.pid: a pid file naming a live process stops neither `flush` nor a daemon', async function () {
    const stranger = execa('sleep', ['120'])
    stranger.catch(() => {}) // killed after the test
    children.push(stranger)
    const pidFile = join(dirs.FLOWCTL_RUN_DIR, 'daemon.pid')
    mkdirSync(dirs.FLOWCTL_RUN_DIR, {recursive: true})
    writeFileSync(pidFile, `${stranger.pid}\n`)
    const flushed = await run(['flush', '--netns', server, '--all'])
    assert.equal(flushed.exitCode, 0, flushed.stderr)
    const sink = await collector()
    const d = daemon(config(sink.port))
    await d.waitForLog('started')
    assert.equal(readFileSync(pidFile, 'utf8'), `${d.pid}\n`, 'the daemon writes its own pid')
    const sport = await traffic(9)
    await sink.until(() => packetsOf(sink, sport) >= 9, 'the flow at the collector', 20_000)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
    assert.equal(existsSync(pidFile), false, 'pid file removed')
    assert.equal(stranger.exitCode, null, 'the stranger is left alone')
  })

  it('`dump --json` beside a daemon committing a snapshot of many chunks ten times a second reads one drain each time', async function () {
    const FLOWS = 16_384
    const frames: Buffer[] = []
    const mac = (m: string) => Buffer.from(m.replaceAll(':', ''), 'hex')
    const ethHead = Buffer.concat([mac(pair.b.mac), mac(pair.a.mac), Buffer.from([0x08, 0x00])])
    for (let i = 0; i < FLOWS; i++) frames.push(Buffer.concat([ethHead, P.ipv4(17, `198.19.${i >> 8}.${i & 0xff}`, '198.18.0.2', P.udp(1024, 9))]))
    const framesFile = join(tmp, 'frames.bin')
    writeFrameFile(framesFile, frames)

    const sink = await collector()
    // Every flow is held (long timeouts), and the snapshot rewritten at every drain.
    const d = daemon(config(sink.port, 'drainIntervalSeconds: 0.1\nidleTimeoutSeconds: 600\nactiveTimeoutSeconds: 600\n'))
    await d.waitForLog('meter-found')
    const before = await lab.linkStats(server, 'veth1')
    assert.equal(await sendFrameFile(client, 'veth0', framesFile, 40_000), FLOWS)
    await d.waitForLog('drain', (l) => Number(l.pending) >= FLOWS)
    const after = await lab.linkStats(server, 'veth1')
    assert.equal(after.rxPackets - before.rxPackets, FLOWS, 'every frame reached the metered interface')
    const drainState = MeterSet.for(privateDirs.paths, server).openMap('drain_state')
    try {
      const {chunks} = readDrainState(drainState)
      assert.ok(chunks >= 20, `the snapshot has ${chunks} chunks`)
    } finally {
      drainState.close()
    }

    for (let i = 0; i < 30; i++) {
      const r = await run(['dump', '--netns', server, '--json', '-p', 'udp', '-D', '9'])
      assert.equal(r.exitCode, 0, `dump ${i + 1} exited ${r.exitCode}: ${r.stderr}`)
      const flows = JSON.parse(r.stdout) as Flow[]
      assert.equal(flows.length, FLOWS, `dump ${i + 1}: flows`)
      assert.equal(
        flows.reduce((n, f) => n + f.packets, 0),
        FLOWS,
        `dump ${i + 1}: packets`,
      )
      if (i % 3 === 0) {
        // meter status reads the drained maps too, which the daemon unpins as it commits.
        const status = await run(['meter', 'status', '--netns', server, '--json'])
        assert.equal(status.exitCode, 0, `meter status: ${status.stderr}`)
      }
    }
    assert.ok(d.count('drain') >= 1)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
  })
})
