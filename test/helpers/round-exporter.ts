/**
 * An exporter that sends rounds of flows to one collector, run inside a lab namespace
 * (`nsenter --net=/run/netns/NS -- node round-exporter.js '<json spec>'`) so that the collector's
 * receive buffer errors are the namespace's alone. It works as the daemon does (the exporter
 * from the config's defaults, service() once a second), says on stdout when each round is out
 * (`{"quiet": r}`: the test stops and starts the collector on that cue, never while datagrams are
 * in flight), and once everything has left and counts as arrived prints one line
 * `{"done": ...}` with what it sent and its statistics.
 *
 * Each round's flows leave in slices spread over half the round, the rest of it quiet: the
 * replay after an outage is what is under test, not a burst of the live export (a drain that
 * ends 50,000 flows at once sends them at once, which overruns a collector's default receive
 * buffer by itself; see docs/benchmarks.md).
 */
import {setTimeout as sleep} from 'node:timers/promises'

import {compileTemplates, exporterFor} from '../../src/config/export-settings.js'
import {defaultConfig} from '../../src/config/load.js'
import {distinctUdpFlows} from './synthetic-batch.js'

export interface RoundExporterSpec {
  port: number
  rounds: number
  flowsPerRound: number
  roundMs: number
  sliceFlows: number
  /** The collector's own replay rate; the config's default when left out. */
  replayBytesPerSecond?: number
}

export interface RoundExporterDone {
  sent: {flows: number; packets: number; octets: number}
  /** The most messages the spool held at once. */
  maxSpooled: number
  stats: Record<string, number>
}

function say(line: unknown): void {
  process.stdout.write(`${JSON.stringify(line)}\n`)
}

async function main(spec: RoundExporterSpec): Promise<void> {
  const config = defaultConfig()
  const collector = {name: `127.0.0.1:${spec.port}`, remote: {host: '127.0.0.1', port: spec.port}, replayBytesPerSecond: spec.replayBytesPerSecond}
  const exporter = exporterFor(config, collector, compileTemplates(config), {onError: () => {}})
  await exporter.open()
  let maxSpooled = 0
  const drains = setInterval(() => {
    exporter.service()
    maxSpooled = Math.max(maxSpooled, exporter.stats.spooledMessages)
  }, 1000)
  const sent = {flows: 0, packets: 0, octets: 0}
  const start = Date.now()
  let id = 0
  for (let round = 0; round < spec.rounds; round++) {
    const roundStart = start + round * spec.roundMs
    await sleep(Math.max(0, roundStart - Date.now()))
    const slices = Math.ceil(spec.flowsPerRound / spec.sliceFlows)
    for (let s = 0; s < slices; s++) {
      const b = distinctUdpFlows(Math.min(spec.sliceFlows, spec.flowsPerRound - s * spec.sliceFlows), id++)
      for (let i = 0; i < b.length; i++) {
        sent.packets += b.packets[i]
        sent.octets += b.bytes[i]
      }
      sent.flows += b.length
      exporter.exportBatch(b)
      maxSpooled = Math.max(maxSpooled, exporter.stats.spooledMessages)
      await sleep(Math.max(0, roundStart + ((s + 1) * spec.roundMs) / 2 / slices - Date.now()))
    }
    say({quiet: round})
  }
  // Until the spool is out and what was sent last counts as arrived (no error for a second).
  await exporter.flushed()
  while (exporter.stats.spooledMessages > 0 || exporter.isReplaying || exporter.isDown) await sleep(100)
  await sleep(1500)
  exporter.service()
  clearInterval(drains)
  say({done: {sent, maxSpooled, stats: {...exporter.stats}} satisfies RoundExporterDone})
  exporter.close()
}

main(JSON.parse(process.argv[2]) as RoundExporterSpec).catch((error: Error) => {
  process.stderr.write(`round-exporter: ${error.stack ?? error.message}\n`)
  process.exit(1)
})
