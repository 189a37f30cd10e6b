/**
 * `flowctl ipfix dump` (the older tool's one-shot export): what the kernel holds is sent once, with
 * exact counts, to the config's collector, and the maps are empty afterwards; beside a running
 * daemon it refuses with one line.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {Lab} from '../../src/lab/lab.js'
import {ping} from '../../src/lab/traffic.js'
import type {Flow} from '../../src/view/flow.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {cli, cliJson, cliOk, requireE2e, sleep, PrivateDirs} from '../helpers/e2e.js'
import {Sink} from '../ipfix/flows.js'

describe('flowctl ipfix dump @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`dump-${id}`)
  const lab = new Lab(id)
  let tmp = ''
  let a = ''
  let sink: Sink | undefined
  let configFile = ''
  let daemon: DaemonProcess | undefined

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-ipfix-dump-'))
    privateDirs.apply()
    a = await lab.namespace('a')
    const b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.33.1/24', '198.18.33.2/24'], quiet: true})
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0'])
    sink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    configFile = join(tmp, 'config.yaml')
    writeFileSync(
      configFile,
      [`collectors:\n- address: 127.0.0.1:${sink.port}`, `meters:\n- netns: ${a}`, `stateFile: ${join(tmp, 'state.json')}`].join('\n') + '\n',
    )
  })

  after(async function () {
    await daemon?.stop()
    await sink?.stop()
    await cli(['meter', 'detach', '--all'])
    await lab.destroy()
    privateDirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  it('sends what the kernel holds once, exactly, and leaves the maps empty', async function () {
    await ping(a, '198.18.33.2', 5, 56, 0.05)
    const report = JSON.parse(await cliOk(['ipfix', 'dump', '-c', configFile, '--json'])) as {exported: number}
    assert.ok(report.exported >= 2, JSON.stringify(report))
    for (let i = 0; i < 50 && sink!.flows.filter((f) => f.protocolIdentifier === 1).length < 2; i++) await sleep(100)
    const icmp = sink!.flows.filter((f) => f.protocolIdentifier === 1)
    assert.equal(icmp.length, 2, JSON.stringify(sink!.flows))
    for (const f of icmp) {
      assert.equal(f.packetDeltaCount, 5)
      assert.equal(f.octetDeltaCount, 5 * 84)
      assert.equal(f.flowEndReason, 4, 'forced end')
    }
    const left = await cliJson<Flow[]>(['dump', '--netns', a, '-p', 'icmp', '--json'])
    assert.deepEqual(left, [])
  })

  it('refuses to run beside a daemon, in one line', async function () {
    daemon = new DaemonProcess(configFile)
    await daemon.waitForLog('started')
    const r = await cli(['ipfix', 'dump', '-c', configFile])
    assert.equal(r.exitCode, 1)
    assert.match(
      r.stderr.trim(),
      /^flowctl: flowctl daemon \(pid \d+\) is exporting these flows: `ipfix dump` would race it; stop it first, or let it export them$/,
    )
  })
})
