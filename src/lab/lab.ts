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

/** The namespaces of a router lab (Lab.router). */
export interface RouterNamespaces {
  client: string
  router: string
  server: string
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

  /**
   * A router between two hosts, the shape the router-grade tests share:
   *
   *   client c0 — r0 router r1 — s0 server
   *
   * on 198.18.<net>.0/24 (client .2, router .1) and 198.18.<net + 1>.0/24 (router .1, server .2),
   * with `ipv6` fd00:<net>::/64 and fd00:<net + 1>::/64 likewise; quiet links (exact counters;
   * with `offloads`, segmentation offloads on, so that GSO packets cross them), forwarding on, and
   * the hosts' default routes through the router.
   */
  async router(net: number, options: {ipv6?: boolean; offloads?: boolean} = {}): Promise<RouterNamespaces> {
    const ipv6 = options.ipv6 ?? false
    const client = await this.namespace('client')
    const router = await this.namespace('router')
    const server = await this.namespace('server')
    const addresses = (n: number, a: number, b: number): VethOptions => ({
      v4: [`198.18.${n}.${a}/24`, `198.18.${n}.${b}/24`],
      ...(ipv6 ? {v6: [`fd00:${n}::${a}/64`, `fd00:${n}::${b}/64`] as [string, string]} : {}),
      quiet: true,
      offloads: options.offloads,
    })
    await this.veth(client, 'c0', router, 'r0', addresses(net, 2, 1))
    await this.veth(router, 'r1', server, 's0', addresses(net + 1, 1, 2))
    await this.routeThrough(
      router,
      [
        {netns: client, v4: `198.18.${net}.1`, v6: `fd00:${net}::1`},
        {netns: server, v4: `198.18.${net + 1}.1`, v6: `fd00:${net + 1}::1`},
      ],
      ipv6,
    )
    return {client, router, server}
  }

  /** Forwarding on in `router`, and each host's default route through its gateway (the router's address on its link). */
  async routeThrough(router: string, hosts: {netns: string; v4: string; v6: string}[], ipv6: boolean): Promise<void> {
    await this.sysctl(router, 'net.ipv4.ip_forward', '1')
    if (ipv6) await this.sysctl(router, 'net.ipv6.conf.all.forwarding', '1')
    for (const host of hosts) {
      await this.exec(host.netns, 'ip', ['route', 'add', 'default', 'via', host.v4])
      if (ipv6) await this.exec(host.netns, 'ip', ['-6', 'route', 'add', 'default', 'via', host.v6])
    }
  }

  /** The index of an interface of a namespace. */
  async ifindex(netns: string, ifname: string): Promise<number> {
    return (JSON.parse(await this.exec(netns, 'ip', ['-j', 'link', 'show', 'dev', ifname])) as {ifindex: number}[])[0].ifindex
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
