import {Flags} from '@oclif/core'

import type {DumpStats} from '../bpf/bpftool.js'
import {FlowctlCommand} from '../cli/command.js'
import {jsonFlag} from '../cli/flags.js'
import {queryFlows} from '../view/query.js'
import {writeFlowJson, writeFlowTable} from '../view/render.js'
import {scopeFromFlags, selectorFlags} from '../cli/selector-flags.js'

export default class Dump extends FlowctlCommand {
  static override summary = 'Print the flows now in the kernel'
  static override description = `Reads the meter's maps through \`bpftool map dump -j\`, streaming: a full map of any size is
printed with bounded memory. It reads one namespace: --netns NS, or the root namespace when
omitted; --all-netns reads every metered namespace. A flow is shown once, its counts merged over
the maps that hold it (the live flow map, a drained map the daemon has not committed yet, and the
daemon's snapshot of the flows it holds until they end); beside a running daemon, as they were
at one of its drains (a read that a drain crosses is taken again). Times are local wall-clock
time in the table and epoch milliseconds in JSON. A flow counted 1 packet in N (\`meter attach
--sampling N\`) shows its raw count with "(1:N)" beside it, and samplingInterval in JSON. \`-o wide\`
adds the ifindex, VLAN, TOS and raw times, as the older tool did, then the sampling rate;
\`-o json\` is --json (the older tool's flag). An entry deleted while it was being read (a flush
running beside the dump) is skipped, and the count of those is said on stderr.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --netns ns1 -n veth0 -p tcp --json',
    '<%= config.bin %> <%= command.id %> -d 198.18.0.2 -D 53',
    '<%= config.bin %> <%= command.id %> -o wide',
    '<%= config.bin %> <%= command.id %> --all-netns -p udp',
  ]

  static override flags = {
    ...selectorFlags,
    json: jsonFlag,
    output: Flags.string({char: 'o', description: "output format (the older tool's flag)", options: ['normal', 'wide', 'json'], default: 'normal'}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Dump)
    const stats: DumpStats = {vanished: 0}
    const flows = queryFlows(this.paths, scopeFromFlags(flags), stats)
    if (flags.json || flags.output === 'json') await writeFlowJson(flows, process.stdout)
    else if ((await writeFlowTable(flows, process.stdout, {wide: flags.output === 'wide'})) === 0) this.log('no flows')
    if (stats.vanished > 0) {
      process.stderr.write(
        `flowctl: skipped ${stats.vanished} entr${stats.vanished === 1 ? 'y' : 'ies'} deleted while the dump read them (a flush or drain ran beside it)\n`,
      )
    }
  }
}
