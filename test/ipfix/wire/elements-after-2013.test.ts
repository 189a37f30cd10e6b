/**
 * Elements assigned after the 2013 registry snapshot come from one reviewed file,
 * misc/elements-after-2013.csv, merged by the generator: the committed table is what it makes.
 */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'

import {generate, LATER, OUTPUT, parseCsv, REGISTRY} from '../../../misc/gen-elements.js'
import {defaultLength, elementByName} from '../../../src/ipfix/wire/elements.js'
import {unfillableReason} from '../../../src/ipfix/export/exportable-elements.js'

describe('elements after the 2013 registry snapshot', function () {
  it('the committed table is what gen:elements makes of the registry and misc/elements-after-2013.csv', function () {
    const source = OUTPUT.replace('/dist/src/', '/src/')
    assert.equal(readFileSync(source, 'utf8'), generate(readFileSync(REGISTRY, 'utf8'), readFileSync(LATER, 'utf8')))
  })

  it('every row of the file cites the RFC that defines the element', function () {
    const [header, ...rows] = parseCsv(readFileSync(LATER, 'utf8')).filter((r) => r.length > 1)
    assert.ok(rows.length >= 1)
    for (const r of rows) assert.match(r[header.indexOf('Reference')], /RFC \d+ §[\d.]+/, r[1])
  })

  it('forwardingStatus is 89, unsigned32, sent in 1 byte by default (RFC 7270)', function () {
    const e = elementByName('ForwardingStatus')
    assert.deepEqual(e && {id: e.id, name: e.name, type: e.type, semantics: e.semantics}, {
      id: 89,
      name: 'forwardingStatus',
      type: 'unsigned32',
      semantics: 'identifier',
    })
    assert.equal(defaultLength(e!), 1)
    assert.equal(defaultLength(elementByName('bgpSourceAsNumber')!), 4)
  })

  it('a row of the later file replaces the snapshot row of the same id', function () {
    const snapshot =
      'ElementID,Name,Data Type,Data Type Semantics,Status,Description,Units\n89,Assigned for NetFlow v9 compatibility,,,,,\n90,keep,unsigned8,,current,,\n'
    const later = 'ElementID,Name,Data Type,Data Type Semantics,Units,Default Length,Reference\n89,forwardingStatus,unsigned32,identifier,,1,RFC 7270 §4.12\n'
    const out = generate(snapshot, later)
    assert.match(
      out,
      /\{id: 89, name: 'forwardingStatus', type: 'unsigned32', semantics: 'identifier', defaultLength: 1\},\n {2}\{id: 90, name: 'keep', type: 'unsigned8'\},/,
    )
    assert.throws(() => generate(snapshot, later.replace(',1,', ',one,')), /Default Length 'one' is not a number/)
  })

  it('says why the kernel cannot give what the older tool names, and nothing for what flowctl exports', function () {
    for (const name of ['BgpSourceAsNumber', 'sourceIPv4PrefixLength', 'DestinationIPv4PrefixLength', 'bgpNextHopIPv4Address', 'FragmentIdentification']) {
      assert.ok(unfillableReason(name), name)
    }
    // The router-grade fields the meter fills since layout 2 have no reason against them.
    for (const name of [
      'sourceIPv4Address',
      'PacketDeltaCount',
      'vlanId',
      'forwardingStatus',
      'ipNextHopIPv4Address',
      'minimumTTL',
      'dot1qCustomerVlanId',
      'noSuchElement',
    ]) {
      assert.equal(unfillableReason(name), undefined, name)
    }
  })
})
