import {Flags} from '@oclif/core'

import {attachMeters, DEFAULT_HANDLE, DEFAULT_PREF} from '../../bpf/attach.js'
import {FlowctlCommand} from '../../cli/command.js'
import {directionFlag, directions, ifnameFlag, interfaceTargets, jsonFlag, legacyInterfaceFlag, netnsFlag, requireTargets} from '../../cli/flags.js'

export default class MeterAttach extends FlowctlCommand {
  static override summary = 'Compile the flow meter and attach it to interfaces'
  static override description = `Compiles bpf/ with clang (once per source and options; the object is cached by content hash),
adds a clsact qdisc where there is none, and attaches the meter with \`tc filter ... bpf da\`.
The meter never changes a packet or its fate. Attaching again is a no-op ("unchanged");
--force re-attaches, loading a newer program onto the same maps without losing their flows.`

  static override examples = [
    {description: 'Meter eth0 and eth1 of the root namespace, both directions', command: '<%= config.bin %> <%= command.id %> -n eth0 -n eth1'},
    {description: 'Meter veth0 in namespace ns1, ingress only, for up to a million flows', command: '<%= config.bin %> <%= command.id %> --netns ns1 -n veth0 --direction ingress --capacity 1000000'},
    {description: 'The older tool\'s form', command: '<%= config.bin %> <%= command.id %> -i ns1:veth0'},
  ]

  static override flags = {
    netns: netnsFlag,
    ifname: ifnameFlag,
    interface: legacyInterfaceFlag,
    direction: directionFlag,
    capacity: Flags.integer({description: 'flows each flow map holds, per namespace and address family (default 1048576; memory is taken per flow as flows arrive; fixed once attached)', aliases: ['interface-max-flow-limit']}),
    pref: Flags.integer({description: 'tc filter preference (lower runs first)', default: DEFAULT_PREF, min: 1, max: 65535}),
    handle: Flags.integer({description: 'tc filter handle', default: DEFAULT_HANDLE, min: 1}),
    force: Flags.boolean({char: 'f', description: 're-attach even when the same program is attached'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(MeterAttach)
    const targets = interfaceTargets(flags)
    requireTargets(targets, 'nothing to attach')
    const outcomes = await attachMeters(this.paths, {
      targets,
      directions: directions(flags.direction),
      capacity: flags.capacity,
      pref: flags.pref,
      handle: flags.handle,
      force: flags.force,
    })
    if (flags.json) return this.printJson(outcomes)
    for (const o of outcomes) this.log(`${o.netns}:${o.interface}:${o.direction} ${o.result} (program ${o.progId})`)
  }
}
