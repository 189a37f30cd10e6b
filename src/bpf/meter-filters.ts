/**
 * The meter's tc filters on the interfaces of one namespace: which to add, which of ours to
 * replace (to run the set's current programs, or with --force), and which to leave as they are.
 *
 * Our filters are identified exactly: the pref and handle we recorded, holding a program whose id
 * is one of our meter set's. A filter someone else put there is never touched: one at our place
 * is refused with a message naming a free choice.
 */
import {FlowctlError} from '../errors.js'
import type {DirectionName} from '../flow/record.js'
import {describeNetns, listLinks, netnsLabel, type Link, type NetnsName} from '../sys/netns.js'
import {attachBpfFilter, deleteClsact, deleteFilter, ensureClsact, listFilters, type TcFilter} from '../sys/tc.js'
import type {MeterSet} from './meter-set.js'
import type {ProvisionedSet, UndoSteps} from './meter-provision.js'
import {sameNetns, type AttachState, type Attachment} from './state.js'

export type AttachResult = 'attached' | 'unchanged' | 're-attached'

export interface AttachOutcome {
  netns: string
  interface: string
  direction: DirectionName
  result: AttachResult
  progId: number
  /** The meter set's sampling: 1 packet in N counted (1: every packet). */
  samplingInterval: number
}

export interface FilterRequest {
  directions: DirectionName[]
  /** Where a new filter goes; one recorded as ours stays where it is. */
  pref: number
  handle: number
  chain: number
  /** Replace our filters even when they run the set's current programs. */
  force: boolean
}

export function findAttachment(state: AttachState, netns: NetnsName, ifname: string, direction: DirectionName): Attachment | undefined {
  return state.attachments.find((a) => sameNetns(a.netns, netns) && a.interface === ifname && a.direction === direction)
}

/** Whether a tc filter is one of ours: our program name, and a program id of our meter set. */
export function isOurFilter(filter: TcFilter | undefined, ourProgIds: number[]): boolean {
  return !!filter && filter.kind === 'bpf' && filter.progId !== undefined && ourProgIds.includes(filter.progId)
}

export function ourProgIds(set: MeterSet, att?: Attachment): number[] {
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

/**
 * Brings the filters of `ifnames` (in every requested direction) to run the provisioned set's
 * programs; after a reload, every filter of ours in the namespace, not only the named ones.
 */
export async function reconcileFilters(
  state: AttachState,
  netns: NetnsName,
  ifnames: string[],
  provisioned: ProvisionedSet,
  request: FilterRequest,
  undo: UndoSteps,
): Promise<AttachOutcome[]> {
  const todo: {ifname: string; direction: DirectionName}[] = ifnames.flatMap((ifname) => request.directions.map((direction) => ({ifname, direction})))
  if (provisioned.reloaded) {
    for (const a of state.attachments) {
      if (sameNetns(a.netns, netns) && !todo.some((t) => t.ifname === a.interface && t.direction === a.direction)) {
        todo.push({ifname: a.interface, direction: a.direction})
      }
    }
  }

  const outcomes: AttachOutcome[] = []
  const links = await listLinks(netns)
  for (const {ifname, direction} of todo) {
    const link = links.find((l) => l.ifname === ifname)
    if (!link) continue
    const {result, progId} = await reconcileFilter(state, netns, link, direction, provisioned, request, undo)
    outcomes.push({netns: netnsLabel(netns), interface: ifname, direction, result, progId, samplingInterval: provisioned.samplingInterval})
  }
  return outcomes
}

async function reconcileFilter(
  state: AttachState,
  netns: NetnsName,
  link: Link,
  direction: DirectionName,
  {set, digest}: ProvisionedSet,
  request: FilterRequest,
  undo: UndoSteps,
): Promise<{result: AttachResult; progId: number}> {
  const ifname = link.ifname
  const att = findAttachment(state, netns, ifname, direction)
  const pref = att?.pref ?? request.pref
  const handle = att?.handle ?? request.handle
  const chain = att ? (att.chain ?? 0) : request.chain
  const progId = set.progId(direction)
  const filters = await listFilters(netns, ifname, direction)
  const here = filters.find((f) => f.pref === pref && f.handle === handle && f.chain === chain)
  const ours = isOurFilter(here, ourProgIds(set, att))

  // Ours, recorded, and running the set's program: left as it is.
  if (att && ours && here!.progId === progId && !request.force) return {result: 'unchanged', progId}

  // Ours: replaced in place, to run the set's program.
  if (ours) {
    await attachBpfFilter(netns, ifname, direction, pref, handle, set.progPath(direction), true, chain)
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
        chain,
        progId,
        digest,
        attachedAt: now,
        qdiscCreated: false,
      })
    return {result: 're-attached', progId}
  }

  // None of ours: added, unless someone else's filter is at our place, or at the same pref with another kind.
  const clash = filters.find((f) => f.pref === pref && f.chain === chain)
  if (clash) {
    throw new FlowctlError(
      `pref ${pref} of ${ifname} ${direction} in ${describeNetns(netns)} is taken by another filter (${clash.kind}${clash.progName ? ` ${clash.progName}` : ''}): choose a free one with --pref`,
    )
  }
  const qdiscCreated = await ensureClsact(netns, ifname)
  if (qdiscCreated) undo.push(() => deleteClsact(netns, ifname).catch(() => {}))
  await attachBpfFilter(netns, ifname, direction, pref, handle, set.progPath(direction), false, chain)
  undo.push(() => deleteFilter(netns, ifname, direction, pref, handle, chain).catch(() => {}))
  const sharedQdisc = state.attachments.some((a) => sameNetns(a.netns, netns) && a.interface === ifname && a.qdiscCreated)
  state.attachments = state.attachments.filter((a) => a !== att)
  state.attachments.push({
    netns,
    interface: ifname,
    ifindex: link.ifindex,
    direction,
    pref,
    handle,
    chain,
    progId,
    digest,
    attachedAt: new Date().toISOString(),
    qdiscCreated: qdiscCreated || sharedQdisc,
  })
  return {result: 'attached', progId}
}
