/**
 * Which namespaces `dump`, `flush` and `top` act on (issue 25, item 12): the one --netns names, the
 * root namespace when it is omitted (as their help says), every metered one with --all-netns. Two
 * meter sets see the same frames: the root namespace's, on one end of a veth this suite makes
 * there (no address, nothing routed: the frames are for another host and the root namespace drops
 * them after tc), and a lab namespace's, on the other end.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'

import {execa} from 'execa'

import {Lab} from '../../src/lab/lab.js'
import {runAgent} from '../../src/lab/traffic.js'
import type {Flow} from '../../src/view/flow.js'
import type {TopSample} from '../../src/view/top.js'
import {cli, PrivateDirs, requireE2e, sleep} from '../helpers/e2e.js'
import * as P from '../helpers/packets.js'

describe('namespace scope of dump, flush and top @e2e', function () {
  this.timeout(180_000)
  const lab = new Lab()
  const dirs = new PrivateDirs(`scope${randomBytes(3).toString('hex')}`)
  /** The veth end in the root namespace. */
  const rootEnd = `fct-${lab.id}-r0`
  let x = ''
  let made = false

  const run = (args: string[]) => cli(args, {env: dirs.env})
  const ok = async (args: string[]): Promise<string> => {
    const r = await run(args)
    assert.equal(r.exitCode, 0, `flowctl ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  const flows = async (args: string[]): Promise<Flow[]> => JSON.parse(await ok(['dump', '--json', '-p', 'udp', '-D', '9400', ...args])) as Flow[]
  const frame = P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.50.1', '198.18.50.2', P.udp(43000, 9400, Buffer.alloc(20)))).toString('hex')
  const send = (count: number) => runAgent(x, {mode: 'raw-send', ifname: 'x0', count, frameHex: frame})

  before(async function () {
    requireE2e(this)
    x = await lab.namespace('x')
    await execa('ip', ['link', 'add', rootEnd, 'type', 'veth', 'peer', 'name', 'x0', 'netns', x])
    made = true
    await execa('sysctl', ['-q', '-w', `net.ipv6.conf.${rootEnd}.disable_ipv6=1`])
    await lab.sysctl(x, 'net.ipv6.conf.x0.disable_ipv6', '1')
    await execa('ip', ['link', 'set', rootEnd, 'up'])
    await lab.exec(x, 'ip', ['link', 'set', 'x0', 'up'])
    await ok(['meter', 'attach', '-n', rootEnd, '--direction', 'ingress', '--capacity', '1024'])
    await ok(['meter', 'attach', '--netns', x, '-n', 'x0', '--direction', 'egress', '--capacity', '1024'])
  })

  after(async function () {
    await run(['meter', 'detach', '--all'])
    if (made) await execa('ip', ['link', 'del', rootEnd]).catch(() => {})
    await lab.destroy()
    dirs.remove()
  })

  it('dump: the root namespace without --netns, the one named with it, every one with --all-netns', async function () {
    await send(7)
    const root = await flows([])
    assert.deepEqual(
      root.map((f) => [f.netns, f.interface, f.direction, f.packets]),
      [['root', rootEnd, 'ingress', 7]],
    )
    assert.deepEqual(
      (await flows(['--netns', x])).map((f) => [f.netns, f.interface, f.direction, f.packets]),
      [[x, 'x0', 'egress', 7]],
    )
    assert.deepEqual((await flows(['--all-netns'])).map((f) => f.netns).sort(), [x, 'root'].sort())
    const both = await run(['dump', '--netns', x, '--all-netns'])
    assert.equal(both.exitCode, 2)
    assert.match(both.stderr, /--all-netns=true cannot also be provided when using --netns|cannot also be provided/)
  })

  it('top: the root namespace without --netns, every one with --all-netns', async function () {
    for (const [args, expected] of [
      [[], ['root']],
      [['--all-netns'], [x, 'root'].sort()],
    ] as const) {
      // Frames all through the sample, whenever its interval starts.
      const top = run(['top', '--once', '--json', '--interval', '2', '-p', 'udp', ...args])
      let done = false
      void top.finally(() => (done = true))
      while (!done) {
        await send(50)
        await sleep(100)
      }
      const r = await top
      assert.equal(r.exitCode, 0, r.stderr)
      const sample = JSON.parse(r.stdout) as TopSample
      assert.deepEqual([...new Set(sample.rows.map((row) => row.netns))].sort(), expected, r.stdout)
    }
  })

  it("flush: without --netns it deletes the root namespace's flows only; --all-netns reaches every namespace; `meter status` shows every namespace", async function () {
    const status = JSON.parse(await ok(['meter', 'status', '--json'])) as {netns: string}[]
    assert.deepEqual([...new Set(status.map((s) => s.netns))].sort(), [x, 'root'].sort())
    const rootFlows = (await run(['dump', '--json'])).stdout
    const inRoot = (JSON.parse(rootFlows) as Flow[]).length
    assert.ok(inRoot >= 1)
    const before = (await flows(['--netns', x]))[0].packets
    assert.equal(await ok(['flush', '--all']), `${inRoot} flow${inRoot === 1 ? '' : 's'} removed`)
    assert.deepEqual(await flows([]), [])
    assert.deepEqual(
      (await flows(['--all-netns'])).map((f) => [f.netns, f.packets]),
      [[x, before]],
      'the other namespace keeps its flows',
    )
    assert.match(await ok(['flush', '--all', '--all-netns']), /^[1-9]\d* flows? removed$/)
    assert.deepEqual(await flows(['--all-netns']), [])
  })

  it('without a meter in the root namespace, says how to reach the others', async function () {
    await ok(['meter', 'detach', '-n', rootEnd])
    for (const command of [['dump'], ['flush', '--all'], ['top', '--once']]) {
      const r = await run(command)
      assert.equal(r.exitCode, 1, `${command.join(' ')}: ${r.stdout}`)
      assert.equal(
        r.stderr.trim(),
        'flowctl: no meter is attached in the root namespace: name a namespace with --netns NS, or take every one with --all-netns (see `flowctl meter status`)',
      )
    }
  })
})
