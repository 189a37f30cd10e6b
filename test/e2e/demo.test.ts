/**
 * `flowctl demo`, the README's first command: the whole data path in a lab, every count exact,
 * and nothing left behind.
 */
import assert from 'node:assert/strict'
import {readdirSync} from 'node:fs'

import type {DemoResult} from '../../src/lab/demo.js'
import {execa} from 'execa'

import {cli, CLI, requireE2e} from '../helpers/e2e.js'

function leftovers(): string[] {
  const netns = (() => {
    try {
      return readdirSync('/run/netns')
    } catch {
      return []
    }
  })()
  return [...netns.map((n) => `netns ${n}`), ...readdirSync('/sys/fs/bpf').map((p) => `pin ${p}`), ...readdirSync('/run').map((p) => `run ${p}`)].filter(
    (x) => x.includes('fct-demo-') || /^netns fct-[0-9a-f]{6}-(client|router|server)$/.test(x),
  )
}

describe('flowctl demo @e2e', function () {
  before(function () {
    requireE2e(this)
  })

  it('meters, exports and decodes UDP, TCP, ICMP and IPv6 traffic with exact counts, then removes its lab', async function () {
    const before = leftovers()
    const r = await cli(['demo', '--json', '--seconds', '2'])
    assert.equal(r.exitCode, 0, r.stderr)
    const result = JSON.parse(r.stdout) as DemoResult & {mismatches: string[]}
    assert.deepEqual(result.mismatches, [])
    assert.equal(result.conformance.verdict, 'PASS', result.conformance.reasons.join('\n'))
    assert.deepEqual(
      [...new Set(result.records.map((x) => x.proto))].sort((a, b) => a - b),
      [1, 6, 17, 58],
    )
    // Every sent flow with known counts was seen entering c0 and leaving s0 (compare() checks the numbers).
    assert.equal(result.sent.length, 6)
    assert.match(r.stderr, /lab removed/)
    assert.deepEqual(leftovers(), before)
  })

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`removes its lab when interrupted (${signal}, as Ctrl-C or systemd would) while traffic runs`, async function () {
      const before = leftovers()
      // (execa would otherwise follow SIGTERM with SIGKILL after 5 s.)
      const child = execa(process.execPath, [CLI, 'demo', '--seconds', '30'], {reject: false, timeout: 120_000, forceKillAfterDelay: false})
      const started = Date.now()
      let stderr = ''
      // Interrupt once the lab carries traffic and the daemon has exported something.
      await new Promise<void>((resolve, reject) => {
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString()
          if (/[1-9]\d* flow records decoded/.test(stderr)) resolve()
        })
        void child.then((r) => reject(new Error(`demo ended before it exported anything (${r.exitCode}): ${stderr}`)))
      })
      child.kill(signal)
      const r = await child
      // It stops at once, not when its 30 s of traffic would have ended.
      assert.ok(Date.now() - started < 25_000, `the demo took ${Date.now() - started} ms to stop`)
      assert.notEqual(r.exitCode, 0, 'an interrupted demo does not say it succeeded')
      assert.equal(r.signal, undefined, `the demo was killed by ${r.signal} before it could remove its lab:\n${stderr}`)
      assert.match(String(r.stderr), /lab removed/)
      assert.deepEqual(leftovers(), before)
    })
  }
})
