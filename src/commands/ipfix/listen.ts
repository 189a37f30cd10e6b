import {Flags} from '@oclif/core'

import {FlowctlCommand} from '../../cli/command.js'
import {InvalidInputError} from '../../errors.js'
import {COLLECTOR_MEMORY_CEILING_MB, IPFIX_PORT, IpfixCollector, reportRefusals, runUntil} from '../../ipfix/collect/collector.js'
import {ConformanceChecker} from '../../ipfix/collect/conformance.js'
import {DEFAULT_DECODER_LIMITS} from '../../ipfix/collect/decoder.js'
import {formatRecordLine, renderRecordJson} from '../../ipfix/collect/render.js'
import {limitHeapGrowth} from '../../sys/heap.js'

const durationFlag = Flags.custom<number>({
  description: 'stop after this many seconds',
  helpValue: 'SECONDS',
  parse: (input) => {
    const n = Number(input)
    if (!Number.isFinite(n) || n <= 0) return Promise.reject(new InvalidInputError(`invalid --duration '${input}': expected a number of seconds above 0`))
    return Promise.resolve(n)
  },
})()

export default class IpfixListen extends FlowctlCommand {
  static override summary = 'Receive IPFIX over UDP and print every record'
  static override description = `An embedded IPFIX collector (RFC 7011 over UDP): decodes each message with the templates its
exporter sent and prints one line per data record, options records included, as they arrive.
A malformed message is reported on stderr and listening goes on. With --check, every message is
also judged against RFC 7011 (sequence numbers, templates before data, set lengths and padding,
message size, times near the export time, malformed messages); at exit the report goes to stderr
and the exit status is 1 if the exporter failed. Stops on Ctrl-C (SIGINT), SIGTERM, --count or
--duration.

By default it listens on every address of this host (::, IPv6 and IPv4), as a collector must;
--host 127.0.0.1 keeps it to this host. Memory stays bounded whatever arrives, under about ${COLLECTOR_MEMORY_CEILING_MB} MB
resident in all: the templates it keeps take at most ${DEFAULT_DECODER_LIMITS.templateBytes / 2 ** 20} MiB of memory, at most ${DEFAULT_DECODER_LIMITS.templatesPerDomain} per exporter
and observation domain, in at most ${DEFAULT_DECODER_LIMITS.domains} domains and ${DEFAULT_DECODER_LIMITS.exporters} exporters, forgetting the least recently
used (counted at exit). A template of more than ${DEFAULT_DECODER_LIMITS.templateFields} fields, or with a field of length 0, is
refused: one line on stderr (at most one every 10 seconds), a count at exit, and its data shows as
of unknown template. --check judges the last 256 domains heard from one by one. Biflows (RFC 5103):
a field of the reverse PEN 29305 is named as the reverse of its IANA element (reversePacketDeltaCount).`

  static override examples = [
    {description: 'Print what arrives on the IPFIX port', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'One JSON object per record, for programs', command: '<%= config.bin %> <%= command.id %> --port 9995 --json'},
    {description: 'Judge an exporter for a minute', command: '<%= config.bin %> <%= command.id %> --check --duration 60 --max-message-size 1400'},
    {description: 'Wait for the first 10 records on 127.0.0.1 only', command: '<%= config.bin %> <%= command.id %> --host 127.0.0.1 --count 10'},
  ]

  static override flags = {
    host: Flags.string({description: 'address to listen on (:: is every IPv6 and IPv4 address of this host)', default: '::', helpValue: 'ADDRESS'}),
    port: Flags.integer({description: 'UDP port (0: any free port, printed at start)', default: IPFIX_PORT, min: 0, max: 65535}),
    json: Flags.boolean({description: 'print each record as one JSON object per line'}),
    check: Flags.boolean({description: 'judge conformance to RFC 7011; print the report at exit and exit 1 on FAIL'}),
    'max-message-size': Flags.integer({description: 'largest message --check accepts, in bytes', default: 1400, min: 16, max: 65535}),
    count: Flags.integer({description: 'stop after this many records', min: 1, helpValue: 'N'}),
    duration: durationFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(IpfixListen)
    // A flood of templates makes garbage fast; without this the heap reaches several times the
    // templates kept before V8 collects it, and the ceiling above would not hold.
    limitHeapGrowth()
    const checker = flags.check ? new ConformanceChecker({maxMessageSize: flags['max-message-size']}) : undefined
    const collector = new IpfixCollector({host: flags.host, port: flags.port, checker})
    collector.on('malformed', (error, info) => {
      process.stderr.write(`flowctl: malformed IPFIX message from ${info.exporter} (${info.size} bytes): ${error.message}; still listening\n`)
    })
    reportRefusals(collector, (line) => process.stderr.write(`${line}\n`))
    const {host, port} = await collector.start()
    process.stderr.write(`flowctl: listening for IPFIX on udp ${host.includes(':') ? `[${host}]` : host}:${port}\n`)
    await runUntil(collector, {
      count: flags.count,
      durationSeconds: flags.duration,
      onRecord: (record) => {
        process.stdout.write(`${flags.json ? JSON.stringify(renderRecordJson(record)) : formatRecordLine(record)}\n`)
      },
    })
    const {evicted, refused} = collector.decoder.stats()
    if (evicted.templates || evicted.domains || evicted.exporters) {
      process.stderr.write(
        `flowctl: forgot ${evicted.templates} templates, ${evicted.domains} observation domains and ${evicted.exporters} exporters to stay within the limits (least recently used first)\n`,
      )
    }
    if (refused)
      process.stderr.write(
        `flowctl: refused ${refused} template${refused === 1 ? '' : 's'} (over ${DEFAULT_DECODER_LIMITS.templateFields} fields, a field of length 0, or too large)\n`,
      )
    if (checker) {
      for (const line of checker.formatReport()) process.stderr.write(`${line}\n`)
      if (checker.report().verdict === 'FAIL') process.exitCode = 1
    }
  }
}
