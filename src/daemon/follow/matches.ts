/**
 * What the daemon's own meters would take on this machine now: `flowctl config check` warns of an
 * entry that takes no interface yet (not an error: the interface may come later).
 */
import {existsSync, readdirSync} from 'node:fs'

import type {Config} from '../../config/config.js'
import {meterFor} from '../../config/meter-selection.js'
import {listLinks, type NetnsName} from '../../sys/netns.js'
import {InterfaceSelector} from '../../util/name-pattern.js'
import {NETNS_DIR} from './netns-events.js'

/** The `meters:` entries with `interfaces` (by index) that take no interface of any namespace now. */
export async function meterEntriesMatchingNothing(config: Config): Promise<number[]> {
  const meters = config.meters ?? []
  const follow = meters.map((m, i) => ({m, i})).filter(({m}) => m.interfaces)
  if (follow.length === 0) return []
  const matched = new Set<number>()
  const namespaces: NetnsName[] = [null, ...(existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR) : [])]
  for (const netns of namespaces) {
    // The first entry that takes a namespace decides for it, as in the daemon.
    const entry = meterFor(meters, netns)
    if (!entry?.interfaces) continue
    const selector = new InterfaceSelector(entry.interfaces)
    const links = await listLinks(netns).catch(() => [])
    if (links.some((l) => selector.matches(l.ifname))) matched.add(meters.indexOf(entry))
  }
  return follow.filter(({i}) => !matched.has(i)).map(({i}) => i)
}
