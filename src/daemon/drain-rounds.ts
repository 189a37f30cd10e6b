/**
 * How the daemon drains many meter sets in one go, and what it logs of each drain.
 *
 * The sets are drained each in turn, with the first steps (MeterSetDrainer.startDrain: the swaps,
 * whose kernel waits run in libuv's threads) of the next DRAINS_AHEAD started meanwhile: the
 * waits overlap, and a round of drains of many sets takes a few grace periods instead of one per
 * set.
 */
import type {DrainPolicy, DrainReport, DrainStart, ExportSink, MeterSetDrainer} from './drain.js'

/**
 * How often, between drains, the daemon reads each meter set's flow counters (one lookup of a
 * per-CPU array, about 2 µs) to drain a set early whose live map is past half its size: a burst
 * of new flows then finds a larger map within this long (live-maps.ts). Each look wakes the event
 * loop, which costs the daemon more than the reads: at 100 ms one idle set cost 0.6 % of a core,
 * at 250 ms 0.5 %, with none 0.43 % (docs/benchmarks.md, figure 10).
 */
export const FILL_WATCH_MS = 250

/** Meter sets whose drains have started ahead of the one being merged. */
const DRAINS_AHEAD = 8

/** How a drain came about, for its log line. */
export type DrainCause = 'interval' | 'filling'

/**
 * Drains `meters` (label and drainer), each in turn, with the first steps of the next
 * DRAINS_AHEAD started meanwhile. A drain that fails is handed to `failed`; the others' reports
 * are returned in order.
 */
export async function drainInTurn(
  meters: [string, MeterSetDrainer][],
  policy: DrainPolicy,
  sink: ExportSink,
  force: boolean,
  failed: (label: string, drainer: MeterSetDrainer, error: unknown) => void,
): Promise<{label: string; report: DrainReport}[]> {
  const starts: Promise<DrainStart>[] = []
  const begin = (i: number) => {
    if (i >= meters.length) return
    starts[i] = meters[i][1].startDrain()
    starts[i].catch(() => {}) // (awaited in its turn; a failure is handled there)
  }
  for (let i = 0; i < DRAINS_AHEAD; i++) begin(i)
  const out: {label: string; report: DrainReport}[] = []
  for (let i = 0; i < meters.length; i++) {
    begin(i + DRAINS_AHEAD)
    const [label, drainer] = meters[i]
    try {
      out.push({label, report: await drainer.finishDrain(await starts[i], policy, sink, force)})
    } catch (error) {
      failed(label, drainer, error)
    }
  }
  return out
}

/** The meters whose live maps are filling (MeterSetDrainer.filling): worth an early drain. */
export function fillingMeters(drainers: Map<string, MeterSetDrainer>): [string, MeterSetDrainer][] {
  return [...drainers].filter(([, d]) => {
    try {
      return d.filling()
    } catch {
      return false // its pins are gone: the next look at the meters lets it go
    }
  })
}

/**
 * How long after a meter set's last swap or export the observer still hears of its idle drains:
 * longer than the accuracy check's 5 s between readings of the kernel's interface counters, so
 * that one reading comes after the drain that took the last packets (else the kernel's side of the
 * check would stay behind for as long as the set is idle).
 */
export const QUIET_AFTER_MS = 6_000

/**
 * Which drains the daemon's observer (the metrics) hears of: every drain that swapped or exported,
 * the idle ones within QUIET_AFTER_MS of one that took or exported flows, and the first of a run of idle ones (so that
 * the metrics say the meter went quiet); an idle meter set then costs the observer nothing per
 * interval.
 */
export class QuietMeters {
  private readonly quiet = new Set<string>()
  private readonly lastActive = new Map<string, number>()

  constructor(private readonly now: () => number = Date.now) {}

  worthTelling(label: string, report: DrainReport): boolean {
    const exported = exportedCount(report)
    // Packets came (flows taken or ended): the accuracy check wants a reading after them. A swap
    // that took nothing (maps resized to the demand) brought none.
    if (report.taken > 0 || exported > 0) this.lastActive.set(label, this.now())
    if (report.swapped || exported > 0 || report.drops || report.unmeteredDrops) {
      this.quiet.delete(label)
      return true
    }
    if (this.quiet.has(label)) return false
    if (this.now() - (this.lastActive.get(label) ?? -Infinity) >= QUIET_AFTER_MS) this.quiet.add(label)
    return true
  }

  clear(): void {
    this.quiet.clear()
    this.lastActive.clear()
  }
}

/** Flows a drain exported, whatever the reason. */
export function exportedCount(report: Pick<DrainReport, 'exported'>): number {
  return Object.values(report.exported).reduce((a, b) => a + b, 0)
}

/** The fields of a drain's log line (the daemon logs the drains that took or exported flows). */
export function drainLogFields(label: string, report: DrainReport, cause: DrainCause): Record<string, unknown> {
  return {
    netns: label,
    taken: report.taken,
    exported: exportedCount(report),
    byReason: report.exported,
    pending: report.pending,
    ms: Math.round(report.ms * 10) / 10,
    phasesMs: roundedPhases(report.phases),
    ...(report.swapped ? {liveEntries: {ipv4: report.liveEntries[4], ipv6: report.liveEntries[6]}} : {}),
    ...(cause === 'interval' ? {} : {cause}),
  }
}

/** A drain's phases in whole tenths of a millisecond, for the log. */
function roundedPhases(phases: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(phases).map(([k, v]) => [k.replace(/Ms$/, ''), Math.round(v * 10) / 10]))
}
