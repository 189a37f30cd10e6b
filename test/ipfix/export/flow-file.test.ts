import assert from 'node:assert/strict'

import {flowFileTemplate, parseFlowFile} from '../../../src/ipfix/export/flow-file.js'

const TEMPLATES = [
  {
    id: 1001,
    fields: [
      {name: 'sourceIPv4Address', length: 4},
      {name: 'packetDeltaCount', length: 8},
    ],
  },
  {
    id: 1002,
    fields: [
      {name: 'sourceIPv4Address', length: 4},
      {name: 'bgpSourceAsNumber', length: 4},
      {name: 'forwardingStatus', length: 1},
    ],
  },
]

describe('flow files', function () {
  it('leaves out, and names, what a flow gives that its template lacks', function () {
    const sets = parseFlowFile(
      'flowsets:\n- templateId: 1001\n  flows:\n  - {SourceIPv4Address: 0x0a010001, SourceTransportPort: 9999, PacketDeltaCount: 7}\n  - {SourceTransportPort: 1, MinimumTTL: 3}\n',
      'f.yaml',
      TEMPLATES,
    )
    assert.deepEqual(sets, [
      {
        templateId: 1001,
        records: [
          {sourceIPv4Address: '10.1.0.1', packetDeltaCount: 7n},
          {sourceIPv4Address: '0.0.0.0', packetDeltaCount: 0n},
        ],
        ignored: ['sourceTransportPort', 'minimumTTL'],
      },
    ])
  })

  it('carries the values of elements the meter cannot fill', function () {
    const [set] = parseFlowFile(
      'flowsets:\n- templateId: 1002\n  flows:\n  - {SourceIPv4Address: 10.0.0.1, BgpSourceAsNumber: 65001, ForwardingStatus: 64}\n',
      'f.yaml',
      TEMPLATES,
    )
    assert.deepEqual(set.records, [{sourceIPv4Address: '10.0.0.1', bgpSourceAsNumber: 65001, forwardingStatus: 64}])
    const t = flowFileTemplate(1002, TEMPLATES[1].fields)
    assert.deepEqual(
      t.template.fields.map((f) => [f.element.id, f.length]),
      [
        [8, 4],
        [16, 4],
        [89, 1],
      ],
    )
    assert.equal(t.recordLength, 9)
    assert.equal(t.family, 4)
    // Never filled from a flow of the kernel.
    assert.throws(() => t.fields[1].write({} as never, 0, Buffer.alloc(9), 4), /no value for bgpSourceAsNumber/)
  })

  it('refuses a name that is no registry element, suggesting the nearest', function () {
    assert.throws(
      () => parseFlowFile('flowsets:\n- templateId: 1001\n  flows:\n  - {PacketDeltaCont: 1}\n', 'f.yaml', TEMPLATES),
      /f\.yaml: flowsets\[0\]\.flows\[0\]\.PacketDeltaCont: unknown information element; did you mean packetDeltaCount\?/,
    )
  })
})
