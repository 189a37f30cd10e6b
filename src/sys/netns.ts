/** Network namespaces by name (ip netns), and the interfaces in them. */
import {existsSync, statSync} from 'node:fs'

import {InvalidInputError, NotFoundError} from '../errors.js'
import {run} from './exec.js'

/** A namespace: its `ip netns` name, or null for the root (initial) namespace. */
export type NetnsName = string | null

export function describeNetns(netns: NetnsName): string {
  return netns === null ? 'the root namespace' : `namespace '${netns}'`
}

/** The label used in tables and JSON: the name, or "root". */
export function netnsLabel(netns: NetnsName): string {
  return netns ?? 'root'
}

export function validateNetnsName(name: string): string {
  if (!name || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new InvalidInputError(`invalid namespace name '${name}': expected a name from \`ip netns list\``)
  }
  return name
}

function netnsPath(name: string): string {
  return `/run/netns/${name}`
}

export function assertNetnsExists(netns: NetnsName): void {
  if (netns === null) return
  validateNetnsName(netns)
  if (!existsSync(netnsPath(netns))) {
    throw new NotFoundError(`network namespace '${netns}' does not exist: create it, or pick one from \`ip netns list\``)
  }
}

/** The namespace's inode: tells a namespace from a later one of the same name. (flowctl runs in the root namespace.) */
export function netnsInode(netns: NetnsName): number {
  return statSync(netns === null ? '/proc/self/ns/net' : netnsPath(netns)).ino
}

export interface Link {
  ifindex: number
  ifname: string
  kind?: string
  operstate?: string
  mtu?: number
  /** Its alias (`ip link set DEV alias TEXT`, IF-MIB ifAlias); undefined when it has none. */
  alias?: string
}

interface IpLinkJson {
  ifindex: number
  ifname: string
  ifalias?: string
  operstate?: string
  mtu?: number
  linkinfo?: {info_kind?: string}
}

export async function listLinks(netns: NetnsName): Promise<Link[]> {
  assertNetnsExists(netns)
  const {stdout} = await run('ip', ['-j', '-d', 'link', 'show'], {netns})
  const links = JSON.parse(stdout || '[]') as IpLinkJson[]
  return links.map((l) => ({
    ifindex: l.ifindex,
    ifname: l.ifname,
    kind: l.linkinfo?.info_kind,
    operstate: l.operstate,
    mtu: l.mtu,
    alias: l.ifalias === '' ? undefined : l.ifalias,
  }))
}

/** An interface's counters as the kernel keeps them (bytes at L2: the Ethernet header included). */
export interface LinkCounters {
  rxPackets: number
  rxBytes: number
  txPackets: number
  txBytes: number
}

interface IpLinkStatsJson {
  ifindex: number
  ifname: string
  stats64?: {rx: {packets: number; bytes: number}; tx: {packets: number; bytes: number}}
}

/**
 * The one reader of `ip -s -j link show` output: each interface's counters by ifindex (an
 * interface without stats64, which iproute2 prints for none we meter, is left out).
 */
export function parseLinkCounters(json: string): Map<number, LinkCounters & {ifname: string}> {
  const out = new Map<number, LinkCounters & {ifname: string}>()
  for (const l of JSON.parse(json || '[]') as IpLinkStatsJson[]) {
    if (!l.stats64) continue
    const {rx, tx} = l.stats64
    out.set(l.ifindex, {ifname: l.ifname, rxPackets: rx.packets, rxBytes: rx.bytes, txPackets: tx.packets, txBytes: tx.bytes})
  }
  return out
}

/** The kernel's own counters of every interface in a namespace, by ifindex. */
export async function readLinkCounters(netns: NetnsName): Promise<Map<number, LinkCounters & {ifname: string}>> {
  const {stdout} = await run('ip', ['-s', '-j', 'link', 'show'], {netns, timeoutMs: 10_000})
  return parseLinkCounters(stdout)
}

/** The kernel's own counters of one interface, for comparing with what the meter saw. */
export async function linkCounters(netns: NetnsName, ifname: string): Promise<LinkCounters> {
  const {stdout} = await run('ip', ['-s', '-j', 'link', 'show', 'dev', ifname], {netns, timeoutMs: 10_000})
  const counters = parseLinkCounters(stdout).values().next().value
  if (!counters) throw new NotFoundError(`interface '${ifname}' in ${describeNetns(netns)} has no counters`)
  return {rxPackets: counters.rxPackets, rxBytes: counters.rxBytes, txPackets: counters.txPackets, txBytes: counters.txBytes}
}
