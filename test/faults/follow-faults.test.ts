/**
 * Faults the daemon's own meters meet (issue 27): an interface the patterns take that holds
 * someone else's filter at our place. The daemon attaches the namespace's other interfaces, says
 * what failed, and attaches that one too once the place is free, without being told.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {detachMeters} from '../../src/bpf/attach.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {Lab} from '../../src/lab/lab.js'
import {run} from '../../src/sys/exec.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {PrivateDirs, requireE2e, sleep} from '../helpers/e2e.js'

describe('the daemon following interfaces it cannot attach to @e2e', function () {
  this.timeout(120_000)
  const privateDirs = new PrivateDirs(randomBytes(3).toString('hex'))
  const lab = new Lab()
  let tmp = ''
  let daemon: DaemonProcess | undefined
  let busy = ''

  before(function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-follow-faults-'))
    privateDirs.apply()
  })

  after(async function () {
    await daemon?.stop('SIGKILL').catch(() => {})
    await detachMeters(privateDirs.paths, {targets: [], all: true, directions: ['ingress', 'egress']}).catch(() => {})
    for (const set of MeterSet.list(privateDirs.paths)) await set.remove().catch(() => {})
    await lab.destroy()
    privateDirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  it("attaches the other interfaces beside one whose place holds someone else's filter, and that one once it is free", async function () {
    const netns = await lab.namespace('busy')
    busy = netns
    for (const name of ['veth0', 'veth1']) await run('ip', ['link', 'add', name, 'type', 'veth', 'peer', 'name', `p${name}`], {netns})
    // Someone else's filter at pref 1 of veth0's egress, where the meter goes.
    await run('tc', ['qdisc', 'add', 'dev', 'veth0', 'clsact'], {netns})
    await run('tc', ['filter', 'add', 'dev', 'veth0', 'egress', 'pref', '1', 'u32', 'match', 'u32', '0', '0'], {netns})
    const config = join(tmp, 'config.yaml')
    writeFileSync(
      config,
      `logs:\n- file: /dev/null\nmetrics:\n  listen: ''\nstateFile: ${join(tmp, 'state.json')}\n` +
        `meters:\n- netns: ${netns}\n  interfaces: ["veth?"]\n  direction: egress\n  capacity: 4096\n`,
    )
    daemon = new DaemonProcess(config)
    await daemon.waitForLog('follow-attach', (l) => l.netns === netns && l.interface === 'veth1', 60_000)
    const failed = await daemon.waitForLog('follow-failed', (l) => l.netns === netns, 60_000)
    assert.match(String(failed.error), /pref 1 of veth0 egress in namespace '.*' is taken by another filter \(u32\)/)
    assert.ok(!daemon.log.some((l) => l.event === 'follow-attach' && l.interface === 'veth0'))

    await run('tc', ['filter', 'del', 'dev', 'veth0', 'egress', 'pref', '1'], {netns})
    // Tried again on its own (1 s, then 2, 4, ... after each failure in a row).
    await daemon.waitForLog('follow-attach', (l) => l.netns === netns && l.interface === 'veth0', 60_000)
  })

  it('looks at every followed namespace again when its link monitor ended: an interface made meanwhile is attached', async function () {
    assert.ok(daemon)
    const netns = busy
    const {stdout} = await run('pgrep', ['-P', String(daemon.pid), '-f', 'ip monitor link all-nsid'])
    process.kill(Number(stdout.trim()), 'SIGKILL')
    // Made while no monitor listens (it is started again a second later): no event says so.
    await run('ip', ['link', 'add', 'veth2', 'type', 'veth', 'peer', 'name', 'pveth2'], {netns})
    await daemon.waitForLog('follow-monitor-ended', () => true, 10_000)
    await daemon.waitForLog('follow-attach', (l) => l.netns === netns && l.interface === 'veth2', 30_000)
  })

  it('leaves no link monitor behind when the daemon is killed', async function () {
    assert.ok(daemon)
    const {stdout} = await run('pgrep', ['-P', String(daemon.pid), '-f', 'ip monitor link all-nsid'])
    const monitor = Number(stdout.trim())
    assert.ok(monitor > 0 && existsSync(`/proc/${monitor}`))
    await daemon.stop('SIGKILL')
    const deadline = Date.now() + 10_000
    while (existsSync(`/proc/${monitor}`) && Date.now() < deadline) await sleep(50)
    assert.equal(existsSync(`/proc/${monitor}`), false, `ip monitor (pid ${monitor}) outlived the daemon`)
  })
})
