/**
 * Attaching and detaching the meter, and reporting what is attached.
 *
 * An attach provisions each namespace's meter set (meter-provision.ts), then reconciles its
 * filters with it (meter-filters.ts). Our filters are identified exactly: the pref and handle we
 * recorded, holding a program whose id is one of our meter set's. A filter someone else put there
 * is never touched. Every input is checked before anything changes, and a failure midway undoes
 * what this call did, so no half-attached state is left behind.
 */
import {totalmem} from 'node:os'

import {InvalidInputError, NotFoundError} from '../errors.js'
import type {DirectionName} from '../flow/record.js'
import type {Paths} from '../paths.js'
import type {HeldLock} from '../sys/flock.js'
import {assertNetnsExists, describeNetns, listLinks, netnsLabel, type Link, type NetnsName} from '../sys/netns.js'
import {requireRoot} from '../sys/privileges.js'
import {deleteClsact, deleteFilter, listFilters} from '../sys/tc.js'
import {requirePinRootOnBpffs} from './bpffs.js'
import {validateCapacity} from './compile.js'
import {LAYOUT_VERSION} from './layout.js'
import {unexportedFlows} from './gone-sets.js'
import {findAttachment, isOurFilter, ourProgIds, reconcileFilters, type AttachOutcome, type AttachResult} from './meter-filters.js'
import {provisionMeterSet, type UndoSteps} from './meter-provision.js'
import {flowMemoryAtMost, MeterSet} from './meter-set.js'
import {disableDrops, dropsOn, enableDrops} from './drops.js'
import {carryOverLegacy} from './migrate.js'
import {readSampling, validateSamplingInterval} from './sampling.js'
import {readState, runningDaemon, sameNetns, withStateLock, type Attachment} from './state.js'

export const DEFAULT_PREF = 1
export const DEFAULT_HANDLE = 1

export interface InterfaceTarget {
  netns: NetnsName
  /** An interface name, or '*' for every interface of the namespace but loopback. */
  ifname: string
}

export interface AttachRequest {
  targets: InterfaceTarget[]
  directions: DirectionName[]
  /** Flows per flow map; undefined keeps an existing meter set's, or the default for a new one. */
  capacity?: number
  /** Count 1 packet in N (1: every packet); undefined keeps an existing meter set's, or 1 for a new one. */
  sampling?: number
  pref: number
  handle: number
  /** The tc chain (0, tc's default, unless the older tool's --chain says otherwise). */
  chain?: number
  force: boolean
  /** Check the request and report what would be done, changing nothing (no compile, no load, no tc). */
  dry?: boolean
  /**
   * Called with each namespace's set once it exists, before a filter is added: the daemon puts
   * its collectors' sockets on the set's skip list there, so no export datagram is ever counted.
   */
  beforeFilters?: (set: MeterSet) => void
  /** Count the namespaces' drops per flow (drops.ts): true turns them on, false off, undefined keeps them as they are. */
  drops?: boolean
}

export type {AttachOutcome} from './meter-filters.js'

/** Parses the older tool's `-i NS:IFACE` (or `IFACE` for the root namespace; `root:IFACE` too). */
export function parseLegacyInterface(spec: string): InterfaceTarget {
  const parts = spec.split(':')
  if (parts.length === 1 && parts[0]) return {netns: null, ifname: parts[0]}
  if (parts.length === 2 && parts[0] && parts[1]) return {netns: parts[0] === 'root' ? null : parts[0], ifname: parts[1]}
  throw new InvalidInputError(`invalid interface '${spec}': expected NETNS:IFACE, IFACE, or NETNS:*`)
}

/**
 * The interfaces the older tool's `-i NS:DEVREGEX` would have taken for `pattern`: it matched
 * names by unanchored regular expression, so `eth` took eth0 and eth1, and `.` took everything.
 * flowctl keeps exact names (safer: no surprise interfaces); this only explains a name that is not there.
 */
export function legacyRegexMatches(pattern: string, links: readonly {ifname: string}[]): string[] {
  let re: RegExp
  try {
    re = new RegExp(pattern)
  } catch {
    return []
  }
  return links.map((l) => l.ifname).filter((name) => re.test(name))
}

interface ResolvedTarget {
  netns: NetnsName
  link: Link
}

async function resolveTargets(targets: InterfaceTarget[]): Promise<ResolvedTarget[]> {
  const byNetns = new Map<NetnsName, Link[]>()
  const out: ResolvedTarget[] = []
  for (const t of targets) {
    assertNetnsExists(t.netns)
    if (!byNetns.has(t.netns)) byNetns.set(t.netns, await listLinks(t.netns))
    const links = byNetns.get(t.netns)!
    const chosen = t.ifname === '*' ? links.filter((l) => l.ifname !== 'lo') : links.filter((l) => l.ifname === t.ifname)
    if (chosen.length === 0) {
      if (t.ifname === '*') throw new NotFoundError(`${describeNetns(t.netns)} has no interface to meter besides lo`)
      const olderMatches = legacyRegexMatches(t.ifname, links)
      const hint = olderMatches.length
        ? `; the older tool read '${t.ifname}' as a regular expression matching anywhere in a name, which takes ${olderMatches.join(', ')}: flowctl takes exact names, so name those (-i NS:IFACE for each) or use NS:* for all`
        : ''
      throw new NotFoundError(`interface '${t.ifname}' does not exist in ${describeNetns(t.netns)} (it has: ${links.map((l) => l.ifname).join(', ')})${hint}`)
    }
    for (const link of chosen) {
      if (!out.some((o) => sameNetns(o.netns, t.netns) && o.link.ifindex === link.ifindex)) out.push({netns: t.netns, link})
    }
  }
  return out
}

export async function attachMeters(paths: Paths, request: AttachRequest): Promise<AttachOutcome[]> {
  requireRoot('flowctl meter attach')
  if (request.capacity !== undefined) {
    validateCapacity(request.capacity)
    const needed = flowMemoryAtMost(request.capacity)
    if (needed > totalmem()) {
      throw new InvalidInputError(
        `--capacity ${request.capacity} can take up to ${(needed / 2 ** 30).toFixed(1)} GiB of kernel memory when full, more than this machine's ${(totalmem() / 2 ** 30).toFixed(1)} GiB: choose a smaller --capacity`,
      )
    }
  }
  if (request.sampling !== undefined) validateSamplingInterval(request.sampling)
  if (request.directions.length === 0) throw new InvalidInputError('no direction to attach: use --direction ingress, egress or both')
  const resolved = await resolveTargets(request.targets)
  if (request.dry) return planAttach(paths, request, resolved)
  await requirePinRootOnBpffs(paths)
  const filterRequest = {directions: request.directions, pref: request.pref, handle: request.handle, chain: request.chain ?? 0, force: request.force}

  return withStateLock(paths, async (state) => {
    const undo: UndoSteps = []
    const outcomes: AttachOutcome[] = []
    const setLocks: HeldLock[] = []
    try {
      const netnsList = [...new Set(resolved.map((r) => r.netns))]
      for (const netns of netnsList) {
        const provisioned = await provisionMeterSet(paths, state, netns, request, undo, setLocks)
        request.beforeFilters?.(provisioned.set)
        const ifnames = resolved.filter((r) => sameNetns(r.netns, netns)).map((r) => r.link.ifname)
        outcomes.push(...(await reconcileFilters(state, netns, ifnames, provisioned, filterRequest, undo)))
        await applyDrops(paths, provisioned.set, netns, request.drops, undo)
        // A layout-1 meter set moved aside (now, or by an attach cut short): its filters run the
        // new programs by now, so its flows can be carried over.
        await carryOverLegacy(provisioned.set, provisioned.migrationLock)
      }
      return outcomes
    } catch (error) {
      for (const step of undo.reverse()) await step().catch(() => {})
      throw error
    } finally {
      for (const lock of setLocks) lock.release()
    }
  })
}

export interface DetachRequest {
  /** Interfaces to detach; with `all`, every attachment. */
  targets: InterfaceTarget[]
  all: boolean
  directions: DirectionName[]
  /** Only filters at this tc pref / handle / chain (the older tool's flags); any when undefined. */
  pref?: number
  handle?: number
  chain?: number
  /** Report what would be detached, changing nothing. */
  dry?: boolean
}

interface DetachOutcome {
  netns: string
  interface: string
  direction: DirectionName
  result: 'detached' | 'gone' | 'not-ours'
}

export interface DetachReport {
  outcomes: DetachOutcome[]
  /** Meter sets removed because nothing was attached to them any more. */
  removedMeterSets: string[]
  /**
   * Flows not exported yet that went with the removed maps, by namespace (those that held any).
   * Counted only when no daemon runs: a running daemon holds the maps open and exports their
   * flows at its next drain.
   */
  discardedFlows: Record<string, number>
}

export async function detachMeters(paths: Paths, request: DetachRequest): Promise<DetachReport> {
  requireRoot('flowctl meter detach')
  return withStateLock(paths, async (state) => {
    const at = (a: Attachment) =>
      (request.pref === undefined || a.pref === request.pref) &&
      (request.handle === undefined || a.handle === request.handle) &&
      (request.chain === undefined || (a.chain ?? 0) === request.chain)
    const where = [
      request.pref !== undefined && `pref ${request.pref}`,
      request.handle !== undefined && `handle ${request.handle}`,
      request.chain !== undefined && `chain ${request.chain}`,
    ]
      .filter(Boolean)
      .join(', ')
    const selected = state.attachments.filter(
      (a) =>
        request.directions.includes(a.direction) &&
        at(a) &&
        (request.all || request.targets.some((t) => sameNetns(t.netns, a.netns) && (t.ifname === '*' || t.ifname === a.interface))),
    )
    if (!request.all) {
      for (const t of request.targets) {
        if (!selected.some((a) => sameNetns(a.netns, t.netns) && (t.ifname === '*' || a.interface === t.ifname))) {
          throw new NotFoundError(
            `no meter is attached to ${t.ifname === '*' ? 'any interface' : `'${t.ifname}'`} in ${describeNetns(t.netns)}${where ? ` at ${where}` : ''} (see \`flowctl meter status\`)`,
          )
        }
      }
    }
    if (request.dry) {
      const remaining = state.attachments.filter((a) => !selected.includes(a))
      return {
        outcomes: selected.map((a) => ({netns: netnsLabel(a.netns), interface: a.interface, direction: a.direction, result: 'detached' as const})),
        removedMeterSets: MeterSet.list(paths)
          .filter((set) => !remaining.some((a) => sameNetns(a.netns, set.netns)) && (request.all || selected.some((a) => sameNetns(a.netns, set.netns))))
          .map((set) => netnsLabel(set.netns)),
        discardedFlows: {},
      }
    }

    const outcomes: DetachOutcome[] = []
    for (const att of selected) {
      const set = MeterSet.for(paths, att.netns)
      let result: DetachOutcome['result'] = 'detached'
      const alive = await interfaceExists(att.netns, att.interface)
      if (!alive) {
        result = 'gone' // the filter went with the interface or the namespace
      } else {
        const filters = await listFilters(att.netns, att.interface, att.direction)
        const here = filters.find((f) => f.pref === att.pref && f.handle === att.handle && f.chain === (att.chain ?? 0))
        if (isOurFilter(here, ourProgIds(set, att))) {
          await deleteFilter(att.netns, att.interface, att.direction, att.pref, att.handle, att.chain ?? 0)
        } else {
          result = here ? 'not-ours' : 'gone'
        }
      }
      state.attachments = state.attachments.filter((a) => a !== att)
      outcomes.push({netns: netnsLabel(att.netns), interface: att.interface, direction: att.direction, result})

      // The qdisc goes only if we made it, no attachment of ours still uses it, and it is empty.
      const stillUsed = state.attachments.some((a) => sameNetns(a.netns, att.netns) && a.interface === att.interface)
      if (alive && att.qdiscCreated && !stillUsed) {
        const [ing, eg] = await Promise.all([listFilters(att.netns, att.interface, 'ingress'), listFilters(att.netns, att.interface, 'egress')])
        if (ing.length === 0 && eg.length === 0) await deleteClsact(att.netns, att.interface).catch(() => {})
      }
    }

    // A meter set with nothing attached is removed with its maps. A running daemon holds them
    // open: they live on until it has exported their flows. Without one, the flows go with them.
    const removedMeterSets: string[] = []
    const discardedFlows: Record<string, number> = {}
    const daemon = runningDaemon(paths) !== undefined
    for (const set of MeterSet.list(paths)) {
      if (state.attachments.some((a) => sameNetns(a.netns, set.netns))) continue
      if (!request.all && !selected.some((a) => sameNetns(a.netns, set.netns))) continue
      const discarded = daemon ? undefined : unexportedFlows(set)
      await disableDrops(paths, set)
      await set.remove()
      state.meterSets = state.meterSets.filter((m) => !sameNetns(m.netns, set.netns))
      removedMeterSets.push(netnsLabel(set.netns))
      if (discarded) discardedFlows[netnsLabel(set.netns)] = discarded
    }
    return {outcomes, removedMeterSets, discardedFlows}
  })
}

/**
 * Turns a namespace's drops on or off as asked (and, when on, gives the hook the set's sampling
 * interval, which an attach may have changed). An attach that fails later undoes a turning on.
 */
async function applyDrops(paths: Paths, set: MeterSet, netns: NetnsName, drops: boolean | undefined, undo: UndoSteps): Promise<void> {
  const wasOn = dropsOn(set)
  if (drops === false) {
    await disableDrops(paths, set)
    return
  }
  if (!drops && !wasOn) return
  await enableDrops(paths, set, netns, readSampling(set))
  if (!wasOn) {
    undo.push(async () => {
      await disableDrops(paths, set)
    })
  }
}

/**
 * What attaching would do, from the recorded state alone: nothing is compiled, loaded or attached
 * (the older tool's --dry). A filter recorded as ours is taken to be there.
 */
function planAttach(paths: Paths, request: AttachRequest, resolved: ResolvedTarget[]): AttachOutcome[] {
  const state = readState(paths)
  const outcomes: AttachOutcome[] = []
  for (const {netns, link} of resolved) {
    const set = MeterSet.for(paths, netns)
    const samplingInterval = request.sampling ?? (set.exists() && set.layoutVersion() === LAYOUT_VERSION ? readSampling(set) : 1)
    for (const direction of request.directions) {
      const att = findAttachment(state, netns, link.ifname, direction)
      const result: AttachResult = !att ? 'attached' : request.force ? 're-attached' : 'unchanged'
      outcomes.push({netns: netnsLabel(netns), interface: link.ifname, direction, result, progId: att?.progId ?? 0, samplingInterval})
    }
  }
  return outcomes
}

async function interfaceExists(netns: NetnsName, ifname: string): Promise<boolean> {
  try {
    assertNetnsExists(netns)
    return (await listLinks(netns)).some((l) => l.ifname === ifname)
  } catch (error) {
    if (error instanceof NotFoundError) return false
    throw error
  }
}
