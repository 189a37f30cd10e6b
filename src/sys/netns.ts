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

export function netnsPath(name: string): string {
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
}

interface IpLinkJson {
  ifindex: number
  ifname: string
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
  }))
}

export async function resolveLink(netns: NetnsName, ifname: string, links?: Link[]): Promise<Link> {
  const all = links ?? (await listLinks(netns))
  const link = all.find((l) => l.ifname === ifname)
  if (!link) {
    const names = all.map((l) => l.ifname).join(', ')
    throw new NotFoundError(`interface '${ifname}' does not exist in ${describeNetns(netns)} (it has: ${names || 'none'})`)
  }
  return link
}

/** The kernel's own counters of an interface, for comparing with what the meter saw. */
export async function linkStats(netns: NetnsName, ifname: string): Promise<{rxPackets: number; rxBytes: number; txPackets: number; txBytes: number}> {
  const {stdout} = await run('ip', ['-j', '-s', 'link', 'show', 'dev', ifname], {netns})
  const [link] = JSON.parse(stdout) as {stats64: {rx: {packets: number; bytes: number}; tx: {packets: number; bytes: number}}}[]
  return {
    rxPackets: link.stats64.rx.packets,
    rxBytes: link.stats64.rx.bytes,
    txPackets: link.stats64.tx.packets,
    txBytes: link.stats64.tx.bytes,
  }
}
