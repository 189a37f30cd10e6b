/**
 * bpftool's map dump when an entry is deleted between its key walk and its lookup (a flush beside
 * a dump): it prints {"error": ...} in place of the value. Such entries are passed over, not decoded.
 */
import assert from 'node:assert/strict'

import {decodeDumpElement, type DumpElement} from '../../src/bpf/bpftool.js'
import {jsonArrayElements} from '../../src/bpf/json-stream.js'
import {fromArray} from '../helpers/unit.js'

// As bpftool 7 prints a per-CPU hash dump with -j, one entry gone before its lookup.
const DUMP = `[{
        "key": ["0x01","0x00","0x00","0x00"],
        "values": [{"cpu": 0,"value": ["0x02","0x00"]},{"cpu": 1,"value": ["0x03","0x00"]}]
    },{
        "key": ["0x02","0x00","0x00","0x00"],
        "value": {
            "error": "No such file or directory"
        }
    },{
        "key": ["0x03","0x00","0x00","0x00"],
        "values": {"error": "No such file or directory"}
    },{
        "key": ["0x04","0x00","0x00","0x00"],
        "value": ["0x05","0x06"]
    }
]`

describe('bpftool map dump entries', function () {
  it('decodes the readable entries and passes over those whose value is an error', async function () {
    const decoded = []
    let vanished = 0
    // Split into small chunks, as a pipe delivers it.
    const chunks = DUMP.match(/[\s\S]{1,7}/g)!
    for await (const e of jsonArrayElements(fromArray(chunks))) {
      const entry = decodeDumpElement(e as DumpElement, 8)
      if (entry) decoded.push(entry)
      else vanished++
    }
    assert.equal(vanished, 2)
    assert.equal(decoded.length, 2)
    assert.deepEqual([...decoded[0].key], [1, 0, 0, 0])
    assert.equal(decoded[0].cpus, 2)
    assert.deepEqual([...decoded[0].value], [2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0])
    assert.deepEqual([...decoded[1].key], [4, 0, 0, 0])
    assert.deepEqual([...decoded[1].value], [5, 6])
  })

  it('an empty per-CPU value list is no entry either', function () {
    assert.equal(decodeDumpElement({key: ['0x01'], values: []}), undefined)
  })
})
