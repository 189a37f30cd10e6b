/**
 * Which meter sets and interfaces a command is about, and the flows in them: the library behind
 * `dump` and `flush`.
 */
import {readMeterSetFlows} from '../bpf/flows.js'
import {MeterSet} from '../bpf/meter-set.js'
import {describeDaemon, runningDaemon} from '../bpf/state.js'
import {FlowStore} from '../bpf/flow-store.js'
import type {DumpStats} from '../bpf/bpftool.js'
import {requireRoot} from '../sys/privileges.js'
import {decodeFlowKey} from '../bpf/layout.js'
import {FlowctlError, NotFoundError} from '../errors.js'
import type {Paths} from '../paths.js'
import {clockOffsetNs} from '../sys/clock.js'
import {assertNetnsExists, describeNetns, listLinks, netnsLabel, type NetnsName} from '../sys/netns.js'
import {toFlow, type Flow} from './flow.js'
import {isEmptySelector, matchesSelector, type FlowSelector} from './selectors.js'

export interface FlowScope {
  /** One namespace (null: the root namespace), or every metered one when undefined. */
  netns?: NetnsName
  /** Interface names to narrow to (within the namespace(s)). */
  interfaces?: string[]
  selector: FlowSelector
}

interface ScopedSet {
  set: MeterSet
  names: Map<number, string>
  selector: FlowSelector
}

/** The meter sets a scope covers, with their interface names and the selector narrowed to its interfaces. */
export async function resolveScope(paths: Paths, scope: FlowScope): Promise<ScopedSet[]> {
  let sets = MeterSet.list(paths)
  if (scope.netns !== undefined) {
    assertNetnsExists(scope.netns)
    sets = sets.filter((s) => s.netns === scope.netns)
    if (sets.length === 0) {
      const others = scope.netns === null ? ': name a namespace with --netns NS, or take every one with --all-netns' : ''
      throw new NotFoundError(`no meter is attached in ${describeNetns(scope.netns)}${others} (see \`flowctl meter status\`)`)
    }
  }
  const out: ScopedSet[] = []
  for (const set of sets) {
    let links: {ifindex: number; ifname: string}[] = []
    try {
      links = await listLinks(set.netns)
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error // the namespace is gone; its flows remain readable
    }
    const names = new Map(links.map((l) => [l.ifindex, l.ifname]))
    const selector = {...scope.selector}
    if (scope.interfaces?.length) {
      const ifindexes = links.filter((l) => scope.interfaces!.includes(l.ifname)).map((l) => l.ifindex)
      if (scope.netns !== undefined) {
        const missing = scope.interfaces.filter((n) => !links.some((l) => l.ifname === n))
        if (missing.length) throw new NotFoundError(`interface '${missing[0]}' does not exist in ${describeNetns(set.netns)}`)
      }
      // With -i IFINDEX too, a flow must be on both.
      selector.ifindexes = selector.ifindexes ? ifindexes.filter((i) => selector.ifindexes!.includes(i)) : ifindexes
      if (selector.ifindexes.length === 0) continue
    }
    out.push({set, names, selector})
  }
  return out
}

/**
 * The flows the kernel holds now, in scope, one per flow. Entries deleted while they were being
 * read (a flush beside the dump) are skipped and counted in `stats.vanished`.
 */
export async function* queryFlows(paths: Paths, scope: FlowScope, stats?: DumpStats): AsyncGenerator<Flow> {
  requireRoot('flowctl dump')
  const offset = clockOffsetNs()
  for (const {set, names, selector} of await resolveScope(paths, scope)) {
    const label = netnsLabel(set.netns)
    for await (const f of readMeterSetFlows(set, undefined, stats)) {
      if (matchesSelector(selector, f.key)) yield toFlow(label, names.get(f.key.ifindex), f.key, f.counters, offset)
    }
  }
}

export interface FlushResult {
  removed: number
}

/**
 * Deletes the flows in scope: every flow of the scoped meter sets when the selector is empty. The
 * live flow maps are swapped out first (a map a program writes is never deleted from); packets
 * that arrive during the flush are new flows and stay.
 */
export async function flushFlows(paths: Paths, scope: FlowScope): Promise<FlushResult> {
  requireRoot('flowctl flush')
  // A daemon holds the flows it has not exported yet in its memory; a flush beside it would commit
  // a snapshot without them. Refused even before the daemon has opened this meter set.
  const daemon = runningDaemon(paths)
  if (daemon) {
    throw new FlowctlError(
      `${describeDaemon(daemon)} is exporting the meters pinned under ${paths.pinRoot}: stop it before flushing, or let it export these flows`,
    )
  }
  // Every set in scope locked before any is changed: a refusal leaves all of them as they were.
  const stores: {store: FlowStore; selector: FlowSelector}[] = []
  try {
    for (const {set, selector} of await resolveScope(paths, scope)) stores.push({store: FlowStore.open(set), selector})
    let removed = 0
    for (const {store, selector} of stores) {
      const all = isEmptySelector(selector)
      removed += store.flush(
        all ? null : (family, keys, at) => matchesSelector(selector, decodeFlowKey(family, Buffer.from(keys.buffer, keys.byteOffset + at, keys.length - at))),
      )
    }
    return {removed}
  } finally {
    for (const {store} of stores) store.close()
  }
}
