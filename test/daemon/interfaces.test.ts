/**
 * Interface names without a kernel: InterfaceNames over a listLinks that the test feeds (names,
 * aliases, renames, namespaces sharing an observation domain), and the flow log naming both
 * interfaces of a flow.
 */
import assert from 'node:assert/strict'

import {batchToRecords} from '../../src/daemon/flow-log.js'
import {InterfaceNames} from '../../src/daemon/interfaces.js'
import {FlowBatch} from '../../src/flow/batch.js'
import {pathsFromEnv} from '../../src/paths.js'
import type {NetnsName} from '../../src/sys/netns.js'

type Links = Record<string, {ifindex: number; ifname: string; alias?: string}[]>

/** InterfaceNames over `links` (by namespace label), with a clock the test moves. */
function namesOver(links: Links, clock = {now: 0}) {
  const reads: string[] = []
  const names = new InterfaceNames(pathsFromEnv({FLOWCTL_RUN_DIR: '/nonexistent-fct'}), {
    now: () => clock.now,
    listLinks: (netns: NetnsName) => {
      const label = netns ?? 'root'
      reads.push(label)
      return label in links ? Promise.resolve(links[label]) : Promise.reject(new Error(`no namespace ${label}`))
    },
  })
  return {names, reads, clock}
}

describe('interface names', function () {
  it('names every interface of a read namespace, with its alias as the description (its name when it has none)', async function () {
    const {names} = namesOver({
      root: [{ifindex: 1, ifname: 'lo'}],
      'fct-a': [
        {ifindex: 2, ifname: 'a0', alias: 'uplink to core'},
        {ifindex: 3, ifname: 'a1'},
      ],
    })
    await names.readLinks([null, 'fct-a'])
    assert.equal(names.name('fct-a', 2), 'a0')
    assert.deepEqual(names.label(['fct-a'], 2), {name: 'a0', description: 'uplink to core'})
    assert.deepEqual(names.label(['fct-a'], 3), {name: 'a1', description: 'a1'})
    assert.equal(names.label(['fct-a'], 9), undefined)
    assert.equal(names.name('fct-a', 9), 'if9')
  })

  it('names no interface whose ifindex namespaces of one domain give to different interfaces, and says which', async function () {
    const {names} = namesOver({
      root: [
        {ifindex: 1, ifname: 'lo'},
        {ifindex: 2, ifname: 'eth0'},
      ],
      'fct-a': [
        {ifindex: 1, ifname: 'lo'},
        {ifindex: 2, ifname: 'a0'},
        {ifindex: 3, ifname: 'a1'},
      ],
    })
    await names.readLinks([null, 'fct-a'])
    assert.equal(names.label(['root', 'fct-a'], 2), undefined, 'eth0 or a0: the records cannot tell')
    assert.deepEqual(names.label(['root', 'fct-a'], 1), {name: 'lo', description: 'lo'}, 'the same interface everywhere')
    assert.deepEqual(names.label(['root', 'fct-a'], 3), {name: 'a1', description: 'a1'}, 'only one namespace has it')
    assert.deepEqual(names.label(['root'], 2), {name: 'eth0', description: 'eth0'}, 'a domain of its own')
    assert.deepEqual(names.conflicts(['root', 'fct-a']), [2])
    assert.deepEqual(names.conflicts(['fct-a']), [])
  })

  it('reads again in the background when an ifindex is missing (at most once a second) and when what it read is old', async function () {
    const links: Links = {'fct-a': [{ifindex: 2, ifname: 'a0'}]}
    const {names, reads, clock} = namesOver(links)
    await names.readLinks(['fct-a'])
    assert.equal(reads.length, 1)
    links['fct-a'] = [
      {ifindex: 2, ifname: 'a0', alias: 'to the lab'},
      {ifindex: 5, ifname: 'new0'},
    ]
    assert.equal(names.name('fct-a', 5), 'if5', 'not read yet')
    await names.settled()
    assert.equal(reads.length, 1, 'not within a second of the last read')
    clock.now = 1500
    assert.equal(names.name('fct-a', 5), 'if5')
    await names.settled()
    assert.equal(reads.length, 2)
    assert.equal(names.name('fct-a', 5), 'new0')
    assert.deepEqual(names.label(['fct-a'], 2), {name: 'a0', description: 'to the lab'})
    // A rename is seen once what was read is older than a minute, without anything missing.
    links['fct-a'] = [
      {ifindex: 2, ifname: 'wan0', alias: 'to the lab'},
      {ifindex: 5, ifname: 'new0'},
    ]
    clock.now = 30_000
    names.name('fct-a', 2)
    await names.settled()
    assert.equal(reads.length, 2)
    clock.now = 62_000
    names.name('fct-a', 2)
    await names.settled()
    assert.equal(reads.length, 3)
    assert.equal(names.name('fct-a', 2), 'wan0')
  })

  it('keeps the name of an interface just gone for one more read, and what it read of a namespace that is gone', async function () {
    const links: Links = {
      'fct-a': [
        {ifindex: 2, ifname: 'a0'},
        {ifindex: 3, ifname: 'a1'},
      ],
    }
    const {names} = namesOver(links)
    await names.readLinks(['fct-a'])
    links['fct-a'] = [{ifindex: 2, ifname: 'a0'}]
    await names.readLinks()
    assert.equal(names.name('fct-a', 3), 'a1', 'its last flows still name it')
    await names.readLinks()
    assert.equal(names.name('fct-a', 3), 'if3')
    delete links['fct-a']
    await names.readLinks()
    assert.equal(names.name('fct-a', 2), 'a0')
  })

  it('the flow log names both interfaces of a flow, as IPFIX ingressInterface and egressInterface number them', async function () {
    const {names} = namesOver({
      'fct-a': [
        {ifindex: 2, ifname: 'a0'},
        {ifindex: 3, ifname: 'a1'},
      ],
    })
    await names.readLinks(['fct-a'])
    const b = new FlowBatch(4, 3)
    b.netns = 'fct-a'
    b.length = 3
    // Ingress on a0 forwarded out of a1; egress on a1 that came in by a0; egress on a0 sent by this host.
    b.ifindex.set([2, 3, 2])
    b.direction.set([0, 1, 1])
    b.peerIfindex.set([3, 2, 0])
    const records = batchToRecords(b, names)
    assert.deepEqual(
      records.map((r) => [r.interface, r.direction, r.ingressInterface, r.egressInterface]),
      [
        ['a0', 'ingress', 'a0', 'a1'],
        ['a1', 'egress', 'a0', 'a1'],
        ['a0', 'egress', undefined, 'a0'],
      ],
    )
    assert.ok(!('ingressInterface' in records[2]), 'no interface on the side of this host')
  })
})
