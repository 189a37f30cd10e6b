/**
 * Figure 1: the meter's cost per packet in the kernel, with BPF_PROG_TEST_RUN (the same
 * mechanism as test/bpf/meter-program.test.ts, called through libbpf with koffi), beside the
 * layout-1 meter (bpf/legacy/meter-v1.bpf.c: per-CPU preallocated flow maps) and an empty tc
 * program that only returns the same verdict (TC_ACT_UNSPEC), all loaded the same way. The three
 * alternate within each repeat. The contended case runs `bpftool prog run` pinned to each CPU at
 * once, beside the same run on one CPU alone, for each layout in turn.
 */
import {mkdirSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'

import {execa} from 'execa'
import koffi from 'koffi'

import {compileMeter} from '../../src/bpf/compile.js'
import {BpfMap} from '../../src/bpf/libbpf.js'
import {pathsFromEnv} from '../../src/paths.js'
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
    close: () => close(fd),
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

/** Capacity of both layouts' flow maps here: the new-flow runs create at most a few thousand. */
const CAPACITY = 65_536

interface Meter {
  name: 'v2' | 'v1'
  prog: string
  run: TestRun
  /** Empties its flow maps (between new-flow repeats). */
  clear(): void
  close(): void
}

function meterOf(name: 'v2' | 'v1', prog: string, flowMapPaths: string[]): Meter {
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
  // Loaded by bpftool, today's meter keeps its live flow maps pinned as loaded (flows<F>_live).
  const v2 = meterOf(
    'v2',
    `${dir}/meter/flowctl_ingress`,
    ['flows4_live', 'flows6_live'].map((m) => `${dir}/maps/${m}`),
  )
  const v1 = meterOf(
    'v1',
    `${legacy.progDir}/flowctl_ingress`,
    ['flows4_a', 'flows4_b', 'flows6_a', 'flows6_b'].map((m) => `${legacy.mapDir}/${m}`),
  )
  const meters = [v2, v1]
  const empty = testRunner(`${dir}/empty/empty`)
  const repeat = options.quick ? 200_000 : 1_000_000
  const rows: Row[] = []
  try {
    // Existing flows: the first of `repeat` runs creates the flow, the others find it.
    const cases = frames()
    const results = new Map<string, {v2: number[]; v1: number[]; empty: number[]}>()
    for (let r = 0; r < options.repeats; r++) {
      for (const [name, frame] of Object.entries(cases)) {
        const res = results.get(name) ?? {v2: [], v1: [], empty: []}
        results.set(name, res)
        res.empty.push(empty.run(frame, repeat).duration)
        // Alternate which layout goes first, so neither always runs right after the empty one.
        for (const m of r % 2 ? [v1, v2] : [v2, v1]) {
          const run = m.run.run(frame, repeat)
          checkVerdict(run.retval, `the ${m.name} meter`)
          res[m.name].push(run.duration)
        }
      }
    }
    for (const [name, res] of results) {
      const ours = median(res.v2)
      const old = median(res.v1)
      const ref = median(res.empty)
      const main = name.startsWith('IPv4 TCP')
      rows.push({
        figure: `kernel ${name}`,
        ours: `${fixed(ours, 0)} ns/pkt`,
        reference: `layout 1 ${fixed(old, 0)} ns; empty ${fixed(ref, 0)} ns${main ? '; older tool 66 ns' : ''}`,
        ratio: `${ratio(ours / old)} v1${main ? `, ${ratio(ours / 66)} older` : ''}`,
        target: main ? '<= 40 ns, <= 0.6x older' : '',
        pass: main ? ours <= 40 && ours / 66 <= 0.6 : undefined,
      })
    }

    // A new flow each packet: one run per packet (repeat 1), the source port changing; the
    // empty program and both layouts take turns packet by packet. One run's time includes the
    // timer's own, hence the empty program measured the same way.
    const perRepeat = options.quick ? 1000 : 3000
    for (const [family, base, sportAt] of [
      ['IPv4', Buffer.from(cases['IPv4 TCP, existing flow']), 14 + 20],
      ['IPv6', Buffer.from(cases['IPv6 TCP, existing flow']), 14 + 40],
    ] as const) {
      const per = {v2: [] as number[], v1: [] as number[], empty: [] as number[]}
      for (let r = 0; r < options.repeats; r++) {
        for (const m of meters) m.clear()
        const one = {v2: [] as number[], v1: [] as number[], empty: [] as number[]}
        for (let k = 0; k < perRepeat; k++) {
          base.writeUInt16BE(1024 + k, sportAt)
          one.empty.push(empty.run(base, 1).duration)
          for (const m of k % 2 ? [v1, v2] : [v2, v1]) {
            const run = m.run.run(base, 1)
            checkVerdict(run.retval, `the ${m.name} meter`)
            one[m.name].push(run.duration)
          }
        }
        per.v2.push(median(one.v2))
        per.v1.push(median(one.v1))
        per.empty.push(median(one.empty))
      }
      for (const m of meters) m.clear()
      const nf = median(per.v2)
      const old = median(per.v1)
      const e1 = median(per.empty)
      rows.push({
        figure: `kernel ${family} TCP, new flow each packet`,
        ours: `${fixed(nf, 0)} ns/pkt (1 run/packet)`,
        reference: `layout 1 ${fixed(old, 0)} ns; empty ${fixed(e1, 0)} ns (1 run)`,
        ratio: `${ratio(nf / old)} v1`,
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
      const res = {v2: {alone: [] as number[], both: [] as number[]}, v1: {alone: [] as number[], both: [] as number[]}}
      for (let r = 0; r < options.repeats; r++) {
        for (const m of r % 2 ? [v1, v2] : [v2, v1]) {
          res[m.name].alone.push(await bpftoolRun(m.prog, frameFile, long, 0))
          const pair = await Promise.all([bpftoolRun(m.prog, frameFile, long, 0), bpftoolRun(m.prog, frameFile, long, 1)])
          res[m.name].both.push(Math.max(...pair))
        }
      }
      const a = median(res.v2.alone)
      const b = median(res.v2.both)
      const a1 = median(res.v1.alone)
      const b1 = median(res.v1.both)
      rows.push({
        figure: `kernel ${family} TCP, same flow from 2 CPUs`,
        ours: `${fixed(b, 0)} ns/pkt (alone ${fixed(a, 0)} ns)`,
        reference: `layout 1 ${fixed(b1, 0)} ns (alone ${fixed(a1, 0)} ns, ${ratio(b1 / a1)})`,
        ratio: `${ratio(b / a)} alone, ${ratio(b / b1)} v1`,
        target: '<= 1.6x alone',
        pass: b / a <= 1.6,
      })
      if (options.verbose) {
        log(`kernel ${family}: layout 2 contended ${res.v2.both.join(', ')} ns, alone ${res.v2.alone.join(', ')} ns`)
        log(`kernel ${family}: layout 1 contended ${res.v1.both.join(', ')} ns, alone ${res.v1.alone.join(', ')} ns`)
      }
    }
  } finally {
    for (const m of meters) m.close()
    empty.close()
    legacy.remove()
  }
  return rows
}
