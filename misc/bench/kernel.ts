/**
 * Figure 1: the meter's cost per packet in the kernel, with BPF_PROG_TEST_RUN (the same
 * mechanism as test/bpf/meter-program.test.ts, called through libbpf with koffi), beside the
 * meters of the layouts before it, frozen in bpf/legacy/ (layout 2: shared flow maps, no
 * sampling; layout 1: per-CPU preallocated flow maps), and an empty tc program that only returns
 * the same verdict (TC_ACT_UNSPEC), all loaded the same way. They alternate within each repeat.
 * The contended case runs `bpftool prog run` pinned to each CPU at once, beside the same run on
 * one CPU alone, for each layout in turn. The sampling case runs today's meter at 1:100 and at
 * 1:1 (its settings map written between runs) beside the empty program. The existing-flow cases
 * also run today's meter built without TCP handshake timing (-DFLOWCTL_NO_RTT), in turn with the
 * others: what that timing costs a packet that is no handshake packet.
 */
import {mkdirSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'

import {execa} from 'execa'
import koffi from 'koffi'

import {clangArgs, compileMeter} from '../../src/bpf/compile.js'
import {BpfMap} from '../../src/bpf/libbpf.js'
import {setSampling} from '../../src/bpf/sampling.js'
import {bpfSourceDir, pathsFromEnv} from '../../src/paths.js'
import {loadLegacyMeter} from './legacy.js'
import * as P from '../../test/helpers/packets.js'
import {cleanup, fixed, log, median, ratio, type BenchOptions, type Row} from './util.js'

const EMPTY_PROGRAM = `// An empty tc program: the reference the meter is measured against.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int empty(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
`

/** Compiles the empty program into the cache dir; returns the object's path. */
export async function compileEmptyProgram(): Promise<string> {
  const dir = pathsFromEnv().cacheDir
  mkdirSync(dir, {recursive: true})
  const source = join(dir, 'empty.bpf.c')
  const object = join(dir, 'empty.bpf.o')
  writeFileSync(source, EMPTY_PROGRAM)
  const include = process.arch === 'x64' ? ['-I/usr/include/x86_64-linux-gnu'] : process.arch === 'arm64' ? ['-I/usr/include/aarch64-linux-gnu'] : []
  await execa('clang', ['-O2', '-g', '-target', 'bpf', ...include, '-c', source, '-o', object])
  return object
}

interface TestRun {
  run(frame: Buffer, repeat: number): {duration: number; retval: number}
  close(): void
}

/** struct bpf_test_run_opts of libbpf 1.x. */
let testRunOpts: koffi.IKoffiCType | undefined

/** BPF_PROG_TEST_RUN on a pinned program, through libbpf's bpf_prog_test_run_opts. */
function testRunner(progPath: string): TestRun {
  const bpf = koffi.load('libbpf.so.1')
  const libc = koffi.load('libc.so.6')
  testRunOpts ??= koffi.struct('bench_test_run_opts', {
    sz: 'size_t',
    data_in: 'void *',
    data_out: 'void *',
    data_size_in: 'uint32_t',
    data_size_out: 'uint32_t',
    ctx_in: 'void *',
    ctx_out: 'void *',
    ctx_size_in: 'uint32_t',
    ctx_size_out: 'uint32_t',
    retval: 'uint32_t',
    repeat: 'int',
    duration: 'uint32_t',
    flags: 'uint32_t',
    cpu: 'uint32_t',
    batch_size: 'uint32_t',
  })
  const Opts = testRunOpts
  const objGet = bpf.func('int bpf_obj_get(const char *pathname)')
  const testRun = bpf.func('int bpf_prog_test_run_opts(int prog_fd, _Inout_ bench_test_run_opts *opts)')
  const close = libc.func('int close(int fd)')
  const fd = objGet(progPath) as number
  if (fd < 0) throw new Error(`opening ${progPath}: errno ${-fd}`)
  const opts = {
    sz: koffi.sizeof(Opts),
    data_in: null as Buffer | null,
    data_out: null,
    data_size_in: 0,
    data_size_out: 0,
    ctx_in: null,
    ctx_out: null,
    ctx_size_in: 0,
    ctx_size_out: 0,
    retval: 0,
    repeat: 1,
    duration: 0,
    flags: 0,
    cpu: 0,
    batch_size: 0,
  }
  return {
    run(frame, repeat) {
      opts.data_in = frame
      opts.data_size_in = frame.length
      opts.repeat = repeat
      // koffi writes the struct back after each call: reset what the kernel filled in.
      opts.data_out = null
      opts.data_size_out = 0
      opts.ctx_out = null
      opts.ctx_size_out = 0
      const rc = testRun(fd, opts) as number
      if (rc < 0) throw new Error(`BPF_PROG_TEST_RUN on ${progPath}: errno ${-rc}`)
      return {duration: opts.duration, retval: opts.retval}
    },
    close: () => {
      close(fd)
    },
  }
}

/** Frames of the existing-flow cases. */
function frames(): Record<string, Buffer> {
  const payload = Buffer.alloc(100)
  return {
    'IPv4 TCP, existing flow': P.ethernet(P.ETH_IPV4, P.ipv4(6, '198.18.0.1', '198.18.0.2', P.tcp(40000, 443, 0x10, payload))),
    'IPv6 TCP, existing flow': P.ethernet(P.ETH_IPV6, P.ipv6(6, 'fd00::1', 'fd00::2', P.tcp(40000, 443, 0x10, payload))),
    'IPv4 UDP, existing flow': P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.18.0.2', P.udp(40000, 53, payload))),
    'VLAN IPv4 TCP, existing flow': P.ethernet(P.ETH_IPV4, P.ipv4(6, '198.18.0.1', '198.18.0.2', P.tcp(40000, 443, 0x10, payload)), [
      {tpid: P.TPID_8021Q, vid: 100},
    ]),
  }
}

async function bpftoolRun(prog: string, frameFile: string, repeat: number, cpu: number): Promise<number> {
  const {stdout} = await execa('taskset', ['-c', String(cpu), 'bpftool', 'prog', 'run', 'pinned', prog, 'data_in', frameFile, 'repeat', String(repeat)])
  const m = /duration \(average\): (\d+)ns/.exec(stdout)
  if (!m) throw new Error(`unexpected bpftool output: ${stdout}`)
  return Number(m[1])
}

/** Capacity of every layout's flow maps here: the new-flow runs create at most a few thousand. */
const CAPACITY = 65_536

/** Today's meter, and the frozen ones of layouts 2 and 1 (and today's without handshake timing, for the existing-flow cases). */
type MeterName = 'v3' | 'v2' | 'v1' | 'noRtt'

/** How much slower today's meter may be than itself without handshake timing, on an existing flow's path. */
const MAX_VS_NO_RTT = 1.1

/** Compiles today's meter without TCP handshake timing (-DFLOWCTL_NO_RTT) into the cache dir. */
async function compileMeterWithoutRtt(capacity: number): Promise<string> {
  const object = join(pathsFromEnv().cacheDir, `meter-nortt-${process.pid}.o`)
  cleanup.push(`removing ${object}`, async () => (await import('node:fs')).rmSync(object, {force: true}))
  await execa('clang', [...clangArgs(join(bpfSourceDir(), 'meter.bpf.c'), object, {capacity}), '-DFLOWCTL_NO_RTT'])
  return object
}

/** How much slower than layout 2 today's meter may be on the path of an existing flow (its timing noise). */
const MAX_VS_LAYOUT2 = 1.1

interface Meter {
  name: MeterName
  prog: string
  run: TestRun
  /** Empties its flow maps (between new-flow repeats). */
  clear(): void
  close(): void
}

function meterOf(name: MeterName, prog: string, flowMapPaths: string[]): Meter {
  const run = testRunner(prog)
  const maps = flowMapPaths.map((m) => BpfMap.open(m))
  return {
    name,
    prog,
    run,
    clear: () => {
      for (const m of maps) m.forEachBatch(() => {}, {andDelete: true})
    },
    close: () => {
      for (const m of maps) m.close()
      run.close()
    },
  }
}

function checkVerdict(retval: number, who: string): void {
  if (retval !== 0xffffffff) throw new Error(`${who} answered ${retval}, not TC_ACT_UNSPEC`)
}

export async function benchKernel(options: BenchOptions): Promise<Row[]> {
  const dir = join(pathsFromEnv().pinRoot, 'kernel')
  mkdirSync(dir, {recursive: true}) // bpftool pins into an existing directory
  cleanup.push('removing the kernel bench pins', async () => (await import('node:fs')).rmSync(dir, {recursive: true, force: true}))
  const {objectPath} = await compileMeter({capacity: CAPACITY}, pathsFromEnv().cacheDir)
  await execa('bpftool', ['prog', 'loadall', objectPath, `${dir}/meter`, 'type', 'classifier', 'pinmaps', `${dir}/maps`])
  await execa('bpftool', ['prog', 'loadall', await compileEmptyProgram(), `${dir}/empty`, 'type', 'classifier'])
  const legacy = await loadLegacyMeter(CAPACITY, 'kernel-v1')
  const layout2 = await loadLegacyMeter(CAPACITY, 'kernel-v2', 2)
  // Loaded by bpftool, today's meter and layout 2's keep their live flow maps pinned as loaded (flows<F>_live).
  const v3 = meterOf(
    'v3',
    `${dir}/meter/flowctl_ingress`,
    ['flows4_live', 'flows6_live'].map((m) => `${dir}/maps/${m}`),
  )
  const v2 = meterOf(
    'v2',
    `${layout2.progDir}/flowctl_ingress`,
    ['flows4_live', 'flows6_live'].map((m) => `${layout2.mapDir}/${m}`),
  )
  const v1 = meterOf(
    'v1',
    `${legacy.progDir}/flowctl_ingress`,
    ['flows4_a', 'flows4_b', 'flows6_a', 'flows6_b'].map((m) => `${legacy.mapDir}/${m}`),
  )
  await execa('bpftool', ['prog', 'loadall', await compileMeterWithoutRtt(CAPACITY), `${dir}/nortt`, 'type', 'classifier', 'pinmaps', `${dir}/nortt-maps`])
  const noRtt = meterOf(
    'noRtt',
    `${dir}/nortt/flowctl_ingress`,
    ['flows4_live', 'flows6_live'].map((m) => `${dir}/nortt-maps/${m}`),
  )
  const meters = [v3, v2, v1]
  const existingFlowMeters = [...meters, noRtt]
  /** Each repeat starts with another layout, so that none always runs right after the empty program. */
  const inTurn = (r: number, among = meters) => [...among.slice(r % among.length), ...among.slice(0, r % among.length)]
  const sampling = (n: number) => setSampling({openMap: (name) => BpfMap.open(`${dir}/maps/${name}`)}, n)
  const empty = testRunner(`${dir}/empty/empty`)
  const repeat = options.quick ? 200_000 : 1_000_000
  const rows: Row[] = []
  try {
    // Existing flows: the first of `repeat` runs creates the flow, the others find it.
    const cases = frames()
    const results = new Map<string, Record<MeterName | 'empty', number[]>>()
    for (let r = 0; r < options.repeats; r++) {
      for (const [name, frame] of Object.entries(cases)) {
        const res = results.get(name) ?? {v3: [], v2: [], v1: [], noRtt: [], empty: []}
        results.set(name, res)
        res.empty.push(empty.run(frame, repeat).duration)
        for (const m of inTurn(r, existingFlowMeters)) {
          const run = m.run.run(frame, repeat)
          checkVerdict(run.retval, `the ${m.name} meter`)
          res[m.name].push(run.duration)
        }
      }
    }
    for (const [name, res] of results) {
      const ours = median(res.v3)
      const two = median(res.v2)
      const old = median(res.v1)
      const ref = median(res.empty)
      const main = name.startsWith('IPv4 TCP')
      rows.push({
        figure: `kernel ${name}`,
        ours: `${fixed(ours, 0)} ns/pkt`,
        reference: `layout 2 ${fixed(two, 0)} ns; layout 1 ${fixed(old, 0)} ns; empty ${fixed(ref, 0)} ns${main ? '; older tool 66 ns' : ''}`,
        ratio: `${ratio(ours / two)} v2, ${ratio(ours / old)} v1${main ? `, ${ratio(ours / 66)} older` : ''}`,
        target: `${main ? '<= 40 ns, <= 0.6x older, ' : ''}<= ${MAX_VS_LAYOUT2}x v2`,
        pass: (main ? ours <= 40 && ours / 66 <= 0.6 : true) && ours / two <= MAX_VS_LAYOUT2,
      })
      const without = median(res.noRtt)
      rows.push({
        figure: `kernel ${name}: TCP handshake timing`,
        ours: `${fixed(ours, 0)} ns/pkt`,
        reference: `the same meter without it (-DFLOWCTL_NO_RTT) ${fixed(without, 0)} ns`,
        ratio: `${ratio(ours / without)} without`,
        target: `<= ${MAX_VS_NO_RTT}x without`,
        pass: ours / without <= MAX_VS_NO_RTT,
      })
    }

    // Sampling at 1:100: the same frame (an existing flow) through today's meter at 1:100 and at
    // 1:1, beside the empty program, taking turns. At 1:100 one packet in a hundred is counted
    // (into its flow); the 99 others take the path of a packet not sampled.
    const sampled = {at100: [] as number[], at1: [] as number[], empty: [] as number[]}
    const frame = cases['IPv4 TCP, existing flow']
    try {
      for (let r = 0; r < options.repeats; r++) {
        const order = r % 2 ? ([1, 100] as const) : ([100, 1] as const)
        sampled.empty.push(empty.run(frame, repeat).duration)
        for (const n of order) {
          sampling(n)
          const run = v3.run.run(frame, repeat)
          checkVerdict(run.retval, `the meter at 1:${n}`)
          ;(n === 100 ? sampled.at100 : sampled.at1).push(run.duration)
        }
      }
    } finally {
      sampling(1)
    }
    const at100 = median(sampled.at100)
    const e = median(sampled.empty)
    rows.push({
      figure: 'kernel IPv4 TCP, sampled 1:100 (99 in 100 not sampled)',
      ours: `${fixed(at100, 0)} ns/pkt`,
      reference: `empty ${fixed(e, 0)} ns; the same meter at 1:1 ${fixed(median(sampled.at1), 0)} ns`,
      ratio: `${ratio(at100 / e)} empty, ${ratio(at100 / median(sampled.at1))} 1:1`,
      target: '<= 1.3x empty',
      pass: at100 / e <= 1.3,
    })

    // A new flow each packet: one run per packet (repeat 1), the source port changing; the
    // empty program and every layout (and today's without handshake timing: its ACK looks for a
    // handshake to complete) take turns packet by packet. One run's time includes the
    // timer's own, hence the empty program measured the same way.
    const perRepeat = options.quick ? 1000 : 3000
    for (const [family, base, sportAt] of [
      ['IPv4', Buffer.from(cases['IPv4 TCP, existing flow']), 14 + 20],
      ['IPv6', Buffer.from(cases['IPv6 TCP, existing flow']), 14 + 40],
    ] as const) {
      const per: Record<MeterName | 'empty', number[]> = {v3: [], v2: [], v1: [], noRtt: [], empty: []}
      for (let r = 0; r < options.repeats; r++) {
        for (const m of existingFlowMeters) m.clear()
        const one: Record<MeterName | 'empty', number[]> = {v3: [], v2: [], v1: [], noRtt: [], empty: []}
        for (let k = 0; k < perRepeat; k++) {
          base.writeUInt16BE(1024 + k, sportAt)
          one.empty.push(empty.run(base, 1).duration)
          for (const m of inTurn(k, existingFlowMeters)) {
            const run = m.run.run(base, 1)
            checkVerdict(run.retval, `the ${m.name} meter`)
            one[m.name].push(run.duration)
          }
        }
        for (const name of ['v3', 'v2', 'v1', 'noRtt', 'empty'] as const) per[name].push(median(one[name]))
      }
      for (const m of existingFlowMeters) m.clear()
      const nf = median(per.v3)
      rows.push({
        figure: `kernel ${family} TCP, new flow each packet`,
        ours: `${fixed(nf, 0)} ns/pkt (1 run/packet)`,
        reference: `layout 2 ${fixed(median(per.v2), 0)} ns; layout 1 ${fixed(median(per.v1), 0)} ns; without handshake timing ${fixed(median(per.noRtt), 0)} ns; empty ${fixed(median(per.empty), 0)} ns (1 run)`,
        ratio: `${ratio(nf / median(per.v2))} v2, ${ratio(nf / median(per.v1))} v1, ${ratio(nf / median(per.noRtt))} without`,
        target: '',
      })
    }

    // The same flow from both CPUs at once, beside one CPU alone. Layout 2 shares one value
    // per flow between CPUs (atomic adds on one cache line); layout 1 had a slot per CPU.
    const long = options.quick ? 2_000_000 : 5_000_000
    for (const [family, frame] of [
      ['IPv4', cases['IPv4 TCP, existing flow']],
      ['IPv6', cases['IPv6 TCP, existing flow']],
    ] as const) {
      const frameFile = join(pathsFromEnv().cacheDir, `frame-${family}-tcp.bin`)
      writeFileSync(frameFile, frame)
      const res: Record<MeterName, {alone: number[]; both: number[]}> = {
        v3: {alone: [], both: []},
        v2: {alone: [], both: []},
        v1: {alone: [], both: []},
        noRtt: {alone: [], both: []}, // not run here
      }
      for (let r = 0; r < options.repeats; r++) {
        for (const m of inTurn(r)) {
          res[m.name].alone.push(await bpftoolRun(m.prog, frameFile, long, 0))
          const pair = await Promise.all([bpftoolRun(m.prog, frameFile, long, 0), bpftoolRun(m.prog, frameFile, long, 1)])
          res[m.name].both.push(Math.max(...pair))
        }
      }
      const a = median(res.v3.alone)
      const b = median(res.v3.both)
      const b2 = median(res.v2.both)
      const a1 = median(res.v1.alone)
      const b1 = median(res.v1.both)
      rows.push({
        figure: `kernel ${family} TCP, same flow from 2 CPUs`,
        ours: `${fixed(b, 0)} ns/pkt (alone ${fixed(a, 0)} ns)`,
        reference: `layout 2 ${fixed(b2, 0)} ns; layout 1 ${fixed(b1, 0)} ns (alone ${fixed(a1, 0)} ns, ${ratio(b1 / a1)})`,
        ratio: `${ratio(b / a)} alone, ${ratio(b / b2)} v2, ${ratio(b / b1)} v1`,
        target: '<= 1.6x alone',
        pass: b / a <= 1.6,
      })
      if (options.verbose) {
        for (const m of meters) log(`kernel ${family}: ${m.name} contended ${res[m.name].both.join(', ')} ns, alone ${res[m.name].alone.join(', ')} ns`)
      }
    }
  } finally {
    for (const m of existingFlowMeters) m.close()
    empty.close()
    legacy.remove()
    layout2.remove()
  }
  return rows
}
