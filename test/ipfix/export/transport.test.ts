/**
 * UdpTransport's window of sent messages (what an ICMP error could still name): its memory goes
 * as soon as the messages count as arrived, whether a drain comes or not. Observed through the
 * garbage collector: a message the transport let go of can be collected.
 */
import assert from 'node:assert/strict'
import {createSocket, type Socket} from 'node:dgram'
import {setFlagsFromString} from 'node:v8'
import {setTimeout as sleep} from 'node:timers/promises'
import {runInNewContext} from 'node:vm'

import {HELD_MESSAGE_OVERHEAD} from '../../../src/ipfix/export/held-messages.js'
import {CONFIRM_MS, UdpTransport} from '../../../src/ipfix/export/transport.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** Whether the objects behind `refs` are gone after a full collection (in a later turn: WeakRefs hold their target for the turn that made them). */
async function collected(refs: WeakRef<object>[]): Promise<boolean[]> {
  await sleep(0)
  gc()
  return refs.map((r) => r.deref() === undefined)
}

describe('ipfix/transport (UdpTransport: the window of sent messages)', function () {
  this.timeout(10_000)
  let receiver: Socket
  let port: number
  let received = 0
  let transport: UdpTransport | undefined

  beforeEach(async function () {
    received = 0
    receiver = createSocket('udp4')
    receiver.on('message', () => received++)
    await new Promise<void>((resolve) => receiver.bind(0, '127.0.0.1', resolve))
    port = receiver.address().port
  })
  afterEach(function () {
    transport?.close()
    transport = undefined
    receiver.close()
  })

  async function openTransport(spoolBytes: number): Promise<UdpTransport> {
    transport = new UdpTransport({name: `127.0.0.1:${port}`, remote: {host: '127.0.0.1', port}}, {spoolBytes})
    await transport.open()
    return transport
  }

  /** Sends `n` messages of `size` bytes and returns weak references to them. */
  async function sendSome(t: UdpTransport, n: number, size: number): Promise<WeakRef<Buffer>[]> {
    const refs: WeakRef<Buffer>[] = []
    for (let i = 0; i < n; i++) {
      const message = Buffer.alloc(size, i)
      refs.push(new WeakRef(message))
      t.send(message, 1)
    }
    await t.flushed()
    const until = Date.now() + 2000
    while (received < n && Date.now() < until) await sleep(5)
    assert.equal(received, n, 'every message arrived')
    return refs
  }

  it('lets go of the oldest messages at once when the window passes spoolBytes', async function () {
    // Room for two messages of 100 bytes (each also costs HELD_MESSAGE_OVERHEAD), not three.
    const t = await openTransport(2 * (100 + HELD_MESSAGE_OVERHEAD) + 50)
    const refs = await sendSome(t, 10, 100)
    // The last two are held: the eight before count as arrived and are no longer held.
    assert.deepEqual(await collected(refs), [true, true, true, true, true, true, true, true, false, false])
  })

  it('lets go of every message once CONFIRM_MS has passed, without another send or drain', async function () {
    const t = await openTransport(1 << 20)
    const refs = await sendSome(t, 5, 100)
    assert.deepEqual(await collected(refs), [false, false, false, false, false], 'held while an ICMP error could still name them')
    await sleep(CONFIRM_MS + 200)
    assert.deepEqual(await collected(refs), [true, true, true, true, true])
    assert.equal(t.isDown, false)
  })
})
