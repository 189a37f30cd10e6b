import assert from 'node:assert/strict'

import {parseLegacyInterface} from '../../src/bpf/attach.js'
import {InvalidInputError} from '../../src/errors.js'

describe('bpf/attach parseLegacyInterface', function () {
  it('reads IFACE as the root namespace', function () {
    assert.deepEqual(parseLegacyInterface('eth0'), {netns: null, ifname: 'eth0'})
    assert.deepEqual(parseLegacyInterface('*'), {netns: null, ifname: '*'})
  })

  it('reads NETNS:IFACE and NETNS:*', function () {
    assert.deepEqual(parseLegacyInterface('lab-a:veth0'), {netns: 'lab-a', ifname: 'veth0'})
    assert.deepEqual(parseLegacyInterface('lab-a:*'), {netns: 'lab-a', ifname: '*'})
    assert.deepEqual(parseLegacyInterface('ns1:eth0.100'), {netns: 'ns1', ifname: 'eth0.100'})
  })

  for (const bad of ['', ':', ':eth0', 'ns:', 'a:b:c', 'ns::eth0']) {
    it(`rejects ${JSON.stringify(bad)} with InvalidInputError naming it`, function () {
      assert.throws(
        () => parseLegacyInterface(bad),
        (e: unknown) => e instanceof InvalidInputError && e.message.includes(`'${bad}'`) && e.exitCode === 2,
      )
    })
  }
})
