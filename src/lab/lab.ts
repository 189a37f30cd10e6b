/**
 * A lab of network namespaces joined by veth pairs, numbered from 198.18.0.0/15 and fd00::/8 only,
 * for the end-to-end tests and `flowctl demo`. Every namespace is named fct-<random>-<role>, so
 * runs never collide, and `destroy()` removes all of it, also after a failure.
 */
import {randomBytes} from 'node:crypto'
import {existsSync} from 'node:fs'

import {run} from '../sys/exec.js'
import {linkCounters, type LinkCounters} from '../sys/netns.js'

export interface VethOptions {
  /** IPv4 addresses with prefix length, e.g. ['198.18.1.1/24', '198.18.1.2/24']. */
  v4?: [string, string]
  /** IPv6 addresses with prefix length, e.g. ['fd00:1::1/64', 'fd00:1::2/64']. */
  v6?: [string, string]
  /**
   * Exact accounting: static neighbours (no ARP/ND), no IPv6 link-local chatter unless v6 is
   * given, and no TSO/GSO/GRO, so that the veth's own counters count wire packets.
   */
  quiet?: boolean
  /** Leave segmentation offloads on (GSO super-packets reach tc). */
  offloads?: boolean
}

export interface VethPair {
  a: {netns: string; ifname: string; mac: string}
  b: {netns: string; ifname: string; mac: string}
}

let macCounter = 0

/** A locally administered unicast MAC address, different for each link end this process makes. */
export function mac(): string {
  const bytes = randomBytes(4)
  macCounter = (macCounter + 1) & 0xff
  return ['02', macCounter.toString(16).padStart(2, '0'), ...[...bytes].map((b) => b.toString(16).padStart(2, '0'))].join(':')
}

export class Lab {
  readonly id: string
  readonly namespaces: string[] = []
  private destroyed = false

  constructor(id = randomBytes(3).toString('hex')) {
    this.id = id
  }

  /** Creates namespace fct-<id>-<role> with loopback up. */
  async namespace(role: string): Promise<string> {
    const name = `fct-${this.id}-${role}`
    await run('ip', ['netns', 'add', name])
    this.namespaces.push(name)
    await this.exec(name, 'ip', ['link', 'set', 'lo', 'up'])
    // IPv6 duplicate address detection would hold new addresses back for a second.
    await this.sysctl(name, 'net.ipv6.conf.default.accept_dad', '0')
    await this.sysctl(name, 'net.ipv6.conf.all.accept_dad', '0')
    return name
  }

  async exec(netns: string, file: string, args: string[]): Promise<string> {
    return (await run(file, args, {netns})).stdout
  }

  async sysctl(netns: string, key: string, value: string): Promise<void> {
    await this.exec(netns, 'sysctl', ['-q', '-w', `${key}=${value}`])
  }

  /** A veth pair between two namespaces, addressed and up. */
  async veth(netnsA: string, ifA: string, netnsB: string, ifB: string, options: VethOptions = {}): Promise<VethPair> {
    const pair: VethPair = {a: {netns: netnsA, ifname: ifA, mac: mac()}, b: {netns: netnsB, ifname: ifB, mac: mac()}}
    await run('ip', ['link', 'add', ifA, 'netns', netnsA, 'address', pair.a.mac, 'type', 'veth', 'peer', 'name', ifB, 'netns', netnsB, 'address', pair.b.mac])
    await this.configureLink(pair, options)
    return pair
  }

  /**
   * Addresses, neighbours and offloads of the two ends of a link already in their namespaces with
   * the MACs `pair` names (a veth pair, or the TAP devices of a delay line), then each end up.
   */
  async configureLink(pair: VethPair, options: VethOptions = {}): Promise<void> {
    for (const [end, peer, index] of [
      [pair.a, pair.b, 0],
      [pair.b, pair.a, 1],
    ] as const) {
      if (options.quiet && !options.v6) await this.sysctl(end.netns, `net.ipv6.conf.${end.ifname}.disable_ipv6`, '1')
      if (options.quiet && options.v6) {
        await this.sysctl(end.netns, `net.ipv6.conf.${end.ifname}.accept_ra`, '0')
        await this.sysctl(end.netns, `net.ipv6.conf.${end.ifname}.router_solicitations`, '0')
        await this.exec(end.netns, 'ip', ['link', 'set', end.ifname, 'addrgenmode', 'none'])
      }
      if (options.v4) await this.exec(end.netns, 'ip', ['addr', 'add', options.v4[index], 'dev', end.ifname])
      if (options.v6) await this.exec(end.netns, 'ip', ['-6', 'addr', 'add', options.v6[index], 'dev', end.ifname, 'nodad'])
      if (options.quiet) {
        if (options.v4)
          await this.exec(end.netns, 'ip', ['neigh', 'replace', stripPrefix(options.v4[1 - index]), 'lladdr', peer.mac, 'dev', end.ifname, 'nud', 'permanent'])
        if (options.v6)
          await this.exec(end.netns, 'ip', [
            '-6',
            'neigh',
            'replace',
            stripPrefix(options.v6[1 - index]),
            'lladdr',
            peer.mac,
            'dev',
            end.ifname,
            'nud',
            'permanent',
          ])
      }
      if (!options.offloads) {
        await this.exec(end.netns, 'ethtool', ['-K', end.ifname, 'tso', 'off', 'gso', 'off', 'gro', 'off', 'tx-checksumming', 'off'])
      }
      await this.exec(end.netns, 'ip', ['link', 'set', end.ifname, 'up'])
    }
  }

  /** The kernel's own counters of an interface (the one `ip -s -j link` reader in src/sys). */
  linkStats(netns: string, ifname: string): Promise<LinkCounters> {
    return linkCounters(netns, ifname)
  }

  /** Removes every namespace (and with them their interfaces). Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return
    this.destroyed = true
    for (const ns of this.namespaces.reverse()) {
      if (existsSync(`/run/netns/${ns}`)) await run('ip', ['netns', 'del', ns]).catch(() => {})
    }
  }
}

function stripPrefix(address: string): string {
  return address.split('/')[0]
}
