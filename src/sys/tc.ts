/** The clsact qdisc and tc bpf filters, through iproute2's tc. */
/** The tc hook a filter sits on. */
export type TcDirection = 'ingress' | 'egress'
import {CommandFailedError} from '../errors.js'
import {run} from './exec.js'
import type {NetnsName} from './netns.js'

/**
 * The handles a bpf filter can be given: tc takes a 32-bit number, and 0 asks the kernel to
 * choose one (flowctl names its filters by the handle it gave, so it gives one).
 */
export const TC_HANDLE = {min: 1, max: 0xffffffff} as const

export interface TcFilter {
  pref: number
  handle: number
  kind: string
  chain: number
  progId?: number
  progName?: string
  directAction?: boolean
}

interface TcFilterJson {
  pref: number
  kind: string
  chain?: number
  options?: {
    handle?: string
    'direct-action'?: boolean
    prog?: {id: number; name: string}
  }
}

async function hasClsact(netns: NetnsName, dev: string): Promise<boolean> {
  const {stdout} = await run('tc', ['-j', 'qdisc', 'show', 'dev', dev], {netns})
  const qdiscs = JSON.parse(stdout || '[]') as {kind: string}[]
  return qdiscs.some((q) => q.kind === 'clsact')
}

/** Adds a clsact qdisc unless one is there; returns whether this call created it. */
export async function ensureClsact(netns: NetnsName, dev: string): Promise<boolean> {
  if (await hasClsact(netns, dev)) return false
  try {
    await run('tc', ['qdisc', 'add', 'dev', dev, 'clsact'], {netns})
    return true
  } catch (error) {
    // Another process added it between our look and our add.
    if (error instanceof CommandFailedError && /File exists/.test(error.stderr)) return false
    throw error
  }
}

export async function deleteClsact(netns: NetnsName, dev: string): Promise<void> {
  await run('tc', ['qdisc', 'del', 'dev', dev, 'clsact'], {netns})
}

/**
 * The filters of one hook. tc prints a header entry per pref and then its filters; a pref whose
 * filters have no handle to speak of (u32 hash tables, say) appears with handle -1, so that
 * every pref in use shows up.
 */
export async function listFilters(netns: NetnsName, dev: string, direction: TcDirection): Promise<TcFilter[]> {
  const {stdout} = await run('tc', ['-j', 'filter', 'show', 'dev', dev, direction], {netns})
  const entries = JSON.parse(stdout || '[]') as TcFilterJson[]
  const filters: TcFilter[] = entries
    .filter((e) => e.options?.handle !== undefined)
    .map((e) => ({
      pref: e.pref,
      handle: Number.parseInt(e.options!.handle!, 16),
      kind: e.kind,
      chain: e.chain ?? 0,
      progId: e.options?.prog?.id,
      progName: e.options?.prog?.name,
      directAction: e.options?.['direct-action'],
    }))
  for (const e of entries) {
    if (!filters.some((f) => f.pref === e.pref)) filters.push({pref: e.pref, handle: -1, kind: e.kind, chain: e.chain ?? 0})
  }
  return filters
}

/** Attaches a pinned program; `replace` swaps the program of an existing filter atomically. */
export async function attachBpfFilter(
  netns: NetnsName,
  dev: string,
  direction: TcDirection,
  pref: number,
  handle: number,
  pinnedProg: string,
  replace = false,
  chain = 0,
): Promise<void> {
  await run(
    'tc',
    [
      'filter',
      replace ? 'replace' : 'add',
      'dev',
      dev,
      direction,
      ...chainArgs(chain),
      'pref',
      String(pref),
      'handle',
      `0x${handle.toString(16)}`,
      'bpf',
      'da',
      'object-pinned',
      pinnedProg,
    ],
    {netns},
  )
}

export async function deleteFilter(netns: NetnsName, dev: string, direction: TcDirection, pref: number, handle: number, chain = 0): Promise<void> {
  await run('tc', ['filter', 'del', 'dev', dev, direction, ...chainArgs(chain), 'pref', String(pref), 'handle', `0x${handle.toString(16)}`, 'bpf'], {netns})
}

/** Chain 0 is tc's default: named only when another is meant, so the commands stay as before. */
function chainArgs(chain: number): string[] {
  return chain === 0 ? [] : ['chain', String(chain)]
}
