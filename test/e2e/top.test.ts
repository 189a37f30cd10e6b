/**
 * `flowctl top` for real: a namespace lab with two ICMP streams of known, very different rates,
 * a daemon draining the same maps, and top in a tmux pane (send-keys, capture-pane): its first row
 * is the faster stream, its rate is what was sent, and q quits. Beside a daemon that drains as
 * often as the config allows (every 0.1 s), top counts every packet sent, and when it is held up
 * for longer than a few drains (SIGSTOP), it says that it missed maps instead of showing rates.
 */
import assert from 'node:assert/strict'
import {createSocket, type Socket} from 'node:dgram'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa, type ResultPromise} from 'execa'

import {readDrainState} from '../../src/bpf/layout.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import {TopSampler, type TopSample} from '../../src/view/top.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {CLI, cliJson, cliOk, requireE2e, sleep, PrivateDirs} from '../helpers/e2e.js'

describe('flowctl top @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`top-${id}`)
  const lab = new Lab(id)
  const session = `fct-top-${id}`
  let tmp = ''
  let a = ''
  let daemon: DaemonProcess | undefined
  let sink: Socket | undefined
  const pings: ResultPromise[] = []

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-top-'))
    privateDirs.apply()
    a = await lab.namespace('a')
    const b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.30.1/24', '198.18.30.2/24'], quiet: true})
    await lab.exec(b, 'ip', ['addr', 'add', '198.18.30.3/24', 'dev', 'b0'])
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0'])
    sink = createSocket('udp4')
    await new Promise<void>((r) => sink!.bind(0, '127.0.0.1', r))
    const configFile = join(tmp, 'config.yaml')
    writeFileSync(
      configFile,
      [
        `collectors:\n- address: 127.0.0.1:${sink.address().port}`,
        'drainIntervalSeconds: 2',
        `meters:\n- netns: ${a}`,
        `stateFile: ${join(tmp, 'state.json')}`,
      ].join('\n') + '\n',
    )
    daemon = new DaemonProcess(configFile)
    await daemon.waitForLog('started')
    // Fast: 50 echo requests/s of 1228 IP bytes to .2; slow: 5/s of 128 bytes to .3.
    const nsenter = (args: string[]) => execa('nsenter', [`--net=/run/netns/${a}`, '--', 'ping', '-q', ...args], {reject: false})
    pings.push(nsenter(['-i', '0.02', '-s', '1200', '198.18.30.2']), nsenter(['-i', '0.2', '-s', '100', '198.18.30.3']))
    await sleep(1500)
  })

  after(async function () {
    for (const p of pings) p.kill()
    await execa('tmux', ['kill-session', '-t', session], {reject: false})
    await daemon?.stop()
    sink?.close()
    if (a) await execa(process.execPath, [CLI, 'meter', 'detach', '--all'], {reject: false, env: process.env})
    await lab.destroy()
    privateDirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  it('in a terminal: the top line is the fastest flow, refreshed, and q quits', async function () {
    const env = Object.entries(privateDirs.env).map(([k, v]) => `${k}=${v}`)
    await execa('tmux', [
      'new-session',
      '-d',
      '-s',
      session,
      '-x',
      '200',
      '-y',
      '40',
      'env',
      ...env,
      process.execPath,
      CLI,
      'top',
      '--netns',
      a,
      '--by',
      'flow',
    ])
    let screen = ''
    for (let i = 0; i < 40 && !/p\/s/.test(screen); i++) {
      await sleep(250)
      screen = (await execa('tmux', ['capture-pane', '-p', '-t', session])).stdout
    }
    const rows = screen.split('\n').filter((l) => /p\/s/.test(l) && !/PACKETS/.test(l))
    assert.ok(rows.length >= 2, screen)
    assert.match(rows[0], /198\.18\.30\.2/, screen)
    await execa('tmux', ['send-keys', '-t', session, 'q'])
    for (let i = 0; i < 40; i++) {
      if ((await execa('tmux', ['has-session', '-t', session], {reject: false})).exitCode !== 0) return
      await sleep(100)
    }
    assert.fail('top did not quit on q')
  })

  it('--once --json: the busiest flow first, at the rate it was sent', async function () {
    // With the daemon stopped: no swap inside the interval (rates across the daemon's swaps are
    // what the terminal test above shows, beside a draining daemon).
    await daemon?.stop()
    const sample = await cliJson<TopSample>(['top', '--netns', a, '--once', '--json', '--interval', '2'])
    assert.equal(sample.swapsFollowed, 0)
    const top = sample.rows[0]
    assert.match(top.label, /198\.18\.30\.2/, JSON.stringify(sample.rows))
    // 50 packets/s of 1228 bytes (ping's interval is a floor: allow for a slower sender, not a faster one).
    assert.ok(top.bytesPerSecond > 0.7 * 50 * 1228 && top.bytesPerSecond < 1.1 * 50 * 1228, `rate ${top.bytesPerSecond} B/s`)
    const slow = sample.rows.find((r) => r.label.includes('198.18.30.3') && r.label.includes('egress'))
    assert.ok(slow && slow.packetsPerSecond > 2 && slow.packetsPerSecond < 7, JSON.stringify(slow))
  })

  it('--by interface: rows by the interface name and direction, as `ip link` names it', async function () {
    const sample = await cliJson<TopSample>(['top', '--netns', a, '--once', '--json', '--interval', '1', '--by', 'interface'])
    assert.ok(
      sample.rows.some((r) => r.label === 'a0 egress' && r.packetsPerSecond > 0),
      JSON.stringify(sample.rows),
    )
    assert.ok(!sample.rows.some((r) => /^if\d/.test(r.label)), 'no interface by number')
  })
})

describe('flowctl top beside a daemon draining every 0.1 s @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`topfast-${id}`)
  const lab = new Lab(id)
  let tmp = ''
  let a = ''
  let daemon: DaemonProcess | undefined
  let sink: Socket | undefined
  let sampler: TopSampler | undefined
  let top: ResultPromise | undefined
  /** Every top a test started: a test that fails leaves its top stopped (SIGSTOP) and running. */
  const tops: ResultPromise[] = []

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-topfast-'))
    privateDirs.apply()
    a = await lab.namespace('a')
    const b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.31.1/24', '198.18.31.2/24'], quiet: true})
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0'])
    sink = createSocket('udp4')
    await new Promise<void>((r) => sink!.bind(0, '127.0.0.1', r))
    const configFile = join(tmp, 'config.yaml')
    writeFileSync(
      configFile,
      [
        `collectors:\n- address: 127.0.0.1:${sink.address().port}`,
        'drainIntervalSeconds: 0.1',
        `meters:\n- netns: ${a}`,
        `stateFile: ${join(tmp, 'state.json')}`,
      ].join('\n') + '\n',
    )
    daemon = new DaemonProcess(configFile)
    await daemon.waitForLog('started')
  })

  after(async function () {
    sampler?.close()
    for (const t of tops) {
      t.kill('SIGCONT')
      t.kill()
      await t
    }
    await daemon?.stop()
    sink?.close()
    if (a) await execa(process.execPath, [CLI, 'meter', 'detach', '--all'], {reject: false, env: process.env})
    await lab.destroy()
    privateDirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  /** Drains the daemon has committed on the lab's meter set. */
  function drains(): number {
    const map = MeterSet.for(privateDirs.paths, a).openMap('drain_state')
    try {
      return readDrainState(map).gen
    } finally {
      map.close()
    }
  }

  async function waitForDrains(n: number): Promise<void> {
    const until = drains() + n
    for (let i = 0; i < 200 && drains() < until; i++) await sleep(50)
    assert.ok(drains() >= until, `the daemon did not drain ${n} times`)
  }

  /**
   * Waits for `n` drains with traffic running: the daemon swaps a set's live maps only when new
   * flows came (an idle set keeps its maps in place, and its drains commit nothing).
   */
  async function waitForDrainsWithTraffic(n: number): Promise<void> {
    const traffic = await startAgent(a, {mode: 'udp-send', host: '198.18.31.2', port: 5098, count: 1_000_000, size: 100, gapMs: 5})
    try {
      await waitForDrains(n)
    } finally {
      traffic.stop()
      await traffic.result.catch(() => {})
    }
  }

  /** Waits until the drains stop committing for a second: the set went idle, its last packets' map swapped out. */
  async function waitForQuiet(): Promise<void> {
    let last = drains()
    for (let still = 0, i = 0; still < 10; i++) {
      assert.ok(i < 300, 'the daemon kept draining 30 s after the traffic ended')
      await sleep(100)
      const now = drains()
      still = now === last ? still + 1 : 0
      last = now
    }
  }

  it('counts every packet sent while the daemon swaps the live map out dozens of times', async function () {
    sampler = await TopSampler.open(privateDirs.paths, {netns: a, selector: {}})
    sampler.prime()
    const first = drains()
    // About 3 s of UDP at about 1,000 packets/s: 30 drains or so.
    const sent = await runAgent<{packets: number; bytes: number}>(a, {mode: 'udp-send', host: '198.18.31.2', port: 5099, count: 3000, size: 100, gapMs: 1})
    // The map of the last packets swapped out too, then the set idle (its live maps stay in place).
    await waitForQuiet()
    const sample = sampler.sample('port')
    const udp = sample.rows.find((r) => r.label === 'udp/5099')
    assert.ok(udp, JSON.stringify(sample.rows))
    assert.equal(sample.swapsMissed, 0)
    assert.ok(sample.swapsFollowed >= drains() - first - 1, `followed ${sample.swapsFollowed} swaps of ${drains() - first} drains`)
    // Every packet, exactly once: IP bytes are the payload and 28 bytes of IPv4 and UDP headers.
    assert.deepEqual({packets: udp.packets, bytes: udp.bytes}, {packets: sent.packets, bytes: sent.packets * (100 + 28)})
  })

  it('held up for several drains (SIGSTOP), says it missed maps instead of showing rates', async function () {
    // Not in tmux, which continues a stopped pane at once: screens on a pipe, q on stdin.
    top = execa(process.execPath, [CLI, 'top', '--netns', a], {reject: false, env: process.env, stdin: 'pipe'})
    tops.push(top)
    let screens = ''
    top.stdout!.on('data', (d: Buffer) => (screens += d.toString()))
    const waitFor = async (pattern: RegExp): Promise<void> => {
      for (let i = 0; i < 80 && !pattern.test(screens); i++) await sleep(250)
      assert.match(screens, pattern)
    }
    // The first screen: top is following the maps.
    await waitFor(/rates over the last/)
    top.kill('SIGSTOP')
    try {
      await waitForDrainsWithTraffic(4)
    } finally {
      top.kill('SIGCONT')
    }
    await waitFor(/missed \d+ live flow maps? the daemon swapped in and out within the last [\d.]+ s .*: no rates for this interval/)
    top.stdin!.write('q')
    assert.equal((await top).exitCode, 0)
  })

  it('--once, held up for several drains, fails in one line instead of printing rates that undercount', async function () {
    const once = execa(process.execPath, [CLI, 'top', '--netns', a, '--once', '--json', '--interval', '3'], {reject: false, env: process.env})
    top = once
    tops.push(once)
    // Primed once it holds the live map (its fds name the maps they hold).
    const set = MeterSet.for(privateDirs.paths, a)
    const holdsLive = () => {
      const maps = set.openFamily(4)
      try {
        const live = `map_id:\t${maps.liveId()}\n`
        return readdirSync(`/proc/${once.pid}/fdinfo`).some((fd) => readFileSync(`/proc/${once.pid}/fdinfo/${fd}`, 'utf8').includes(live))
      } catch {
        return false // the process or one of its fds went meanwhile
      } finally {
        maps.close()
      }
    }
    for (let i = 0; i < 200 && !holdsLive(); i++) await sleep(25)
    assert.ok(holdsLive(), 'top never held the live map')
    once.kill('SIGSTOP')
    try {
      await waitForDrainsWithTraffic(4)
    } finally {
      once.kill('SIGCONT')
    }
    const r = await once
    assert.equal(r.exitCode, 1, String(r.stdout))
    assert.equal(r.stdout, '')
    assert.match(
      String(r.stderr),
      /^flowctl: top missed \d+ live flow maps? the daemon swapped in and out within the last [\d.]+ s \(.*\), so its rates would undercount: run it again$/,
    )
  })
})
