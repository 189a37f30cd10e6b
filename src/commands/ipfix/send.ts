import {setTimeout as sleep} from 'node:timers/promises'

import {Flags} from '@oclif/core'

import {FlowctlCommand} from '../../cli/command.js'
import {FlowctlError} from '../../errors.js'
import {jsonFlag} from '../../cli/flags.js'
import {loadConfig} from '../../config/load.js'
import {exporterFor} from '../../config/export-settings.js'
import {flowFileTemplate, loadFlowFile} from '../../ipfix/export/flow-file.js'

export default class IpfixSend extends FlowctlCommand {
  static override summary = 'Send flows written in YAML to the collectors of a config'
  static override description = `Sends the config's templates, then the flows of FLOWS.yaml as data records, to every collector
of the config. For testing collectors and templates. A template may name any registry element,
also those the meter cannot fill (BGP AS numbers, prefix lengths...): the flow file gives their
values. A field a flow gives that its template lacks is not sent (as the older tool did); which
ones is said once on stderr. \`flowctl ipfix file\` (the older tool's name) is the same command.`

  static override aliases = ['ipfix:file']

  static override examples = [
    '<%= config.bin %> <%= command.id %> -c config.yaml -f flows.yaml',
    {description: 'What was sent to each collector, as JSON', command: '<%= config.bin %> <%= command.id %> -c config.yaml -f flows.yaml --json'},
  ]

  static override flags = {
    config: Flags.string({char: 'c', description: 'YAML config with collectors and templates', default: './config.yaml'}),
    flows: Flags.string({char: 'f', description: 'YAML file of flowsets', default: './flow.yaml'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(IpfixSend)
    const config = await loadConfig(flags.config, {forFlowFiles: true})
    const flowSets = await loadFlowFile(flags.flows, config.templates)
    const ignored = flowSets.filter((s) => s.ignored.length > 0).map((s) => `${s.ignored.join(', ')} (template ${s.templateId})`)
    if (ignored.length > 0) process.stderr.write(`flowctl: ${flags.flows}: not sent, as their template lacks them: ${ignored.join('; ')}\n`)
    // Flow file templates may name elements the meter cannot fill: their values are the file's.
    const templates = config.templates.map((t) => flowFileTemplate(t.id, t.fields))
    const sent: {collector: string; records: number; messages: number; octets: number; sendErrors: number; undelivered: number}[] = []
    for (const c of config.collectors) {
      const exporter = exporterFor(config, c, templates, {templateRefreshMs: Infinity})
      try {
        await exporter.open()
      } catch (error) {
        throw new FlowctlError(`${c.name}: cannot send to the collector: ${(error as Error).message}`, {cause: error})
      }
      exporter.sendTemplates(config.observationDomainId)
      for (const set of flowSets) exporter.exportRecords(set.templateId, set.records, config.observationDomainId)
      await exporter.flushed()
      // Paced (sendBytesPerSecond): the messages leave in turn, unless the collector refuses.
      while (exporter.isReplaying) await sleep(5)
      exporter.service() // reads a refusal (ICMP port unreachable) that came back meanwhile
      exporter.close()
      const {messages, records, octets, sendErrors, spooledMessages} = exporter.stats
      sent.push({collector: c.name, records, messages, octets, sendErrors, undelivered: spooledMessages})
      const problems = [
        sendErrors ? `${sendErrors} send errors` : '',
        spooledMessages ? `${spooledMessages} messages not delivered (the collector refused)` : '',
      ].filter(Boolean)
      if (!flags.json) this.log(`${c.name}: ${records} records in ${messages} messages (${octets} bytes)${problems.map((p) => `, ${p}`).join('')}`)
    }
    if (flags.json) this.printJson(sent)
  }
}
