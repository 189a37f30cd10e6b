/**
 * linux-flow-exporter parity against the kernel: the older tool's command lines (as its README and
 * cobra flags have them) on a real meter in throw-away namespaces, and the rough edges found with
 * them (bpffs, a dump beside a flush, non-root dump).
 */
import assert from 'node:assert/strict'
import {cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {attachMeters} from '../../src/bpf/attach.js'
import type {Flow} from '../../src/view/flow.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import {pathsFromEnv} from '../../src/paths.js'
import {CLI, cli, PrivateDirs, REPO, requireE2e} from '../helpers/e2e.js'

interface Status {
  netns: string
  interface: string
  direction: string
  capacity: number
}

describe('linux-flow-exporter parity on a meter @e2e', function () {
  this.timeout(300_000)
  const lab = new Lab()
  const dirs = new PrivateDirs(`lfe${process.pid}`)
  // Made in before(): a describe body runs even when a --grep leaves none of its tests to run (and no after()).
  let tmp = ''
  let a: string
  let b: string
  const run = (args: string[], options: {uid?: number; env?: Record<string, string>} = {}) => cli(args, {uid: options.uid, env: {...dirs.env, ...options.env}})
  const ok = async (args: string[]) => {
    const r = await run(args)
    assert.equal(r.exitCode, 0, `flowctl ${args.join(' ')}: ${r.stderr}`)
    return r
  }

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-lfe-'))
    a = await lab.namespace('a')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.40.1/24', '198.18.40.2/24'], quiet: true})
  })

  afterEach(async function () {
    if (a) await run(['meter', 'detach', '--netns', a])
  })

  after(async function () {
    await lab.destroy()
    dirs.remove()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  async function udp(count: number, sport: number, dport: number): Promise<void> {
    const sink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: dport})
    await runAgent(a, {mode: 'udp-send', host: '198.18.40.2', port: dport, sport, count, size: 64})
    sink.stop()
  }

  it('`meter attach -i NS:DEV -l 6` (the older default) attaches with the smallest capacity and says so', async function () {
    const r = await ok(['meter', 'attach', '-i', `${a}:a0`, '-l', '6'])
    assert.match(r.stderr, /^flowctl: --interface-max-flow-limit 6: using a capacity of 16 flows per map/)
    assert.match(r.stdout, new RegExp(`^${a}:a0:ingress attached`, 'm'))
    const status = JSON.parse((await ok(['meter', 'status', '--netns', a, '--json'])).stdout) as Status[]
    assert.deepEqual(status.map((s) => [s.interface, s.direction, s.capacity]).sort(), [
      ['a0', 'egress', 16],
      ['a0', 'ingress', 16],
    ])
  })

  it('`meter attach --dry` and `meter detach --dry` change nothing', async function () {
    const dry = await ok(['meter', 'attach', '-i', `${a}:a0`, '--dry'])
    assert.equal(dry.stdout, `${a}:a0:ingress would be attached (dry run: nothing changed)\n${a}:a0:egress would be attached (dry run: nothing changed)`)
    assert.deepEqual(JSON.parse((await ok(['meter', 'status', '--netns', a, '--json'])).stdout), [])
    assert.equal((await lab.exec(a, 'tc', ['filter', 'show', 'dev', 'a0', 'ingress'])).trim(), '')

    await ok(['meter', 'attach', '-i', `${a}:a0`])
    const detach = await ok(['meter', 'detach', '-i', `${a}:a0`, '--dry'])
    assert.match(detach.stdout, /a0:ingress would be detached \(dry run: nothing changed\)/)
    assert.equal((JSON.parse((await ok(['meter', 'status', '--netns', a, '--json'])).stdout) as Status[]).length, 2)
  })

  it('`meter detach --pref --chain --handle` detach only the filters there; `attach --chain` puts the meter in that chain', async function () {
    await ok(['meter', 'attach', '-i', `${a}:a0`, '--chain', '5', '--pref', '7', '--handle', '3'])
    const shown = await lab.exec(a, 'tc', ['filter', 'show', 'dev', 'a0', 'ingress'])
    assert.match(shown, /pref 7 bpf chain 5 handle 0x3 flowctl_ingress/)
    const wrong = await run(['meter', 'detach', '-i', `${a}:a0`, '--pref', '1'])
    assert.equal(wrong.exitCode, 1)
    assert.match(wrong.stderr, /no meter is attached to 'a0' in namespace '.+' at pref 1/)
    await ok(['meter', 'detach', '-i', `${a}:a0`, '--pref', '7', '--chain', '5', '--handle', '3'])
    assert.equal((await lab.exec(a, 'tc', ['filter', 'show', 'dev', 'a0', 'ingress'])).trim(), '')
  })

  it('`-i NS:DEVREGEX` takes exact names, and says what the older regex would have taken', async function () {
    const r = await run(['meter', 'attach', '-i', `${a}:a`])
    assert.equal(r.exitCode, 1)
    assert.match(
      r.stderr,
      /interface 'a' does not exist in namespace .*; the older tool read 'a' as a regular expression .* which takes a0: flowctl takes exact names/,
    )
  })

  it('`dump -o wide|json` and the README flush lines (`flush -i IFINDEX -p -s -S -d -D`, `flush --all`, `flush -A`)', async function () {
    await ok(['meter', 'attach', '-i', `${a}:a0`, '--direction', 'egress'])
    await udp(3, 41000, 9400)
    await udp(2, 41001, 9400)
    const flows = JSON.parse((await ok(['dump', '--netns', a, '-o', 'json', '-p', 'udp', '-D', '9400'])).stdout) as Flow[]
    assert.deepEqual(flows.map((f) => [f.sport, f.packets]).sort(), [
      [41000, 3],
      [41001, 2],
    ])
    const wide = (await ok(['dump', '--netns', a, '-o', 'wide', '-p', 'udp', '-D', '9400'])).stdout.split('\n')
    assert.match(wide[0], /IFINDEX +VLAN +TOS +START MS +END MS +SAMPLING$/)
    assert.equal(wide.length, 3)
    assert.ok(
      wide.slice(1).every((line) => line.includes(` ${flows[0].ifindex} `)),
      wide.join('\n'),
    )

    // The README's line for one flow, with this flow's numbers.
    const one = flows.find((f) => f.sport === 41000)!
    const removed = await ok([
      'flush',
      '--netns',
      a,
      '-i',
      String(one.ifindex),
      '-p',
      '17',
      '-s',
      '198.18.40.1',
      '-S',
      '41000',
      '-d',
      '198.18.40.2',
      '-D',
      '9400',
    ])
    assert.equal(removed.stdout, '1 flow removed')
    const left = JSON.parse((await ok(['dump', '--netns', a, '--json', '--saddr', '198.18.40.1', '--daddr', '198.18.40.2'])).stdout) as Flow[]
    assert.deepEqual(
      left.filter((f) => f.dport === 9400).map((f) => f.sport),
      [41001],
    )
    assert.match((await ok(['flush', '--netns', a, '-A'])).stdout, /^\d+ flows? removed$/)
    assert.deepEqual(JSON.parse((await ok(['dump', '--netns', a, '-o', 'json', '-D', '9400'])).stdout), [])
    // The older tool's one map held every namespace; flowctl's `flush --all` stays in the root
    // namespace unless --all-netns says otherwise (docs/from-linux-flow-exporter.md).
    await udp(1, 41002, 9400)
    assert.match((await ok(['flush', '--all', '--all-netns'])).stdout, /^[1-9]\d* flows? removed$/)
  })

  it('`dump` beside `flush --all` in a loop never crashes', async function () {
    await ok(['meter', 'attach', '-i', `${a}:a0`, '--direction', 'egress'])
    let flushing = true
    const flusher = (async () => {
      let sport = 42000
      while (flushing) {
        await udp(30, sport++, 9500)
        await run(['flush', '--netns', a, '--all'])
      }
    })()
    try {
      for (let i = 0; i < 6; i++) {
        const r = await run(['dump', '--netns', a, '--json'])
        assert.equal(r.exitCode, 0, r.stderr)
        assert.ok(Array.isArray(JSON.parse(r.stdout)))
        assert.match(r.stderr, /^(flowctl: skipped \d+ entr(y|ies) deleted while the dump read them.*)?$/)
      }
    } finally {
      flushing = false
      await flusher
    }
  })

  it('`dump` as a user without root says it needs root', async function () {
    // A home of its own, as a user has (root's is not readable to it).
    const r = await run(['dump', '--netns', a], {uid: 65534, env: {HOME: '/nonexistent'}})
    assert.equal(r.exitCode, 1)
    assert.equal(r.stderr, 'flowctl: flowctl dump needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo')
  })

  it('`meter attach` with a pin root off bpffs fails within a second, with the mount command, and mounts nothing', async function () {
    const root = join(tmp, 'pins')
    const paths = pathsFromEnv({...process.env, ...dirs.env, FLOWCTL_PIN_ROOT: root})
    const started = Date.now()
    await assert.rejects(
      attachMeters(paths, {targets: [{netns: a, ifname: 'a0'}], directions: ['ingress'], pref: 1, handle: 1, force: false}),
      new RegExp(`the pin root ${root} is not on a bpf filesystem: mount one there with \`mkdir -p ${root} && mount -t bpf bpf ${root}\``),
    )
    assert.ok(Date.now() - started < 1000, `${Date.now() - started} ms`)
    assert.ok(!readFileSync('/proc/mounts', 'utf8').includes(tmp), 'no bpffs mounted under the pin root')
    assert.equal((await lab.exec(a, 'tc', ['filter', 'show', 'dev', 'a0', 'ingress'])).trim(), '')
  })

  it('`flowctl ipfix file -c ./examples/dummy_flow_test/config.yaml -f ./examples/dummy_flow_test/flow.yaml`, verbatim, in a namespace whose only way out is a veth into itself', async function () {
    // The example's collector is a public address: the datagrams go out of one end of a veth pair
    // whose other end is in the same throw-away namespace (which does not forward): they never leave it.
    const cwd = join(tmp, 'linux-flow-exporter')
    mkdirSync(join(cwd, 'examples'), {recursive: true})
    cpSync(`${REPO}test/fixtures/lfe/dummy_flow_test`, join(cwd, 'examples', 'dummy_flow_test'), {recursive: true})
    const ns = await lab.namespace('out')
    await lab.exec(ns, 'ip', ['link', 'add', 'out0', 'type', 'veth', 'peer', 'name', 'out1'])
    await lab.exec(ns, 'ip', ['addr', 'add', '198.18.41.1/24', 'dev', 'out0'])
    await lab.exec(ns, 'ip', ['link', 'set', 'out0', 'up'])
    await lab.exec(ns, 'ip', ['link', 'set', 'out1', 'up'])
    await lab.exec(ns, 'ip', ['route', 'add', 'default', 'dev', 'out0'])
    const r = await execa(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        CLI,
        'ipfix',
        'file',
        '-c',
        './examples/dummy_flow_test/config.yaml',
        '-f',
        './examples/dummy_flow_test/flow.yaml',
      ],
      {
        cwd,
        reject: false,
        env: dirs.env,
        timeout: 60_000,
      },
    )
    assert.equal(r.exitCode, 0, String(r.stderr))
    assert.match(String(r.stdout), /^35\.194\.97\.218:2055: 13 records in \d+ messages \(\d+ bytes\)$/)
    assert.equal(
      String(r.stderr),
      'flowctl: ./examples/dummy_flow_test/flow.yaml: not sent, as their template lacks them: sourceTransportPort, destinationTransportPort (template 1001)',
    )
    const sent = JSON.parse(await lab.exec(ns, 'ip', ['-s', '-j', 'link', 'show', 'out0'])) as {stats64: {tx: {packets: number}}}[]
    assert.ok(sent[0].stats64.tx.packets >= 2, JSON.stringify(sent[0].stats64))
  })
})
