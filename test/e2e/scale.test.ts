/**
 * Many flows through the real path: 200,000 distinct IPv4 UDP flows (250,000 raw frames) sent
 * through a veth pair between two namespaces, metered at the receiving end's ingress, drained by
 * `flowctl daemon` and exported to a collector in this process.
 *
 * Oracles: the frames are built here, so every flow's packets and IP bytes are known; the
 * receiving veth's own counter says every frame arrived (the sender is paced so that the veth's
 * backlog never overflows; the test fails, saying so, if it did). Every flow must come out exactly
 * once with exactly its packets and bytes.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import koffi from 'koffi'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {Lab} from '../../src/lab/lab.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {requireE2e, sleep, PrivateDirs} from '../helpers/e2e.js'
import {sendFrameFile, writeFrameFile} from '../helpers/frames.js'
import * as P from '../helpers/packets.js'
import {Sink} from '../ipfix/flows.js'

const FLOWS = 200_000
/** Every fourth flow gets a second frame, sent after every flow's first. */
const TWICE = (i: number) => i % 4 === 0
const RATE_PPS = 80_000

/** Flow i: 198.19.<i bits 8-15>.<i bits 0-7>, source port 1024 + (i >> 16), to 198.18.0.2:9. */
function flowSource(i: number): {src: string; sport: number} {
  return {src: `198.19.${(i >> 8) & 0xff}.${i & 0xff}`, sport: 1024 + (i >> 16)}
}

function payloadLength(i: number): number {
  return i % 97
}

const SOL_SOCKET = 1
const SO_RCVBUFFORCE = 33

/**
 * The collector's socket gets a receive buffer of `bytes` (SO_RCVBUFFORCE, as root): the daemon's
 * last drain sends 200 k records at once, more than net.core.rmem_max lets a socket queue.
 */
function forceReceiveBuffer(sink: Sink, bytes: number): void {
  const socket = (sink.collector as unknown as {socket?: object}).socket
  const state = socket && Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol')
  const fd = state ? (socket as Record<symbol, {handle?: {fd?: number}}>)[state]?.handle?.fd : undefined
  if (typeof fd !== 'number' || fd < 0) throw new Error("cannot reach the collector socket's descriptor")
  const setsockopt = koffi.load('libc.so.6').func('int setsockopt(int fd, int level, int name, void *value, uint32_t len)')
  const value = Buffer.alloc(4)
  value.writeInt32LE(bytes)
  if ((setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, value, 4) as number) !== 0) throw new Error('SO_RCVBUFFORCE failed')
}

describe('many flows end to end @e2e', function () {
  this.timeout(180_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(id)
  const lab = new Lab()
  let tmp = ''
  let client = ''
  let server = ''
  let daemon: DaemonProcess | undefined
  let sink: Sink | undefined

  after(async function () {
    await daemon?.stop('SIGKILL').catch(() => {})
    await sink?.stop()
    if (server) await detachMeters(privateDirs.paths, {targets: [{netns: server, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it(`exports ${FLOWS.toLocaleString('en-US')} distinct flows sent as raw frames, each exactly once with exact packets and bytes`, async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-scale-'))
    privateDirs.apply()
    client = await lab.namespace('client')
    server = await lab.namespace('server')
    const pair = await lab.veth(client, 'veth0', server, 'veth1', {v4: ['198.18.0.1/24', '198.18.0.2/24'], quiet: true})
    await attachMeters(privateDirs.paths, {targets: [{netns: server, ifname: 'veth1'}], directions: ['ingress'], pref: 1, handle: 1, force: false})

    // The frames, and what each flow must come out as.
    const mac = (m: string) => Buffer.from(m.replaceAll(':', ''), 'hex')
    const ethHead = Buffer.concat([mac(pair.b.mac), mac(pair.a.mac), Buffer.from([0x08, 0x00])])
    const expected = new Map<string, {packets: number; bytes: number}>()
    const parts: Buffer[] = []
    let frames = 0
    let totalBytes = 0
    const send = (i: number) => {
      const {src, sport} = flowSource(i)
      const frame = Buffer.concat([ethHead, P.ipv4(17, src, '198.18.0.2', P.udp(sport, 9, Buffer.alloc(payloadLength(i), i & 0xff)))])
      parts.push(frame)
      const key = `${src}:${sport}`
      const e = expected.get(key) ?? {packets: 0, bytes: 0}
      e.packets += 1
      e.bytes += frame.length - 14
      expected.set(key, e)
      frames += 1
      totalBytes += frame.length - 14
    }
    for (let i = 0; i < FLOWS; i++) send(i)
    for (let i = 0; i < FLOWS; i++) if (TWICE(i)) send(i)
    assert.equal(expected.size, FLOWS)
    const framesFile = join(tmp, 'frames.bin')
    writeFrameFile(framesFile, parts)

    sink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    forceReceiveBuffer(sink, 256 << 20)
    // Timeouts longer than the run: each flow is held from its first frame to the shutdown drain,
    // its second frame merged into it on the way (often by a later drain than its first).
    const config = join(tmp, 'config.yaml')
    writeFileSync(
      config,
      `collectors:\n- address: 127.0.0.1:${sink.port}\ndrainIntervalSeconds: 1\nidleTimeoutSeconds: 60\nactiveTimeoutSeconds: 300\n` +
        `metrics:\n  listen: ''\nstateFile: ${privateDirs.env.FLOWCTL_STATE_DIR}/daemon-state.json\n`,
    )
    daemon = new DaemonProcess(config)
    await daemon.waitForLog('started')

    const before = await lab.linkStats(server, 'veth1')
    assert.equal(await sendFrameFile(client, 'veth0', framesFile, RATE_PPS), frames)
    await sleep(500)
    const after = await lab.linkStats(server, 'veth1')
    assert.equal(after.rxPackets - before.rxPackets, frames, `the veth received ${after.rxPackets - before.rxPackets} of ${frames} frames: lower RATE_PPS`)

    // A drain or two meanwhile; the shutdown drain exports what the daemon holds.
    await sleep(1500)
    assert.equal(await daemon.stop('SIGTERM'), 0, daemon.tail)
    await sink.until(() => sink!.flows.length >= FLOWS, `${FLOWS} flows`, 60_000)
    await sleep(300) // anything beyond would be a duplicate: give it time to arrive

    assert.deepEqual(sink.malformed, [])
    const seen = new Map<string, number>()
    let packets = 0
    let bytes = 0
    const wrong: string[] = []
    for (const f of sink.flows) {
      const key = `${String(f.sourceIPv4Address)}:${String(f.sourceTransportPort)}`
      seen.set(key, (seen.get(key) ?? 0) + 1)
      packets += Number(f.packetDeltaCount)
      bytes += Number(f.octetDeltaCount)
      const e = expected.get(key)
      if (e?.packets !== Number(f.packetDeltaCount) || e.bytes !== Number(f.octetDeltaCount) || f.destinationTransportPort !== 9 || f.flowDirection !== 0) {
        if (wrong.length < 5) wrong.push(JSON.stringify(f))
      }
    }
    const twice = [...seen].filter(([, n]) => n > 1)
    const missing = [...expected.keys()].filter((k) => !seen.has(k))
    assert.deepEqual(wrong, [], 'records that match no flow sent, or with other counts')
    assert.equal(twice.length, 0, `flows exported more than once: ${twice.slice(0, 5).join(' ')}`)
    assert.equal(missing.length, 0, `flows never exported: ${missing.slice(0, 5).join(' ')}`)
    assert.equal(sink.flows.length, FLOWS)
    assert.equal(packets, frames)
    assert.equal(packets, after.rxPackets - before.rxPackets)
    assert.equal(bytes, totalBytes)
  })
})
