/** makeDirectories: mkdir -p with a walk of our own, which ends where Node's recursive mkdir spins. */
import assert from 'node:assert/strict'
import {mkdtempSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

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
})
