/** The one reader of `ip -s -j link` output: counters by ifindex, as iproute2 prints them. */
import assert from 'node:assert/strict'

import {Lab} from '../../src/lab/lab.js'
import {runAgent} from '../../src/lab/traffic.js'
import {linkCounters, parseLinkCounters, readLinkCounters, type LinkCounters} from '../../src/sys/netns.js'
import {requireE2e} from '../helpers/e2e.js'

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
})

function moved(before: LinkCounters, after: LinkCounters): LinkCounters {
  return {
    rxPackets: after.rxPackets - before.rxPackets,
    rxBytes: after.rxBytes - before.rxBytes,
    txPackets: after.txPackets - before.txPackets,
    txBytes: after.txBytes - before.txBytes,
  }
}

describe('link counters of a known interface @e2e', function () {
  this.timeout(60_000)
  const lab = new Lab()

  after(async function () {
    await lab.destroy()
  })

  it('move by exactly the frames sent through a quiet veth pair, and their bytes, at both ends', async function () {
    requireE2e(this)
    const a = await lab.namespace('a')
    const b = await lab.namespace('b')
    // Quiet: no address and no IPv6, so nothing but our frames crosses the pair.
    const pair = await lab.veth(a, 'a0', b, 'b0', {quiet: true})
    const mac = (text: string) => Buffer.from(text.replaceAll(':', ''), 'hex')
    // To b0, from a0, an IEEE local experimental EtherType (nothing answers it), padded to 60 bytes.
    const frame = Buffer.concat([mac(pair.b.mac), mac(pair.a.mac), Buffer.from([0x88, 0xb5]), Buffer.alloc(46, 0x5a)])
    const frames = 37

    const byName = async (netns: string, ifname: string) => [...(await readLinkCounters(netns)).values()].find((l) => l.ifname === ifname)!
    const [a0Before, b0Before] = [await byName(a, 'a0'), await linkCounters(b, 'b0')]
    await runAgent(a, {mode: 'raw-send', ifname: 'a0', frameHex: frame.toString('hex'), count: frames})
    const [a0After, b0After] = [await byName(a, 'a0'), await linkCounters(b, 'b0')]

    assert.deepEqual(moved(a0Before, a0After), {rxPackets: 0, rxBytes: 0, txPackets: frames, txBytes: frames * frame.length})
    assert.deepEqual(moved(b0Before, b0After), {rxPackets: frames, rxBytes: frames * frame.length, txPackets: 0, txBytes: 0})
  })
})
