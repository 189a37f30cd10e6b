/**
 * flowctl's own enterprise-specific IPFIX elements (the TCP round trips) in a config: refused in
 * one line naming the key to set while no enterpriseNumber is configured, and compiled under that
 * PEN with the documented ids when one is.
 */
import assert from 'node:assert/strict'

import {compileBiflowTemplates, compileTemplates} from '../../src/config/export-settings.js'
import {ConfigError, parseConfig} from '../../src/config/load.js'

const C = 'collectors:\n- address: 192.0.2.1:4739\n'
const TEMPLATE = 'templates:\n- id: 300\n  fields: [sourceIPv4Address, destinationIPv4Address, tcpRttClientMicroseconds, {name: tcpRttServerMicroseconds}]\n'

describe('config: enterprise-specific elements', function () {
  it('refuses a template naming the round-trip elements without enterpriseNumber, in one line naming the key', function () {
    assert.throws(
      () => parseConfig(`${C}${TEMPLATE}`, 'config.yaml'),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError)
        assert.equal(
          e.message,
          'config.yaml:5:55: templates[0].fields[2]: tcpRttClientMicroseconds is an enterprise-specific element: set enterpriseNumber (your IANA Private Enterprise Number) to export it; allowed: enterpriseNumber: PEN at the top level',
        )
        assert.ok(!e.message.includes('\n'))
        return true
      },
    )
  })

  it('refuses an enterpriseNumber that is no PEN', function () {
    assert.throws(() => parseConfig(`enterpriseNumber: 0\n${C}`, 'config.yaml'), /enterpriseNumber: .*Private Enterprise Number from 1 to 4294967295/)
  })

  it('sends them under the configured PEN as ids 1 (client side) and 2 (server side), unsigned32', function () {
    const config = parseConfig(`enterpriseNumber: 32473\n${C}${TEMPLATE}`, 'config.yaml')
    assert.equal(config.enterpriseNumber, 32473)
    const [t] = compileTemplates(config)
    assert.deepEqual(
      t.template.fields.map((f) => [f.element.name, f.element.id, f.length, f.enterpriseNumber]),
      [
        ['sourceIPv4Address', 8, 4, undefined],
        ['destinationIPv4Address', 12, 4, undefined],
        ['tcpRttClientMicroseconds', 1, 4, 32473],
        ['tcpRttServerMicroseconds', 2, 4, 32473],
      ],
    )
    assert.equal(t.template.fields[2].element.type, 'unsigned32')
  })

  it('keeps them under the PEN in a biflow template, with no reverse counterpart (one round trip per connection)', function () {
    const config = parseConfig(`enterpriseNumber: 32473\n${C}${TEMPLATE}`, 'config.yaml')
    const [t] = compileBiflowTemplates(config)
    const own = t.template.fields.filter((f) => f.element.name.startsWith('tcpRtt'))
    assert.deepEqual(
      own.map((f) => [f.element.id, f.enterpriseNumber]),
      [
        [1, 32473],
        [2, 32473],
      ],
    )
  })

  it('tells element 2 under the PEN from the registry’s element 2 (packetDeltaCount) in one template', function () {
    const config = parseConfig(`enterpriseNumber: 32473\n${C}templates:\n- id: 300\n  fields: [packetDeltaCount, tcpRttServerMicroseconds]\n`, 'config.yaml')
    assert.deepEqual(
      compileTemplates(config)[0].template.fields.map((f) => [f.element.id, f.enterpriseNumber]),
      [
        [2, undefined],
        [2, 32473],
      ],
    )
  })
})
