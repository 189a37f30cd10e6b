import {Flags} from '@oclif/core'

import {FlowctlCommand} from '../../cli/command.js'
import {meterStatus, type MeterStatus} from '../../bpf/status.js'
import {jsonFlag, netnsOf} from '../../cli/flags.js'
import {samplingText} from '../../view/render.js'
import {renderTable} from '../../view/table.js'

export default class MeterStatusCommand extends FlowctlCommand {
  static override summary = 'Show every attached meter'
  static override description = `For each metered interface and direction: its namespace, program id, object digest, attach time,
map path, the flows now in its maps, the maps' capacity, its namespace's packet sampling (1:N: one packet in N
counted; 1:1 counts every packet), whether its drops are counted per flow (DROPS on: \`meter attach --drops\`), the kernel memory its namespace's meter set takes now and at most (with full
flow maps), and packets not metered because the map was full. STATE is attached, missing (the filter is gone: the
interface was removed, or the filter deleted by hand) or gone (the namespace was deleted: its maps hold kernel memory
until \`flowctl meter detach --gone\` reclaims them). A meter set this flowctl cannot read
(made by another version, with another kernel layout) is named on stderr in one line that says what to do, and
the exit status is 1.`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --netns ns1 --json']

  static override flags = {
    netns: Flags.string({
      description: 'only the meters of this network namespace (as in `ip netns list`; root for the root namespace); every namespace when omitted',
      helpValue: 'NS',
    }),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(MeterStatusCommand)
    const {rows, unreadable} = await meterStatus(this.paths, flags.netns === undefined ? undefined : netnsOf(flags.netns))
    // What is readable first, then one line for each set that is not.
    this.render(rows, flags.json === true, unreadable.length > 0)
    for (const line of unreadable) process.stderr.write(`flowctl: ${line}\n`)
    if (unreadable.length) process.exitCode = 1
  }

  private render(rows: MeterStatus[], json: boolean, othersUnreadable: boolean): void {
    if (json) return this.printJson(rows)
    if (rows.length === 0) {
      if (!othersUnreadable) this.log('no meter is attached (see `flowctl meter attach --help`)')
      return
    }
    const table = renderTable(
      ['NETNS', 'INTERFACE', 'DIR', 'STATE', 'PROG', 'DIGEST', 'ATTACHED', 'FLOWS', 'CAPACITY', 'SAMPLING', 'DROPS', 'MEMORY NOW/MAX', 'NOT METERED', 'MAPS'],
      rows.map((r) => [
        r.netns,
        r.interface,
        r.direction,
        r.state,
        String(r.progId),
        r.digest.slice(0, 12),
        new Date(r.attachedAt).toLocaleString(),
        String(r.flows),
        String(r.capacity),
        samplingText(r.samplingInterval),
        r.drops ? 'on' : 'off',
        `${mib(r.memoryBytes)} / ${mib(r.memoryMaxBytes)}`,
        r.overflowPackets ? `${r.overflowPackets} pkts / ${r.overflowBytes} B` : '0',
        r.mapPath,
      ]),
      {right: [7, 8, 9, 11]},
    )
    for (const line of table) this.log(line)
    const gone = [...new Set(rows.filter((r) => r.state === 'gone').map((r) => r.netns))]
    if (gone.length)
      this.log(
        `${gone.length === 1 ? `namespace ${gone[0]} is` : `namespaces ${gone.join(', ')} are`} gone, ` +
          `and ${gone.length === 1 ? 'its meter set holds' : 'their meter sets hold'} kernel memory: \`flowctl meter detach --gone\` reclaims it`,
      )
  }
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`
}
