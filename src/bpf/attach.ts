/**
 * Attaching and detaching the meter, and reporting what is attached.
 *
 * Our filters are identified exactly: the pref and handle we recorded, holding a program whose id
 * is one of our meter set's. A filter someone else put there is never touched.
 * Every input is checked before anything changes, and a failure midway undoes what this call did,
 * so no half-attached state is left behind.
 */
import {existsSync} from 'node:fs'
import {totalmem} from 'node:os'

import {FlowctlError, InvalidInputError, NotFoundError} from '../errors.js'
import type {Paths} from '../paths.js'
import {makeDirectories} from '../sys/directories.js'
import {requireRoot} from '../sys/privileges.js'
import {describeNetns, listLinks, netnsInode, netnsLabel, type Link, type NetnsName, assertNetnsExists} from '../sys/netns.js'
import {attachBpfFilter, deleteClsact, deleteFilter, ensureClsact, listFilters, type TcFilter} from '../sys/tc.js'
import {compileMeter, DEFAULT_CAPACITY, MIN_CAPACITY, validateCapacity} from './compile.js'
import type {DirectionName} from '../flow/record.js'
import {LAYOUT_VERSION} from './layout.js'
import {flowMemoryAtMost, MeterSet, PROGRAM_NAMES} from './meter-set.js'
import {carryOverLegacy, legacyCapacity, legacyDir, legacyFlowsAtMost, moveLegacyAside} from './migrate.js'
import {claimMeterSet, readState, runningDaemon, sameNetns, withStateLock, type AttachState, type Attachment} from './state.js'
import type {HeldLock} from '../sys/flock.js'
import {requirePinRootOnBpffs} from './bpffs.js'
import {FlowStore} from './flow-store.js'

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
  pref: number
  handle: number
  /** The tc chain (0, tc's default, unless the older tool's --chain says otherwise). */
  chain?: number
  force: boolean
  /** Check the request and report what would be done, changing nothing (no compile, no load, no tc). */
  dry?: boolean
}

export type AttachResult = 'attached' | 'unchanged' | 're-attached'

export interface AttachOutcome {
  netns: string
  interface: string
  direction: DirectionName
  result: AttachResult
  progId: number
}

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

function findAttachment(state: AttachState, netns: NetnsName, ifname: string, direction: DirectionName): Attachment | undefined {
  return state.attachments.find((a) => sameNetns(a.netns, netns) && a.interface === ifname && a.direction === direction)
}

/** Whether a tc filter is one of ours: our program name, and a program id of our meter set. */
function isOurFilter(filter: TcFilter | undefined, ourProgIds: number[]): boolean {
  return !!filter && filter.kind === 'bpf' && filter.progId !== undefined && ourProgIds.includes(filter.progId)
}

function ourProgIds(set: MeterSet, att?: Attachment): number[] {
  const ids: number[] = []
  for (const d of ['ingress', 'egress'] as const) {
    try {
      ids.push(set.progId(d))
    } catch {
      // not pinned (any more)
    }
  }
  if (att) ids.push(att.progId)
  return ids
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
  if (request.directions.length === 0) throw new InvalidInputError('no direction to attach: use --direction ingress, egress or both')
  const resolved = await resolveTargets(request.targets)
  if (request.dry) return planAttach(paths, request, resolved)
  await requirePinRootOnBpffs(paths)
  const chain = request.chain ?? 0

  return withStateLock(paths, async (state) => {
    const undo: (() => Promise<void>)[] = []
    const outcomes: AttachOutcome[] = []
    const setLocks: HeldLock[] = []
    try {
      const netnsList = [...new Set(resolved.map((r) => r.netns))]
      for (const netns of netnsList) {
        const set = MeterSet.for(paths, netns)
        let migrationLock: HeldLock | undefined
        const record = state.meterSets.find((m) => sameNetns(m.netns, netns))
        let capacity = request.capacity ?? DEFAULT_CAPACITY
        let reloaded = false

        let migrating = false
        if (set.exists() && request.force && set.layoutVersion() === 1) {
          // Layout 1: its flows are carried over into a new meter set once the filters run the new
          // programs. The new set keeps its capacity unless asked, if what it holds fits.
          capacity = request.capacity ?? Math.max(MIN_CAPACITY, legacyCapacity(set))
          const flows = legacyFlowsAtMost(set)
          if (flows > 2 * capacity) {
            const needed = Math.max(MIN_CAPACITY, Math.ceil(flows / 2))
            throw new InvalidInputError(
              `the layout-1 meter of ${describeNetns(netns)} may hand over up to ${flows} flows of one address family (what its maps hold, and room for new ones), more than a meter of capacity ${capacity} keeps (${2 * capacity}): carry them over with --capacity ${needed} or more`,
            )
          }
          await moveLegacyAside(set)
          migrating = true
        }
        if (existsSync(legacyDir(set))) {
          // The carried-over flows go into the new set's snapshot: its lock is ours from before
          // it has maps until they are in, so that no daemon starts draining it meanwhile (its
          // commits would drop them).
          makeDirectories(set.dir)
          setLocks.push((migrationLock = claimMeterSet(set)))
        }
        if (set.exists()) {
          set.verifyLayout()
          const existing = set.capacity()
          if (request.capacity !== undefined && request.capacity !== existing) {
            throw new InvalidInputError(
              `the meter of ${describeNetns(netns)} holds ${existing} flows per map; to use --capacity ${request.capacity}, detach all its interfaces first`,
            )
          }
          capacity = existing
        }
        // A meter set made with another snapshot chunk size keeps it (its pending map is reused).
        const compiled = await compileMeter({capacity, pendingChunkBytes: set.exists() ? set.pendingChunkBytes() : undefined}, paths.cacheDir)

        if (!set.exists()) {
          await set.create(compiled.objectPath, capacity)
          undo.push(() => set.remove())
          state.meterSets = state.meterSets.filter((m) => !sameNetns(m.netns, netns))
          state.meterSets.push({
            netns,
            netnsInode: netnsInode(netns),
            digest: compiled.digest,
            capacity,
            layoutVersion: LAYOUT_VERSION,
            createdAt: new Date().toISOString(),
          })
          if (migrating) reloaded = true
        } else if (request.force && record?.digest !== compiled.digest) {
          // A different program (new flowctl or clang): load it onto the same maps.
          await set.reloadPrograms(compiled.objectPath)
          reloaded = true
          if (record) record.digest = compiled.digest
        }
        const digest = state.meterSets.find((m) => sameNetns(m.netns, netns))?.digest ?? compiled.digest

        // With new programs, every filter of this namespace moves to them, not only the named ones.
        const targets = resolved.filter((r) => sameNetns(r.netns, netns))
        const todo: {ifname: string; direction: DirectionName}[] = targets.flatMap((t) =>
          request.directions.map((direction) => ({ifname: t.link.ifname, direction})),
        )
        if (reloaded) {
          for (const a of state.attachments) {
            if (sameNetns(a.netns, netns) && !todo.some((t) => t.ifname === a.interface && t.direction === a.direction)) {
              todo.push({ifname: a.interface, direction: a.direction})
            }
          }
        }

        const links = await listLinks(netns)
        for (const {ifname, direction} of todo) {
          const link = links.find((l) => l.ifname === ifname)
          if (!link) continue
          const att = findAttachment(state, netns, ifname, direction)
          const pref = att?.pref ?? request.pref
          const handle = att?.handle ?? request.handle
          const filterChain = att ? (att.chain ?? 0) : chain
          const progId = set.progId(direction)
          const filters = await listFilters(netns, ifname, direction)
          const here = filters.find((f) => f.pref === pref && f.handle === handle && f.chain === filterChain)
          const ours = isOurFilter(here, ourProgIds(set, att))

          if (att && ours && here!.progId === progId && !request.force) {
            outcomes.push({netns: netnsLabel(netns), interface: ifname, direction, result: 'unchanged', progId})
            continue
          }
          if (ours) {
            await attachBpfFilter(netns, ifname, direction, pref, handle, set.progPath(direction), true, filterChain)
            const now = new Date().toISOString()
            if (att) Object.assign(att, {progId, digest, attachedAt: now, ifindex: link.ifindex})
            else
              state.attachments.push({
                netns,
                interface: ifname,
                ifindex: link.ifindex,
                direction,
                pref,
                handle,
                chain: filterChain,
                progId,
                digest,
                attachedAt: now,
                qdiscCreated: false,
              })
            outcomes.push({netns: netnsLabel(netns), interface: ifname, direction, result: 're-attached', progId})
            continue
          }
          // A filter of someone else at our place, or at the same pref with another kind.
          const clash = filters.find((f) => f.pref === pref && f.chain === filterChain)
          if (clash) {
            throw new FlowctlError(
              `pref ${pref} of ${ifname} ${direction} in ${describeNetns(netns)} is taken by another filter (${clash.kind}${clash.progName ? ` ${clash.progName}` : ''}): choose a free one with --pref`,
            )
          }
          const qdiscCreated = await ensureClsact(netns, ifname)
          if (qdiscCreated) undo.push(() => deleteClsact(netns, ifname).catch(() => {}))
          await attachBpfFilter(netns, ifname, direction, pref, handle, set.progPath(direction), false, filterChain)
          undo.push(() => deleteFilter(netns, ifname, direction, pref, handle, filterChain).catch(() => {}))
          const sharedQdisc = state.attachments.some((a) => sameNetns(a.netns, netns) && a.interface === ifname && a.qdiscCreated)
          state.attachments = state.attachments.filter((a) => a !== att)
          state.attachments.push({
            netns,
            interface: ifname,
            ifindex: link.ifindex,
            direction,
            pref,
            handle,
            chain: filterChain,
            progId,
            digest,
            attachedAt: new Date().toISOString(),
            qdiscCreated: qdiscCreated || sharedQdisc,
          })
          outcomes.push({netns: netnsLabel(netns), interface: ifname, direction, result: 'attached', progId})
        }
        // A layout-1 meter set moved aside (now, or by an attach cut short): its filters run the
        // new programs by now, so its flows can be carried over.
        await carryOverLegacy(set, migrationLock)
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

export interface DetachOutcome {
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
      await set.remove()
      state.meterSets = state.meterSets.filter((m) => !sameNetns(m.netns, set.netns))
      removedMeterSets.push(netnsLabel(set.netns))
      if (discarded) discardedFlows[netnsLabel(set.netns)] = discarded
    }
    return {outcomes, removedMeterSets, discardedFlows}
  })
}

/**
 * What attaching would do, from the recorded state alone: nothing is compiled, loaded or attached
 * (the older tool's --dry). A filter recorded as ours is taken to be there.
 */
function planAttach(paths: Paths, request: AttachRequest, resolved: ResolvedTarget[]): AttachOutcome[] {
  const state = readState(paths)
  const outcomes: AttachOutcome[] = []
  for (const {netns, link} of resolved) {
    for (const direction of request.directions) {
      const att = findAttachment(state, netns, link.ifname, direction)
      const result: AttachResult = !att ? 'attached' : request.force ? 're-attached' : 'unchanged'
      outcomes.push({netns: netnsLabel(netns), interface: link.ifname, direction, result, progId: att?.progId ?? 0})
    }
  }
  return outcomes
}

/** Flows a meter set holds that no daemon exported, or undefined if it cannot be read (another layout). */
function unexportedFlows(set: MeterSet): number | undefined {
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

async function interfaceExists(netns: NetnsName, ifname: string): Promise<boolean> {
  try {
    assertNetnsExists(netns)
    return (await listLinks(netns)).some((l) => l.ifname === ifname)
  } catch (error) {
    if (error instanceof NotFoundError) return false
    throw error
  }
}

export {PROGRAM_NAMES}
