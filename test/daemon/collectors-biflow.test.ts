/**
 * The daemon's collectors and biflows: a collector with `biflow: true` gets biflows in its
 * templates' biflow form, the others the uniflows; a reload that turns biflows on or off for a
 * collector changes its templates and what it gets.
 */
import assert from 'node:assert/strict'

import {parseConfig} from '../../src/config/load.js'
import {Collectors} from '../../src/daemon/collectors.js'
import {createLogger} from '../../src/daemon/log.js'
import {BiflowPairer} from '../../src/flow/biflow.js'
import {batchOf, routedReply, routedUniflow, Sink} from '../ipfix/flows.js'

const CONNECTION = [routedUniflow({}), routedReply({})]

describe('daemon collectors: biflows per collector', function () {
  let plain: Sink
  let bi: Sink
  let collectors: Collectors | undefined

  beforeEach(async function () {
    plain = await Sink.start()
    bi = await Sink.start()
  })
  afterEach(async function () {
    collectors?.close()
    collectors = undefined
    await plain.stop()
    await bi.stop()
  })

  const yaml = (biflow: boolean) =>
    `collectors:\n- {name: plain, address: 127.0.0.1:${plain.port}}\n- {name: bi, address: 127.0.0.1:${bi.port}, biflow: ${biflow}}\nmetrics: {listen: ''}\n`

  /** Exports the connection's uniflows through the collectors, and its biflows if one asks for them; waits until the uniflows are in. */
  async function exportConnection(c: Collectors): Promise<void> {
    const batch = batchOf(CONNECTION, 5)
    c.exportBatch(batch)
    if (c.wantBiflows) c.exportBiflows(new BiflowPairer().pair(batch))
    for (const e of c.all) await e.flushed()
    await plain.until(() => plain.flows.length >= 2, 'the uniflows')
  }

  it('sends the biflow collector biflows and the other one uniflows; a reload turns biflows off', async function () {
    const log = createLogger(() => {})
    const sequences = {get: () => undefined, set: () => {}}
    collectors = new Collectors(parseConfig(yaml(true), null), {log, sequences, meters: () => []})
    await collectors.start()
    assert.equal(collectors.wantBiflows, true)
    await exportConnection(collectors)
    await bi.until(() => bi.flows.length >= 1, 'the biflow')
    assert.deepEqual(
      plain.flows.map((f) => [f.packetDeltaCount, f.reversePacketDeltaCount]),
      [
        [5, undefined],
        [4, undefined],
      ],
    )
    assert.deepEqual(
      bi.flows.map((f) => [f.packetDeltaCount, f.reversePacketDeltaCount, f.biflowDirection]),
      [[5, 4, 1]],
    )

    await collectors.reload(parseConfig(yaml(false), null))
    plain.flows.length = 0
    bi.flows.length = 0
    assert.equal(collectors.wantBiflows, false, 'nobody asks for biflows: no pairing')
    await exportConnection(collectors)
    await bi.until(() => bi.flows.length >= 2, 'the uniflows after the reload')
    assert.deepEqual(
      bi.flows.map((f) => [f.packetDeltaCount, f.reversePacketDeltaCount]),
      [
        [5, undefined],
        [4, undefined],
      ],
    )
  })
})
