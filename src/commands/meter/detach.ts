import {Flags} from '@oclif/core'

import {detachMeters} from '../../bpf/attach.js'
import {FlowctlCommand} from '../../cli/command.js'
import {InvalidInputError} from '../../errors.js'
import {directionFlag, directions, ifnameFlag, interfaceTargets, jsonFlag, legacyInterfaceFlag, netnsFlag, netnsOf} from '../../cli/flags.js'

export default class MeterDetach extends FlowctlCommand {
  static override summary = 'Detach the flow meter'
  static override description = `Removes only flowctl's own filters (by the pref, handle and program id it recorded), the clsact
qdisc only if flowctl created it and it is now empty, and the pinned maps of a namespace once
nothing is attached there. Flows not yet exported are discarded with the maps.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> -n eth0',
    '<%= config.bin %> <%= command.id %> --netns ns1 -n veth0 --direction egress',
    {description: 'Everything in one namespace', command: '<%= config.bin %> <%= command.id %> -i ns1:*'},
    {description: 'Everything flowctl attached', command: '<%= config.bin %> <%= command.id %> --all'},
  ]

  static override flags = {
    netns: netnsFlag,
    ifname: ifnameFlag,
    interface: legacyInterfaceFlag,
    direction: directionFlag,
    all: Flags.boolean({description: 'detach every meter flowctl attached'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(MeterDetach)
    let targets = interfaceTargets(flags)
    // "--netns ns1" alone means every interface of ns1.
    if (targets.length === 0 && flags.netns !== undefined) targets = [{netns: netnsOf(flags.netns), ifname: '*'}]
    if (!flags.all && targets.length === 0) throw new InvalidInputError('nothing to detach: name interfaces (-n IFACE, -i NS:IFACE), a namespace (--netns NS), or --all')
    const report = await detachMeters(this.paths, {targets, all: flags.all, directions: directions(flags.direction)})
    if (flags.json) return this.printJson(report)
    for (const o of report.outcomes) {
      const note = o.result === 'not-ours' ? 'left alone: the filter there is not ours any more' : o.result === 'gone' ? 'already gone' : 'detached'
      this.log(`${o.netns}:${o.interface}:${o.direction} ${note}`)
    }
    for (const ns of report.removedMeterSets) this.log(`${ns}: maps removed`)
    if (report.outcomes.length === 0) this.log('nothing was attached')
  }
}
