/**
 * The annotated example config (misc/config.example.yaml, and the same text in the README) is one
 * an operator can start from: `flowctl config check` accepts it, and it names every key.
 */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'

import {loadConfig} from '../../src/config/load.js'
import {cli} from '../helpers/e2e.js'
import {REPO_ROOT} from '../helpers/unit.js'

const EXAMPLE = join(REPO_ROOT, 'misc', 'config.example.yaml')

describe('example config', function () {
  it('passes `flowctl config check`', async function () {
    // --no-machine: it is meant for /etc/flowctl, its log for /var/log/flowctl, which need not exist here.
    const r = await cli(['config', 'check', '--no-machine', '-c', EXAMPLE])
    assert.equal(r.exitCode, 0, r.stderr)
    assert.match(r.stdout, /: ok \(2 collectors, 2 templates, 1 log output\)/)
  })

  it('sets every top-level key, a hook of each kind, and loads as documented', async function () {
    const config = await loadConfig(EXAMPLE)
    assert.equal(config.templatesDefaulted, false)
    assert.deepEqual(
      config.collectors.map((c) => c.name),
      ['127.0.0.1:4739', 'central'],
    )
    assert.deepEqual(config.meters, [
      {netns: null},
      {netns: 'customer-a', observationDomainId: 2, sampling: 10, drops: true},
      {netns: 'tenant-*', interfaces: ['eth*', 'v*', '!eth9'], direction: 'both', capacity: 1048576},
    ])
    assert.equal(config.metrics.listen, '127.0.0.1:9999')
    assert.deepEqual([config.sendBytesPerSecond, config.collectors[0].sendBytesPerSecond], [0, 5_000_000])
    assert.deepEqual([config.collectors[0].biflow, config.collectors[1].biflow, config.logs[0].biflow], [undefined, true, undefined])
    const hooks = config.logs[0].hooks
    assert.ok('command' in hooks[0] && hooks[0].command[0] === 'jq')
    assert.ok('shell' in hooks[1])
    const text = readFileSync(EXAMPLE, 'utf8')
    for (const key of [
      'observationDomainId',
      'maxMessageSize',
      'drainIntervalSeconds',
      'idleTimeoutSeconds',
      'activeTimeoutSeconds',
      'templateRefreshSeconds',
      'statsIntervalSeconds',
      'spoolBytes',
      'spoolTotalBytes',
      'replayBytesPerSecond',
      'sendBytesPerSecond',
      'collectors',
      'templates',
      'meters',
      'logs',
      'metrics',
      'stateFile',
    ]) {
      assert.match(text, new RegExp(`^${key}:`, 'm'), key)
    }
  })

  it('is the config the README shows, word for word', function () {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8')
    const example = readFileSync(EXAMPLE, 'utf8')
    assert.ok(readme.includes(`\`\`\`yaml\n${example}\`\`\``), 'README.md has misc/config.example.yaml in a ```yaml block')
  })
})
