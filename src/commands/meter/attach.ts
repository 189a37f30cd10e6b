import {Flags} from '@oclif/core'

import {attachMeters, DEFAULT_HANDLE, DEFAULT_PREF} from '../../bpf/attach.js'
import {MIN_CAPACITY} from '../../bpf/compile.js'
import {MAX_SAMPLING_INTERVAL, MIN_SAMPLING_INTERVAL} from '../../bpf/sampling.js'
import {FlowctlCommand} from '../../cli/command.js'
import {directionFlag, directions, ifnameFlag, interfaceTargets, jsonFlag, legacyInterfaceFlag, netnsFlag, requireTargets} from '../../cli/flags.js'
import {TC_HANDLE} from '../../sys/tc.js'

export default class MeterAttach extends FlowctlCommand {
  static override summary = 'Compile the flow meter and attach it to interfaces'
  static override description = `Compiles bpf/ with clang (once per source and options; the object is cached by content hash),
adds a clsact qdisc where there is none, and attaches the meter with \`tc filter ... bpf da\`.
The meter never changes a packet or its fate. Attaching again is a no-op ("unchanged");
--force re-attaches, loading a newer program onto the same maps without losing their flows, and
carries a meter made by an older flowctl (kernel layout 1, 2 or 3) over to this one, losing no count.

--sampling N counts 1 packet in N, chosen at random by the meter before it parses the packet, so
that a packet it skips costs next to nothing: for a busy router, or one under a flood of new
flows. Counts stay raw (collectors scale them by N), and every flow records the N it was counted
at. It applies to the whole namespace's meter. Given again on an attached namespace it changes N
in place, at the next packet, with no --force: flows counted at the old rate keep their records,
and new records start at the new rate. Without it, an attached meter keeps its rate and a new
one counts every packet (1). A daemon whose config gives the namespace's meter "sampling: N"
sets that rate when it finds the meter and on every reload.

--drops also counts the packets the kernel drops in the namespace, per flow and with the kernel's
reason (a firewall rule, no route, an expired TTL, too big with DF set, a full queue...): one
program on the kfree_skb tracepoint for the whole host, loaded with the first namespace that asks
for it and removed with the last (--no-drops, or detach). The daemon exports them as
droppedPacketDeltaCount / droppedOctetDeltaCount with a dropped forwardingStatus (see
docs/drop-reasons.md). Without the flag, an attached meter keeps drops as they are (off for a new one).`

  static override examples = [
    {description: 'Meter eth0 and eth1 of the root namespace, both directions', command: '<%= config.bin %> <%= command.id %> -n eth0 -n eth1'},
    {
      description: 'Meter veth0 in namespace ns1, ingress only, for up to a million flows',
      command: '<%= config.bin %> <%= command.id %> --netns ns1 -n veth0 --direction ingress --capacity 1000000',
    },
    {
      description: 'Count 1 packet in 100 on eth0 (or change the rate of an attached meter)',
      command: '<%= config.bin %> <%= command.id %> -n eth0 --sampling 100',
    },
    {description: 'Meter eth0 and count its drops per flow, with their reasons', command: '<%= config.bin %> <%= command.id %> -n eth0 --drops'},
    {description: "The older tool's form", command: '<%= config.bin %> <%= command.id %> -i ns1:veth0'},
    {description: 'What would be attached, changing nothing', command: '<%= config.bin %> <%= command.id %> -i ns1:veth0 --dry'},
  ]

  static override flags = {
    netns: netnsFlag,
    ifname: ifnameFlag,
    interface: legacyInterfaceFlag,
    direction: directionFlag,
    capacity: Flags.integer({
      description: `flows each flow map holds, per namespace and address family (default 1048576, at least ${MIN_CAPACITY}; memory is taken per flow as flows arrive; fixed once attached)`,
    }),
    'interface-max-flow-limit': Flags.integer({
      char: 'l',
      description: `the older tool's map size; flowctl's maps are per namespace, so this sets --capacity, raised to ${MIN_CAPACITY} if smaller (said on stderr)`,
      exclusive: ['capacity'],
      min: 1,
    }),
    sampling: Flags.integer({
      description: `count 1 packet in N, at random, per namespace (1: every packet, the default for a new meter; up to ${MAX_SAMPLING_INTERVAL}); on an attached meter, changes its rate in place`,
      helpValue: 'N',
      min: MIN_SAMPLING_INTERVAL,
      max: MAX_SAMPLING_INTERVAL,
    }),
    pref: Flags.integer({description: 'tc filter preference (lower runs first)', default: DEFAULT_PREF, min: 1, max: 65535}),
    handle: Flags.integer({description: 'tc filter handle, from 1 to 4294967295 (0xffffffff)', default: DEFAULT_HANDLE, ...TC_HANDLE}),
    chain: Flags.integer({
      description: 'tc filter chain; tc runs only chain 0 unless a filter there jumps to another (goto chain)',
      default: 0,
      min: 0,
      max: 0xffffffff,
    }),
    drops: Flags.boolean({
      description: "also count the namespace's dropped packets per flow, with the kernel's reason (--no-drops: stop); kept as it is when not given",
      allowNo: true,
    }),
    force: Flags.boolean({char: 'f', description: 're-attach even when the same program is attached'}),
    dry: Flags.boolean({description: 'check the request and print what would be attached; change nothing'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(MeterAttach)
    const targets = interfaceTargets(flags)
    requireTargets(targets, 'nothing to attach')
    let capacity = flags.capacity
    const limit = flags['interface-max-flow-limit']
    if (limit !== undefined) {
      capacity = Math.max(limit, MIN_CAPACITY)
      const raised = capacity === limit ? '' : ` (${limit} is below the smallest map flowctl builds)`
      process.stderr.write(
        `flowctl: --interface-max-flow-limit ${limit}: using a capacity of ${capacity} flows per map, per namespace and address family${raised}\n`,
      )
    }
    if (flags.chain !== 0) {
      process.stderr.write(`flowctl: chain ${flags.chain}: the meter sees packets only if a filter of chain 0 jumps there (action goto chain ${flags.chain})\n`)
    }
    const outcomes = await attachMeters(this.paths, {
      targets,
      directions: directions(flags.direction),
      capacity,
      sampling: flags.sampling,
      pref: flags.pref,
      handle: flags.handle,
      chain: flags.chain,
      force: flags.force,
      dry: flags.dry,
      drops: flags.drops,
    })
    if (flags.json) return this.printJson(flags.dry ? outcomes.map((o) => ({...o, dry: true})) : outcomes)
    for (const o of outcomes) {
      const sampling = o.samplingInterval > 1 ? `, sampling 1:${o.samplingInterval}` : ''
      if (flags.dry) this.log(`${o.netns}:${o.interface}:${o.direction} would be ${o.result}${sampling} (dry run: nothing changed)`)
      else this.log(`${o.netns}:${o.interface}:${o.direction} ${o.result} (program ${o.progId}${sampling})`)
    }
  }
}
