/**
 * Meter sets whose namespace is gone: `ip netns delete` took the namespace (and the filters in it)
 * away, but the pinned maps hold its kernel memory until someone removes them. `meter status`
 * marks them, `meter detach --gone` reclaims them, and the daemon releases the ones it follows.
 */
import {existsSync} from 'node:fs'

import type {Paths} from '../paths.js'
import {netnsInode, netnsLabel, type NetnsName} from '../sys/netns.js'
import {FlowStore} from './flow-store.js'
import {disableDrops} from './drops.js'
import {MeterSet} from './meter-set.js'
import {runningDaemon, sameNetns, withStateLock, type AttachState} from './state.js'

/**
 * Whether the named namespace a meter set was made for is gone: its name is no longer in
 * /run/netns, or names a namespace made since (another inode than the one recorded). The root
 * namespace is never gone.
 */
export function netnsGone(state: AttachState, netns: NetnsName): boolean {
  if (netns === null) return false
  if (!existsSync(`/run/netns/${netns}`)) return true
  const recorded = state.meterSets.find((m) => sameNetns(m.netns, netns))?.netnsInode
  try {
    return recorded !== undefined && netnsInode(netns) !== recorded
  } catch {
    return true // deleted between the two looks
  }
}

interface ReclaimedSet {
  netns: string
  /** Flows the set held that no daemon exported, which went with it (counted only when no daemon runs). */
  discardedFlows?: number
}

export interface ReclaimReport {
  reclaimed: ReclaimedSet[]
  /** A running daemon holds the maps it drains open: it exports what they held at its next drain. */
  daemonRunning: boolean
}

/**
 * Removes the pins of every meter set whose namespace is gone (the kernel frees the maps once no
 * one holds them) and forgets their attachments. `only` limits it to those namespaces.
 */
export async function reclaimGoneSets(paths: Paths, only?: (netns: string) => boolean): Promise<ReclaimReport> {
  return withStateLock(paths, async (state) => {
    const daemonRunning = runningDaemon(paths) !== undefined
    const reclaimed: ReclaimedSet[] = []
    for (const set of MeterSet.list(paths)) {
      if (set.netns === null || !netnsGone(state, set.netns) || (only && !only(set.netns))) continue
      const discardedFlows = daemonRunning ? undefined : unexportedFlows(set)
      await disableDrops(paths, set)
      await set.remove()
      state.attachments = state.attachments.filter((a) => !sameNetns(a.netns, set.netns))
      state.meterSets = state.meterSets.filter((m) => !sameNetns(m.netns, set.netns))
      reclaimed.push({netns: netnsLabel(set.netns), ...(discardedFlows ? {discardedFlows} : {})})
    }
    return {reclaimed, daemonRunning}
  })
}

/** Flows a meter set holds that no daemon exported, or undefined if it cannot be read (another layout). */
export function unexportedFlows(set: MeterSet): number | undefined {
  let store: FlowStore
  try {
    store = FlowStore.openReader(set)
  } catch {
    return undefined
  }
  try {
    return store.unexportedFlows()
  } catch {
    return undefined
  } finally {
    store.close()
  }
}
