import {Flags} from '@oclif/core'

import {detachMeters} from '../../bpf/attach.js'
import {reclaimGoneSets} from '../../bpf/gone-sets.js'
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
daemon, flows not yet exported are discarded with the maps, and detach says how many.

--gone reclaims the meter sets of namespaces that were deleted (\`meter status\` shows them as gone): their
filters went with the namespace, but their pinned maps hold kernel memory until they are removed. It exports
nothing (a running daemon exports what they held at its next drain, as for any detach).`

  static override examples = [
    '<%= config.bin %> <%= command.id %> -n eth0',
    '<%= config.bin %> <%= command.id %> --netns ns1 -n veth0 --direction egress',
    {description: 'Everything in one namespace', command: '<%= config.bin %> <%= command.id %> -i ns1:*'},
    {description: 'Everything flowctl attached', command: '<%= config.bin %> <%= command.id %> --all'},
    {description: 'The meter sets of deleted namespaces', command: '<%= config.bin %> <%= command.id %> --gone'},
  ]

  static override flags = {
    netns: netnsFlag,
    ifname: ifnameFlag,
    interface: legacyInterfaceFlag,
    direction: directionFlag,
    all: Flags.boolean({description: 'detach every meter flowctl attached, in every namespace'}),
    gone: Flags.boolean({description: 'reclaim the meter sets of deleted namespaces (exports nothing)'}),
    pref: Flags.integer({description: 'only the filters at this tc pref', min: 1, max: 65535}),
    handle: Flags.integer({description: 'only the filters with this tc handle (1 to 4294967295)', ...TC_HANDLE}),
    chain: Flags.integer({description: 'only the filters in this tc chain', min: 0, max: 0xffffffff}),
    dry: Flags.boolean({description: 'print what would be detached; change nothing'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(MeterDetach)
    if (flags.gone) return this.reclaimGone(flags)
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

  private async reclaimGone(flags: {all: boolean; netns?: string; ifname?: string[]; interface?: string[]; dry: boolean; json: boolean}): Promise<void> {
    if (flags.all || flags.dry || flags.netns !== undefined || flags.ifname?.length || flags.interface?.length)
      throw new InvalidInputError('--gone takes the meter sets of every deleted namespace: drop --all, --dry, --netns, -n and -i')
    const report = await reclaimGoneSets(this.paths)
    if (flags.json) return this.printJson(report)
    if (report.reclaimed.length === 0) return this.log('no meter set of a deleted namespace to reclaim')
    for (const r of report.reclaimed) {
      const lost = r.discardedFlows ? `; ${r.discardedFlows} ${r.discardedFlows === 1 ? 'flow' : 'flows'} not exported yet went with them` : ''
      this.log(`${r.netns}: namespace gone, maps removed${lost}`)
    }
    const n = report.reclaimed.length
    this.log(
      `reclaimed ${n} meter ${n === 1 ? 'set' : 'sets'} of deleted namespaces; ` +
        (report.daemonRunning ? 'the running daemon exports what they held at its next drain' : 'nothing was exported (no daemon is running)'),
    )
  }
}
