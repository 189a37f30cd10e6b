import assert from 'node:assert/strict'

import {InvalidInputError} from '../../src/errors.js'
import {directions, interfaceTargets, netnsOf, requireTargets} from '../../src/cli/flags.js'
import {scopeFromFlags} from '../../src/cli/selector-flags.js'

describe('flags', function () {
  describe('netnsOf', function () {
    it('maps the root aliases to null', function () {
      assert.equal(netnsOf(undefined), null)
      assert.equal(netnsOf(''), null)
      assert.equal(netnsOf('root'), null)
    })

    it('keeps a namespace name', function () {
      assert.equal(netnsOf('lab-a'), 'lab-a')
      assert.equal(netnsOf('Root'), 'Root')
    })

    it('rejects names that are not namespace names', function () {
      for (const bad of ['.', '..', 'a/b', '../etc', 'x\0y']) assert.throws(() => netnsOf(bad), InvalidInputError, JSON.stringify(bad))
    })
  })

  describe('scopeFromFlags', function () {
    it('is the root namespace without --netns, the named one with it, every one (undefined) with --all-netns', function () {
      assert.equal(scopeFromFlags({direction: 'both'}).netns, null)
      assert.equal(scopeFromFlags({direction: 'both', netns: 'lab-a'}).netns, 'lab-a')
      assert.equal(scopeFromFlags({direction: 'both', netns: 'root'}).netns, null)
      assert.equal(scopeFromFlags({direction: 'both', 'all-netns': true}).netns, undefined)
    })
  })

  describe('directions', function () {
    it('expands both and keeps one', function () {
      assert.deepEqual(directions('both'), ['ingress', 'egress'])
      assert.deepEqual(directions('ingress'), ['ingress'])
      assert.deepEqual(directions('egress'), ['egress'])
    })
  })

  describe('interfaceTargets', function () {
    it('is empty without interfaces', function () {
      assert.deepEqual(interfaceTargets({}), [])
      assert.deepEqual(interfaceTargets({netns: 'lab'}), [])
    })

    it('puts -n interfaces in --netns, or the root namespace', function () {
      assert.deepEqual(interfaceTargets({netns: 'lab', ifname: ['eth0', 'eth1']}), [
        {netns: 'lab', ifname: 'eth0'},
        {netns: 'lab', ifname: 'eth1'},
      ])
      assert.deepEqual(interfaceTargets({ifname: ['eth0']}), [{netns: null, ifname: 'eth0'}])
      assert.deepEqual(interfaceTargets({netns: 'root', ifname: ['eth0']}), [{netns: null, ifname: 'eth0'}])
    })

    it('takes the namespace of -i NS:IFACE, and --netns for a bare -i IFACE', function () {
      assert.deepEqual(interfaceTargets({interface: ['ns2:eth0', 'ns3:*']}), [
        {netns: 'ns2', ifname: 'eth0'},
        {netns: 'ns3', ifname: '*'},
      ])
      assert.deepEqual(interfaceTargets({netns: 'lab', interface: ['eth0', 'other:eth1']}), [
        {netns: 'lab', ifname: 'eth0'},
        {netns: 'other', ifname: 'eth1'},
      ])
      assert.deepEqual(interfaceTargets({interface: ['eth0']}), [{netns: null, ifname: 'eth0'}])
    })

    it('combines -n and -i, -n first', function () {
      assert.deepEqual(interfaceTargets({netns: 'lab', ifname: ['a'], interface: ['x:b']}), [
        {netns: 'lab', ifname: 'a'},
        {netns: 'x', ifname: 'b'},
      ])
    })

    it('rejects a malformed -i and an invalid --netns', function () {
      for (const bad of ['a:b:c', ':eth0', 'ns:', '', ':']) assert.throws(() => interfaceTargets({interface: [bad]}), InvalidInputError, JSON.stringify(bad))
      assert.throws(() => interfaceTargets({netns: '../x', ifname: ['eth0']}), InvalidInputError)
    })

    // `--netns root` means the root namespace; `-i root:eth0` must agree.
    it('treats -i root:IFACE as the root namespace, like --netns root', function () {
      assert.deepEqual(interfaceTargets({interface: ['root:eth0']}), interfaceTargets({netns: 'root', ifname: ['eth0']}))
    })
  })

  describe('requireTargets', function () {
    it('throws InvalidInputError for no targets and accepts some', function () {
      assert.throws(
        () => requireTargets([], 'flowctl meter attach'),
        (e: unknown) => e instanceof InvalidInputError && /flowctl meter attach/.test(e.message),
      )
      assert.doesNotThrow(() => requireTargets([{netns: null, ifname: 'eth0'}], 'x'))
    })
  })
})
