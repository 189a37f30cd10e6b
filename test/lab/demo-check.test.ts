import assert from 'node:assert/strict'

import {countsByInterface, demoMismatches} from '../../src/lab/demo-check.js'
import type {DemoRecord, DemoResult} from '../../src/lab/demo.js'

const SENT = {what: 'udp', proto: 17, src: '198.18.0.1', dst: '198.19.0.1', sport: 4000, dport: 5000, packets: 10, bytes: 1000} as DemoResult['sent'][number]

function record(where: string, direction: string, packets: number, bytes: number): DemoRecord {
  return {interface: where, direction, proto: 17, src: '198.18.0.1', dst: '198.19.0.1', sport: 4000, dport: 5000, packets, bytes} as DemoRecord
}

describe('the demo verdict', function () {
  it('passes when each flow is seen entering c0 and leaving s0 with the counts sent, split records summed', function () {
    const records = [record('router:c0', 'ingress', 4, 400), record('router:c0', 'ingress', 6, 600), record('router:s0', 'egress', 10, 1000)]
    assert.deepEqual(
      countsByInterface(records),
      new Map([
        ['router:c0 ingress', {packets: 10, bytes: 1000}],
        ['router:s0 egress', {packets: 10, bytes: 1000}],
      ]),
    )
    assert.deepEqual(demoMismatches({sent: [SENT], records}), [])
  })

  it('names each missing or differing metering point', function () {
    const records = [record('router:c0', 'ingress', 9, 900)]
    assert.deepEqual(demoMismatches({sent: [SENT], records}), [
      'udp 198.18.0.1 -> 198.19.0.1 at router:c0 ingress: 9 packets, 900 bytes; sent 10, 1000',
      'udp 198.18.0.1 -> 198.19.0.1: no record at router:s0 egress',
    ])
  })
})
