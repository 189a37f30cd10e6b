/**
 * The BTF reader against the running kernel's own BTF: it finds enum skb_drop_reason, and the
 * reason table names only reasons the kernel has.
 */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'

import {btfEnum, kernelDropReasons, VMLINUX_BTF} from '../../src/bpf/btf.js'
import {DROP_REASON_CODES, forwardingStatusOfDrop, TTL_EXPIRED, DROPPED} from '../../src/flow/drop-reasons.js'

describe('BTF reader and drop reasons', function () {
  it("finds enum skb_drop_reason in the kernel's BTF, NETFILTER_DROP and the first values among its names", function () {
    const reasons = kernelDropReasons()
    assert.ok(reasons.size > 50, `${reasons.size} reasons`)
    assert.equal(reasons.get(0), 'SKB_NOT_DROPPED_YET')
    assert.equal(reasons.get(1), 'SKB_CONSUMED')
    assert.ok([...reasons.values()].includes('NETFILTER_DROP'))
    assert.ok([...reasons.values()].includes('NOT_SPECIFIED'))
  })

  it("reads an enum's values by name, says when there is none, and refuses what is not BTF", function () {
    const data = readFileSync(VMLINUX_BTF)
    const reasons = btfEnum(data, 'skb_drop_reason')!
    assert.equal(reasons.get('SKB_DROP_REASON_NOT_SPECIFIED'), 2)
    assert.equal(btfEnum(data, 'no_such_enum_anywhere'), undefined)
    assert.throws(() => btfEnum(Buffer.alloc(64), 'skb_drop_reason'), /not raw BTF/)
  })

  it('maps only reasons this kernel has, each to a dropped code (128-143)', function () {
    const names = new Set(kernelDropReasons().values())
    for (const [name, code] of Object.entries(DROP_REASON_CODES)) {
      assert.ok(names.has(name), `${name} is not a reason of this kernel`)
      assert.ok(code >= 128 && code <= 143, `${name}: ${code}`)
    }
  })

  it('gives the four router drops their codes, TTL_EXPIRED its own, and any other reason 128', function () {
    assert.equal(forwardingStatusOfDrop('NETFILTER_DROP'), DROPPED.aclDeny)
    assert.equal(forwardingStatusOfDrop('IP_INNOROUTES'), DROPPED.unroutable)
    assert.equal(forwardingStatusOfDrop('PKT_TOO_BIG'), DROPPED.fragmentationAndDfSet)
    assert.equal(forwardingStatusOfDrop(TTL_EXPIRED), DROPPED.badTtl)
    assert.equal(forwardingStatusOfDrop('IP_INHDR'), DROPPED.badHeaderLength)
    assert.equal(forwardingStatusOfDrop('NO_SOCKET'), DROPPED.unknown)
  })
})
