import {Flags} from '@oclif/core'

import {FlowctlCommand} from '../../cli/command.js'
import {jsonFlag} from '../../cli/flags.js'
import {loadConfig} from '../../config/load.js'
import {exportOnce} from '../../daemon/once.js'

export default class IpfixDump extends FlowctlCommand {
  static override summary = "Export what the kernel holds now as IPFIX to the config's collectors, once, then exit"
  static override description = `One drain of every meter the config names, every flow exported now (flowEndReason 4, forced end,
unless another reason applies), sent with the config's templates to each of its collectors, as the
daemon would at shutdown; then it exits (the older tool's \`flowctl ipfix dump\`). The config's flow logs are not
written. It refuses to run beside a running daemon, which exports the same flows.`

  static override examples = ['<%= config.bin %> <%= command.id %> -c config.yaml', '<%= config.bin %> <%= command.id %> -c config.yaml --json']

  static override flags = {
    config: Flags.string({char: 'c', description: 'YAML config with collectors and templates', default: './config.yaml'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(IpfixDump)
    const config = await loadConfig(flags.config)
    const report = await exportOnce(this.paths, config, {log: flags.json ? {log() {}, limited() {}} : undefined})
    if (flags.json) this.printJson(report)
    else this.log(`${report.exported} flows exported to ${config.collectors.length} collector${config.collectors.length === 1 ? '' : 's'}`)
  }
}
