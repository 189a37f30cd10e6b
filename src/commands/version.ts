import {FlowctlCommand} from '../cli/command.js'
import {jsonFlag} from '../cli/flags.js'
import {buildInfo} from '../sys/build-info.js'

export default class Version extends FlowctlCommand {
  static override summary = 'Print the version, git commit, Node and kernel'
  static override description = `The same as \`flowctl --version\`. The git commit is that of the checkout flowctl runs from
("-dirty" with local changes; "unknown" for an installed package).`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  static override flags = {json: jsonFlag}

  async run(): Promise<void> {
    const {flags} = await this.parse(Version)
    const info = await buildInfo(this.config.version, this.config.root)
    if (flags.json) return this.printJson(info)
    this.log(`flowctl ${info.version}`)
    this.log(`git commit: ${info.commit}`)
    this.log(`node: ${info.node} (${info.platform})`)
    this.log(`kernel: ${info.kernel}`)
  }
}
