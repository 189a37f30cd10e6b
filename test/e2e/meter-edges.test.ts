/**
 * The meter's edges, end to end: a full map, the tc chain after us, filters that are not ours,
 * bad input and missing tools, the root namespace, namespaces with equal ifindexes, flushing
 * under live traffic, GSO, and dumping a large map with bounded memory.
 */
import assert from 'node:assert/strict'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import type {Flow} from '../../src/view/flow.js'
import {FLOW_KEY4, FLOW_VALUE4, KEY} from '../../src/bpf/layout.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {pathsFromEnv} from '../../src/paths.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import {CLI, cli, cliJson, cliOk, requireE2e, sleep} from '../helpers/e2e.js'

interface Status {
  netns: string
  interface: string
  direction: string
  flows: number
  capacity: number
  overflowPackets: number
  overflowBytes: number
  progId: number
}

describe('meter edges @e2e', function () {
  const lab = new Lab()
  let a: string
  let b: string
  // Made in before(): a describe body runs even when a --grep leaves none of its tests to run (and no after()).
  let tmp = ''

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-edges-'))
    a = await lab.namespace('a')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.30.1/24', '198.18.30.2/24'], quiet: true})
  })

  afterEach(async function () {
    if (a) await cli(['meter', 'detach', '--netns', a])
  })

  after(async function () {
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  it('counts what found the map full as not metered, per interface and direction', async function () {
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--capacity', '16'])
    const sink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: 9000})
    for (let i = 0; i < 40; i++) await runAgent(a, {mode: 'udp-send', host: '198.18.30.2', port: 9000, sport: 50000 + i, count: 1, size: 64})
    sink.stop()
    const flows = await cliJson<Flow[]>(['dump', '--netns', a])
    assert.equal(flows.length, 16)
    const [status] = await cliJson<Status[]>(['meter', 'status', '--netns', a])
    assert.equal(status.capacity, 16)
    assert.equal(status.flows, 16)
    assert.equal(status.overflowPackets, 24)
    assert.equal(status.overflowBytes, 24 * (20 + 8 + 64))
  })

  it('refuses another capacity for a namespace that has a meter', async function () {
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'ingress'])
    const r = await cli(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress', '--capacity', '1024'])
    assert.equal(r.exitCode, 2)
    assert.match(r.stderr, /^flowctl: the meter of namespace '.*' holds 1048576 flows per map; to use --capacity 1024, detach all its interfaces first$/)
  })

  it('lets the filters after it run, and leaves them alone when detaching', async function () {
    // A filter that drops everything, at pref 2, after the meter's pref 1. tc loads it itself,
    // and makes its own bpffs directories on the way: those go again afterwards.
    const tcDirs = ['ip', 'tc', 'xdp'].map((d) => `/sys/fs/bpf/${d}`).filter((d) => !existsSync(d))
    const src = join(tmp, 'drop.c')
    writeFileSync(
      src,
      '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nSEC("tc") int drop(struct __sk_buff *s) { return 2; }\nchar LICENSE[] SEC("license") = "GPL";\n',
    )
    const include = existsSync('/usr/include/x86_64-linux-gnu') ? ['-I/usr/include/x86_64-linux-gnu'] : []
    await execa('clang', ['-O2', '-g', '-target', 'bpf', ...include, '-c', src, '-o', join(tmp, 'drop.o')])
    try {
      await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0'])
      await lab.exec(a, 'tc', ['filter', 'add', 'dev', 'a0', 'egress', 'pref', '2', 'bpf', 'da', 'obj', join(tmp, 'drop.o'), 'sec', 'tc'])
      const sink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: 9050})
      await runAgent(a, {mode: 'udp-send', host: '198.18.30.2', port: 9050, sport: 9050, count: 10, size: 20})
      await sleep(100)
      sink.stop()
      assert.equal((await sink.result).packets, 0, 'the drop filter after the meter ran')
      const flows = await cliJson<Flow[]>(['dump', '--netns', a, '-p', 'udp', '-D', '9050'])
      assert.equal(flows.length, 1)
      assert.equal(flows[0].packets, 10, 'the meter counted the datagrams before they were dropped')
      await cliOk(['meter', 'detach', '--netns', a])
      const left = await lab.exec(a, 'tc', ['filter', 'show', 'dev', 'a0', 'egress'])
      assert.match(left, /drop\.o/, 'the foreign filter stays')
      assert.doesNotMatch(left, /flowctl/)
      assert.match(await lab.exec(a, 'tc', ['qdisc', 'show', 'dev', 'a0']), /clsact/, 'the qdisc stays while a filter uses it')
    } finally {
      await lab.exec(a, 'tc', ['qdisc', 'del', 'dev', 'a0', 'clsact']).catch(() => {})
      for (const d of tcDirs) rmSync(d, {recursive: true, force: true})
    }
  })

  it('refuses a pref taken by another filter, leaving nothing half-attached', async function () {
    await lab.exec(a, 'tc', ['qdisc', 'add', 'dev', 'a0', 'clsact'])
    await lab.exec(a, 'tc', ['filter', 'add', 'dev', 'a0', 'egress', 'pref', '1', 'protocol', 'ip', 'u32', 'match', 'u32', '0', '0'])
    try {
      const r = await cli(['meter', 'attach', '--netns', a, '-n', 'a0'])
      assert.equal(r.exitCode, 1)
      assert.match(r.stderr, /^flowctl: pref 1 of a0 egress in namespace '.*' is taken by another filter \(u32\): choose a free one with --pref$/)
      assert.equal(await lab.exec(a, 'tc', ['filter', 'show', 'dev', 'a0', 'ingress']), '', 'ingress, attached first, was undone')
      assert.equal(existsSync(`/sys/fs/bpf/flowctl/netns/${a}`), false)
      const status = await cliJson<Status[]>(['meter', 'status', '--netns', a]).catch(() => [])
      assert.equal(status.length, 0)
      assert.match(await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--pref', '5']), /a0:egress attached/)
    } finally {
      await cli(['meter', 'detach', '--netns', a])
      await lab.exec(a, 'tc', ['qdisc', 'del', 'dev', 'a0', 'clsact'])
    }
  })

  it('re-attaches with --force', async function () {
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0'])
    const out = await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--force'])
    assert.match(out, /a0:ingress re-attached/)
    assert.match(out, /a0:egress re-attached/)
  })

  it('refuses maps pinned by an incompatible version', async function () {
    const dir = `/sys/fs/bpf/flowctl/netns/${a}/maps`
    mkdirSync(dir, {recursive: true})
    await execa('bpftool', ['map', 'create', `${dir}/flows4`, 'type', 'hash', 'key', '8', 'value', '8', 'entries', '16', 'name', 'flows4'])
    try {
      const r = await cli(['meter', 'attach', '--netns', a, '-n', 'a0'])
      assert.equal(r.exitCode, 1)
      assert.match(
        r.stderr,
        /^flowctl: the meter of namespace '.*' has kernel layout unknown, this flowctl reads layout 4: detach it with the flowctl that made it, or remove \/sys\/fs\/bpf\/flowctl\/netns\/.*$/,
      )
      assert.equal(await lab.exec(a, 'tc', ['qdisc', 'show', 'dev', 'a0']).then((q) => q.includes('clsact')), false)
    } finally {
      rmSync(`/sys/fs/bpf/flowctl/netns/${a}`, {recursive: true, force: true})
    }
  })

  it('names what to fix on bad input, with a non-zero exit', async function () {
    const cases: [string[], RegExp, number][] = [
      [['meter', 'attach', '--netns', 'fct-no-such-ns', '-n', 'x'], /network namespace 'fct-no-such-ns' does not exist/, 1],
      [['meter', 'attach', '--netns', a, '-n', 'nope0'], /interface 'nope0' does not exist in namespace '.*' \(it has: lo, a0\)/, 1],
      [['meter', 'attach', '-i', 'a:b:c'], /invalid interface 'a:b:c': expected NETNS:IFACE, IFACE, or NETNS:\*/, 2],
      [['meter', 'attach', '--netns', a, '-n', 'a0', '--capacity', '3'], /invalid capacity 3: expected an integer from 16 to 16777216/, 2],
      [['meter', 'attach'], /nothing to attach/, 2],
      [['flush', '-s', '198.18.300.1'], /invalid source address \(--src\) '198.18.300.1': expected an IPv4 or IPv6 address/, 2],
      [['flush', '-p', 'tcp', '-D', '70000'], /invalid port '70000' for --dport: expected 0-65535/, 2],
      [['flush'], /nothing to flush/, 2],
      [['dump', '--netns', a], /no meter is attached in namespace/, 1],
      [['meter', 'detach', '--netns', a, '-n', 'a0'], /no meter is attached to 'a0'/, 1],
      [['dump', '--bogus'], /Nonexistent flag: --bogus/, 2],
    ]
    for (const [args, message, code] of cases) {
      const r = await cli(args)
      assert.equal(r.exitCode, code, `${args.join(' ')}: exit ${r.exitCode}, stderr ${r.stderr}`)
      assert.match(r.stderr, message, args.join(' '))
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`)
    }
  })

  it('says what to install when clang or bpftool is missing, and who may attach', async function () {
    // A PATH with every tool the CLI runs except the one under test, and an empty compile cache.
    for (const missing of ['clang', 'bpftool']) {
      const bin = join(tmp, `bin-${missing}`)
      mkdirSync(bin, {recursive: true})
      for (const tool of ['clang', 'bpftool', 'tc', 'ip', 'nsenter']) {
        if (tool === missing) continue
        const path = (await execa('sh', ['-c', `command -v ${tool}`])).stdout.trim()
        if (!existsSync(join(bin, tool))) symlinkSync(path, join(bin, tool))
      }
      const env = {PATH: bin, FLOWCTL_CACHE_DIR: join(tmp, `cache-${missing}`)}
      const r = await cli(['meter', 'attach', '--netns', a, '-n', 'a0'], {env})
      assert.equal(r.exitCode, 1)
      assert.equal(r.stderr, `flowctl: ${missing} is not installed: install it with \`apt-get install -y ${missing}\` (see \`flowctl dependency-check\`)`)
      assert.equal(existsSync(`/sys/fs/bpf/flowctl/netns/${a}`), false)
    }
    const nobody = await cli(['meter', 'attach', '--netns', a, '-n', 'a0'], {uid: 65534, env: {HOME: '/nonexistent'}})
    assert.equal(nobody.exitCode, 1)
    assert.match(nobody.stderr, /^flowctl: flowctl meter attach needs root \(CAP_BPF and CAP_NET_ADMIN\): run it with sudo$/)
  })

  it('meters the root namespace too', async function () {
    const r0 = `fct-${lab.id}-r0`
    const r1 = `fct-${lab.id}-r1`
    await execa('ip', ['link', 'add', r0, 'type', 'veth', 'peer', 'name', r1])
    try {
      await execa('ip', ['link', 'set', r0, 'up'])
      await execa('ip', ['link', 'set', r1, 'up'])
      assert.match(await cliOk(['meter', 'attach', '-n', r0, '--direction', 'ingress']), new RegExp(`root:${r0}:ingress attached`))
      const status = await cliJson<Status[]>(['meter', 'status', '--netns', 'root'])
      assert.ok(status.some((s) => s.interface === r0 && s.netns === 'root'))
      assert.ok(existsSync('/sys/fs/bpf/flowctl/root/maps/flows4'))
      await cliOk(['meter', 'detach', '-n', r0])
      assert.equal((await execa('tc', ['filter', 'show', 'dev', r0, 'ingress'])).stdout, '')
    } finally {
      await execa('ip', ['link', 'del', r0]).catch(() => {})
    }
  })

  it('never merges flows of different namespaces, even with equal ifindexes and addresses', async function () {
    const c = await lab.namespace('c')
    const d = await lab.namespace('d')
    await lab.veth(c, 'a0', d, 'b0', {v4: ['198.18.30.1/24', '198.18.30.2/24'], quiet: true})
    try {
      await cliOk(['meter', 'attach', '-i', `${a}:a0`, '-i', `${c}:a0`, '--direction', 'egress'])
      await runAgent(a, {mode: 'udp-send', host: '198.18.30.2', port: 9100, sport: 9100, count: 5, size: 10})
      await runAgent(c, {mode: 'udp-send', host: '198.18.30.2', port: 9100, sport: 9100, count: 9, size: 10})
      const flows = (await cliJson<Flow[]>(['dump', '--all-netns', '-p', 'udp', '-D', '9100'])).filter((f) => f.netns === a || f.netns === c)
      assert.equal(flows.length, 2)
      assert.equal(flows[0].ifindex, flows[1].ifindex)
      assert.deepEqual(Object.fromEntries(flows.map((f) => [f.netns, f.packets])), {[a]: 5, [c]: 9})
    } finally {
      await cli(['meter', 'detach', '--netns', c])
    }
  })

  it('loses no packet of other flows when flushing under traffic', async function () {
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'egress'])
    const sink = await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: 9200})
    const senders = [61001, 61002, 61003].map((sport) =>
      runAgent(a, {mode: 'udp-send', host: '198.18.30.2', port: 9200, sport, count: 6000, size: 32, gapMs: 1}),
    )
    let flushes = 0
    const sending = {done: false}
    void Promise.all(senders).finally(() => (sending.done = true))
    while (!sending.done) {
      await cliOk(['flush', '--netns', a, '-p', 'udp', '-S', '61003'])
      flushes++
    }
    await Promise.all(senders)
    sink.stop()
    assert.ok(flushes >= 3, `flushed ${flushes} times during the traffic`)
    const flows = await cliJson<Flow[]>(['dump', '--netns', a, '-p', 'udp', '-D', '9200'])
    for (const sport of [61001, 61002]) {
      const f = flows.find((x) => x.sport === sport)
      assert.equal(f?.packets, 6000, `flow ${sport}`)
      assert.equal(f.bytes, 6000 * 60)
    }
    const flushed = flows.find((x) => x.sport === 61003)
    assert.ok(!flushed || flushed.packets < 6000, 'the flushed flow lost what was flushed')
  })

  it('counts a GSO super-packet as the segments it becomes on the wire', async function () {
    // a -> r -> b: TSO on the a-r link (super-packets at a's tc egress), off on r-b (r segments).
    const r = await lab.namespace('r')
    const e = await lab.namespace('e')
    await lab.veth(a, 'g0', r, 'g1', {v4: ['198.18.31.1/24', '198.18.31.2/24'], quiet: true, offloads: true})
    await lab.veth(r, 'g2', e, 'g3', {v4: ['198.18.32.1/24', '198.18.32.2/24'], quiet: true})
    await lab.sysctl(r, 'net.ipv4.ip_forward', '1')
    await lab.exec(a, 'ip', ['route', 'add', '198.18.32.0/24', 'via', '198.18.31.2'])
    await lab.exec(e, 'ip', ['route', 'add', '198.18.31.0/24', 'via', '198.18.32.1'])
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'g0', '--direction', 'egress'])
    const before = await lab.linkStats(r, 'g2')
    const server = await startAgent(e, {mode: 'tcp-sink', host: '198.18.32.2', port: 9300})
    await runAgent(a, {mode: 'tcp-send', host: '198.18.32.2', port: 9300, bytes: 4_000_000})
    await server.result
    await sleep(200)
    const after = await lab.linkStats(r, 'g2')
    const wirePackets = after.txPackets - before.txPackets
    const wireBytes = after.txBytes - before.txBytes - 14 * wirePackets
    const [flow] = await cliJson<Flow[]>(['dump', '--netns', a, '-n', 'g0', '-p', 'tcp', '-D', '9300'])
    const tcStats = await lab.exec(a, 'tc', ['-s', 'filter', 'show', 'dev', 'g0', 'egress'])
    assert.ok(flow.packets > 100, `${flow.packets} packets`)
    assert.equal(flow.packets, wirePackets, `segments on the wire (${tcStats.length} bytes of tc stats)`)
    assert.equal(flow.bytes, wireBytes)
    const g0 = await lab.linkStats(a, 'g0')
    assert.ok(g0.txPackets < wirePackets, `super-packets did reach tc (${g0.txPackets} skbs for ${wirePackets} segments)`)
  })

  it('dumps a large map with bounded memory', async function () {
    this.timeout(300_000)
    const flowsWanted = 150_000
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0', '--direction', 'ingress', '--capacity', '262144'])
    // Fill the live map directly, in batches: this test is about reading, not counting.
    const maps = MeterSet.for({...pathsFromEnv(), pinRoot: '/sys/fs/bpf/flowctl'}, a).openFamily(4)
    const live = maps.openLive()
    maps.close()
    try {
      const chunk = 10_000
      const ks = FLOW_KEY4.size
      const keys = Buffer.alloc(chunk * ks)
      const values = Buffer.alloc(chunk * FLOW_VALUE4.size)
      for (let start = 0; start < flowsWanted; start += chunk) {
        keys.fill(0)
        values.fill(0)
        for (let i = 0; i < chunk; i++) {
          const n = start + i
          keys.writeUInt32LE(2, i * ks + KEY.ifindex.offset)
          keys[i * ks + KEY.proto.offset] = 17
          keys.writeUInt16BE(n & 0xffff, i * ks + KEY.sport.offset)
          keys.writeUInt16BE(53, i * ks + KEY.dport.offset)
          keys.set([198, 18, 40 + (n >> 16), 1], i * ks + FLOW_KEY4.fields.src.offset)
          keys.set([198, 18, 30, 1], i * ks + FLOW_KEY4.fields.dst.offset)
          const v = i * FLOW_VALUE4.size
          values.writeBigUInt64LE(1n, v) // packets
          values.writeBigUInt64LE(100n, v + 8) // bytes
          values.writeBigUInt64LE(1n, v + 16) // first seen
          values.writeBigUInt64LE(1n, v + 24) // last seen
        }
        live.updateBatch(keys, values, chunk)
      }
    } finally {
      live.close()
    }
    const out = join(tmp, 'dump.json')
    const r = await execa('/usr/bin/time', ['-f', '%M', process.execPath, CLI, 'dump', '--netns', a, '--json'], {stdout: {file: out}, reject: false})
    assert.equal(r.exitCode, 0, String(r.stderr))
    const maxRssKb = Number(String(r.stderr).trim().split('\n').pop())
    const dumped = JSON.parse(readFileSync(out, 'utf8')) as Flow[]
    assert.equal(dumped.filter((f) => f.proto === 17 && f.dport === 53).length, flowsWanted)
    // bpftool prints ~1 KB per flow (150 MB here); the dump holds one element at a time.
    assert.ok(maxRssKb < 200_000, `peak RSS ${maxRssKb} kB`)
  })
})
