/**
 * The `drops` section: what the drop hook (bpf/drops.bpf.c, `meter attach --drops`) costs.
 *
 * A sender namespace sends UDP datagrams over a veth to a receiver namespace, metered with drops
 * on, whose nftables input chain drops those to one port. The kernel's own BPF statistics
 * (kernel.bpf_stats_enabled, set for the section and put back after) give the hook's run count
 * and time: the cost of one drop counted, and of one drop in a namespace that did not ask for
 * drops (the hook kept on by another namespace). Then the same datagrams to an open port, which
 * the kernel frees as consumed, not dropped: the hook should not run at all (a host that drops
 * nothing pays nothing). The sender's rate with the hook on and off, in the same run, shows the
 * cost from outside (noisy: Node sends one datagram at a time).
 */
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'

import {setTimeout as sleep} from 'node:timers/promises'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {takeDrops} from '../../src/bpf/drops.js'
import {Lab} from '../../src/lab/lab.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import {pathsFromEnv} from '../../src/paths.js'
import {run} from '../../src/sys/exec.js'
import {netnsInode} from '../../src/sys/netns.js'
import {cleanup, fixed, log, median, ratio, si, type BenchOptions, type Row} from './util.js'

const STATS_SYSCTL = '/proc/sys/kernel/bpf_stats_enabled'
const DROPPED_PORT = 9
const OPEN_PORT = 7000

interface ProgStats {
  runs: number
  ns: number
}

async function hookStats(pinRoot: string): Promise<ProgStats> {
  const {stdout} = await run('bpftool', ['prog', 'show', 'pinned', join(pinRoot, 'drops', 'prog'), '-j'])
  const prog = JSON.parse(stdout) as {run_cnt?: number; run_time_ns?: number}
  return {runs: prog.run_cnt ?? 0, ns: prog.run_time_ns ?? 0}
}

interface SendResult {
  packets: number
  firstMs: number
  lastMs: number
}

/** Datagrams a second the sender managed (one send at a time, as Node's dgram does). */
function rate(r: SendResult): number {
  return r.packets / (Math.max(1, r.lastMs - r.firstMs) / 1000)
}

export async function benchDrops(options: BenchOptions): Promise<Row[]> {
  const paths = pathsFromEnv()
  const count = options.quick ? 20_000 : 100_000
  const lab = new Lab()
  cleanup.push('removing the drops lab', () => lab.destroy())
  const sender = await lab.namespace('dsend')
  const receiver = await lab.namespace('drecv')
  const bystander = await lab.namespace('dby')
  await lab.veth(sender, 'd0', receiver, 'd1', {v4: ['198.18.90.1/24', '198.18.90.2/24'], quiet: true})
  await lab.veth(bystander, 'b0', bystander, 'b1', {v4: ['198.18.91.1/24', '198.18.91.2/24'], quiet: true})
  await run('nft', ['add', 'table', 'inet', 'bench'], {netns: receiver})
  await run('nft', ['add', 'chain', 'inet', 'bench', 'in', '{ type filter hook input priority 0; }'], {netns: receiver})
  await run('nft', ['add', 'rule', 'inet', 'bench', 'in', 'udp', 'dport', String(DROPPED_PORT), 'drop'], {netns: receiver})

  const statsBefore = readFileSync(STATS_SYSCTL, 'utf8').trim()
  writeFileSync(STATS_SYSCTL, '1')
  cleanup.push('putting kernel.bpf_stats_enabled back', () => writeFileSync(STATS_SYSCTL, statsBefore))
  const attach = (netns: string, ifname: string, drops: boolean) =>
    attachMeters(paths, {targets: [{netns, ifname}], directions: ['ingress', 'egress'], pref: 1, handle: 1, force: false, drops})
  cleanup.push('detaching the drops lab meters', () => detachMeters(paths, {targets: [], all: true, directions: ['ingress', 'egress']}).catch(() => undefined))
  // Datagrams for the sink go 1 a millisecond: faster, its socket's buffer fills and the kernel
  // drops what it cannot take (SOCKET_RCVBUFF), which is a drop.
  const send = (port: number) =>
    runAgent<SendResult>(
      sender,
      port === OPEN_PORT
        ? {mode: 'udp-send', host: '198.18.90.2', port, count: 2000, size: 64, gapMs: 1}
        : {mode: 'udp-send', host: '198.18.90.2', port, count, size: 64},
    )

  /** Sends `count` datagrams to `port` `options.repeats` times; the hook's runs and ns per run, and the send rate. */
  async function measure(port: number): Promise<{runsPerPacket: number; nsPerRun: number; pps: number; sent: number}> {
    const runs: number[] = []
    const ns: number[] = []
    const pps: number[] = []
    let total = 0
    for (let i = 0; i < options.repeats; i++) {
      const before = await hookStats(paths.pinRoot).catch(() => ({runs: 0, ns: 0}))
      const sent = await send(port)
      const after = await hookStats(paths.pinRoot).catch(() => ({runs: 0, ns: 0}))
      runs.push((after.runs - before.runs) / sent.packets)
      ns.push(after.runs > before.runs ? (after.ns - before.ns) / (after.runs - before.runs) : Number.NaN)
      pps.push(rate(sent))
      total += sent.packets
    }
    return {runsPerPacket: median(runs), nsPerRun: median(ns), pps: median(pps), sent: total}
  }

  // The hook on, the receiver's drops counted.
  await attach(receiver, 'd1', true)
  await attach(bystander, 'b1', true)
  const counted = await measure(DROPPED_PORT)
  log(`drops counted: ${fixed(counted.nsPerRun, 0)} ns per drop, ${fixed(counted.runsPerPacket)} runs per datagram, ${si(counted.pps)} datagrams/s`)
  // Nothing dropped: datagrams to an open port are consumed, not dropped.
  // The hook runs for every drop on the host, other programs' too: its runs a second while the
  // datagrams are delivered are set against its runs a second with no traffic, over as long.
  const sink = await startAgent(receiver, {mode: 'udp-sink', host: '0.0.0.0', port: OPEN_PORT})
  await takeDrops(paths.pinRoot, netnsInode(receiver))
  const t0 = performance.now()
  const busy0 = await hookStats(paths.pinRoot)
  const delivered = await measure(OPEN_PORT)
  const busyRuns = (await hookStats(paths.pinRoot)).runs - busy0.runs
  const busyS = (performance.now() - t0) / 1000
  sink.stop()
  const receiverDrops = (await takeDrops(paths.pinRoot, netnsInode(receiver))).reduce((n, d) => n + d.packets, 0)
  const idle0 = await hookStats(paths.pinRoot)
  await sleep(busyS * 1000)
  const idleRuns = (await hookStats(paths.pinRoot)).runs - idle0.runs
  log(
    `nothing dropped: ${receiverDrops} drops in the receiver, hook ${fixed(busyRuns / busyS, 1)} runs/s, ${fixed(idleRuns / busyS, 1)} runs/s with no traffic`,
  )
  // The receiver's drops off, the hook still on for the bystander: a drop the hook looks up and leaves.
  await attach(receiver, 'd1', false)
  const ignored = await measure(DROPPED_PORT)
  log(`drops of a namespace without drops on: ${fixed(ignored.nsPerRun, 0)} ns per drop`)
  // The hook off altogether.
  await detachMeters(paths, {targets: [{netns: bystander, ifname: 'b1'}], all: false, directions: ['ingress', 'egress']})
  const off = await measure(DROPPED_PORT)

  return [
    {
      figure: 'drops: hook cost per drop counted (ns, one CPU)',
      ours: fixed(counted.nsPerRun, 0),
      reference: '',
      ratio: '',
      target: '',
    },
    {
      figure: 'drops: drops/s the hook can count (1e9 / cost, one CPU)',
      ours: si(1e9 / counted.nsPerRun, '/s'),
      reference: '',
      ratio: '',
      target: '',
    },
    {
      figure: 'drops: hook cost per drop in a namespace without drops on (ns)',
      ours: fixed(ignored.nsPerRun, 0),
      reference: fixed(counted.nsPerRun, 0),
      ratio: ratio(ignored.nsPerRun / counted.nsPerRun),
      target: '',
    },
    {
      figure: `drops: hook runs/s, ${delivered.sent} datagrams delivered (1 a ms) vs no traffic (host-wide)`,
      ours: fixed(busyRuns / busyS, 1),
      reference: fixed(idleRuns / busyS, 1),
      ratio: '',
      target: '',
    },
    {
      figure: 'drops: drops the receiver had of the datagrams delivered',
      ours: String(receiverDrops),
      reference: '',
      ratio: '',
      target: '0',
      pass: receiverDrops === 0,
    },
    {
      figure: 'drops: sender rate, all dropped, hook on vs off (datagrams/s)',
      ours: si(counted.pps, '/s'),
      reference: si(off.pps, '/s'),
      ratio: ratio(counted.pps / off.pps),
      target: '',
    },
  ]
}
