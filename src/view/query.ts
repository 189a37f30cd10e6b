/**
 * Which meter sets and interfaces a command is about, and the flows in them: the library behind
 * `dump` and `flush`.
 */
import {readMeterSetFlows} from '../bpf/flows.js'
import {FAMILIES} from '../flow/record.js'
import type {BpfMap} from '../bpf/libbpf.js'
import {MeterSet} from '../bpf/meter-set.js'
import {runningDaemonPid} from '../bpf/state.js'
import {dumpMap, type DumpStats} from '../bpf/bpftool.js'
import {requireRoot} from '../sys/privileges.js'
import {decodeFlowKey} from '../bpf/layout.js'
import {FlowctlError, NotFoundError} from '../errors.js'
import type {Paths} from '../paths.js'
import {clockOffsetNs} from '../sys/clock.js'
import {assertNetnsExists, describeNetns, listLinks, netnsLabel, type NetnsName} from '../sys/netns.js'
import {toFlow, type Flow} from './flow.js'
import {isEmptySelector, matchesSelector, type FlowSelector} from './selectors.js'

export interface FlowScope {
  /** One namespace, or every metered one when undefined. */
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

async function resolveScope(paths: Paths, scope: FlowScope): Promise<ScopedSet[]> {
  let sets = MeterSet.list(paths)
  if (scope.netns !== undefined) {
    assertNetnsExists(scope.netns)
    sets = sets.filter((s) => s.netns === scope.netns)
    if (sets.length === 0) throw new NotFoundError(`no meter is attached in ${describeNetns(scope.netns)} (see \`flowctl meter status\`)`)
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
 * Deletes the flows in scope: every flow of the scoped meter sets when the selector is empty. A live flow map is never written: each
 * map is first made idle by a swap, then emptied, twice, so that both maps are covered. Packets
 * that arrive during the flush are new flows and stay.
 */
export async function flushFlows(paths: Paths, scope: FlowScope): Promise<FlushResult> {
  requireRoot('flowctl flush')
  const daemon = runningDaemonPid(paths)
  if (daemon) {
    throw new FlowctlError(`flowctl daemon (pid ${daemon}) is exporting these flows: stop it before flushing, or let it export them`)
  }
  const removed = new Set<string>()
  for (const {set, selector} of await resolveScope(paths, scope)) {
    const all = isEmptySelector(selector)
    for (const family of FAMILIES) {
      const maps = set.openFamily(family)
      try {
        const ns = netnsLabel(set.netns)
        for (let pass = 0; pass < 2; pass++) await removeFrom(maps.swap(), all, selector, family, `${ns}/${family}`, removed)
        await removeFrom(maps.pending, all, selector, family, `${ns}/${family}`, removed)
      } finally {
        maps.close()
      }
    }
  }
  return {removed: removed.size}
}

async function removeFrom(map: BpfMap, all: boolean, selector: FlowSelector, family: 4 | 6, tag: string, removed: Set<string>): Promise<void> {
  if (all) {
    const keySize = map.info.keySize
    map.forEachBatch(
      (keys, _values, n) => {
        for (let i = 0; i < n; i++) removed.add(`${tag}/${keys.toString('hex', i * keySize, (i + 1) * keySize)}`)
      },
      {andDelete: true},
    )
    return
  }
  const doomed: Buffer[] = []
  for await (const e of dumpMap(map.path)) {
    if (matchesSelector(selector, decodeFlowKey(family, e.key))) doomed.push(e.key)
  }
  for (const key of doomed) {
    map.delete(key)
    removed.add(`${tag}/${key.toString('hex')}`)
  }
}
