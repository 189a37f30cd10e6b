/** Flags shared by several commands, so they read the same everywhere. */
import {Flags} from '@oclif/core'

import {parseLegacyInterface, type InterfaceTarget} from '../bpf/attach.js'
import type {DirectionName} from '../flow/record.js'
import {InvalidInputError} from '../errors.js'
import {validateNetnsName, type NetnsName} from '../sys/netns.js'

export const netnsFlag = Flags.string({description: 'network namespace (as in `ip netns list`); the root namespace when omitted', helpValue: 'NS'})

export const ifnameFlag = Flags.string({char: 'n', description: 'interface name (repeatable)', multiple: true, helpValue: 'IFACE'})

export const legacyInterfaceFlag = Flags.string({
  char: 'i',
  description: "NETNS:IFACE, IFACE or NETNS:* (the older tool's form; repeatable)",
  multiple: true,
  helpValue: 'NS:IFACE',
})

export const directionFlag = Flags.string({
  description: 'which side of the interface',
  options: ['ingress', 'egress', 'both'],
  default: 'both',
})

export const jsonFlag = Flags.boolean({description: 'print JSON for programs instead of a table'})

export function directions(value: string): DirectionName[] {
  return value === 'both' ? ['ingress', 'egress'] : [value as DirectionName]
}

export function netnsOf(value: string | undefined): NetnsName {
  return value === undefined || value === '' || value === 'root' ? null : validateNetnsName(value)
}

/** Interface targets from -n (in --netns) and -i NS:IFACE. */
export function interfaceTargets(flags: {netns?: string; ifname?: string[]; interface?: string[]}): InterfaceTarget[] {
  const netns = netnsOf(flags.netns)
  const targets: InterfaceTarget[] = (flags.ifname ?? []).map((ifname) => ({netns, ifname}))
  for (const spec of flags.interface ?? []) {
    const t = parseLegacyInterface(spec)
    // "-i eth0" together with --netns means eth0 in that namespace.
    targets.push(spec.includes(':') ? t : {netns, ifname: t.ifname})
  }
  return targets
}

export function requireTargets(targets: InterfaceTarget[], what: string): void {
  if (targets.length === 0) throw new InvalidInputError(`${what}: name at least one interface with -n IFACE (and --netns NS), or -i NS:IFACE`)
}
