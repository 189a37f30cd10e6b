import {setTimeout as sleep} from 'node:timers/promises'

import {Flags} from '@oclif/core'

import {FlowctlCommand} from '../cli/command.js'
import {jsonFlag} from '../cli/flags.js'
import {scopeFromFlags, selectorFlags} from '../cli/selector-flags.js'
import {renderTable} from '../view/table.js'
import {StateError} from '../errors.js'
import {TOP_GROUPINGS, TopSampler, WATCH_MS, type TopGrouping, type TopSample} from '../view/top.js'

export default class Top extends FlowctlCommand {
  static override summary = 'Show the busiest flows or talkers now, as rates, refreshed every second'
  static override description = `Reads the live flow maps in the kernel (never the daemon's snapshot) and shows, per flow or
aggregated by source, destination, port, protocol or interface, the packets and bytes per second over the last
interval, busiest first. It works beside a running daemon: the daemon swaps each live map out at every drain that finds flows in it,
and top looks at the maps' slots ${WATCH_MS.perSwap} times per drain interval (every ${WATCH_MS.min} to ${WATCH_MS.max} ms), so it holds
every live map the daemon swaps in, and reads each one swapped out to its end: every packet is counted once, at
any drain interval. Should top miss a map anyway (held up for longer than a drain interval), it says so instead
of showing rates that undercount. A flow counted 1 packet in N (\`meter attach --sampling N\`) counts N times:
with sampling, the rates are estimates. By flow, a TCP flow whose handshake the meter timed shows its connection's
round trips as RTT C/S MS: router to client and back / router to server and back, in milliseconds ('-': not
timed, or its handshake came and went between two looks). Press q to quit. With --once it samples twice, one interval apart, prints and
exits (--json for scripts); a missed map makes it fail. It shows one namespace: --netns NS, or the root namespace
when omitted; --all-netns shows every metered namespace. In a namespace with drops on (\`meter attach --drops\`),
the rows also show the packets per second the kernel dropped of their flows and the kernel's reason (read from the
namespace's drops beside the daemon, which takes them at every drain: those rates may undercount).`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --by src --sort packets',
    '<%= config.bin %> <%= command.id %> --netns ns1 -p udp --once --json',
    '<%= config.bin %> <%= command.id %> --all-netns --by interface',
  ]

  static override flags = {
    ...selectorFlags,
    by: Flags.string({description: 'what a row is', options: [...TOP_GROUPINGS], default: 'flow'}),
    sort: Flags.string({description: 'busiest by', options: ['bytes', 'packets'], default: 'bytes'}),
    interval: Flags.integer({description: 'seconds between samples', default: 1, min: 1, max: 60}),
    limit: Flags.integer({description: 'rows shown', default: 20, min: 1}),
    once: Flags.boolean({description: 'sample once over one interval, print, exit'}),
    json: jsonFlag,
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Top)
    const by = flags.by as TopGrouping
    const sort = flags.sort as 'bytes' | 'packets'
    const sampler = await TopSampler.open(this.paths, scopeFromFlags(flags))
    try {
      sampler.prime()
      if (flags.once) {
        await sleep(flags.interval * 1000)
        const sample = sampler.sample(by, sort, flags.limit)
        if (sample.swapsMissed) throw new StateError(`${missedText(sample)}: run it again`)
        if (flags.json) this.printJson(sample)
        else for (const line of render(sample, by)) this.log(line)
        return
      }
      await this.live(sampler, by, sort, flags.interval, flags.limit)
    } finally {
      sampler.close()
    }
  }

  /** Redraws every interval until q (or Ctrl-C). */
  private async live(sampler: TopSampler, by: TopGrouping, sort: 'bytes' | 'packets', interval: number, limit: number): Promise<void> {
    const quit = new AbortController()
    const onKey = (data: Buffer) => {
      const k = data.toString()
      if (k === 'q' || k === 'Q' || k === '\u0003') quit.abort()
    }
    const stdin = process.stdin
    if (stdin.isTTY) stdin.setRawMode(true)
    stdin.on('data', onKey)
    stdin.resume()
    try {
      for (;;) {
        // q ends the wait at once: the timer rejects when aborted.
        await sleep(interval * 1000, undefined, {signal: quit.signal}).catch(() => {})
        if (quit.signal.aborted) break
        const sample = sampler.sample(by, sort, limit)
        process.stdout.write(`\u001b[H\u001b[2J${render(sample, by).join('\n')}\n`)
      }
    } finally {
      stdin.off('data', onKey)
      if (stdin.isTTY) stdin.setRawMode(false)
      stdin.pause()
    }
  }
}

function rate(n: number, unit: string): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} G${unit}`
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M${unit}`
  if (n >= 1e3) return `${(n / 1e3).toFixed(2)} k${unit}`
  return `${n.toFixed(n < 10 ? 1 : 0)} ${unit}`
}

/** Microseconds as milliseconds, to the 0.01 ms. */
function ms(us: number): string {
  return (us / 1000).toFixed(2)
}

/** Why an interval's rates are not shown. */
function missedText(sample: TopSample): string {
  const n = sample.swapsMissed
  return `top missed ${n} live flow map${n === 1 ? '' : 's'} the daemon swapped in and out within the last ${sample.intervalSeconds.toFixed(1)} s (it was held up for longer than a drain interval, or a drain of the daemon failed), so its rates would undercount`
}

function render(sample: TopSample, by: TopGrouping): string[] {
  const title = `flowctl top: rates over the last ${sample.intervalSeconds.toFixed(1)} s from the live flow maps, by ${by} (q quits)`
  if (sample.swapsMissed) return [title, '', `${missedText(sample)}: no rates for this interval`]
  if (sample.rows.length === 0) return [title, '', 'no traffic in the interval']
  // By flow: the TCP round trips of the flow's connection, router to client / router to server.
  const rtt = (r: TopSample['rows'][number]) =>
    r.tcpRttServerMicroseconds === undefined ? '-' : `${ms(r.tcpRttClientMicroseconds!)}/${ms(r.tcpRttServerMicroseconds)}`
  const withRtt = by === 'flow'
  // Namespaces with drops on (meter attach --drops): the drops of the row's flows, and the kernel's reason.
  const drops = sample.rows.some((r) => r.droppedPackets)
  const table = renderTable(
    ['NETNS', by.toUpperCase(), 'BITS/S', 'PACKETS/S', 'FLOWS', ...(withRtt ? ['RTT C/S MS'] : []), ...(drops ? ['DROPS/S', 'DROP REASON'] : [])],
    sample.rows.map((r) => [
      r.netns,
      r.label,
      rate(r.bytesPerSecond * 8, 'b/s'),
      rate(r.packetsPerSecond, 'p/s'),
      String(r.flows),
      ...(withRtt ? [rtt(r)] : []),
      ...(drops ? [r.droppedPackets ? rate(r.droppedPackets / sample.intervalSeconds, 'p/s') : '', r.dropReason ?? ''] : []),
    ]),
    {right: [2, 3, 4, ...(withRtt || drops ? [5] : []), ...(withRtt && drops ? [6] : [])]},
  )
  return [title, '', ...table]
}
