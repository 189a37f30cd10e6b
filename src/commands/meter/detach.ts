import {Flags} from '@oclif/core'

import {detachMeters} from '../../bpf/attach.js'
import {FlowctlCommand} from '../../cli/command.js'
import {InvalidInputError} from '../../errors.js'
import {directionFlag, directions, ifnameFlag, interfaceTargets, jsonFlag, legacyInterfaceFlag, netnsFlag, netnsOf} from '../../cli/flags.js'
import {TC_HANDLE} from '../../sys/tc.js'

export default class MeterDetach extends FlowctlCommand {
  static override summary = 'Detach the flow meter'
  static override description = `Removes only flowctl's own filters (by the pref, handle and program id it recorded), the clsact
qdisc only if flowctl created it and it is now empty, and the pinned maps of a namespace once
nothing is attached there. A running daemon holds those maps open: at its next drain it exports
the flows they held (forced end, log meter-gone), and the other namespaces go on. Without a
daemon, flows not yet exported are discarded with the maps, and detach says how many.`

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
    all: Flags.boolean({description: 'detach every meter flowctl attached, in every namespace'}),
    pref: Flags.integer({description: 'only the filters at this tc pref', min: 1, max: 65535}),
    handle: Flags.integer({description: 'only the filters with this tc handle (1 to 4294967295)', ...TC_HANDLE}),
    chain: Flags.integer({description: 'only the filters in this tc chain', min: 0, max: 0xffffffff}),
    dry: Flags.boolean({description: 'print what would be detached; change nothing'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(MeterDetach)
    if (flags.all && (flags.netns !== undefined || flags.ifname?.length || flags.interface?.length)) {
      throw new InvalidInputError(
        '--all detaches every meter of every namespace: drop --all to detach only the named namespace or interfaces, or drop --netns/-n/-i',
      )
    }
    let targets = interfaceTargets(flags)
    // "--netns ns1" alone means every interface of ns1.
    if (targets.length === 0 && flags.netns !== undefined) targets = [{netns: netnsOf(flags.netns), ifname: '*'}]
    if (!flags.all && targets.length === 0)
      throw new InvalidInputError('nothing to detach: name interfaces (-n IFACE, -i NS:IFACE), a namespace (--netns NS), or --all')
    const report = await detachMeters(this.paths, {
      targets,
      all: flags.all,
      directions: directions(flags.direction),
      pref: flags.pref,
      handle: flags.handle,
      chain: flags.chain,
      dry: flags.dry,
    })
    if (flags.json) return this.printJson(flags.dry ? {...report, dry: true} : report)
    const dry = flags.dry ? ' (dry run: nothing changed)' : ''
    for (const o of report.outcomes) {
      const note = flags.dry
        ? 'would be detached'
        : o.result === 'not-ours'
          ? 'left alone: the filter there is not ours any more'
          : o.result === 'gone'
            ? 'already gone'
            : 'detached'
      this.log(`${o.netns}:${o.interface}:${o.direction} ${note}${dry}`)
    }
    for (const ns of report.removedMeterSets) {
      const discarded = report.discardedFlows[ns]
      const lost = discarded ? `; ${discarded} ${discarded === 1 ? 'flow' : 'flows'} not exported yet went with them (no daemon is running to export them)` : ''
      this.log(`${ns}: maps ${flags.dry ? 'would be ' : ''}removed${dry}${lost}`)
    }
    if (report.outcomes.length === 0) this.log('nothing was attached')
  }
}
