/**
 * Hooks that try to outlive their kill (issue 25, item 10). Before, a hook ran in a process group
 * with a tag in its environment, and at its timeout the group and every tagged process found in
 * /proc were killed. Two kinds of child escaped: one that keeps forking (each new process in a
 * session of its own, born after the last look at /proc), and one that leaves the group, clears
 * its environment and renames itself. Now each run is the first process of a PID namespace of its
 * own: when it dies, the kernel kills everything in the namespace.
 *
 * Each process the hooks start writes its pid as the host sees it (/proc/self/stat) to a file;
 * after the timeout every one of them must be dead.
 */
import assert from 'node:assert/strict'
import {existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {HookFailure, runHook} from '../../src/daemon/hooks.js'
import {requireE2e, sleep} from '../helpers/e2e.js'

/** Whether `pid` is a live (not zombie) process whose command line carries `marker` (pids are reused). */
function alive(pid: number, marker: string): boolean {
  try {
    if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return false
    // A sleep's duration is its marker: 60.<random> (GNU sleep adds its arguments up).
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)
  } catch {
    return false
  }
}

function pidsIn(file: string): number[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number) : []
}

describe('hook escapes @e2e', function () {
  this.timeout(60_000)
  let dir = ''
  /** Every pid file a test made, and the marker of its processes: killed after each test, whatever it found. */
  const spawned: {file: string; marker: string}[] = []

  before(function () {
    requireE2e(this)
  })

  beforeEach(function () {
    dir = mkdtempSync(join(tmpdir(), 'fct-hook-escape-'))
  })

  afterEach(async function () {
    // Were the fix missing, the escapees would run on: kill them until no new one appears.
    for (let round = 0; round < 40; round++) {
      const live = spawned.flatMap(({file, marker}) => pidsIn(file).filter((pid) => alive(pid, marker)))
      if (!live.length && round > 0) break
      for (const pid of live) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // gone
        }
      }
      await sleep(100)
    }
    spawned.length = 0
    rmSync(dir, {recursive: true, force: true})
  })

  /** Runs the hook with a 500 ms timeout; it must time out. */
  async function timesOut(shell: string): Promise<void> {
    const started = Date.now()
    await assert.rejects(runHook({shell, timeoutMs: 500}, [{a: 1}]), (error: unknown) => error instanceof HookFailure && error.reason === 'timeout')
    assert.ok(Date.now() - started < 10_000, `moved on after ${Date.now() - started} ms`)
  }

  it('kills a hook that keeps forking, each child in a session of its own, with every process it made', async function () {
    const pidFile = join(dir, 'walker.pids')
    const walker = join(dir, 'walker.sh')
    const marker = `${60 + Math.random()}`
    spawned.push({file: pidFile, marker: dir}, {file: pidFile, marker})
    // Each link records its pid, starts the next in a new session and exits at once: always a new
    // pid, never where the last look at /proc saw it. Two or three of its processes at a time, 2000
    // links at most (a few seconds of forking, longer than the old kill kept looking), the last
    // one sleeps.
    writeFileSync(
      walker,
      `read pid rest < /proc/self/stat\necho "$pid" >> "$2"\nif [ "$1" -gt 0 ]; then\n  setsid /bin/sh "$0" $(($1 - 1)) "$2" &\n  exit 0\nfi\nexec sleep ${marker}\n`,
    )
    await timesOut(`cat >/dev/null; /bin/sh ${walker} 2000 ${pidFile} & sleep 30`)
    // Whatever was alive at the kill died with it, and no new link appears after.
    await sleep(1000)
    const seen = pidsIn(pidFile)
    await sleep(1000)
    const pids = pidsIn(pidFile)
    assert.ok(pids.length > 0, 'the walker ran')
    assert.equal(pids.length, seen.length, `the walker went on after the kill: ${seen.length} links, then ${pids.length}`)
    const live = pids.filter((pid) => alive(pid, dir) || alive(pid, marker))
    assert.deepEqual(live, [], `${live.length} of its ${pids.length} processes outlived the kill`)
    assert.ok(pids.length < 2001, 'killed before it was done walking')
  })

  it('kills a child that left the session, cleared its environment and renamed itself', async function () {
    const pidFile = join(dir, 'hidden.pid')
    const marker = `${60 + Math.random()}`
    spawned.push({file: pidFile, marker})
    // In bash for exec -a: the sleep shows as a kernel worker, with nothing of the hook in its environment.
    await timesOut(
      `cat >/dev/null; setsid env -i /bin/bash -c 'read pid rest < /proc/self/stat; echo $pid > ${pidFile}; exec -a "[kworker/u8:1]" sleep ${marker}' & sleep 30`,
    )
    const [pid] = pidsIn(pidFile)
    assert.ok(pid > 0, 'the child ran')
    assert.equal(alive(pid, marker), false, `the hidden child ${pid} outlived the kill`)
  })

  it('kills what a hook left behind when it exits, and keeps its answer', async function () {
    const pidFile = join(dir, 'left.pid')
    const marker = `${60 + Math.random()}`
    spawned.push({file: pidFile, marker})
    const records = await runHook(
      {
        shell: `cat; setsid env -i sh -c 'read pid rest < /proc/self/stat; echo $pid > ${pidFile}; exec sleep ${marker}' >/dev/null & sleep 0.2`,
        timeoutMs: 5000,
      },
      [{a: 1}],
    )
    assert.deepEqual(records, [{a: 1}])
    const [pid] = pidsIn(pidFile)
    assert.ok(pid > 0, 'the child ran')
    assert.equal(alive(pid, marker), false, `the child ${pid} outlived its hook`)
  })

  it('fails to start a hook, saying why, where no PID namespace can be made (no CAP_SYS_ADMIN)', async function () {
    // The daemon without CAP_SYS_ADMIN, as in a container that drops it: hooks fail, not run unconfined.
    const hooks = JSON.stringify(new URL('../../src/daemon/hooks.js', import.meta.url).href)
    const script = `
      const {runHook} = await import(${hooks})
      const failure = await runHook({command: ['/bin/cat'], timeoutMs: 5000}, [{a: 1}]).then(() => undefined, (e) => ({reason: e.reason, message: e.message}))
      console.log(JSON.stringify(failure))`
    const r = await execa('setpriv', ['--bounding-set', '-all,+bpf,+net_admin,+perfmon', '--', process.execPath, '--input-type=module', '-e', script], {
      timeout: 20_000,
    })
    assert.deepEqual(JSON.parse(r.stdout), {
      reason: 'spawn',
      message: '/bin/cat: cannot make a PID namespace of its own (unshare: unshare failed: Operation not permitted)',
    })
  })
})
