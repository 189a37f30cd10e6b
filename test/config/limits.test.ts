/**
 * The bounds on what a config may hold, and that they are checked before the work they bound:
 * the file's size before parsing, each list's length before its items are read.
 */
import assert from 'node:assert/strict'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {CONFIG_LIMITS, ConfigError, loadConfig, parseConfig} from '../../src/config/load.js'
import {cli} from '../helpers/e2e.js'

/** `count` collectors, one per line, at distinct addresses. */
function collectors(count: number): string {
  const lines = ['collectors:']
  for (let i = 0; i < count; i++) lines.push(`- address: 198.18.${(i >> 8) & 255}.${i & 255}:${4739 + (i >> 16)}`)
  return `${lines.join('\n')}\n`
}

function refused(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseConfig(text, 'config.yaml'),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error))
      assert.match(error.message, pattern)
      assert.equal(error.message.includes('\n'), false)
      return true
    },
  )
}

describe('config/limits', function () {
  let dir: string
  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'flowctl-limits-'))
  })
  after(async function () {
    await rm(dir, {recursive: true, force: true})
  })

  describe('the file size', function () {
    it('refuses a 10 MB config of 400k collectors within a second, in one line, unparsed', async function () {
      const file = join(dir, 'huge.yaml')
      const text = collectors(400_000)
      assert.ok(text.length > 10_000_000, `${text.length}`)
      await writeFile(file, text)
      const started = performance.now()
      await assert.rejects(loadConfig(file), (error: unknown) => {
        assert.ok(error instanceof ConfigError)
        assert.equal(
          error.message,
          `${file}: the file is ${(text.length / 1024 / 1024).toFixed(1)} MB, more than the 256 KB a config may have; ` +
            'allowed: a config of at most 262144 bytes (at most 64 collectors, 256 templates and 16 logs)',
        )
        return true
      })
      const ms = performance.now() - started
      assert.ok(ms < 1000, `took ${ms} ms`)
    })

    it('and so does `flowctl config check`, with exit 2', async function () {
      const file = join(dir, 'huge.yaml')
      const r = await cli(['config', 'check', '-c', file])
      assert.equal(r.exitCode, 2)
      assert.equal(r.stdout, '')
      assert.match(r.stderr, /^flowctl: .*huge\.yaml: the file is \d+\.\d MB, more than the 256 KB a config may have; allowed: [^\n]*$/)
    })

    it('reads no more than the limit from a file without a size (/dev/zero)', async function () {
      const started = performance.now()
      await assert.rejects(loadConfig('/dev/zero'), {message: /^\/dev\/zero: the file is 257 KB, more than the 256 KB a config may have/})
      assert.ok(performance.now() - started < 1000)
    })

    it('takes text of exactly the limit, and refuses one byte more', function () {
      const base = collectors(1)
      const padded = base + '#'.repeat(CONFIG_LIMITS.fileBytes - base.length - 1) + '\n'
      assert.equal(Buffer.byteLength(padded), CONFIG_LIMITS.fileBytes)
      assert.equal(parseConfig(padded, null).collectors.length, 1)
      refused(`${padded} `, /^config\.yaml: the file is 257 KB, more than the 256 KB a config may have/)
    })
  })

  describe('the counts', function () {
    it('takes 64 collectors and refuses 65, at the list', function () {
      assert.equal(parseConfig(collectors(64), null).collectors.length, 64)
      refused(collectors(65), /^config\.yaml:2:1: collectors: 65 collectors, more than the 64 flowctl accepts; allowed: at most 64 collectors$/)
    })

    it('counts before reading the items: a list of 10 000 bad items under the size limit is refused for its length', function () {
      const text = `collectors:\n${'- {bad: 1}\n'.repeat(10_000)}`
      assert.ok(text.length < CONFIG_LIMITS.fileBytes)
      // The schema would have named the first item's unknown key (line 2 too, but further on): the count came first.
      const cpu = process.cpuUsage()
      refused(text, /^config\.yaml:2:1: collectors: 10000 collectors, more than the 64 flowctl accepts; allowed: at most 64 collectors$/)
      // CPU time, not wall time: the machine running the tests may be busy. Parsing the YAML is most of it.
      const {user, system} = process.cpuUsage(cpu)
      assert.ok(user + system < 1_000_000, `took ${(user + system) / 1000} ms of CPU`)
    })

    const C = 'collectors: [{address: 192.0.2.1:4739}]\n'
    const names = (n: number) => Array.from({length: n}, (_, i) => `x${i}`).join(', ')
    const cases: [string, string, RegExp][] = [
      [
        'templates',
        `${C}templates:\n${Array.from({length: 257}, (_, i) => `- {id: ${300 + i}, fields: [octetDeltaCount]}`).join('\n')}\n`,
        /^config\.yaml:3:1: templates: 257 templates, more than the 256 flowctl accepts/,
      ],
      [
        'fields of a template',
        `${C}templates:\n- id: 300\n  fields: [${names(129)}]\n`,
        /^config\.yaml:4:11: templates\[0\]\.fields: 129 fields, more than the 128 flowctl accepts/,
      ],
      [
        "fields of a template (the older tool's template:)",
        `${C}templates:\n- id: 300\n  template: [${names(129)}]\n`,
        /templates\[0\]\.template: 129 fields, more than the 128/,
      ],
      [
        'logs',
        `logs:\n${Array.from({length: 17}, (_, i) => `- file: /tmp/f${i}`).join('\n')}\n`,
        /^config\.yaml:2:1: logs: 17 log outputs, more than the 16 flowctl accepts/,
      ],
      [
        'outputs',
        `outputs:\n${Array.from({length: 81}, (_, i) => `- log: {file: /tmp/f${i}}`).join('\n')}\n`,
        /^config\.yaml:2:1: outputs: 81 outputs, more than the 80 flowctl accepts/,
      ],
      [
        'hooks of a log',
        `logs:\n- file: /tmp/x\n  hooks:\n${'  - shell: cat\n'.repeat(17)}`,
        /^config\.yaml:4:3: logs\[0\]\.hooks: 17 hooks, more than the 16 flowctl accepts/,
      ],
      [
        'hooks of an older output',
        `outputs:\n- log:\n    file: /tmp/x\n    hooks:\n${'    - shell: cat\n'.repeat(17)}`,
        /outputs\[0\]\.log\.hooks: 17 hooks, more than the 16/,
      ],
      [
        'arguments of a hook',
        `logs:\n- file: /tmp/x\n  hooks:\n  - command: [${names(65)}]\n`,
        /^config\.yaml:4:14: logs\[0\]\.hooks\[0\]\.command: 65 arguments, more than the 64 flowctl accepts/,
      ],
      [
        'meters',
        `${C}meters:\n${Array.from({length: 1025}, (_, i) => `- netns: n${i}`).join('\n')}\n`,
        /^config\.yaml:3:1: meters: 1025 meters, more than the 1024 flowctl accepts/,
      ],
      [
        'template ids of a collector',
        `collectors:\n- address: 192.0.2.1:4739\n  templates: [${Array.from({length: 257}, () => 256).join(', ')}]\n`,
        /collectors\[0\]\.templates: 257 template ids, more than the 256/,
      ],
    ]
    for (const [what, text, pattern] of cases) {
      it(`bounds ${what}`, function () {
        refused(text, pattern)
      })
    }
  })
})
