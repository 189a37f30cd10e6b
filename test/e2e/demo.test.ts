/**
 * `flowctl demo`, the README's first command: the whole data path in a lab, every count exact,
 * and nothing left behind.
 */
import assert from 'node:assert/strict'
import {readdirSync} from 'node:fs'

import type {DemoResult} from '../../src/lab/demo.js'
import {cli, requireE2e} from '../helpers/e2e.js'

function leftovers(): string[] {
  const netns = (() => {
    try {
      return readdirSync('/run/netns')
    } catch {
      return []
    }
  })()
  return [...netns.map((n) => `netns ${n}`), ...readdirSync('/sys/fs/bpf').map((p) => `pin ${p}`), ...readdirSync('/run').map((p) => `run ${p}`)].filter((x) =>
    x.includes('fct-demo-') || /^netns fct-[0-9a-f]{6}-(client|router|server)$/.test(x),
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
    assert.deepEqual([...new Set(result.records.map((x) => x.proto))].sort((a, b) => a - b), [1, 6, 17, 58])
    // Every sent flow with known counts was seen entering c0 and leaving s0 (compare() checks the numbers).
    assert.equal(result.sent.length, 6)
    assert.match(r.stderr, /lab removed/)
    assert.deepEqual(leftovers(), before)
  })
})
