/**
 * A metered namespace deleted with no daemon running (issue 27, item 4): its filters go with it,
 * but its pinned maps stay and hold kernel memory. `meter status` marks the set gone and says what
 * to do; `meter detach --gone` removes its pins, says it exported nothing and how many it
 * reclaimed, and leaves a live namespace's set alone.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync} from 'node:fs'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import type {MeterStatus} from '../../src/bpf/status.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent} from '../../src/lab/traffic.js'
import {run} from '../../src/sys/exec.js'
import {cli, cliJson, cliOk, PrivateDirs, requireE2e} from '../helpers/e2e.js'

describe('meter status and detach --gone for deleted namespaces @e2e', function () {
  this.timeout(120_000)
  const privateDirs = new PrivateDirs(randomBytes(3).toString('hex'))
  const lab = new Lab()
  let doomed = ''
  let kept = ''

  before(async function () {
    requireE2e(this)
    privateDirs.apply()
    const server = await lab.namespace('server')
    doomed = await lab.namespace('doomed')
    kept = await lab.namespace('kept')
    await lab.veth(doomed, 'veth0', server, 'vethd', {v4: ['198.18.1.1/24', '198.18.1.2/24'], quiet: true})
    await lab.veth(kept, 'veth0', server, 'vethk', {v4: ['198.18.2.1/24', '198.18.2.2/24'], quiet: true})
    for (const netns of [doomed, kept])
      await attachMeters(privateDirs.paths, {targets: [{netns, ifname: 'veth0'}], directions: ['egress'], capacity: 4096, pref: 1, handle: 1, force: false})
  })

  after(async function () {
    if (kept) await detachMeters(privateDirs.paths, {targets: [{netns: kept, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    for (const set of MeterSet.list(privateDirs.paths)) await set.remove().catch(() => {})
    privateDirs.remove()
  })

  it('shows the deleted namespace as gone, then reclaims only its set, exporting nothing', async function () {
    // Counts the namespace never handed to anyone: they go with its maps, and detach says so.
    await runAgent(doomed, {mode: 'udp-send', host: '198.18.1.2', port: 5001, count: 5, size: 100})
    const doomedSet = MeterSet.for(privateDirs.paths, doomed)
    assert.ok(existsSync(doomedSet.dir))
    await run('ip', ['netns', 'del', doomed])

    const rows = await cliJson<MeterStatus[]>(['meter', 'status', '--json'])
    assert.deepEqual(
      rows.map((r) => [r.netns, r.state]).sort(),
      [
        [doomed, 'gone'],
        [kept, 'attached'],
      ].sort(),
    )
    const table = await cliOk(['meter', 'status'])
    assert.match(table, new RegExp(`${doomed}\\s+veth0\\s+egress\\s+gone`))
    assert.match(table, new RegExp(`namespace ${doomed} is gone, and its meter set holds kernel memory: \`flowctl meter detach --gone\` reclaims it`))

    const out = await cliOk(['meter', 'detach', '--gone'])
    assert.match(out, new RegExp(`^${doomed}: namespace gone, maps removed; 1 flow not exported yet went with them$`, 'm'))
    assert.match(out, /^reclaimed 1 meter set of deleted namespaces; nothing was exported \(no daemon is running\)$/m)
    assert.equal(existsSync(doomedSet.dir), false, 'the deleted namespace keeps its pins')

    const after = await cliJson<MeterStatus[]>(['meter', 'status', '--json'])
    assert.deepEqual(
      after.map((r) => [r.netns, r.state]),
      [[kept, 'attached']],
    )
    assert.ok(existsSync(MeterSet.for(privateDirs.paths, kept).dir))
    assert.match(await cliOk(['meter', 'detach', '--gone']), /^no meter set of a deleted namespace to reclaim$/m)
  })

  it('refuses --gone beside a namespace or --all, in one line', async function () {
    const r = await cli(['meter', 'detach', '--gone', '--all'])
    assert.notEqual(r.exitCode, 0)
    assert.match(r.stderr, /--gone takes the meter sets of every deleted namespace: drop --all/)
  })
})
