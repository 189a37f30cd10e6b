/**
 * Fault injection against a real daemon (issue 13): a metered veth between two namespaces, real
 * traffic, `flowctl daemon` as a child process exporting to a real UDP collector, and one fault
 * at a time: a state file that cannot be written (the path is a directory, a full filesystem, a
 * read-only one) or holds the wrong types, a hook whose child escapes its process group, a second
 * daemon on the same pinned maps. Each test checks that exporting goes on, the fault is counted
 * and said in one line, and the daemon stops when told.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {PrivateDirs, requireE2e, sleep} from '../helpers/e2e.js'
import {sample} from '../helpers/prom.js'
import {Sink} from '../ipfix/flows.js'

type Fields = Record<string, unknown>

describe('daemon faults @e2e', function () {
  this.timeout(240_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(id)
  const dirs = privateDirs.env
  const lab = new Lab()
  let tmp = ''
  let client = ''
  let server = ''
  const daemons: DaemonProcess[] = []
  const collectors: Sink[] = []
  const agents: {stop(): void}[] = []
  const mounts: string[] = []
  let configCount = 0

  function writeConfig(yaml: string): string {
    const file = join(tmp, `config-${++configCount}.yaml`)
    writeFileSync(file, yaml)
    return file
  }

  /** A source port of its own for each daemon: a fixed source is what makes the sequence numbers persist. */
  const sourcePort = () => 20_000 + Math.floor(Math.random() * 20_000)

  /** One collector from a fixed source port; state file, metrics and extra YAML as the test needs. */
  function config(port: number, options: {stateFile: string; metrics?: boolean; extra?: string; source?: number}): string {
    return writeConfig(
      `collectors:\n- address: 127.0.0.1:${port}\n  source: 127.0.0.1:${options.source ?? sourcePort()}\ndrainIntervalSeconds: 1\nidleTimeoutSeconds: 2\nactiveTimeoutSeconds: 60\n` +
        `templateRefreshSeconds: 1\nstatsIntervalSeconds: 1\n` +
        `metrics:\n  listen: '${options.metrics ? '127.0.0.1:0' : ''}'\nstateFile: ${options.stateFile}\n${options.extra ?? ''}`,
    )
  }

  async function collector(): Promise<Sink> {
    const c = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    collectors.push(c)
    return c
  }

  function daemon(configFile: string, env: Record<string, string> = {}): DaemonProcess {
    const d = new DaemonProcess(configFile, undefined, env)
    daemons.push(d)
    return d
  }

  /** Sends `count` UDP datagrams through the metered veth; resolves with the source port. */
  async function traffic(count: number): Promise<number> {
    const r = await runAgent<{sport: number}>(client, {mode: 'udp-send', host: '198.18.0.2', port: 5001, count, size: 100, gapMs: 1})
    return r.sport
  }

  const flowOf = (sink: Sink, sport: number): Fields[] => sink.flows.filter((f) => f.sourceTransportPort === sport && f.protocolIdentifier === 17)

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-faults-'))
    privateDirs.apply()
    client = await lab.namespace('client')
    server = await lab.namespace('server')
    await lab.veth(client, 'veth0', server, 'veth1', {v4: ['198.18.0.1/24', '198.18.0.2/24'], v6: ['fd00:f11::1/64', 'fd00:f11::2/64'], quiet: true})
    await attachMeters(privateDirs.paths, {targets: [{netns: client, ifname: 'veth0'}], directions: ['egress'], pref: 1, handle: 1, force: false})
    agents.push(await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5001}))
  })

  afterEach(async function () {
    for (const d of daemons.splice(0)) await d.stop('SIGKILL').catch(() => {})
    for (const c of collectors.splice(0)) await c.stop()
    for (const m of mounts.splice(0)) await execa('umount', ['-l', m], {reject: false})
  })

  after(async function () {
    for (const a of agents) a.stop()
    for (const m of mounts) await execa('umount', ['-l', m], {reject: false})
    if (client) await detachMeters(privateDirs.paths, {targets: [{netns: client, ifname: '*'}], all: false, directions: ['egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  /** A small tmpfs at a fresh directory, unmounted after the test. */
  async function tmpfs(name: string, options: string): Promise<string> {
    const dir = join(tmp, name)
    mkdirSync(dir, {recursive: true})
    await execa('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir])
    mounts.push(dir)
    return dir
  }

  const unwritable: {name: string; prepare: () => Promise<string>}[] = [
    {
      name: 'the path is a directory',
      prepare: async () => {
        const file = join(tmp, 'state-is-a-dir')
        mkdirSync(file, {recursive: true})
        return file
      },
    },
    {
      name: 'the disk is full',
      prepare: async () => {
        const dir = await tmpfs('full', 'size=64k')
        // Fill it: dd stops at ENOSPC.
        await execa('dd', ['if=/dev/zero', `of=${join(dir, 'filler')}`, 'bs=4k'], {reject: false})
        return join(dir, 'state.json')
      },
    },
    {
      name: 'the directory is read-only',
      prepare: async () => {
        const dir = await tmpfs('ro', 'size=64k')
        await execa('mount', ['-o', 'remount,ro', dir])
        return join(dir, 'state.json')
      },
    },
  ]

  for (const fault of unwritable) {
    it(`keeps exporting and refreshing templates, counts and logs once, and stops on SIGTERM when the state file cannot be written: ${fault.name}`, async function () {
      const stateFile = await fault.prepare()
      const sink = await collector()
      const d = daemon(config(sink.port, {stateFile, metrics: true}))
      await d.waitForLog('started')
      const url = String((await d.waitForLog('metrics-listening')).url)
      const sport = await traffic(20)
      await sink.until(() => flowOf(sink, sport).length === 1, 'the flow', 20_000)
      assert.equal(flowOf(sink, sport)[0].packetDeltaCount, 20)
      // Templates every second, statistics options records too, although every save fails.
      const templateMessages = () => sink.received.filter((r) => r.message.templates.length > 0).length
      const before = templateMessages()
      await sink.until(() => templateMessages() >= before + 2, 'two more template refreshes', 10_000)
      assert.ok(
        sink.records.some((r) => r.options),
        'statistics options records',
      )
      const text = await (await fetch(url)).text()
      const errors = sample(text, 'flowctl_state_file_write_errors_total')
      assert.ok(errors !== undefined && errors >= 2, `flowctl_state_file_write_errors_total ${errors}`)
      assert.equal(d.count('state-file-unwritable'), 1, 'logged once a minute, not at every drain')
      assert.equal(d.count('drain-failed'), 0, d.tail)
      // SIGTERM stops it well within systemd's stop timeout (30 s), pid file removed.
      const started = Date.now()
      assert.equal(await d.stop('SIGTERM'), 0, d.tail)
      assert.ok(Date.now() - started < 10_000, `stopped in ${Date.now() - started} ms`)
      assert.equal(existsSync(join(dirs.FLOWCTL_RUN_DIR, 'daemon.pid')), false, 'pid file removed')
      assert.ok(d.log.some((l) => l.event === 'stopped'))
    })
  }

  it('on a full disk, counts as written the flow log lines in the file, leaves no torn line, and counts and logs the lost records', async function () {
    const dir = await tmpfs('fulllog', 'size=64k')
    const logFile = join(dir, 'flows.log')
    const sink = await collector()
    const d = daemon(config(sink.port, {stateFile: join(tmp, 'fulllog-state.json'), metrics: true, extra: `logs:\n- file: ${logFile}\n`}))
    await d.waitForLog('started')
    const url = String((await d.waitForLog('metrics-listening')).url)
    // 2000 flows, one datagram each from its own source port: about 900 kB of log for 64 kB of disk.
    const flows = 2000
    const firstPort = 30_000
    const send = `const s = require('node:dgram'); (async () => { for (let i = 0; i < ${flows}; i++) await new Promise((resolve) => { const u = s.createSocket('udp4'); u.bind({address: '198.18.0.1', port: ${firstPort} + i}, () => u.send(Buffer.alloc(8), 5001, '198.18.0.2', () => { u.close(); resolve() })) }) })()`
    await execa('nsenter', [`--net=/run/netns/${client}`, process.execPath, '-e', send])
    const ours = (f: Fields) => Number(f.sourceTransportPort) >= firstPort && Number(f.sourceTransportPort) < firstPort + flows
    await sink.until(() => sink.flows.filter(ours).length >= flows, `the ${flows} flows at the collector`, 30_000)
    const metrics = async () => {
      const text = await (await fetch(url)).text()
      return {
        written: sample(text, 'flowctl_flow_log_records_total', {output: logFile}) ?? 0,
        lost: sample(text, 'flowctl_flow_log_records_lost_total', {output: logFile}) ?? 0,
      }
    }
    // Every flow exported goes to the collector and to the log (a stray one, ND or ARP, too).
    let counted = await metrics()
    for (const deadline = Date.now() + 20_000; counted.written + counted.lost < sink.flows.length; counted = await metrics()) {
      assert.ok(Date.now() < deadline, `written ${counted.written} + lost ${counted.lost} of ${sink.flows.length}`)
      await sleep(200)
    }
    const text = readFileSync(logFile, 'utf8')
    assert.ok(text === '' || text.endsWith('\n'), `the file ends in a torn line: ${JSON.stringify(text.slice(-80))}`)
    const lines = text.split('\n').filter(Boolean)
    for (const line of lines) assert.doesNotThrow(() => JSON.parse(line), `a line that is not JSON: ${line}`)
    assert.ok(lines.length > 0 && lines.length < flows, `${lines.length} lines`)
    assert.equal(counted.written, lines.length, 'flowctl_flow_log_records_total counts the lines in the file')
    assert.equal(counted.written + counted.lost, sink.flows.length, 'flowctl_flow_log_records_lost_total counts the rest')
    assert.ok(counted.lost >= flows - lines.length, `lost ${counted.lost}`)
    const failed = await d.waitForLog('flow-log-write-failed')
    assert.match(String(failed.error), /ENOSPC/)
    assert.ok(Number(failed.lost) > 0, JSON.stringify(failed))
    // Once there is room again, writing goes on after the last whole line.
    writeFileSync(logFile, '')
    const sport = await traffic(3)
    await sink.until(() => flowOf(sink, sport).length === 1, 'the next flow', 20_000)
    const after = () =>
      readFileSync(logFile, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Fields)
    for (const deadline = Date.now() + 20_000; !after().some((l) => l.sport === sport);) {
      assert.ok(Date.now() < deadline, `the next flow was not written: ${d.tail}`)
      await sleep(200)
    }
    for (const deadline = Date.now() + 10_000; (await metrics()).written !== lines.length + after().length;) {
      assert.ok(Date.now() < deadline, `flowctl_flow_log_records_total ${(await metrics()).written}, ${lines.length} + ${after().length} lines written`)
      await sleep(200)
    }
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
  })

  it('reports a state file of wrong types in one line and writes real numbers over it (no 0 saved as null)', async function () {
    const sink = await collector()
    const stateFile = join(tmp, 'wrong-types.json')
    const source = sourcePort()
    const session = `127.0.0.1:${source}>127.0.0.1:${sink.port}`
    writeFileSync(stateFile, JSON.stringify({version: 1, sequences: {[session]: {'1': 'abc'}}}))
    const d = daemon(config(sink.port, {stateFile, source}))
    const warned = await d.waitForLog('state-file-invalid')
    assert.equal(warned.problem, `sequences.${session}.1 is "abc", not a sequence number (an integer 0-4294967295)`)
    const sport = await traffic(5)
    await sink.until(() => flowOf(sink, sport).length === 1, 'the flow', 20_000)
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
    const saved = JSON.parse(readFileSync(stateFile, 'utf8')) as {sequences: Record<string, Record<string, unknown>>}
    const numbers = Object.values(saved.sequences).flatMap((domains) => Object.values(domains))
    assert.ok(numbers.length > 0 && numbers.every((n) => Number.isInteger(n) && (n as number) > 0), JSON.stringify(saved))
    assert.equal(d.count('state-file-invalid'), 1)
  })

  it('refuses to start, in one line naming stateFile, with a state file under a missing /proc path (it froze at 100 % CPU there, deaf to SIGTERM)', async function () {
    const sink = await collector()
    const file = config(sink.port, {stateFile: '/proc/flowctl-fault/daemon-state.json'})
    const d = daemon(file)
    // Before, it started, spun in its first save and ignored SIGTERM: stopped here with SIGKILL.
    const timer = setTimeout(() => d.signal('SIGKILL'), 20_000)
    const r = await d.child
    clearTimeout(timer)
    assert.equal(r.exitCode, 2, d.tail)
    assert.equal(
      String(r.stderr).trim(),
      `flowctl: ${file}: stateFile: the directory /proc/flowctl-fault cannot be created (mkdir in /proc fails: ENOENT); allowed: a file in a directory that exists or can be created, e.g. under /var/lib`,
    )
  })

  it('does not hold the flow log past the hook timeout when a hook and its child that left its process group (setsid) hang', async function () {
    const sink = await collector()
    const logFile = join(tmp, 'flows.log')
    const pidFile = join(tmp, 'escaped.pid')
    // The hook hangs after answering; its child, in a session of its own, holds stdout too. The
    // child writes its pid as the host sees it ($$ is its pid in the hook's namespace).
    // Each run appends (a later batch runs the hook again); the sleep's length marks ours (pids are reused).
    const marker = `${25 + Math.random()}`
    const hook = `cat; setsid sh -c 'read pid rest < /proc/self/stat; echo $pid >> ${pidFile}; exec sleep ${marker}' & sleep 25`
    const extra = `logs:\n- file: ${logFile}\n  hooks:\n  - name: escapes\n    shell: "${hook.replace(/"/g, '\\"')}"\n    timeoutSeconds: 2\n`
    const d = daemon(config(sink.port, {stateFile: join(tmp, 'hook-state.json'), extra}))
    await d.waitForLog('started')
    const sport = await traffic(10)
    await sink.until(() => flowOf(sink, sport).length === 1, 'the flow at the collector', 20_000)
    const exportedAt = Date.now()
    const lines = () =>
      existsSync(logFile)
        ? readFileSync(logFile, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as Fields)
        : []
    while (!lines().some((l) => l.sport === sport)) {
      assert.ok(Date.now() - exportedAt < 8000, `the flow log still waits ${Date.now() - exportedAt} ms after the export (hook timeout 2 s): ${d.tail}`)
      await sleep(50)
    }
    const failed = await d.waitForLog('hook-failed')
    assert.match(String(failed.error), /did not finish within 2s/)
    // What escaped in the run that failed was killed with the hook.
    const escaped = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
    const state = existsSync(`/proc/${escaped}/stat`) ? readFileSync(`/proc/${escaped}/stat`, 'utf8').split(') ')[1]?.[0] : undefined
    const ours = existsSync(`/proc/${escaped}/cmdline`) && readFileSync(`/proc/${escaped}/cmdline`, 'utf8').includes(marker)
    assert.ok(!ours || state === undefined || state === 'Z', `the escaped child ${escaped} is gone (state ${state})`)
    // The log keeps going: the next batch is written too.
    const next = await traffic(3)
    const again = Date.now()
    while (!lines().some((l) => l.sport === next)) {
      assert.ok(Date.now() - again < 15_000, `the next flow reached the log: ${d.tail}`)
      await sleep(50)
    }
    assert.equal(await d.stop('SIGTERM'), 0, d.tail)
  })

  it('refuses a second daemon on the same pinned maps, even with another run directory, naming the first', async function () {
    const sink = await collector()
    const first = daemon(config(sink.port, {stateFile: join(tmp, 'first-state.json')}))
    await first.waitForLog('started')
    const otherRunDir = join(tmp, 'other-run')
    const second = daemon(config(sink.port, {stateFile: join(tmp, 'second-state.json')}), {FLOWCTL_RUN_DIR: otherRunDir})
    const r = await second.child
    assert.equal(r.exitCode, 1, second.tail)
    const stderr = String(r.stderr).trim()
    assert.equal(stderr.split('\n').length, 1, stderr)
    assert.equal(
      stderr,
      `flowctl: another flowctl daemon (pid ${first.pid}) drains the meters pinned under ${dirs.FLOWCTL_PIN_ROOT}: stop it first (one daemon exports each meter)`,
    )
    // Every flow still arrives once, from the first.
    const sport = await traffic(7)
    await sink.until(() => flowOf(sink, sport).length === 1, 'the flow', 20_000)
    await sleep(2500)
    assert.equal(flowOf(sink, sport).length, 1)
    assert.equal(flowOf(sink, sport)[0].packetDeltaCount, 7)
    // The kernel drops the lock with its holder, however it dies: no stale lock after SIGKILL.
    assert.equal(await first.stop('SIGKILL'), 'SIGKILL')
    const third = daemon(config(sink.port, {stateFile: join(tmp, 'third-state.json')}), {FLOWCTL_RUN_DIR: otherRunDir})
    await third.waitForLog('started')
    assert.equal(await third.stop('SIGTERM'), 0, third.tail)
  })
})
