/** Which namespaces a `meters:` entry of the config takes, by name, `root` or pattern. */
import {netnsMatches, parseNetnsPattern} from '../util/name-pattern.js'
import type {MeterSelection} from './config.js'

/** Whether `meter` takes the namespace `netns` (null: the root namespace). The config checked its pattern. */
export function meterTakes(meter: MeterSelection, netns: string | null): boolean {
  if (meter.netns === null) return netns === null
  return netnsMatches(parseNetnsPattern(meter.netns), netns)
}

/** The first entry of `meters` that takes `netns` (config order decides between overlapping patterns). */
export function meterFor(meters: readonly MeterSelection[] | undefined, netns: string | null): MeterSelection | undefined {
  return meters?.find((m) => meterTakes(m, netns))
}

/** How the config shows an entry: `root`, `customer-a`, `tenant-* (the daemon attaches eth*, !eth9, both ways)`. */
export function describeMeter(meter: MeterSelection): string {
  const netns = meter.netns ?? 'root'
  if (!meter.interfaces) return netns
  const direction = meter.direction ?? 'both'
  const capacity = meter.capacity === undefined ? '' : `, capacity ${meter.capacity}`
  return `${netns} (the daemon attaches ${meter.interfaces.join(', ')}, ${direction === 'both' ? 'both ways' : direction}${capacity})`
}
