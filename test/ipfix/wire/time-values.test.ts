/** Epoch nanoseconds to and from NTP timestamps (RFC 7011 §6.1.9-10, the era of §5.2). */
import assert from 'node:assert/strict'

import {epochNsToNtp, ntpToEpochNs} from '../../../src/ipfix/wire/time-values.js'

describe('ipfix/time-values (NTP timestamps)', function () {
  it('epochNsToNtp and ntpToEpochNs', function () {
    assert.deepEqual(epochNsToNtp(0n), {seconds: 0x83aa7e80, fraction: 0})
    assert.deepEqual(epochNsToNtp(250_000_000n), {seconds: 0x83aa7e80, fraction: 0x40000000})
    assert.deepEqual(epochNsToNtp(1_000n, true), {seconds: 0x83aa7e80, fraction: 0x1000})
    // 1960 is before 1970 but still in NTP era 0
    assert.deepEqual(epochNsToNtp(-315_619_200_000_000_000n), {seconds: 2208988800 - 315619200, fraction: 0})
    assert.equal(ntpToEpochNs(0x83aa7e80, 0x80000000), 500_000_000n)
    assert.equal(ntpToEpochNs(0xe93c7f00, 0), 1_704_067_200_000_000_000n)
    assert.equal(ntpToEpochNs(0, 0), 2_085_978_496_000_000_000n)
    assert.equal(ntpToEpochNs(0xffffffff, 0xffffffff), (0xffffffffn - 2208988800n + 1n) * 1_000_000_000n)
  })

  it('round-trips every nanosecond of a second boundary and random instants', function () {
    for (const base of [0n, 1_700_000_000_000_000_000n, 2_085_978_495_000_000_000n]) {
      for (const delta of [0n, 1n, 2n, 3n, 499_999_999n, 500_000_000n, 999_999_998n, 999_999_999n]) {
        const ns = base + delta
        const {seconds, fraction} = epochNsToNtp(ns)
        assert.equal(ntpToEpochNs(seconds, fraction), ns)
        const us = (ns / 1000n) * 1000n
        const m = epochNsToNtp(us, true)
        assert.equal(m.fraction & 0x7ff, 0)
        assert.equal(ntpToEpochNs(m.seconds, m.fraction, true), us)
      }
    }
    let x = 12345n
    for (let i = 0; i < 2000; i++) {
      x = (x * 6364136223846793005n + 1442695040888963407n) % 2n ** 64n
      const ns = 1_600_000_000_000_000_000n + (x % 400_000_000_000_000_000n)
      const {seconds, fraction} = epochNsToNtp(ns)
      assert.equal(ntpToEpochNs(seconds, fraction), ns)
    }
  })
})
