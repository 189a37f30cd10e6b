import {FlowctlCommand} from '../command.js'
import {jsonFlag} from '../flags.js'
import {requireRoot} from '../bpf/attach.js'
import {writeFlowTable} from '../flow/render.js'
import {runMeterDemo} from '../lab/demo.js'

export default class Demo extends FlowctlCommand {
  static override summary = 'Run the meter in a throw-away lab and show what it counted'
  static override description = `Builds two network namespaces joined by a veth (198.18.0.0/24, fd00:f10::/64), attaches the
meter, sends UDP, TCP, ICMP and IPv6 traffic, prints the flows the meter counted next to what was
sent, and removes everything it made.`

  static override examples = ['<%= config.bin %> <%= command.id %>']

  static override flags = {json: jsonFlag}

  async run(): Promise<void> {
    const {flags} = await this.parse(Demo)
    requireRoot('flowctl demo')
    const log = (line: string) => (flags.json ? process.stderr.write(`${line}\n`) : this.log(line))
    const result = await runMeterDemo(log)
    if (flags.json) return this.printJson(result)
    this.log('\nsent:')
    for (const s of result.sent) this.log(`  ${s.what}${Number.isNaN(s.packets) ? '' : `: ${s.packets} packets, ${s.bytes} bytes (IP)`}`)
    this.log('\ncounted by the meter:')
    async function* rows() {
      yield* result.flows
    }
    await writeFlowTable(rows(), process.stdout)
  }
}
