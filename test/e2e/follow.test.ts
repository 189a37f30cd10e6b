/**
 * The daemon follows the router (issue 27): `meters:` entries with `interfaces` make it attach
 * the meter itself, to the namespaces and interfaces they match, as they come and go. A real
 * `flowctl daemon` exports to a real collector (Sink), and every packet sent is counted there
 * exactly (the sum of packetDeltaCount over the flow's records).
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {BpfMap, innerMapId} from '../../src/bpf/libbpf.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {readState} from '../../src/bpf/state.js'
import {Lab} from '../../src/lab/lab.js'
import type {Paths} from '../../src/paths.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import {run} from '../../src/sys/exec.js'
import {execa} from 'execa'

import {DaemonProcess, type LogLine} from '../helpers/daemon.js'
import {CLI, PrivateDirs, requireE2e, sleep} from '../helpers/e2e.js'
import {Sink} from '../ipfix/flows.js'

/** The ids of the kernel maps of the meter set of `netns`: those pinned, and the live maps its slots hold now. */
function setMapIds(paths: Paths, netns: string): number[] {
  const set = MeterSet.for(paths, netns)
  const ids: number[] = []
  for (const name of readdirSync(set.mapDir)) {
    const map = set.openMap(name)
    try {
      ids.push(map.info.id)
      if (name === 'flows4' || name === 'flows6') {
        const live = innerMapId(map)
        if (live !== undefined) ids.push(live)
      }
    } finally {
      map.close()
    }
  }
  return ids
}

/** Whether the kernel still has a map of this id. */
function mapExists(id: number): boolean {
  try {
    BpfMap.openById(id).close()
    return true
  } catch {
    return false
  }
}

describe('the daemon follows namespaces and interfaces @e2e', function () {
  this.timeout(120_000)
  const privateDirs = new PrivateDirs(randomBytes(3).toString('hex'))
  const lab = new Lab()
  let tmp = ''
  let server = ''
  let sink: Sink
  const daemons: DaemonProcess[] = []
  const agents: {stop(): void}[] = []
  let configs = 0
  /** The next free /24 of 198.18.0.0/15 for a veth pair. */
  let subnet = 0

  function writeConfig(meters: string): string {
    const file = join(tmp, `config-${++configs}.yaml`)
    writeFileSync(
      file,
      `collectors:\n- address: 127.0.0.1:${sink.port}\ndrainIntervalSeconds: 1\nidleTimeoutSeconds: 2\nactiveTimeoutSeconds: 120\n` +
        `metrics:\n  listen: ''\nstateFile: ${join(tmp, 'state.json')}\nmeters:\n${meters}`,
    )
    return file
  }

  async function startDaemon(configFile: string): Promise<DaemonProcess> {
    const d = new DaemonProcess(configFile)
    daemons.push(d)
    await d.waitForLog('started')
    return d
  }

  /** A tenant namespace with veth0 to the server, addressed; resolves with its name and the server's address. */
  async function tenant(role: string): Promise<{netns: string; src: string; dst: string}> {
    const netns = await lab.namespace(role)
    const n = ++subnet
    const [third, fourth] = [100 + Math.floor(n / 60), (n % 60) * 4]
    const src = `198.18.${third}.${fourth + 1}`
    const dst = `198.18.${third}.${fourth + 2}`
    await lab.veth(netns, 'veth0', server, `vs${lab.id.slice(0, 4)}${n}`, {v4: [`${src}/30`, `${dst}/30`], quiet: true})
    return {netns, src, dst}
  }

  /** Sends `count` UDP datagrams from `src` to the server's sink; resolves with the count sent. */
  async function send(netns: string, dst: string, sport: number, count: number): Promise<number> {
    const r = await runAgent<{packets: number}>(netns, {mode: 'udp-send', host: dst, port: 5001, count, size: 100, sport})
    return r.packets
  }

  const packetsOf = (sport: number): number =>
    sink.flows.filter((f) => f.sourceTransportPort === sport && f.protocolIdentifier === 17).reduce((sum, f) => sum + Number(f.packetDeltaCount), 0)

  // Long: each new namespace's set is verified by the kernel (about 1.5 s of CPU), one after the other, on a machine others load too.
  const waitLog = (d: DaemonProcess, event: string, match: (l: LogLine) => boolean, ms = 60_000) => d.waitForLog(event, match, ms)

  /** The daemon's open BPF maps: back to where they were once every set it let go is closed. */
  function bpfMapFds(pid: number): number {
    let n = 0
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:bpf-map') n++
      } catch {
        // closed meanwhile
      }
    }
    return n
  }

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-follow-'))
    privateDirs.apply()
    server = await lab.namespace('server')
    agents.push(await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5001}))
  })

  beforeEach(async function () {
    sink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
  })

  afterEach(async function () {
    for (const d of daemons.splice(0)) await d.stop('SIGKILL').catch(() => {})
    await sink?.stop()
    await detachMeters(privateDirs.paths, {targets: [], all: true, directions: ['ingress', 'egress']}).catch(() => {})
    for (const set of MeterSet.list(privateDirs.paths)) await set.remove().catch(() => {})
    rmSync(join(privateDirs.env.FLOWCTL_RUN_DIR, 'followed.json'), {force: true})
  })

  after(async function () {
    for (const agent of agents) agent.stop()
    await lab.destroy()
    privateDirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  it('meters namespaces created and deleted in waves while traffic runs, every packet exact, and releases what each held', async function () {
    const pattern = `fct-${lab.id}-t*`
    const steady = await tenant('t-steady')
    const d = await startDaemon(writeConfig(`- netns: "${pattern}"\n  interfaces: ["v*", "!vx*"]\n  direction: egress\n  capacity: 4096\n`))
    // There at start: attached at start.
    await waitLog(d, 'follow-attach', (l) => l.netns === steady.netns && l.interface === 'veth0' && l.reason === 'appeared')
    const baselineFds = bpfMapFds(d.pid)

    const sent = new Map<number, number>()
    let sport = 20000
    // Traffic in the steady namespace all along, one flow per round.
    let waving = true
    const steadyTraffic = (async () => {
      while (waving) {
        const p = ++sport
        sent.set(p, await send(steady.netns, steady.dst, p, 20))
        await sleep(300)
      }
    })()

    const deleted: string[] = []
    // The kernel's maps of each deleted namespace's set: all of them must be freed once it is released.
    const releasedMapIds = new Set<number>()
    for (let wave = 0; wave < 3; wave++) {
      await Promise.all(
        Array.from({length: 3}, async (_, i) => {
          const t = await tenant(`t${wave}${i}`)
          await waitLog(d, 'follow-attach', (l) => l.netns === t.netns && l.interface === 'veth0')
          for (const id of setMapIds(privateDirs.paths, t.netns)) releasedMapIds.add(id)
          for (let round = 0; round < 3; round++) {
            const p = ++sport
            sent.set(p, await send(t.netns, t.dst, p, 10 + i))
          }
          // Deleted 0.2 s after its last packet: those are in its maps only, drained by no interval yet.
          await sleep(200)
          await run('ip', ['netns', 'del', t.netns])
          deleted.push(t.netns)
        }),
      )
    }
    waving = false
    await steadyTraffic

    for (const netns of deleted) await waitLog(d, 'follow-release', (l) => l.netns === netns && l.reason === 'gone')
    await sink.until(() => [...sent].every(([p, n]) => packetsOf(p) >= n), 'every packet at the collector', 15_000)
    await sleep(1500) // a record counted twice would come by now
    for (const [p, n] of sent) assert.equal(packetsOf(p), n, `packets of sport ${p}`)

    for (const netns of deleted) assert.equal(existsSync(MeterSet.for(privateDirs.paths, netns).dir), false, `${netns} keeps its pins`)
    assert.deepEqual(
      MeterSet.list(privateDirs.paths).map((s) => s.netns),
      [steady.netns],
    )
    // The daemon holds no map of a released set, and the kernel freed every one: their memory is back.
    assert.equal(bpfMapFds(d.pid), baselineFds)
    assert.ok(releasedMapIds.size >= deleted.length * 10, `${releasedMapIds.size} maps seen for ${deleted.length} sets`)
    let alive: number[] = []
    for (let i = 0; i < 100; i++, await sleep(100)) {
      alive = [...releasedMapIds].filter(mapExists)
      if (alive.length === 0) break
    }
    assert.deepEqual(alive, [], 'maps of released sets the kernel still holds')
    assert.equal(d.log.filter((l) => l.event === 'follow-release').length, deleted.length)
    assert.ok(!d.log.some((l) => l.level === 'error'), d.tail)
  })

  it('meters a subinterface added after the daemon started', async function () {
    const t = await tenant('t-sub')
    const d = await startDaemon(writeConfig(`- netns: "fct-${lab.id}-t-sub"\n  interfaces: ["veth0.*"]\n  direction: egress\n`))
    // The interface the pattern is for does not exist yet: a warning, not an error.
    await waitLog(d, 'follow-no-match', (l) => l.meter === 'meters[0]')

    // A VLAN subinterface where the kernel has 802.1Q; otherwise (this CI kernel has no 8021q) a
    // macvlan on the same link, under the same name: either is a link that appears on top of veth0.
    const vlan = await run('ip', ['link', 'add', 'link', 'veth0', 'name', 'veth0.100', 'type', 'vlan', 'id', '100'], {netns: t.netns}).then(
      () => true,
      () => false,
    )
    if (!vlan) await run('ip', ['link', 'add', 'link', 'veth0', 'name', 'veth0.100', 'type', 'macvlan', 'mode', 'private'], {netns: t.netns})
    const src = '198.18.99.1'
    await run('ip', ['addr', 'add', `${src}/24`, 'dev', 'veth0.100'], {netns: t.netns})
    await run('ip', ['neigh', 'replace', '198.18.99.2', 'lladdr', '02:00:00:00:99:02', 'dev', 'veth0.100', 'nud', 'permanent'], {netns: t.netns})
    await run('ip', ['link', 'set', 'veth0.100', 'up'], {netns: t.netns})
    await waitLog(d, 'follow-attach', (l) => l.netns === t.netns && l.interface === 'veth0.100')

    const n = await send(t.netns, '198.18.99.2', 31000, 25)
    await sink.until(() => packetsOf(31000) >= n, 'the subinterface flow', 15_000)
    assert.equal(packetsOf(31000), n)
    assert.equal(sink.flows.find((f) => f.sourceTransportPort === 31000)?.sourceIPv4Address, src)

    // Deleting it takes its filter with it; the daemon forgets the meter (reason gone), and the namespace's set goes.
    await run('ip', ['link', 'del', 'veth0.100'], {netns: t.netns})
    await waitLog(d, 'follow-detach', (l) => l.netns === t.netns && l.interface === 'veth0.100' && l.reason === 'gone')
  })

  it('excludes its own export traffic on an interface it attaches to that faces the collector', async function () {
    // The collector in its own namespace, reached from the root namespace over a veth the daemon follows.
    const collectorNs = await lab.namespace('collector')
    const link = `fctc${lab.id}`
    await run('ip', ['link', 'add', link, 'type', 'veth', 'peer', 'name', 'vc0', 'netns', collectorNs])
    await run('sysctl', ['-q', '-w', `net.ipv6.conf.${link}.disable_ipv6=1`])
    await run('ip', ['addr', 'add', '198.18.96.1/30', 'dev', link])
    await run('ip', ['link', 'set', link, 'up'])
    await run('sysctl', ['-q', '-w', 'net.ipv6.conf.vc0.disable_ipv6=1'], {netns: collectorNs})
    await run('ip', ['addr', 'add', '198.18.96.2/30', 'dev', 'vc0'], {netns: collectorNs})
    await run('ip', ['link', 'set', 'vc0', 'up'], {netns: collectorNs})
    const listener = execa(
      'nsenter',
      [`--net=/run/netns/${collectorNs}`, '--', process.execPath, CLI, 'ipfix', 'listen', '--json', '--host', '198.18.96.2', '--port', '4739'],
      {
        reject: false,
      },
    )
    const records: Record<string, unknown>[] = []
    createInterface({input: listener.stdout}).on('line', (line) => records.push(JSON.parse(line) as Record<string, unknown>))
    try {
      const file = join(tmp, 'facing.yaml')
      writeFileSync(
        file,
        `collectors:\n- address: 198.18.96.2:4739\ndrainIntervalSeconds: 1\nidleTimeoutSeconds: 2\nactiveTimeoutSeconds: 2\ntemplateRefreshSeconds: 1\n` +
          `metrics:\n  listen: ''\nstateFile: ${join(tmp, 'state-facing.json')}\nmeters:\n- netns: root\n  interfaces: ["${link}"]\n`,
      )
      const d = await startDaemon(file)
      await waitLog(d, 'follow-attach', (l) => l.netns === 'root' && l.interface === link && l.direction === 'egress')
      // Traffic of its own on the link: 12 datagrams in (each refused with an ICMP error going out).
      const n = await send(collectorNs, '198.18.96.1', 33000, 12)
      const udpIn = () =>
        records.filter((r) => r.sourceTransportPort === 33000 && r.protocolIdentifier === 17).reduce((sum, r) => sum + Number(r.packetDeltaCount), 0)
      const deadline = Date.now() + 20_000
      while (udpIn() < n && Date.now() < deadline) await sleep(100)
      assert.equal(udpIn(), n)
      await sleep(3000) // templates every second, and the data records of the flows above, all over the link
      assert.deepEqual(
        records.filter((r) => r.destinationTransportPort === 4739 || r.sourceTransportPort === 4739),
        [],
        'the daemon metered its own export datagrams',
      )
    } finally {
      listener.kill()
      await listener
    }
  })

  it('SIGHUP that no longer takes a namespace detaches its meters and exports what its set counted', async function () {
    const t = await tenant('t-move')
    const file = join(tmp, 'move.yaml')
    writeFileSync(file, readFileSync(writeConfig(`- netns: "fct-${lab.id}-t-mo*"\n  interfaces: [veth0]\n  direction: egress\n`)))
    const d = await startDaemon(file)
    await waitLog(d, 'follow-attach', (l) => l.netns === t.netns && l.interface === 'veth0')
    const n = await send(t.netns, t.dst, 34000, 9)
    // At once, before a drain could take them: the namespace is no longer taken, its set goes.
    writeFileSync(file, readFileSync(writeConfig(`- netns: "fct-${lab.id}-t-elsewhere*"\n  interfaces: [veth0]\n  direction: egress\n`)))
    const mark = d.log.length
    d.signal('SIGHUP')
    await waitLog(d, 'follow-detach', (l) => d.log.indexOf(l) >= mark && l.netns === t.netns && l.reason === 'pattern-changed')
    await waitLog(d, 'reloaded', (l) => d.log.indexOf(l) >= mark)
    await sink.until(() => packetsOf(34000) >= n, "the detached namespace's last counts", 15_000)
    assert.equal(packetsOf(34000), n)
    assert.equal(existsSync(MeterSet.for(privateDirs.paths, t.netns).dir), false)
  })

  it('SIGHUP with new patterns attaches new matches and detaches only its own meters; a restart takes them back', async function () {
    const t = await tenant('t-hup')
    // veth1: attached by hand, never the daemon's to touch.
    await lab.veth(t.netns, 'veth1', server, `vh${lab.id.slice(0, 4)}`, {v4: ['198.18.98.1/30', '198.18.98.2/30'], quiet: true})
    await attachMeters(privateDirs.paths, {targets: [{netns: t.netns, ifname: 'veth1'}], directions: ['egress'], pref: 1, handle: 1, force: false})
    const file = join(tmp, 'hup.yaml')
    const withPatterns = (interfaces: string) => {
      writeFileSync(file, readFileSync(writeConfig(`- netns: "fct-${lab.id}-t-hup"\n  interfaces: [${interfaces}]\n  direction: egress\n`)))
    }
    withPatterns('veth0')
    const d = await startDaemon(file)
    await waitLog(d, 'follow-attach', (l) => l.netns === t.netns && l.interface === 'veth0')

    // Now veth1 too (attached by hand already: left as it is, not taken over) and no longer veth0.
    withPatterns('"veth1"')
    let mark = d.log.length
    d.signal('SIGHUP')
    await waitLog(d, 'follow-detach', (l) => d.log.indexOf(l) >= mark && l.interface === 'veth0' && l.reason === 'pattern-changed')
    await waitLog(d, 'reloaded', (l) => d.log.indexOf(l) >= mark)
    const attached = () =>
      readState(privateDirs.paths)
        .attachments.filter((a) => a.netns === t.netns)
        .map((a) => a.interface)
        .sort()
    assert.deepEqual(attached(), ['veth1'])
    assert.ok(!d.log.some((l) => l.event === 'follow-attach' && l.interface === 'veth1'), 'took over a meter attached by hand')

    // Back to veth0 and veth1 excluded: the hand-attached veth1 is still not the daemon's to detach.
    withPatterns('veth0, "!veth1"')
    mark = d.log.length
    d.signal('SIGHUP')
    await waitLog(d, 'follow-attach', (l) => d.log.indexOf(l) >= mark && l.interface === 'veth0')
    assert.deepEqual(attached(), ['veth0', 'veth1'])

    // Stopped: its meters stay attached and count on; the next start takes them back without a new attach.
    assert.equal(await d.stop('SIGTERM'), 0)
    assert.deepEqual(attached(), ['veth0', 'veth1'])
    const n = await send(t.netns, t.dst, 32000, 7)
    const again = await startDaemon(file)
    await sink.until(() => packetsOf(32000) >= n, 'what was counted while no daemon ran', 15_000)
    assert.equal(packetsOf(32000), n)
    assert.ok(!again.log.some((l) => l.event === 'follow-attach'), 'attached again what was attached')
    withPatterns('"veth9"')
    mark = again.log.length
    again.signal('SIGHUP')
    await waitLog(again, 'follow-detach', (l) => again.log.indexOf(l) >= mark && l.interface === 'veth0' && l.reason === 'pattern-changed')
    assert.deepEqual(attached(), ['veth1'])
  })
})
