/** makeDirectories: mkdir -p with a walk of our own, which ends where Node's recursive mkdir spins. */
import assert from 'node:assert/strict'
import {mkdtempSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {makeDirectories, missingDirectories} from '../../src/sys/directories.js'

describe('sys/directories', function () {
  let dir = ''
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fct-dirs-'))
  })
  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  it('creates a directory and its missing parents, and accepts one that exists', function () {
    const deep = join(dir, 'a', 'b', 'c')
    assert.deepEqual(missingDirectories(deep), {existing: dir, missing: [join(dir, 'a'), join(dir, 'a', 'b'), deep]})
    makeDirectories(deep)
    assert.ok(statSync(deep).isDirectory())
    makeDirectories(deep)
    makeDirectories(dir)
    assert.deepEqual(missingDirectories(deep), {existing: deep, missing: []})
  })

  it('throws ENOTDIR under a file', function () {
    writeFileSync(join(dir, 'file'), '')
    assert.throws(() => makeDirectories(join(dir, 'file', 'sub')), {code: 'ENOTDIR'})
    assert.throws(() => makeDirectories(join(dir, 'file')), {code: 'ENOTDIR'})
  })

  it('throws what mkdir says under /proc, once', function () {
    assert.throws(() => makeDirectories('/proc/flowctl-test/a/b'), {code: 'ENOENT', message: "ENOENT: no such file or directory, mkdir '/proc/flowctl-test'"})
  })

  it('the run directory and pin root (FLOWCTL_RUN_DIR, FLOWCTL_PIN_ROOT) under a missing /proc path fail at once, where they spun', async function () {
    // In a child process: before, Node's recursive mkdir never returned there.
    const state = JSON.stringify(new URL('../../src/bpf/state.js', import.meta.url).href)
    const script = `
      const {claimMeterRoot, withStateLock} = await import(${state})
      const paths = {pinRoot: '/proc/flowctl-test/pins', runDir: '/proc/flowctl-test/run', cacheDir: '/tmp', stateDir: '/tmp'}
      const errors = []
      await withStateLock(paths, async () => undefined).catch((e) => errors.push(e.code))
      try { claimMeterRoot(paths) } catch (e) { errors.push(e.message) }
      console.log(JSON.stringify(errors))`
    const r = await execa(process.execPath, ['--input-type=module', '-e', script], {timeout: 20_000, reject: false})
    assert.equal(r.timedOut, false, 'did not return within 20 s')
    assert.deepEqual(JSON.parse(r.stdout), [
      'ENOENT',
      "cannot create /proc/flowctl-test/pins (ENOENT: no such file or directory, mkdir '/proc/flowctl-test'): is bpffs mounted on /sys/fs/bpf?",
    ])
  })
})
