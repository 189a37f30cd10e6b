import {FlowctlCommand} from '../../cli/command.js'
import {completionScript} from '../../cli/completion.js'

export default class CompletionZsh extends FlowctlCommand {
  static override summary = 'Print the zsh completion script'
  static override description = `Load it in the running shell with \`source <(flowctl completion zsh)\` (put that line in ~/.zshrc to keep it).
\`flowctl autocomplete zsh\` sets it up through a cached file instead.`

  static override examples = ['. <(<%= config.bin %> <%= command.id %>)']

  async run(): Promise<void> {
    await this.parse(CompletionZsh)
    process.stdout.write(await completionScript(this.config, 'zsh'))
  }
}
