import {Flags} from '@oclif/core'

import {FlowctlCommand} from '../cli/command.js'
import {InvalidInputError} from '../errors.js'
import {jsonFlag} from '../cli/flags.js'
import {flushFlows} from '../view/query.js'
import {scopeFromFlags, selectorFlags} from '../cli/selector-flags.js'
import {isEmptySelector} from '../view/selectors.js'

export default class Flush extends FlowctlCommand {
  static override summary = 'Delete flows from the kernel'
  static override description = `Deletes one flow by its key, every flow matching the selectors, or --all. It acts on one
namespace: --netns NS, or the root namespace when omitted; --all-netns reaches every metered
namespace. Deleting a flow that does not exist is not an error. Packets arriving meanwhile are
never lost: each flow map is made idle before it is emptied. Refused while \`flowctl daemon\` is
exporting the meters (whatever its run directory), and while another flowctl writes the same
meter.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> -p tcp -s 198.18.0.1 -S 40000 -d 198.18.0.2 -D 80',
    '<%= config.bin %> <%= command.id %> --netns ns1 -n veth0 --all',
    {description: 'Every flow of the root namespace', command: '<%= config.bin %> <%= command.id %> --all'},
    {description: 'Every flow of every metered namespace', command: '<%= config.bin %> <%= command.id %> --all --all-netns'},
    {
      description: "The older tool's form: one flow by ifindex and key",
      command: '<%= config.bin %> <%= command.id %> -i 98 -p 6 -s 172.17.0.7 -S 37869 -d 104.21.25.104 -D 80',
    },
  ]

  static override flags = {
    ...selectorFlags,
    all: Flags.boolean({char: 'A', description: 'delete every flow in scope'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Flush)
    const scope = scopeFromFlags(flags)
    const byKey = !isEmptySelector({...scope.selector, direction: undefined})
    const narrowed = byKey || !!flags.ifname?.length || flags.direction !== 'both'
    if (!flags.all && !narrowed) throw new InvalidInputError('nothing to flush: give selectors (-p -s -S -d -D, -i IFINDEX, -n) or --all')
    if (flags.all && byKey)
      throw new InvalidInputError('--all deletes every flow in scope: drop -p/-s/-S/-d/-D/-i, or drop --all to delete only the matching flows')
    const result = await flushFlows(this.paths, scope)
    if (flags.json) return this.printJson(result)
    this.log(`${result.removed} flow${result.removed === 1 ? '' : 's'} removed`)
  }
}
