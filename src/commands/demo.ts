import {Flags} from '@oclif/core'

import {parseAddressFlag} from '../config/address-schema.js'
import {requireRoot} from '../sys/privileges.js'
import {FlowctlCommand} from '../cli/command.js'
import {jsonFlag} from '../cli/flags.js'
import {isIcmp, protocolName, tcpFlagsText} from '../flow/protocols.js'
import {renderTable} from '../view/table.js'
import {recordsOf, runDemo, type DemoResult} from '../lab/demo.js'
import {countsByInterface, demoMismatches} from '../lab/demo-check.js'

const END_REASONS: Record<number, string> = {1: 'idle', 2: 'active', 3: 'end of flow', 4: 'forced', 5: 'map full'}

export default class Demo extends FlowctlCommand {
  static override summary = 'Run the whole data path in a throw-away lab: meter, daemon, IPFIX, collector'
  static override description = `Builds a small router lab (client, router, server namespaces joined by veths, numbered from
198.18.0.0/15 and fd00::/8), attaches the meter to both router interfaces, runs the daemon
exporting IPFIX to an embedded collector, drives UDP, TCP, ICMP and IPv6 traffic for a few seconds
with a live progress line, and prints what the collector decoded next to what was sent. Exits 1
if any count differs or the IPFIX stream is not conformant. Removes everything it made, also when
interrupted. Nothing it does touches meters or a daemon already running on this machine.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    {
      description: "Longer traffic, with the daemon's metrics served during the run",
      command: '<%= config.bin %> <%= command.id %> --seconds 20 --metrics 127.0.0.1:9999',
    },
    {description: 'The sent traffic and decoded records as JSON', command: '<%= config.bin %> <%= command.id %> --json'},
  ]

  static override flags = {
    json: jsonFlag,
    seconds: Flags.integer({description: 'seconds of traffic', default: 4, min: 1, max: 600}),
    metrics: Flags.string({description: "serve the demo daemon's Prometheus metrics on HOST:PORT", helpValue: 'HOST:PORT'}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Demo)
    // Before anything is built: a lab stood up only to fail at the metrics listen is time lost.
    if (flags.metrics !== undefined) parseAddressFlag('--metrics', flags.metrics, 'listen')
    requireRoot('flowctl demo')
    const tty = process.stderr.isTTY && !flags.json
    const say = (line: string) => process.stderr.write(`${tty ? '\r\x1b[K' : ''}${line}\n`)
    let lastProgress = 0
    const result = await runDemo({
      cacheDir: this.paths.cacheDir,
      log: say,
      seconds: flags.seconds,
      metricsListen: flags.metrics ?? null,
      progress: (line) => {
        if (tty) process.stderr.write(`\r\x1b[K${line}`)
        else if (Date.now() - lastProgress >= 1000) {
          lastProgress = Date.now()
          process.stderr.write(`${line}\n`)
        }
      },
    })
    if (tty) process.stderr.write('\n')
    const mismatches = demoMismatches(result)
    if (flags.json) this.printJson({...result, mismatches})
    else this.render(result, mismatches)
    if (mismatches.length || result.conformance.verdict !== 'PASS') process.exitCode = 1
  }

  private render(result: DemoResult, mismatches: string[]): void {
    this.log('\nsent, and what the collector decoded for it at each metered interface:')
    for (const t of result.sent) {
      const flow = `${endpoint(t.src, t.sport ?? 0, t.proto, 'src')} -> ${t.sport === undefined ? t.dst : endpoint(t.dst, t.dport ?? 0, t.proto, 'dst')}`
      const expected = t.packets === undefined ? '' : `: ${t.packets} packets, ${t.bytes} bytes`
      this.log(`  ${t.what} ${flow}${expected}`)
      for (const [where, got] of countsByInterface(recordsOf(result.records, t))) {
        const ok = t.packets === undefined ? '' : got.packets === t.packets && got.bytes === t.bytes ? '  exact' : '  DIFFERS'
        this.log(`      ${where}: ${got.packets} packets, ${got.bytes} bytes${ok}`)
      }
    }
    this.log(`\nevery flow record decoded (${result.records.length}, from ${result.messages} IPFIX messages):`)
    const rows = [...result.records]
      .sort((a, b) => a.start - b.start || a.interface.localeCompare(b.interface))
      .map((r) => [
        r.interface,
        r.direction,
        protocolName(r.proto),
        endpoint(r.src, r.sport, r.proto, 'src'),
        endpoint(r.dst, r.dport, r.proto, 'dst'),
        String(r.packets),
        String(r.bytes),
        r.proto === 6 ? tcpFlagsText(r.tcpFlags) : '',
        END_REASONS[r.endReason] ?? String(r.endReason),
        `${clock(r.start)}-${clock(r.end)}`,
      ])
    for (const line of renderTable(['INTERFACE', 'DIR', 'PROTO', 'SOURCE', 'DESTINATION', 'PACKETS', 'BYTES', 'FLAGS', 'END', 'TIME'], rows, {right: [5, 6]}))
      this.log(`  ${line}`)
    this.log(`\nIPFIX conformance (RFC 7011, judged by the embedded collector): ${result.conformance.verdict}`)
    for (const r of result.conformance.reasons) this.log(`  ${r}`)
    this.log(mismatches.length ? `\ncounts that differ:\n${mismatches.map((m) => `  ${m}`).join('\n')}` : '\nevery count matches what was sent.')
  }
}

function endpoint(address: string, port: number, proto: number, side: 'src' | 'dst'): string {
  const host = address.includes(':') ? `[${address}]` : address
  // ICMP has no ports: its type and code travel in the destination port.
  if (isIcmp(proto)) return side === 'src' ? host : `${host} type ${port >> 8} code ${port & 0xff}`
  return `${host}:${port}`
}

/** Local wall-clock time with milliseconds, 24-hour. */
function clock(ms: number): string {
  const d = new Date(ms)
  const two = (n: number) => String(n).padStart(2, '0')
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`
}
