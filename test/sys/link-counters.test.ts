/** The one reader of `ip -s -j link` output: counters by ifindex, as iproute2 prints them. */
import assert from 'node:assert/strict'

import {parseLinkCounters, readLinkCounters} from '../../src/sys/netns.js'

describe('link counters (ip -s -j link)', function () {
  it("reads each interface's rx and tx packets and bytes by ifindex, leaving out one without stats64", function () {
    const json = JSON.stringify([
      {ifindex: 1, ifname: 'lo', stats64: {rx: {bytes: 1000, packets: 10, errors: 0}, tx: {bytes: 1000, packets: 10, errors: 0}}},
      {ifindex: 7, ifname: 'veth0', stats64: {rx: {bytes: 2 ** 40 + 3, packets: 5, dropped: 1}, tx: {bytes: 64, packets: 1}}},
      {ifindex: 9, ifname: 'odd'},
    ])
    const links = parseLinkCounters(json)
    assert.deepEqual([...links.keys()], [1, 7])
    assert.deepEqual(links.get(7), {ifname: 'veth0', rxPackets: 5, rxBytes: 2 ** 40 + 3, txPackets: 1, txBytes: 64})
    assert.equal(parseLinkCounters('').size, 0)
  })

  it("reads this host's loopback counters through ip", async function () {
    const links = await readLinkCounters(null)
    const lo = [...links.values()].find((l) => l.ifname === 'lo')
    assert.ok(lo, 'lo is listed')
    assert.ok(lo.rxPackets >= 0 && lo.txBytes >= 0)
  })
})
