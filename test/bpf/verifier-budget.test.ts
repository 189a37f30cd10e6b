/**
 * How much work the kernel's verifier does to load the meter. A state explosion (parser paths the
 * verifier carries apart through the rest of the program) once had it process 724 k instructions
 * of its 1 M limit for a 1.9 k-instruction program: 1.5 s of kernel CPU per meter set, and a
 * newer clang or kernel away from a refused load. This keeps a bound well below the limit.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdirSync, rmSync} from 'node:fs'

import {execa} from 'execa'

import {compileMeter} from '../../src/bpf/compile.js'
import {pathsFromEnv} from '../../src/paths.js'
import {requireE2e} from '../helpers/e2e.js'

/** Instructions the verifier may process per program: about 4x what it takes now (23.5 k). */
const MAX_PROCESSED_INSNS = 100_000

describe('meter program verifier budget @e2e', function () {
  let pinDir: string | undefined

  before(function () {
    requireE2e(this)
  })

  after(function () {
    if (pinDir) rmSync(pinDir, {recursive: true, force: true})
  })

  it('loads each program with the verifier processing under 100 k instructions', async function () {
    const {objectPath} = await compileMeter({capacity: 4096}, pathsFromEnv().cacheDir)
    pinDir = `/sys/fs/bpf/fct-test-${randomBytes(3).toString('hex')}`
    mkdirSync(pinDir) // bpftool pins into an existing directory
    // -d prints libbpf's debug output, the verifier's whole log among it (far more than a string
    // holds when the states explode): keep only the summary line of each program.
    const processed: number[] = []
    const loading = execa('bpftool', ['-d', 'prog', 'loadall', objectPath, pinDir, 'type', 'classifier'], {buffer: false})
    for await (const line of loading.iterable({from: 'stderr'})) {
      const summary = /^processed (\d+) insns \(limit \d+\)/.exec(line)
      if (summary) processed.push(Number(summary[1]))
    }
    await loading
    assert.equal(processed.length, 2, 'one verifier summary per program (ingress, egress)')
    for (const count of processed) assert.ok(count < MAX_PROCESSED_INSNS, `the verifier processed ${count} instructions (bound ${MAX_PROCESSED_INSNS})`)
  })
})
