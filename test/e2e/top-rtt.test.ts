/**
 * `flowctl top` by flow shows the TCP round trips of a connection whose handshake the meter timed:
 * a real TCP connection between two namespaces, the meter on one end's interface in both
 * directions (the SYN leaves by it, the SYN+ACK comes in by it), top sampling meanwhile.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'

import {execa} from 'execa'

import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import type {TopSample} from '../../src/view/top.js'
import {CLI, cliOk, requireE2e, sleep, PrivateDirs} from '../helpers/e2e.js'

describe('flowctl top: TCP round trips @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`toprtt-${id}`)
  const lab = new Lab(id)
  let a = ''
  let b = ''

  before(async function () {
    requireE2e(this)
    privateDirs.apply()
    a = await lab.namespace('a')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.56.1/24', '198.18.56.2/24'], quiet: true})
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0'])
  })

  after(async function () {
    if (a) await execa(process.execPath, [CLI, 'meter', 'detach', '--all'], {reject: false, env: process.env})
    await lab.destroy()
    privateDirs.remove()
  })

  it('--once --json by flow: both directions of a timed connection carry its round trips; other flows none', async function () {
    const top = execa(process.execPath, [CLI, 'top', '--netns', a, '--once', '--json', '--interval', '3'], {env: process.env})
    await sleep(1000)
    const sink = await startAgent(b, {mode: 'tcp-sink', host: '0.0.0.0', port: 7500})
    const sent = await runAgent<{localPort: number; connectMs: number}>(a, {mode: 'tcp-send', host: '198.18.56.2', port: 7500, bytes: 50_000})
    await sink.result
    const sample = JSON.parse((await top).stdout) as TopSample
    const conn = sample.rows.filter((r) => r.label.includes(`:${sent.localPort}`))
    assert.equal(conn.length, 2, JSON.stringify(sample.rows))
    for (const r of conn) {
      assert.ok(r.tcpRttClientMicroseconds! > 0 && r.tcpRttServerMicroseconds! > 0, JSON.stringify(r))
      assert.ok(r.tcpRttClientMicroseconds! + r.tcpRttServerMicroseconds! <= sent.connectMs * 1000 + 2, JSON.stringify({r, sent}))
    }
    assert.deepEqual(
      sample.rows.filter((r) => !r.label.includes(`:${sent.localPort}`) && r.tcpRttServerMicroseconds !== undefined),
      [],
    )
  })
})
