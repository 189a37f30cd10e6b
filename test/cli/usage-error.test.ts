import assert from 'node:assert/strict'

import {usageErrorLine} from '../../src/cli/command.js'
import {legacyRegexMatches} from '../../src/bpf/attach.js'

describe('usage errors keep their reason', function () {
  it('joins a parse failure with its reason and drops the help pointer', function () {
    assert.equal(usageErrorLine('Parsing --capacity \n\tExpected an integer but received: abc\nSee more help with --help'), 'Parsing --capacity: Expected an integer but received: abc')
    assert.equal(usageErrorLine('The following error occurred:\n  --capacity=100 cannot also be provided when using --l\nSee more help with --help'), '--capacity=100 cannot also be provided when using --l')
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
