/**
 * Traffic agents run through the one execa wrapper: an agent that cannot run fails with the
 * wrapper's typed error, naming what went wrong, whether it runs to completion or in the background.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'

import {CommandFailedError} from '../../src/errors.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'

describe('lab/traffic agents', function () {
  const missing = `fct-${randomBytes(3).toString('hex')}`
  const isNoSuchNamespace = (e: unknown) => {
    assert.ok(e instanceof CommandFailedError, `got ${String(e)}`)
    assert.match(e.message, new RegExp(`/run/netns/${missing}`))
    assert.equal(e.exitStatus, 1)
    return true
  }

  it('runAgent in a namespace that does not exist fails with CommandFailedError naming it', async function () {
    await assert.rejects(runAgent(missing, {mode: 'udp-send', host: '198.18.0.1', port: 9, count: 1, size: 1}), isNoSuchNamespace)
  })

  it('startAgent of a sink in a namespace that does not exist fails with CommandFailedError naming it', async function () {
    await assert.rejects(startAgent(missing, {mode: 'udp-sink', host: '198.18.0.1', port: 9}), isNoSuchNamespace)
  })

  it("a sender's result fails the same way when it could not start", async function () {
    const agent = await startAgent(missing, {mode: 'udp-send', host: '198.18.0.1', port: 9, count: 1, size: 1})
    await assert.rejects(agent.result, isNoSuchNamespace)
  })
})
