/**
 * Flow log outputs and hooks, without a kernel: batches made by hand, hooks that enrich, fail,
 * hang and print garbage, and log rotation by rename and reopen.
 */
import assert from 'node:assert/strict'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import type {HookConfig, LogOutputConfig} from '../../src/config/config.js'
import {FlowctlError} from '../../src/errors.js'
import {END_REASON, FlowBatch} from '../../src/flow/batch.js'
import {BiflowPairer} from '../../src/flow/biflow.js'
import {FlowLogOutput, FlowLogs, batchToRecords} from '../../src/daemon/flow-log.js'
import {applyHooks, HookFailure, runHook, type FlowRecord} from '../../src/daemon/hooks.js'
import {pathsFromEnv} from '../../src/paths.js'
import {InterfaceNames} from '../../src/daemon/interfaces.js'
import {createLogger} from '../../src/daemon/log.js'
import {collector} from '../helpers/unit.js'

const NODE = process.execPath
/** A hook program (no shell): reads the array, adds `hostname: lab` to each record. */
const ENRICH = [
  NODE,
  '-e',
  "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.stdout.write(JSON.stringify(JSON.parse(s).map(r=>({...r,hostname:'lab',arg:process.argv[1]})))))",
  '$HOME',
]

/** A batch of `n` IPv4 UDP flows on ifindex 7 egress, sports 1000.., 10 packets of 100 bytes each. */
function batch(n: number, netns = 'fct-test', first = 0): FlowBatch {
  const b = new FlowBatch(4, Math.max(n, 1))
  b.netns = netns
  b.observationDomainId = 1
  for (let i = 0; i < n; i++) {
    b.ifindex[i] = 7
    b.direction[i] = 1
    b.proto[i] = 17
    b.sport[i] = 1000 + first + i
    b.dport[i] = 53
    b.src.set([198, 18, 0, 1], i * 4)
    b.dst.set([198, 18, 0, 2], i * 4)
    b.packets[i] = 10
    b.bytes[i] = 1000
    // Fractions a double holds exactly at this size (steps of 1/4).
    b.startUs[i] = 1_700_000_000_000_000.25
    b.endUs[i] = 1_700_000_001_000_000.75
    b.tcpFlags[i] = 0
    b.endReason[i] = END_REASON.idleTimeout
    b.samplingInterval[i] = 1
  }
  b.length = n
  return b
}

function lines(file: string): FlowRecord[] {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as FlowRecord)
}

describe('flow log output and hooks', function () {
  let dir: string
  let logText: string[]
  const log = createLogger((l) => logText.push(l), 'debug')
  let seen: {written: number; lost: number; failures: {hook: string; reason: string}[]; queued: number}
  const obs = {
    written: (_o: string, n: number) => (seen.written += n),
    lost: (_o: string, n: number) => (seen.lost += n),
    hookFailed: (_o: string, hook: string, reason: string) => seen.failures.push({hook, reason}),
    queued: (_o: string, n: number) => (seen.queued = Math.max(seen.queued, n)),
  }
  const names = new InterfaceNames(pathsFromEnv({}))

  beforeEach(function () {
    dir = mkdtempSync(join(tmpdir(), 'fct-flowlog-'))
    logText = []
    seen = {written: 0, lost: 0, failures: [], queued: 0}
  })

  afterEach(function () {
    rmSync(dir, {recursive: true, force: true})
  })

  const open = (hooks: HookConfig[] = [], extra: {maxQueuedRecords?: number} = {}) =>
    FlowLogOutput.open({file: join(dir, 'flows.log'), hooks}, {log, observer: obs, names, ...extra})

  it("writes each flow as one JSON line with the older tool's keys and the richer ones", async function () {
    const out = await open()
    out.write(batch(3))
    await out.close()
    const records = lines(join(dir, 'flows.log'))
    assert.equal(records.length, 3)
    assert.deepEqual(records[0], {
      src: '198.18.0.1',
      dst: '198.18.0.2',
      proto: 17,
      sport: 1000,
      dport: 53,
      ingressIfindex: 0,
      egressIfindex: 7,
      pkts: 10,
      bytes: 1000,
      start: 1_700_000_000_000,
      end: 1_700_000_001_000,
      finished: 0,
      netns: 'fct-test',
      interface: 'if7',
      direction: 'egress',
      ipVersion: 4,
      protoName: 'udp',
      vlanId: 0,
      samplingInterval: 1,
      tos: 0,
      tcpFlags: 0,
      tcpFlagsText: '........',
      endReason: 'idleTimeout',
      observationDomainId: 1,
      egressInterface: 'if7',
    })
    assert.deepEqual(
      records.map((r) => r.sport),
      [1000, 1001, 1002],
    )
    assert.equal(seen.written, 3)
  })

  it('writes a biflow with its reverse counts, times and flags and the initiator, when the output asks for biflows', async function () {
    const b = batch(3)
    // Row 1 answers row 0 (same interface, the other direction); row 2 is alone.
    b.src.set([198, 18, 0, 2], 4)
    b.dst.set([198, 18, 0, 1], 4)
    b.sport[1] = 53
    b.dport[1] = 1000
    b.direction[1] = 0
    b.packets[1] = 3
    b.bytes[1] = 450
    b.startUs[1] += 2000
    const out = await FlowLogOutput.open({file: '-', hooks: [], biflow: true}, {log, names})
    assert.equal(out.biflow, true)
    await out.close()
    const records = batchToRecords(new BiflowPairer().pair(b), names)
    assert.equal(records.length, 2)
    const [pair, lone] = records
    assert.deepEqual(
      [pair.sport, pair.pkts, pair.bytes, pair.reversePkts, pair.reverseBytes, pair.reverseStart, pair.biflowDirection],
      [1000, 10, 1000, 3, 450, 1_700_000_000_002, 'initiator'],
    )
    assert.deepEqual([lone.sport, lone.reversePkts, lone.reverseBytes, lone.reverseTcpFlagsText, lone.biflowDirection], [1002, 0, 0, '........', 'initiator'])
    assert.equal(batchToRecords(b, names)[0].reversePkts, undefined, 'uniflows have no reverse keys')
  })

  it('says the sampling interval each flow was counted at, beside its raw counts', function () {
    const b = batch(2)
    b.samplingInterval[1] = 100
    const [every, sampled] = batchToRecords(b, names)
    assert.deepEqual([every.samplingInterval, every.pkts, sampled.samplingInterval, sampled.pkts], [1, 10, 100, 10])
  })

  it('marks TCP flows that saw FIN or RST as finished, and ICMP with type and code', function () {
    const b = batch(2)
    b.proto[0] = 6
    b.tcpFlags[0] = 0x11
    b.direction[0] = 0
    b.proto[1] = 1
    b.sport[1] = 0
    b.dport[1] = (8 << 8) | 0
    const [tcp, icmp] = batchToRecords(b, names)
    assert.deepEqual([tcp.finished, tcp.ingressIfindex, tcp.egressIfindex, tcp.direction, tcp.tcpFlags], [1, 7, 0, 'ingress', 0x11])
    assert.deepEqual([icmp.icmpType, icmp.icmpCode, icmp.finished], [8, 0, 0])
  })

  it('writes to stdout for file -', async function () {
    const stdout = collector()
    const out = await FlowLogOutput.open({file: '-', hooks: []}, {log, observer: obs, names, stdout})
    out.write(batch(2))
    await out.close()
    assert.equal(stdout.text().split('\n').filter(Boolean).length, 2)
    assert.equal(out.name, 'stdout')
  })

  it('runs a command hook without a shell and writes what it returns', async function () {
    const out = await open([{name: 'enrich', command: ENRICH, timeoutMs: 10_000}])
    out.write(batch(4))
    await out.close()
    const records = lines(join(dir, 'flows.log'))
    assert.equal(records.length, 4)
    for (const r of records) {
      assert.equal(r.hostname, 'lab')
      assert.equal(r.arg, '$HOME', 'no shell expanded the argument')
    }
    assert.deepEqual(seen.failures, [])
  })

  it('runs a shell hook with /bin/sh -c', async function () {
    const records = await runHook({shell: `n=$(cat | wc -c); test "$n" -gt 2 && echo '[{"from":"shell"}]'`, timeoutMs: 10_000}, [{a: 1}])
    assert.deepEqual(records, [{from: 'shell'}])
  })

  it('writes the records unenriched when a hook fails, logs it and counts it', async function () {
    const out = await open([{name: 'broken', shell: 'echo oops >&2; exit 3', timeoutMs: 10_000}])
    out.write(batch(2))
    await out.close()
    const records = lines(join(dir, 'flows.log'))
    assert.equal(records.length, 2)
    assert.equal(records[0].hostname, undefined)
    assert.deepEqual(seen.failures, [{hook: 'broken', reason: 'exit'}])
    const logged = logText.map((l) => JSON.parse(l) as Record<string, string>).find((l) => l.event === 'hook-failed')
    assert.ok(logged, logText.join(''))
    assert.equal(logged.hook, 'broken')
    assert.match(logged.error, /exit status 3: oops/)
  })

  it('kills a hook that hangs at its timeout (its children too) and writes the records', async function () {
    // The shell's child keeps stdout open: only killing the process group ends it.
    const out = await open([{name: 'hangs', shell: 'sleep 30; echo "[]"', timeoutMs: 300}])
    out.write(batch(2))
    assert.equal(out.queued, 2, 'write() returned with the batch waiting for the hook')
    await out.close()
    assert.equal(lines(join(dir, 'flows.log')).length, 2)
    assert.deepEqual(seen.failures, [{hook: 'hangs', reason: 'timeout'}])
  })

  it('ends everything a hook started with it, when it exits or at its timeout, whatever left its process group', async function () {
    const pidFile = join(dir, 'escaped.pid')
    const alive = (pid: number): boolean => {
      try {
        return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) // a zombie is dead
      } catch {
        return false
      }
    }
    // A child's pid as the host sees it (its $$ is its pid in the hook's namespace).
    const recordPid = `read pid rest < /proc/self/stat; echo $pid > ${pidFile}`
    const escapes = async (shell: string, timeoutMs: number): Promise<{elapsed: number; pid: number; result: FlowRecord[] | HookFailure}> => {
      rmSync(pidFile, {force: true})
      const started = Date.now()
      const result = await runHook({shell, timeoutMs}, [{a: 1}]).catch((error: unknown) => error as HookFailure)
      return {elapsed: Date.now() - started, pid: Number(readFileSync(pidFile, 'utf8')), result}
    }
    // The hook prints its array and exits; a child in a session of its own, environment cleared,
    // would hold stdout for 25 s: it dies with the hook, and the hook's answer stands.
    const done = await escapes(`cat >/dev/null; setsid env -i sh -c '${recordPid}; exec sleep 25' & sleep 0.2; echo "[]"`, 10_000)
    assert.deepEqual(done.result, [])
    assert.ok(done.elapsed < 5000, `answered after ${done.elapsed} ms, not after the child's 25 s`)
    assert.equal(alive(done.pid), false, 'the escaped child is dead')
    // A hook that hangs: at its timeout the hook and its escaped child are killed.
    const hung = await escapes(`cat >/dev/null; setsid env -i sh -c '${recordPid}; exec sleep 25' & sleep 25`, 500)
    assert.ok(hung.result instanceof HookFailure && hung.result.reason === 'timeout', JSON.stringify(hung.result))
    assert.ok(hung.elapsed < 5000, `moved on after ${hung.elapsed} ms`)
    assert.equal(alive(hung.pid), false, 'the escaped child is dead')
  })

  it('treats output that is not a JSON array of objects as garbage', async function () {
    for (const [script, detail] of [
      ['echo garbage', /no JSON array/],
      ['echo \'{"a":1}\'', /not an array/],
      ["echo '[1,2]'", /item 0 .* not a JSON object/],
      ['true', /no JSON array/],
    ] as const) {
      await assert.rejects(runHook({shell: `cat >/dev/null; ${script}`, timeoutMs: 10_000}, [{a: 1}]), (error: unknown) => {
        assert.ok(error instanceof HookFailure)
        assert.equal(error.reason, 'garbage')
        assert.match(error.message, detail)
        return true
      })
    }
    const out = await open([{shell: 'cat >/dev/null; echo garbage', timeoutMs: 10_000}])
    out.write(batch(3))
    await out.close()
    assert.equal(lines(join(dir, 'flows.log')).length, 3)
    assert.deepEqual(seen.failures, [{hook: 'shell', reason: 'garbage'}])
  })

  it('reports a program that does not exist, or cannot be run', async function () {
    const spawnFailure = (message: string) => (error: unknown) => error instanceof HookFailure && error.reason === 'spawn' && error.message === message
    await assert.rejects(runHook({command: ['/nonexistent/hook'], timeoutMs: 10_000}, []), spawnFailure('/nonexistent/hook: no such program'))
    const notExecutable = join(dir, 'not-executable')
    writeFileSync(notExecutable, '#!/bin/sh\necho []\n', {mode: 0o644})
    await assert.rejects(runHook({command: [notExecutable], timeoutMs: 10_000}, []), spawnFailure(`${notExecutable}: Permission denied`))
  })

  it('skips a failing hook and gives the next one the records as they were', async function () {
    const failures: string[] = []
    const out = await applyHooks(
      [
        {name: 'bad', shell: 'exit 1', timeoutMs: 10_000},
        {name: 'good', command: ENRICH, timeoutMs: 10_000},
      ],
      [{x: 1}],
      (hook, failure) => failures.push(`${hook.name}:${failure.reason}`),
    )
    assert.deepEqual(out, [{x: 1, hostname: 'lab', arg: '$HOME'}])
    assert.deepEqual(failures, ['bad:exit'])
  })

  it('never blocks the caller: a full hook queue writes the batch at once, without hooks, in order of arrival', async function () {
    const out = await open([{name: 'slow', shell: 'sleep 0.5; cat', timeoutMs: 10_000}], {maxQueuedRecords: 5})
    out.write(batch(4, 'fct-test', 0)) // queued
    out.write(batch(4, 'fct-test', 100)) // would make 8 > 5: written now
    assert.equal(out.queued, 4, 'only the first batch waits for the hook')
    for (let i = 0; i < 100 && lines(join(dir, 'flows.log')).length < 4; i++) await new Promise((r) => setTimeout(r, 50))
    assert.deepEqual(
      lines(join(dir, 'flows.log'))
        .slice(0, 4)
        .map((r) => r.sport),
      [1100, 1101, 1102, 1103],
      'the batch that found the queue full is written first',
    )
    await out.close()
    assert.equal(lines(join(dir, 'flows.log')).length, 8)
    assert.deepEqual(seen.failures, [{hook: 'slow', reason: 'queue_full'}])
    assert.ok(seen.queued >= 4)
  })

  it('reopens the file after rotation (rename, then reopen) without losing or repeating a line', async function () {
    const file = join(dir, 'flows.log')
    const out = await open()
    let next = 0
    const send = (n: number) => {
      out.write(batch(n, 'fct-test', next))
      next += n
    }
    send(10)
    renameSync(file, `${file}.1`)
    send(10) // still the old file: it is open
    const reopening = out.reopen()
    send(10) // during the reopen
    await reopening
    send(10)
    await out.close()
    const old = lines(`${file}.1`)
    const now = lines(file)
    const sports = [...old, ...now].map((r) => r.sport as number)
    assert.equal(sports.length, 40)
    assert.deepEqual(
      [...sports].sort((a, b) => a - b),
      Array.from({length: 40}, (_, i) => 1000 + i),
    )
    assert.ok(old.length >= 20, 'the lines before the reopen are in the renamed file')
    assert.ok(now.length >= 10, 'the lines after it in the new file')
    assert.equal(lines(`${file}.1`).length + lines(file).length, 40)
  })

  it('keeps rotating while hooks are queued: every record ends in one file', async function () {
    const file = join(dir, 'flows.log')
    const out = await open([{name: 'enrich', command: ENRICH, timeoutMs: 10_000}])
    for (let i = 0; i < 5; i++) out.write(batch(20, 'fct-test', i * 20))
    renameSync(file, `${file}.1`)
    await out.reopen()
    for (let i = 5; i < 10; i++) out.write(batch(20, 'fct-test', i * 20))
    await out.close()
    const all = [...lines(`${file}.1`), ...lines(file)]
    assert.equal(all.length, 200)
    assert.equal(new Set(all.map((r) => r.sport)).size, 200)
    assert.ok(all.every((r) => r.hostname === 'lab'))
  })

  it('keeps writing to the open file if the reopen fails', async function () {
    const sub = join(dir, 'sub')
    const file = join(sub, 'flows.log')
    mkdirSync(sub)
    const out = await FlowLogOutput.open({file, hooks: []}, {log, observer: obs, names})
    out.write(batch(1))
    renameSync(sub, `${sub}.old`) // the directory is gone: the reopen cannot create the file
    await out.reopen()
    out.write(batch(1, 'fct-test', 1))
    await out.close()
    assert.equal(lines(join(`${sub}.old`, 'flows.log')).length, 2)
    assert.ok(logText.some((l) => l.includes('flow-log-reopen-failed')))
  })

  it('fails to open with the config key and the reason', async function () {
    await assert.rejects(FlowLogs.open([{file: join(dir, 'no', 'such', 'dir', 'f.log'), hooks: []}], {log, names}), (error: unknown) => {
      assert.ok(error instanceof FlowctlError)
      assert.match(error.message, /^logs\[0\]\.file: cannot open .* ENOENT \(its directory does not exist\)/)
      return true
    })
  })

  it('follows a new config on reload: unchanged outputs kept, new ones opened, dropped ones closed', async function () {
    const a: LogOutputConfig = {file: join(dir, 'a.log'), hooks: []}
    const b: LogOutputConfig = {file: join(dir, 'b.log'), hooks: []}
    const c: LogOutputConfig = {file: join(dir, 'c.log'), hooks: []}
    const logs = await FlowLogs.open([a, b], {log, names})
    const [outA, outB] = logs.outputs
    const prepared = await logs.prepare([a, c])
    assert.equal(prepared.outputs[0], outA)
    assert.notEqual(prepared.outputs[1], outB)
    await prepared.commit()
    outB.write(batch(1)) // closed: ignored
    for (const o of logs.outputs) o.write(batch(1))
    for (const o of logs.outputs) await o.close()
    assert.equal(lines(a.file).length, 1)
    assert.equal(lines(b.file).length, 0)
    assert.equal(lines(c.file).length, 1)
    // A refused reload closes what it opened and keeps the current outputs.
    const again = await logs.prepare([{file: join(dir, 'd.log'), hooks: []}])
    await again.discard()
    assert.deepEqual(
      logs.outputs.map((o) => o.name),
      [a.file, c.file],
    )
  })
})
