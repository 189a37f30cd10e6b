/**
 * Many metered namespaces at once, for the many-namespace test and `npm run bench`: a hub
 * namespace with a veth link to each member namespace (quiet: no addresses, no IPv6, no
 * offloads), and UDP flows sent as raw frames from the hub into every member, so that each flow's
 * packets and IP bytes are known here. Frames arrive at each member's `veth0` (ingress) and go
 * no further: the member has no address, forwarding is off, so nothing answers and nothing else
 * is counted.
 *
 * Flow f of member i: UDP 198.<18 + i/256>.<i mod 256>.1:(10000 + f) -> 198.18.255.254:9; its
 * k-th packet carries (f + k) mod 50 bytes of payload. A fleet holds at most 500 members.
 */
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {BpfMap, innerMapId} from '../../src/bpf/libbpf.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {FAMILIES} from '../../src/flow/record.js'
import type {Lab} from '../../src/lab/lab.js'
import type {Paths} from '../../src/paths.js'
import {sendInterfaceFrameFile, writeInterfaceFrameFile, type InterfaceFrame} from './frames.js'
import * as P from './packets.js'

const MAX_MEMBERS = 500
/** The interface of each member that the meter is attached to. */
export const MEMBER_IFNAME = 'veth0'
const DST = '198.18.255.254'
const FIRST_SPORT = 10_000

export interface FleetMember {
  index: number
  netns: string
  /** Its end of the link to the hub, in the hub namespace. */
  hubIfname: string
  mac: string
  hubMac: string
}

/** What a flow must come out as. */
export interface ExpectedFlow {
  member: number
  packets: number
  bytes: number
}

/** The source address of member `i`'s flows. */
function memberSource(i: number): string {
  return `198.${18 + (i >> 8)}.${i & 255}.1`
}

/** The key a collected flow is matched by: its source address and port. */
export function flowKey(src: string, sport: number): string {
  return `${src}:${sport}`
}

/**
 * Runs `task` for 0..count-1, `parallel` at a time: many namespaces are made in a few seconds
 * instead of one after the other.
 */
async function eachLimited(count: number, parallel: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < count) await task(next++)
  }
  await Promise.all(Array.from({length: Math.min(parallel, count)}, worker))
}

/** Sizes (max_entries) of the live flow maps of the meter set of `netns`, IPv4 then IPv6. */
export function liveMapSizes(paths: Paths, netns: string): number[] {
  return FAMILIES.map((f) => {
    const outer = MeterSet.for(paths, netns).openMap(`flows${f}`)
    try {
      const live = BpfMap.openById(innerMapId(outer)!)
      try {
        return live.info.maxEntries
      } finally {
        live.close()
      }
    } finally {
      outer.close()
    }
  })
}

export class Fleet {
  private constructor(
    readonly lab: Lab,
    readonly hub: string,
    readonly members: FleetMember[],
  ) {}

  /** The hub and `count` member namespaces of `lab`, each linked to the hub (removed by lab.destroy()). */
  static async build(lab: Lab, count: number): Promise<Fleet> {
    if (count > MAX_MEMBERS) throw new Error(`a fleet holds at most ${MAX_MEMBERS} members, not ${count}`)
    const hub = await lab.namespace('hub')
    const members: FleetMember[] = new Array<FleetMember>(count)
    await eachLimited(count, 8, async (i) => {
      const netns = await lab.namespace(`m${i}`)
      const pair = await lab.veth(netns, MEMBER_IFNAME, hub, `m${i}`, {quiet: true})
      members[i] = {index: i, netns, hubIfname: pair.b.ifname, mac: pair.a.mac, hubMac: pair.b.mac}
    })
    return new Fleet(lab, hub, members)
  }

  /**
   * Sends `packets` packets of each of `flows` flows into every member, `ratePps` frames a second
   * in all, interleaved (packet k of every flow of every member before packet k + 1 of any), so
   * that every member sees traffic all along. Returns what each flow must come out as, by
   * flowKey(); fails if a member's veth did not receive every frame sent to it.
   */
  async send(flows: number, packets: number, ratePps: number): Promise<Map<string, ExpectedFlow>> {
    const expected = new Map<string, ExpectedFlow>()
    const frames: InterfaceFrame[] = []
    const heads = this.members.map((m) => Buffer.concat([mac(m.mac), mac(m.hubMac), Buffer.from([0x08, 0x00])]))
    for (let k = 0; k < packets; k++) {
      for (let f = 0; f < flows; f++) {
        for (const m of this.members) {
          const src = memberSource(m.index)
          const ip = P.ipv4(17, src, DST, P.udp(FIRST_SPORT + f, 9, Buffer.alloc((f + k) % 50, m.index & 0xff)))
          frames.push({iface: m.index, frame: Buffer.concat([heads[m.index], ip])})
          const key = flowKey(src, FIRST_SPORT + f)
          const e = expected.get(key) ?? {member: m.index, packets: 0, bytes: 0}
          e.packets += 1
          e.bytes += ip.length
          expected.set(key, e)
        }
      }
    }
    const dir = mkdtempSync(join(tmpdir(), 'fct-fleet-frames-'))
    try {
      const file = join(dir, 'frames.bin')
      writeInterfaceFrameFile(file, frames)
      const before = await this.received()
      const sent = await sendInterfaceFrameFile(
        this.hub,
        file,
        this.members.map((m) => m.hubIfname),
        ratePps,
      )
      if (sent !== frames.length) throw new Error(`the sender sent ${sent} of ${frames.length} frames`)
      const after = await this.received()
      const short = this.members.filter((m) => after[m.index] - before[m.index] !== flows * packets)
      if (short.length)
        throw new Error(
          `${short.length} members did not receive all ${flows * packets} frames (${short
            .slice(0, 3)
            .map((m) => `${m.netns}: ${after[m.index] - before[m.index]}`)
            .join(', ')}): lower the rate`,
        )
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
    return expected
  }

  /** Packets each member's veth0 has received, by member index. */
  async received(): Promise<number[]> {
    const counts = new Array<number>(this.members.length)
    await eachLimited(this.members.length, 8, async (i) => {
      counts[i] = (await this.lab.linkStats(this.members[i].netns, MEMBER_IFNAME)).rxPackets
    })
    return counts
  }
}

function mac(text: string): Buffer {
  return Buffer.from(text.replaceAll(':', ''), 'hex')
}
