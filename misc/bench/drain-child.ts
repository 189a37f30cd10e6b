/**
 * The daemon's drain path in a process of its own (so that its peak RSS is the daemon's): a
 * MeterSetDrainer and an exporter made as the daemon makes them (src/config/export-settings.ts). On each
 * {type:'run', flows, active} message it fills the live IPv4 flow map with that many flows (batch
 * updates, 64 k a call), drains once with the daemon's policy, waits until the last datagram has
 * left, and answers with the timings. Idle flows (last seen 20 s ago) are new ones each run and
 * are exported as they are read; active flows (last seen now) are the same `flows` keys every
 * run, so that each drain finds as many live flows in the kernel as the cache holds: they are
 * merged into the cache and written back to the kernel as its snapshot, the steady state of a
 * router with that many live flows. {type:'flush'} exports what the cache holds (a forced
 * drain), {type:'exit'} answers with its peak RSS and exits.
 *
 * argv[2]: JSON {netns, sinkPort}; the meter set is created by the parent under FLOWCTL_PIN_ROOT.
 */
import {readFileSync} from 'node:fs'

import {pathsFromEnv} from '../../src/paths.js'
import {FLOW_KEY4, FLOW_VALUE4, KEY, VALUE} from '../../src/bpf/layout.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {defaultConfig} from '../../src/config/load.js'
import {MeterSetDrainer} from '../../src/daemon/drain.js'
import {compileTemplates, exporterFor} from '../../src/config/export-settings.js'
import {countCreated} from '../../test/helpers/kernel-flows.js'

export interface DrainRun {
  flows: number
  fillMs: number
  drainMs: number
  /** drain() alone, before the socket's queue emptied. */
  syncMs: number
  /** CPU time (user + system) the drain process spent over drainMs. */
  cpuMs: number
  exported: number
  /** drain()'s phases (DrainReport.phases). */
  phases: {swapMs: number; mergeMs: number; expireMs: number; commitMs: number}
  /** Flows held in the cache after the drain. */
  pending: number
  /** Flows exported, by flowEndReason. */
  reasons: Record<number, number>
  octets: number
  messages: number
  sendErrors: number
  /**
   * The process's memory after the run: VmRSS, VmHWM and, of VmRSS, anonymous memory (its own)
   * and pages of files (Node's binary and libraries, shared and reclaimable), in kB; V8's heap
   * and buffers, in bytes.
   */
  memory: {vmRssKb: number; vmHwmKb: number; rssAnonKb: number; rssFileKb: number; heapUsed: number; arrayBuffers: number}
}

export interface DrainExit {
  vmHwmKb: number
  vmRssKb: number
}

const SECOND = 1e9
/**
 * Flows per batch update of a fill. Its buffers are the bench's, not the daemon's: kept small
 * (0.6 MB), so that the process's peak memory is the daemon's drain path.
 */
const FILL_CHUNK = 8192

/** Fields of one reading of /proc/self/status, in kB. */
function status(): (field: string) => number {
  const text = readFileSync('/proc/self/status', 'utf8')
  return (field) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)
    return m ? Number(m[1]) : 0
  }
}

function memoryNow(): DrainRun['memory'] {
  const kb = status()
  const {heapUsed, arrayBuffers} = process.memoryUsage()
  return {vmRssKb: kb('VmRSS'), vmHwmKb: kb('VmHWM'), rssAnonKb: kb('RssAnon'), rssFileKb: kb('RssFile'), heapUsed, arrayBuffers}
}

async function main(): Promise<void> {
  const {netns, sinkPort} = JSON.parse(process.argv[2]) as {netns: string; sinkPort: number}
  const config = defaultConfig()
  const set = MeterSet.for(pathsFromEnv(), netns)
  const exporter = exporterFor(config, {name: `127.0.0.1:${sinkPort}`, remote: {host: '127.0.0.1', port: sinkPort}}, compileTemplates(config))
  await exporter.open()
  const drainer = MeterSetDrainer.open(set, netns, config.observationDomainId, (b) => exporter.exportBatch(b))
  const policy = {idleTimeoutNs: config.idleTimeoutSeconds * SECOND, activeTimeoutNs: config.activeTimeoutSeconds * SECOND}
  // Active flows must stay active for the whole drain, however slow a shared machine makes it
  // (a 1 M-flow drain slowed tenfold would otherwise outlast the 15 s idle timeout).
  const activePolicy = {idleTimeoutNs: 3600 * SECOND, activeTimeoutNs: 7200 * SECOND}
  const maps = set.openFamily(4)
  const keySize = FLOW_KEY4.size
  const valueBytes = FLOW_VALUE4.size
  const keys = Buffer.alloc(FILL_CHUNK * keySize)
  const values = Buffer.alloc(FILL_CHUNK * valueBytes)
  let base = 0

  /**
   * `n` distinct IPv4 TCP flows in the live map: idle ones (last seen 20 s ago, past the idle
   * timeout), new each call; or active ones (last seen now, started 1 s ago), the same each call.
   */
  function fill(n: number, active: boolean): void {
    const now = process.hrtime.bigint()
    const [first, last] = active ? [now - 1_000_000_000n, now] : [now - 30_000_000_000n, now - 20_000_000_000n]
    const from = active ? 0 : base
    let live = maps.openLive()
    if (live.info.maxEntries < n) {
      // The daemon sized the map in place to the last drains (src/daemon/live-maps.ts): a meter
      // whose traffic jumps to n flows at once fills it and counts the rest as not metered. The
      // bench wants all n in the map, as in a map of the set's capacity: one goes in its slot
      // (the one taken out is empty: the last drain took its flows).
      live.close()
      maps.swapOut(undefined, maps.capacity).close()
      live = maps.openLive()
    }
    for (let start = 0; start < n; start += FILL_CHUNK) {
      const count = Math.min(FILL_CHUNK, n - start)
      values.fill(0)
      for (let j = 0; j < count; j++) {
        const i = from + start + j
        const k = j * keySize
        keys.fill(0, k, k + keySize)
        keys.writeUInt32LE(3, k + KEY.ifindex.offset)
        keys[k + KEY.direction.offset] = j & 1
        keys[k + KEY.proto.offset] = 6
        keys.writeUInt16BE(1024 + ((i >>> 16) & 0x3fff), k + KEY.sport.offset)
        keys.writeUInt16BE(active ? 8443 : 443, k + KEY.dport.offset) // never the key of an idle flow
        keys.writeUInt32BE((0xc6120000 | (i & 0xffff)) >>> 0, k + FLOW_KEY4.fields.src.offset) // 198.18.x.y
        keys.writeUInt32BE(0xc6130001, k + FLOW_KEY4.fields.dst.offset) // 198.19.0.1
        const v = j * valueBytes
        values.writeBigUInt64LE(BigInt(10 + (i % 1000)), v + VALUE.packets.offset)
        values.writeBigUInt64LE(BigInt(1500 * (10 + (i % 1000))), v + VALUE.bytes.offset)
        values.writeBigUInt64LE(first, v + VALUE.firstSeenNs.offset)
        values.writeBigUInt64LE(last, v + VALUE.lastSeenNs.offset)
        values[v + VALUE.tcpFlags.offset] = 0x1a
        values[v + VALUE.minTtl.offset] = 63
        values[v + VALUE.maxTtl.offset] = 64
      }
      live.updateBatch(keys, values, count)
    }
    live.close()
    // As the meter counts each flow it creates: a drain takes the live map out only when that count moved.
    countCreated(set, 4, n)
    if (!active) base += n
  }

  process.on('message', (m: {type: string; flows?: number; active?: boolean}) => {
    void (async () => {
      if (m.type === 'run' || m.type === 'flush') {
        const n = m.type === 'run' ? m.flows! : 0
        const t0 = performance.now()
        if (n) fill(n, !!m.active)
        const t1 = performance.now()
        const before = {...exporter.stats}
        const cpu0 = process.cpuUsage()
        const report = await drainer.drain(m.active ? activePolicy : policy, (b) => exporter.exportBatch(b), m.type === 'flush')
        const t2 = performance.now()
        await exporter.flushed()
        const t3 = performance.now()
        const cpu = process.cpuUsage(cpu0)
        const run: DrainRun = {
          flows: n,
          fillMs: t1 - t0,
          drainMs: t3 - t1,
          syncMs: t2 - t1,
          cpuMs: (cpu.user + cpu.system) / 1000,
          exported: Object.values(report.exported).reduce((a, b) => a + b, 0),
          pending: report.pending,
          phases: report.phases,
          reasons: report.exported,
          octets: exporter.stats.octets - before.octets,
          messages: exporter.stats.messages - before.messages,
          sendErrors: exporter.stats.sendErrors - before.sendErrors,
          memory: memoryNow(),
        }
        process.send!(run)
      } else if (m.type === 'exit') {
        const {vmHwmKb, vmRssKb} = memoryNow()
        const exit: DrainExit = {vmHwmKb, vmRssKb}
        maps.close()
        drainer.close()
        exporter.close()
        process.send!(exit, () => process.exit(0))
      }
    })().catch((error: Error) => {
      process.send!({error: error.stack ?? error.message})
    })
  })
  process.on('disconnect', () => process.exit(0))
  process.send!({ready: true})
}

main().catch((error: Error) => {
  process.stderr.write(`${error.stack ?? error.message}\n`)
  process.exit(1)
})
