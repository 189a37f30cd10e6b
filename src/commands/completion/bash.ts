import {FlowctlCommand} from '../../cli/command.js'
import {completionScript} from '../../cli/completion.js'

export default class CompletionBash extends FlowctlCommand {
  static override summary = 'Print the bash completion script'
  static override description = `Load it in the running shell with \`. <(flowctl completion bash)\` (put that line in ~/.bashrc to keep it).
\`flowctl autocomplete bash\` sets it up through a cached file instead.`

  static override examples = ['. <(<%= config.bin %> <%= command.id %>)']

  async run(): Promise<void> {
    await this.parse(CompletionBash)
    process.stdout.write(await completionScript(this.config, 'bash'))
  }
}
