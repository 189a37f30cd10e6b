import assert from 'node:assert/strict'

import {execa} from 'execa'

import {usageErrorLine} from '../../src/cli/command.js'
import {legacyRegexMatches} from '../../src/bpf/attach.js'
import {REPO_ROOT} from '../helpers/unit.js'

describe('usage errors keep their reason', function () {
  it('joins a parse failure with its reason and drops the help pointer', function () {
    assert.equal(
      usageErrorLine('Parsing --capacity \n\tExpected an integer but received: abc\nSee more help with --help'),
      'Parsing --capacity: Expected an integer but received: abc',
    )
    assert.equal(
      usageErrorLine('The following error occurred:\n  --capacity=100 cannot also be provided when using --l\nSee more help with --help'),
      '--capacity=100 cannot also be provided when using --l',
    )
    assert.equal(usageErrorLine('Nonexistent flag: --bogus\nSee more help with --help'), 'Nonexistent flag: --bogus')
  })
})

describe("the older tool's -i NS:DEVREGEX", function () {
  const links = [{ifname: 'lo'}, {ifname: 'eth0'}, {ifname: 'eth1'}, {ifname: 'veth-a'}]
  it('lists what its unanchored regular expression took', function () {
    assert.deepEqual(legacyRegexMatches('eth', links), ['eth0', 'eth1', 'veth-a'])
    assert.deepEqual(legacyRegexMatches('^eth[01]$', links), ['eth0', 'eth1'])
    assert.deepEqual(legacyRegexMatches('wlan', links), [])
    assert.deepEqual(legacyRegexMatches('eth(', links), [], 'not a regular expression: nothing')
  })
})

describe('tc filter handles (--handle)', function () {
  this.timeout(60_000)
  const flowctl = (args: string[]) => execa(process.execPath, [`${REPO_ROOT}bin/run.js`, ...args], {reject: false, timeout: 60_000})

  it('are refused past 32 bits, and at 0, by meter attach and detach, in one line before anything is done', async function () {
    for (const command of ['attach', 'detach']) {
      for (const [handle, bound] of [
        ['4294967296', 'less than or equal to 4294967295'],
        ['0', 'greater than or equal to 1'],
      ]) {
        const r = await flowctl(['meter', command, '--netns', 'fct-no-such-ns', '-n', 'x0', '--handle', handle])
        assert.equal(r.exitCode, 2, `${command} --handle ${handle}: ${r.stderr}`)
        assert.equal(r.stderr, `flowctl: Parsing --handle: Expected an integer ${bound} but received: ${handle}`)
      }
    }
  })

  it('are taken up to 0xffffffff (what tc takes)', async function () {
    const r = await flowctl(['meter', 'attach', '--netns', 'fct-no-such-ns', '-n', 'x0', '--handle', '4294967295', '--dry'])
    assert.doesNotMatch(r.stderr, /handle/, r.stderr)
  })
})

describe('demo --metrics', function () {
  this.timeout(60_000)

  it('is checked before the lab is built: a bad address is one line and exit 2', async function () {
    const r = await execa(process.execPath, [`${REPO_ROOT}bin/run.js`, 'demo', '--metrics', '127.0.0.1:99999'], {reject: false, timeout: 60_000})
    assert.equal(r.exitCode, 2, r.stderr)
    assert.equal(r.stderr, 'flowctl: --metrics: port 99999 is out of range; allowed: HOST:PORT, IPV4:PORT or [IPV6]:PORT with a port from 0 to 65535')
    assert.equal(r.stdout, '')
  })
})
