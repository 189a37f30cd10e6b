/**
 * The flow selector flags of `dump`, `flush` and `top`, and the scope they describe: one
 * namespace, the root one when --netns is omitted (a flush never reaches further than asked), or
 * every metered namespace with --all-netns.
 */
import {Flags} from '@oclif/core'

import {directionFlag, ifnameFlag, netnsFlag, netnsOf} from './flags.js'
import type {FlowScope} from '../view/query.js'
import {parseSelector} from '../view/selectors.js'

export const selectorFlags = {
  netns: netnsFlag,
  'all-netns': Flags.boolean({description: 'every metered namespace, the root one included (in place of --netns)', exclusive: ['netns']}),
  ifname: ifnameFlag,
  direction: directionFlag,
  proto: Flags.string({char: 'p', description: 'protocol: a name (tcp, udp, icmp, icmpv6, sctp) or number'}),
  ifindex: Flags.integer({char: 'i', description: "interface index, as `dump -o wide` shows it (the older tool's flush -i)", min: 1, max: 0xffffffff}),
  src: Flags.string({char: 's', description: 'source address', aliases: ['saddr']}),
  sport: Flags.string({char: 'S', description: 'source port'}),
  dst: Flags.string({char: 'd', description: 'destination address', aliases: ['daddr']}),
  dport: Flags.string({char: 'D', description: 'destination port (for ICMP: type * 256 + code)'}),
}

export function scopeFromFlags(flags: {
  netns?: string
  'all-netns'?: boolean
  ifname?: string[]
  ifindex?: number
  direction: string
  proto?: string
  src?: string
  sport?: string
  dst?: string
  dport?: string
}): FlowScope {
  return {
    netns: flags['all-netns'] ? undefined : netnsOf(flags.netns),
    interfaces: flags.ifname,
    selector: {...parseSelector(flags), ...(flags.ifindex === undefined ? {} : {ifindexes: [flags.ifindex]})},
  }
}
