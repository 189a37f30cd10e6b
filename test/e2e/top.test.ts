/**
 * `flowctl top` for real: a namespace lab with two ICMP streams of known, very different rates,
 * a daemon draining the same maps, and top in a tmux pane (send-keys, capture-pane): its first row
 * is the faster stream, its rate is what was sent, and q quits.
 */
import assert from 'node:assert/strict'
import {createSocket, type Socket} from 'node:dgram'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa, type ResultPromise} from 'execa'

import {Lab} from '../../src/lab/lab.js'
import type {TopSample} from '../../src/view/top.js'
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
      [`collectors:\n- address: 127.0.0.1:${sink.address().port}`, 'drainIntervalSeconds: 2', `meters:\n- netns: ${a}`, `stateFile: ${join(tmp, 'state.json')}`].join('\n') + '\n',
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
    await execa('tmux', ['new-session', '-d', '-s', session, '-x', '200', '-y', '40', 'env', ...env, process.execPath, CLI, 'top', '--netns', a, '--by', 'flow'])
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
})
