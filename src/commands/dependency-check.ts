import {FlowctlCommand} from '../cli/command.js'
import {jsonFlag} from '../cli/flags.js'
import {renderTable} from '../view/table.js'
import {checkDependencies} from '../sys/dependencies.js'

export default class DependencyCheck extends FlowctlCommand {
  static override summary = 'Check the tools and kernel flowctl needs'
  static override description = `One line per requirement (clang, kernel, iproute2 and its libbpf, bpftool, libbpf.so.1, a mounted
bpffs, capabilities), each VALID, INVALID or NOT-INSTALLED with the version found and the minimum.
Exits with status 1 if any is not VALID.`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  static override flags = {json: jsonFlag}

  async run(): Promise<void> {
    const {flags} = await this.parse(DependencyCheck)
    const checks = await checkDependencies()
    if (flags.json) this.printJson(checks)
    else {
      const lines = renderTable(
        ['REQUIREMENT', 'FOUND', 'MINIMUM', 'STATUS', 'TO FIX'],
        checks.map((c) => [c.name, c.found ?? '-', c.minimum, c.status, c.hint ?? '']),
      )
      for (const line of lines) this.log(line)
    }
    if (checks.some((c) => c.status !== 'VALID')) process.exitCode = 1
  }
}
