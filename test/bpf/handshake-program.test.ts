/**
 * The meter's TCP handshake timing on crafted frames through BPF_PROG_TEST_RUN (`bpftool prog
 * run`): what SYN, SYN+ACK and the first ACK write into the `handshakes` map, that a retransmitted
 * SYN restarts the timing, that other packets leave the map alone, and that the daemon's reader
 * pairs what the program wrote into round trips and deletes it.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {compileMeter} from '../../src/bpf/compile.js'
import {takeHandshakes} from '../../src/bpf/handshakes.js'
import {FLOW_KEY6, HANDSHAKE_KEY, HANDSHAKE_TIMES, KEY, readU32, readU64} from '../../src/bpf/layout.js'
import {BpfMap} from '../../src/bpf/libbpf.js'
import {HANDSHAKE_INITIATOR, HANDSHAKE_RESPONDER} from '../../src/flow/handshake-rtt.js'
import {pathsFromEnv} from '../../src/paths.js'
import {formatAddress} from '../../src/util/address.js'
import {requireE2e} from '../helpers/e2e.js'
import * as P from '../helpers/packets.js'

const SYN = 0x02
const ACK = 0x10
const SYN_ACK = SYN | ACK
const PSH_ACK = 0x18

interface Timed {
  family: number
  src: string
  sport: number
  dst: string
  dport: number
  direction: number
  role: number
  synNs: number
  ackNs: number
}

describe('meter program: TCP handshake timing @e2e', function () {
  let pinDir: string
  let tmp: string
  let handshakes: BpfMap
  let flows4: BpfMap

  before(async function () {
    requireE2e(this)
    const {objectPath} = await compileMeter({capacity: 1024}, pathsFromEnv().cacheDir)
    pinDir = `/sys/fs/bpf/fct-test-${randomBytes(3).toString('hex')}`
    tmp = mkdtempSync(join(tmpdir(), 'fct-hs-'))
    mkdirSync(pinDir)
    await execa('bpftool', ['prog', 'loadall', objectPath, `${pinDir}/prog`, 'type', 'classifier', 'pinmaps', `${pinDir}/maps`])
    handshakes = BpfMap.open(`${pinDir}/maps/handshakes`)
    flows4 = BpfMap.open(`${pinDir}/maps/flows4_live`)
  })

  after(function () {
    handshakes?.close()
    flows4?.close()
    if (pinDir) rmSync(pinDir, {recursive: true, force: true})
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  beforeEach(function () {
    handshakes.forEachBatch(() => {}, {andDelete: true})
    flows4.forEachBatch(() => {}, {andDelete: true})
  })

  async function feed(frame: Buffer, direction: 'ingress' | 'egress' = 'ingress'): Promise<void> {
    const data = join(tmp, 'frame.bin')
    writeFileSync(data, frame)
    await execa('bpftool', ['prog', 'run', 'pinned', `${pinDir}/prog/flowctl_${direction}`, 'data_in', data, 'repeat', '1'])
  }

  const tcp4 = (src: string, sport: number, dst: string, dport: number, flags: number, payload = Buffer.alloc(0)) =>
    P.ethernet(P.ETH_IPV4, P.ipv4(6, src, dst, P.tcp(sport, dport, flags, payload)))
  const tcp6 = (src: string, sport: number, dst: string, dport: number, flags: number) =>
    P.ethernet(P.ETH_IPV6, P.ipv6(6, src, dst, P.tcp(sport, dport, flags)))
  const client = (flags: number, payload?: Buffer<ArrayBuffer>) => tcp4('198.18.0.1', 40000, '198.19.0.2', 80, flags, payload)
  const server = (flags: number, payload?: Buffer<ArrayBuffer>) => tcp4('198.19.0.2', 80, '198.18.0.1', 40000, flags, payload)

  function timed(): Timed[] {
    const out: Timed[] = []
    const ks = handshakes.info.keySize
    const vs = handshakes.info.valueSize
    assert.equal(ks, HANDSHAKE_KEY.size)
    assert.equal(vs, HANDSHAKE_TIMES.size)
    handshakes.forEachBatch((keys, values, n) => {
      for (let i = 0; i < n; i++) {
        const k = i * ks
        const v = i * vs
        const family = readU32(keys, k + HANDSHAKE_KEY.fields.family.offset)
        const f = family === 4 ? 4 : 6
        out.push({
          family,
          src: formatAddress(f, keys, k + FLOW_KEY6.fields.src.offset),
          sport: keys.readUInt16BE(k + KEY.sport.offset),
          dst: formatAddress(f, keys, k + FLOW_KEY6.fields.dst.offset),
          dport: keys.readUInt16BE(k + KEY.dport.offset),
          direction: keys[k + KEY.direction.offset],
          role: readU32(values, v + HANDSHAKE_TIMES.fields.role.offset),
          synNs: readU64(values, v + HANDSHAKE_TIMES.fields.synNs.offset),
          ackNs: readU64(values, v + HANDSHAKE_TIMES.fields.ackNs.offset),
        })
      }
    })
    return out.sort((a, b) => a.role - b.role)
  }

  it('times a SYN in a new flow under its flow key, as the initiator, with no ACK yet', async function () {
    await feed(client(SYN))
    const [entry, ...rest] = timed()
    assert.deepEqual(rest, [])
    assert.deepEqual(
      {...entry, synNs: entry.synNs > 0},
      {family: 4, src: '198.18.0.1', sport: 40000, dst: '198.19.0.2', dport: 80, direction: 0, role: HANDSHAKE_INITIATOR, synNs: true, ackNs: 0},
    )
  })

  it('times the SYN+ACK as the responder and the initiator’s first ACK after it, in order', async function () {
    await feed(client(SYN))
    await feed(server(SYN_ACK))
    await feed(client(ACK))
    const [init, resp] = timed()
    assert.equal(init.role, HANDSHAKE_INITIATOR)
    assert.equal(resp.role, HANDSHAKE_RESPONDER)
    assert.deepEqual([resp.src, resp.sport, resp.dst, resp.dport, resp.ackNs], ['198.19.0.2', 80, '198.18.0.1', 40000, 0])
    assert.ok(init.synNs < resp.synNs && resp.synNs < init.ackNs, JSON.stringify({init, resp}))
  })

  it('restarts the timing at a retransmitted SYN', async function () {
    await feed(client(SYN))
    const [first] = timed()
    await feed(client(SYN))
    const [again] = timed()
    assert.ok(again.synNs > first.synNs, `${again.synNs} > ${first.synNs}`)
    assert.equal(again.ackNs, 0)
  })

  it('leaves the map alone for packets that are not handshake packets', async function () {
    await feed(client(SYN))
    await feed(server(SYN_ACK))
    await feed(client(ACK))
    const before = timed()
    // Data both ways, the responder's ACKs, a second ACK of the initiator, UDP, and TCP of a flow never SYNed.
    await feed(client(PSH_ACK, Buffer.alloc(100)))
    await feed(server(ACK))
    await feed(server(PSH_ACK, Buffer.alloc(50)))
    await feed(client(ACK))
    await feed(P.ethernet(P.ETH_IPV4, P.ipv4(17, '198.18.0.1', '198.19.0.2', P.udp(5000, 53))))
    await feed(tcp4('198.18.0.7', 41000, '198.19.0.2', 443, PSH_ACK, Buffer.alloc(10)))
    assert.deepEqual(timed(), before)
  })

  it('finds the first ACK in a new flow when the SYN’s flow was taken out in between (a drain)', async function () {
    await feed(client(SYN))
    await feed(server(SYN_ACK))
    flows4.forEachBatch(() => {}, {andDelete: true}) // as a drain's swap leaves the program a fresh map
    await feed(client(ACK))
    const [init] = timed()
    assert.ok(init.ackNs > init.synNs)
  })

  it('times IPv6 handshakes under family 6', async function () {
    await feed(tcp6('fd00::1', 40000, 'fd00::2', 22, SYN))
    await feed(tcp6('fd00::2', 22, 'fd00::1', 40000, SYN_ACK))
    await feed(tcp6('fd00::1', 40000, 'fd00::2', 22, ACK))
    const [init, resp] = timed()
    assert.deepEqual([init.family, init.src, resp.family, resp.src], [6, 'fd00::1', 6, 'fd00::2'])
    assert.ok(init.ackNs > resp.synNs)
  })

  it('the reader pairs the two directions into round trips and deletes them; an unfinished one stays', async function () {
    await feed(client(SYN))
    await feed(server(SYN_ACK))
    await feed(client(ACK))
    await feed(tcp4('198.18.0.9', 40001, '198.19.0.2', 80, SYN)) // no answer yet
    const init = timed().find((e) => e.sport === 40000)!
    const resp = timed().find((e) => e.role === HANDSHAKE_RESPONDER)!
    const now = Math.max(init.ackNs, resp.synNs) + 1
    const rtts = takeHandshakes(handshakes, now, 10e9)
    assert.equal(rtts.length, 1)
    const [rtt] = rtts
    assert.equal(rtt.family, 4)
    assert.equal(rtt.serverUs, Math.max(1, Math.round((resp.synNs - init.synNs) / 1000)))
    assert.equal(rtt.clientUs, Math.max(1, Math.round((init.ackNs - resp.synNs) / 1000)))
    assert.equal(rtt.flowKeys.length, 2)
    assert.equal(rtt.flowKeys[0].length, flows4.info.keySize)
    // Both directions' flows are keyed as the flow map keys them.
    const flowKeys = new Set<string>()
    flows4.forEachBatch((keys, _values, n) => {
      for (let i = 0; i < n; i++) flowKeys.add(keys.toString('latin1', i * flows4.info.keySize, (i + 1) * flows4.info.keySize))
    })
    for (const key of rtt.flowKeys) assert.ok(flowKeys.has(key), 'a handshake flow key is a flow map key')
    const left = timed()
    assert.deepEqual(
      left.map((e) => [e.src, e.sport]),
      [['198.18.0.9', 40001]],
    )
    // Stale: given up.
    assert.deepEqual(takeHandshakes(handshakes, left[0].synNs + 11e9, 10e9), [])
    assert.deepEqual(timed(), [])
  })
})
