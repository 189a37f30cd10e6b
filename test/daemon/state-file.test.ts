import assert from 'node:assert/strict'
import {mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {DaemonStateFile, parseDaemonState} from '../../src/daemon/state-file.js'

describe('daemon state file', function () {
  let dir = ''
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fct-state-'))
  })
  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  it('keeps the sequence numbers across instances', function () {
    const file = join(dir, 'sub', 'state.json')
    const a = new DaemonStateFile(file)
    a.set('10.0.0.1:4739', 7, 1234)
    assert.equal(a.save(), undefined)
    const b = new DaemonStateFile(file)
    assert.equal(b.problem, undefined)
    assert.equal(b.get('10.0.0.1:4739', 7), 1234)
  })

  it('reports a file with wrong types in one line and does not use it (no sequence number 0 saved as null)', function () {
    const file = join(dir, 'state.json')
    writeFileSync(file, JSON.stringify({version: 1, sequences: {'10.0.0.1:4739': {'7': 'abc'}}}))
    const s = new DaemonStateFile(file)
    assert.equal(s.problem, 'sequences.10.0.0.1:4739.7 is "abc", not a sequence number (an integer 0-4294967295)')
    assert.equal(s.get('10.0.0.1:4739', 7), undefined)
    s.set('10.0.0.1:4739', 7, 5)
    s.save()
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), {version: 1, sequences: {'10.0.0.1:4739': {'7': 5}}})
    for (const [bad, problem] of [
      [[], 'not a JSON object'],
      [{version: 2, sequences: {}}, 'version is 2, expected 1'],
      [{version: 1, sequences: []}, 'sequences is not an object of sessions'],
      [{version: 1, sequences: {s: {x: 1}}}, 'sequences.s: "x" is not an observation domain id (0-4294967295)'],
      [{version: 1, sequences: {s: {'1': 2 ** 32}}}, 'sequences.s.1 is 4294967296, not a sequence number (an integer 0-4294967295)'],
      [{version: 1, sequences: {s: {'1': null}}}, 'sequences.s.1 is null, not a sequence number (an integer 0-4294967295)'],
    ] as const) {
      assert.deepEqual(parseDaemonState(bad), {problem}, JSON.stringify(bad))
    }
    writeFileSync(file, '{not json')
    assert.match(new DaemonStateFile(file).problem ?? '', /^cannot read it: /)
  })

  it('returns the error at once for a file under a missing /proc path, where mkdir -p never returned', async function () {
    // In a child process: before, save() spun in Node's recursive mkdirSync, which no timeout ends.
    const script = `
      const {DaemonStateFile} = await import(${JSON.stringify(new URL('../../src/daemon/state-file.js', import.meta.url).href)})
      const s = new DaemonStateFile('/proc/flowctl-test/state.json')
      s.set('a', 0, 1)
      const error = s.save()
      console.log(JSON.stringify({code: error?.code, message: error?.message}))`
    const r = await execa(process.execPath, ['--input-type=module', '-e', script], {timeout: 20_000, reject: false})
    assert.equal(r.timedOut, false, 'save() did not return within 20 s')
    assert.deepEqual(JSON.parse(r.stdout), {code: 'ENOENT', message: "ENOENT: no such file or directory, mkdir '/proc/flowctl-test'"})
  })

  it('returns the error of a write that fails, keeps the numbers, and writes them once it can', function () {
    const file = join(dir, 'state.json')
    mkdirSync(file) // the path is a directory
    const s = new DaemonStateFile(file)
    s.set('a', 0, 42)
    const error = s.save()
    assert.ok(error instanceof Error)
    assert.equal(s.get('a', 0), 42)
    rmSync(file, {recursive: true})
    assert.equal(s.save(), undefined, 'retried at the next save')
    assert.equal(new DaemonStateFile(file).get('a', 0), 42)
  })
})
