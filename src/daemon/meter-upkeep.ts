/**
 * What the daemon reads of and writes to its meters besides their drains: the sampling rate a
 * meter's config asks for, the Observation Domains the meters speak for, and the packets the
 * meters could not record (full maps) per domain, for the exporters' statistics records.
 */
import {disableDrops, dropsOn, enableDrops} from '../bpf/drops.js'
import {readOverflow} from '../bpf/overflow.js'
import {readSampling, setSampling} from '../bpf/sampling.js'
import {withStateLock} from '../bpf/state.js'
import type {Config, MeterSelection} from '../config/config.js'
import type {Paths} from '../paths.js'
import type {MeterSetDrainer} from './drain.js'
import type {Logger} from './log.js'

/**
 * What a meter's entry in the config asks of it, applied when the daemon finds the meter: its
 * sampling rate, and its drops (on a meter with drops on, a rate set here is the drop hook's too).
 */
export function applyMeterConfig(log: Logger, paths: Paths, label: string, drainer: MeterSetDrainer, meter: MeterSelection | undefined): void {
  const sampling = meter?.sampling
  if (sampling !== undefined) applySampling(log, label, drainer, sampling)
  const drops = meter?.drops ?? (sampling !== undefined && dropsOn(drainer.set) ? true : undefined)
  if (drops !== undefined) void applyDrops(log, paths, label, drainer, drops)
}

/** Makes a meter count 1 packet in `n`, as its `sampling:` in the config says, if it does not already. */
function applySampling(log: Logger, label: string, drainer: MeterSetDrainer, n: number): void {
  try {
    const before = readSampling(drainer.set)
    if (before === n) return
    setSampling(drainer.set, n)
    log.log('info', 'sampling-set', {netns: label, from: before, to: n})
  } catch (error) {
    log.limited(`sampling:${label}`, 'error', 'sampling-not-set', {netns: label, sampling: n, error: (error as Error).message})
  }
}

/** Turns a meter's drops on or off, as its `drops:` in the config says, if they are not already. */
async function applyDrops(log: Logger, paths: Paths, label: string, drainer: MeterSetDrainer, on: boolean): Promise<void> {
  try {
    // Under the lock `meter attach` and `detach` take: the hook is loaded and removed with the
    // namespaces that have drops on, which they change too.
    const was = await withStateLock(paths, async () => {
      const before = dropsOn(drainer.set)
      if (on) await enableDrops(paths, drainer.set, drainer.set.netns, readSampling(drainer.set))
      else await disableDrops(paths, drainer.set)
      return before
    })
    if (was !== on) log.log('info', 'drops-set', {netns: label, drops: on})
  } catch (error) {
    log.limited(`drops:${label}`, 'error', 'drops-not-set', {netns: label, drops: on, error: (error as Error).message})
  }
}

/**
 * The Observation Domains a daemon speaks for: its meters' (per-namespace domains included), or,
 * before any meter is found, those the config gives them. A router whose namespaces all have
 * their own domain says nothing under the top-level one: a collector sees only its real domains.
 */
export function domainsInUse(config: Config, drainers: Iterable<MeterSetDrainer>): number[] {
  const found = [...new Set([...drainers].map((d) => d.observationDomainId))]
  if (found.length > 0) return found
  if (config.meters?.length) return [...new Set(config.meters.map((m) => m.observationDomainId ?? config.observationDomainId))]
  return [config.observationDomainId]
}

/** Packets and bytes the meters could not record (full maps), per observation domain. */
export function ignoredByDomain(drainers: Iterable<MeterSetDrainer>): Map<number, {packets: number; bytes: number}> {
  const out = new Map<number, {packets: number; bytes: number}>()
  for (const d of drainers) {
    const counts = readOverflow(d)
    if (!counts) continue // its pins are gone: the next look at the meters lets it go
    const total = out.get(d.observationDomainId) ?? {packets: 0, bytes: 0}
    for (const o of counts) {
      total.packets += o.packets
      total.bytes += o.bytes
    }
    out.set(d.observationDomainId, total)
  }
  return out
}
