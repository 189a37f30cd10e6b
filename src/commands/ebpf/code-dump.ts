import {FlowctlCommand} from '../../cli/command.js'
import {meterSources} from '../../bpf/compile.js'

export default class EbpfCodeDump extends FlowctlCommand {
  static override summary = 'Print the C source the meter is built from'
  static override description = `Every file of bpf/ (the .c and .h files clang compiles into the meter), each after a
\`/* ==== bpf/NAME ==== */\` line. The meter is compiled from exactly these, with -DFLOWCTL_CAPACITY set
by \`meter attach --capacity\`.`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> > meter-source.c']

  async run(): Promise<void> {
    await this.parse(EbpfCodeDump)
    for (const {name, text} of await meterSources()) {
      process.stdout.write(`/* ==== bpf/${name} ==== */\n`)
      process.stdout.write(text)
      if (text.length > 0 && text[text.length - 1] !== 0x0a) process.stdout.write('\n')
    }
  }
}
