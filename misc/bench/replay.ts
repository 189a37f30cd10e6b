/**
 * Figure 8: a collector's spool replayed after an outage, into nfcapd (nfdump 1.7) on loopback
 * with its default receive buffer (net.core.rmem_default). Each run spools FLOWS flows while
 * nfcapd is down, starts it, and lets the exporter replay (the probe first, as the daemon does)
 * at one rate: the default (DEFAULT_REPLAY_BYTES_PER_SECOND), twice and four times it, and
 * unpaced (what flowctl did before: the whole spool at once). The rates run in turn, repeat
 * after repeat. Per rate: the flows nfdump does not count, and the drops of nfcapd's socket.
 *
 * Beside it, the live export without a backlog: one drain's flows, handed over in the drain's
 * 8192-flow batches, into the same nfcapd: unpaced (the default) for drains of 1,000 to 50,000
 * flows (how large a burst nfcapd's default buffer takes), 50,000 paced by sendBytesPerSecond at
 * a fifth, half, once and twice the default replay rate, and 50,000 unpaced into an nfcapd with a
 * larger buffer (-B 2 MiB and 4 MiB, as far as net.core.rmem_max lets it have them).
 */
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {compileTemplates, exporterFor} from '../../src/config/export-settings.js'
import {defaultConfig} from '../../src/config/load.js'
import {freeUdpPort, Nfcapd} from '../../test/helpers/collectors.js'
import {distinctUdpFlows} from '../../test/helpers/synthetic-batch.js'
import {DEFAULT_REPLAY_BYTES_PER_SECOND, type CollectorExporter} from '../../src/ipfix/export/collector-exporter.js'
import {cleanup, log, si, type BenchOptions, type Row} from './util.js'

const BATCH = 8192

/** nfcapd in a directory of its own under `root`, stopped by the cleanup stack should the bench end early. */
async function startNfcapd(root: string, port: number, receiveBuffer?: number): Promise<Nfcapd> {
  const nfcapd = await Nfcapd.start(mkdtempSync(join(root, 'nfcapd-')), port, {receiveBuffer})
  cleanup.push('stopping nfcapd', () => nfcapd.stop())
  return nfcapd
}

function exporter(port: number, replayBytesPerSecond: number, sendBytesPerSecond = 0): CollectorExporter {
  const config = defaultConfig({spoolBytes: 1 << 30, spoolTotalBytes: 1 << 30, templateRefreshSeconds: 3600, replayBytesPerSecond, sendBytesPerSecond})
  return exporterFor(config, {name: 'bench', remote: {host: '127.0.0.1', port}}, compileTemplates(config), {onError: () => {}})
}

/** Spools `total` flows while nothing listens, then replays them into a fresh nfcapd at `rate`: flows lost and socket drops. */
async function replayOnce(root: string, total: number, rate: number): Promise<{lost: number; drops: number; seconds: number}> {
  const port = await freeUdpPort()
  const e = exporter(port, rate)
  await e.open()
  try {
    for (let sent = 0; sent < total; sent += BATCH) {
      e.exportBatch(distinctUdpFlows(Math.min(BATCH, total - sent), sent / BATCH))
      await sleep(2)
      e.service()
    }
    const nfcapd = await startNfcapd(root, port)
    e.service() // the probe
    await sleep(1100)
    const t0 = performance.now()
    e.service() // the probe arrived: the replay
    while (e.stats.spooledMessages > 0 || e.isReplaying) await sleep(5)
    const seconds = (performance.now() - t0) / 1000
    await sleep(1500)
    const drops = nfcapd.socketDrops()
    await nfcapd.stop()
    return {lost: total - (await nfcapd.totals()).flows, drops, seconds}
  } finally {
    e.close()
  }
}

/** One drain's flows (the live path, no backlog), at once or paced at `sendBytesPerSecond`: flows lost and socket drops. */
async function liveOnce(root: string, total: number, sendBytesPerSecond = 0, receiveBuffer?: number): Promise<{lost: number; drops: number}> {
  const port = await freeUdpPort()
  const nfcapd = await startNfcapd(root, port, receiveBuffer)
  const e = exporter(port, DEFAULT_REPLAY_BYTES_PER_SECOND, sendBytesPerSecond)
  await e.open()
  try {
    for (let sent = 0; sent < total; sent += BATCH) e.exportBatch(distinctUdpFlows(Math.min(BATCH, total - sent), sent / BATCH))
    await e.flushed()
    while (e.isReplaying) await sleep(5)
    await sleep(1500)
    const drops = nfcapd.socketDrops()
    await nfcapd.stop()
    return {lost: total - (await nfcapd.totals()).flows, drops}
  } finally {
    e.close()
  }
}

export async function benchReplay(options: BenchOptions): Promise<Row[]> {
  const root = mkdtempSync(join(tmpdir(), 'fct-bench-replay-'))
  cleanup.push('removing the nfcapd directories', () => rmSync(root, {recursive: true, force: true}))
  const total = options.quick ? 100_000 : 250_000
  const base = DEFAULT_REPLAY_BYTES_PER_SECOND
  const rates = [base, 2 * base, 4 * base, Infinity]
  const runs = new Map<number, {lost: number; drops: number; seconds: number}[]>(rates.map((r) => [r, []]))
  // The live export: unpaced drains of these many flows, 50,000 paced at these rates, and
  // 50,000 unpaced into nfcapd with these -B (SO_RCVBUF asked for).
  const bursts = [1000, 2000, 5000, 10_000, 50_000]
  const paces = [base / 5, base / 2, base, 2 * base]
  const buffers = [2 << 20, 4 << 20]
  const live = new Map<string, {lost: number; drops: number}[]>()
  const liveRun = async (key: string, flowCount: number, pace: number, receiveBuffer?: number) => {
    const run = await liveOnce(root, flowCount, pace, receiveBuffer)
    live.set(key, [...(live.get(key) ?? []), run])
    if (options.verbose) log(`live ${key}: lost ${run.lost} flows, ${run.drops} socket drops`)
  }
  for (let repeat = 0; repeat < options.repeats; repeat++) {
    for (const rate of rates) {
      const run = await replayOnce(root, total, rate === Infinity ? 1e15 : rate)
      runs.get(rate)!.push(run)
      if (options.verbose)
        log(`replay ${rate === Infinity ? 'unpaced' : `${si(rate, 'B')}/s`}: lost ${run.lost} flows, ${run.drops} socket drops, ${run.seconds.toFixed(2)} s`)
    }
    for (const n of bursts) await liveRun(`${si(n)} flows unpaced`, n, 0)
    for (const pace of paces) await liveRun(`50 k flows at ${si(pace, 'B')}/s`, 50_000, pace)
    for (const buffer of buffers) await liveRun(`50 k flows unpaced, nfcapd -B ${buffer}`, 50_000, 0, buffer)
  }
  const unpaced = runs.get(Infinity)!
  const lostText = (r: {lost: number}[]) => r.map((x) => x.lost).join(', ')
  const rows: Row[] = rates
    .filter((r) => r !== Infinity)
    .map((rate) => {
      const r = runs.get(rate)!
      const seconds = r.reduce((a, x) => a + x.seconds, 0) / r.length
      return {
        figure: `replay into nfcapd (default buffer), ${si(total)} flows at ${si(rate, 'B')}/s${rate === base ? ' (default)' : ''}`,
        ours: `lost ${lostText(r)} (${r.reduce((a, x) => a + x.drops, 0)} socket drops in all; ${seconds.toFixed(1)} s a replay)`,
        reference: `unpaced: lost ${lostText(unpaced)}`,
        ratio: '',
        target: rate === base ? '0 lost in every run' : '',
        pass: rate === base ? r.every((x) => x.lost === 0 && x.drops === 0) : undefined,
      }
    })
  const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'))
  const advised = `50 k flows at ${si(base / 2, 'B')}/s`
  for (const [key, r] of live) {
    const paced = !key.includes('unpaced')
    rows.push({
      figure: `live export into nfcapd (default buffer), one drain of ${key}`,
      ours: `lost ${lostText(r)} (${r.reduce((a, x) => a + x.drops, 0)} socket drops in all)`,
      reference: paced ? 'sendBytesPerSecond' : key.includes('-B') ? `not paced; net.core.rmem_max ${rmemMax}` : 'not paced (the default)',
      ratio: '',
      // The pace the README advises for nfcapd with its default buffer.
      target: key === advised ? '0 lost in every run' : '',
      pass: key === advised ? r.every((x) => x.lost === 0 && x.drops === 0) : undefined,
    })
  }
  return rows
}
