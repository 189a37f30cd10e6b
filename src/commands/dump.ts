import {FlowctlCommand} from '../cli/command.js'
import {jsonFlag} from '../cli/flags.js'
import {queryFlows} from '../view/query.js'
import {writeFlowJson, writeFlowTable} from '../view/render.js'
import {scopeFromFlags, selectorFlags} from '../cli/selector-flags.js'

export default class Dump extends FlowctlCommand {
  static override summary = 'Print the flows now in the kernel'
  static override description = `Reads the meter's maps through \`bpftool map dump -j\`, streaming: a full map of any size is
printed with bounded memory. A flow is shown once, its counts merged over the maps that hold it
(the live flow map, a drained map the daemon has not committed yet, and the daemon's snapshot
of the flows it holds until they end). Times are local wall-clock time
in the table and epoch milliseconds in JSON.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --netns ns1 -n veth0 -p tcp --json',
    '<%= config.bin %> <%= command.id %> -d 198.18.0.2 -D 53',
  ]

  static override flags = {...selectorFlags, json: jsonFlag}

  async run(): Promise<void> {
    const {flags} = await this.parse(Dump)
    const flows = queryFlows(this.paths, scopeFromFlags(flags))
    if (flags.json) await writeFlowJson(flows, process.stdout)
    else if ((await writeFlowTable(flows, process.stdout)) === 0) this.log('no flows')
  }
}
