import assert from 'node:assert/strict'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {heldBy, lockHolder, tryLock, waitLock} from '../../src/sys/flock.js'

describe('flock locks', function () {
  let dir = ''
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fct-flock-'))
  })
  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  it('holds a file or a directory against a second taker, names the holder, and lets go on release', function () {
    for (const [path, directory] of [
      [join(dir, 'a.lock'), false],
      [dir, true],
    ] as const) {
      const first = tryLock(path, {directory})
      assert.ok(first, path)
      assert.equal(tryLock(path, {directory}), undefined, 'a second open file of the same process is refused too')
      assert.equal(lockHolder(path), process.pid)
      assert.deepEqual(heldBy(path), {pid: process.pid}, 'read from /proc/locks, taking nothing')
      first.release()
      assert.equal(lockHolder(path), undefined)
      assert.equal(heldBy(path), undefined)
      const again = tryLock(path, {directory})
      assert.ok(again)
      again.release()
    }
  })

  it('is dropped by the kernel when its holder is killed (nothing stale to break)', async function () {
    const path = join(dir, 'b.lock')
    // flock(1) holds the lock while sleep runs (-o: sleep does not inherit it); SIGKILL to the
    // whole group leaves no chance to clean up.
    const holder = execa('flock', ['-o', '-x', path, 'sleep', '30'], {reject: false, detached: true})
    const deadline = Date.now() + 5000
    while (lockHolder(path) === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    assert.ok(lockHolder(path), 'the child holds it')
    assert.equal(tryLock(path), undefined)
    const waiting = waitLock(path, 5000)
    process.kill(-holder.pid!, 'SIGKILL')
    await holder
    const taken = await waiting
    assert.ok(taken, 'taken once the holder died')
    taken.release()
  })

  it('gives up waiting after the timeout', async function () {
    const path = join(dir, 'c.lock')
    const held = tryLock(path)!
    const started = Date.now()
    assert.equal(await waitLock(path, 200, 20), undefined)
    assert.ok(Date.now() - started >= 200)
    held.release()
  })
})
