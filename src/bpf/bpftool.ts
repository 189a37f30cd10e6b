/** bpftool: loading the meter object, and reading maps as JSON for people-facing commands. */
import {CommandFailedError, StateError} from '../errors.js'
import {run, spawnStreaming} from '../sys/exec.js'
import {jsonArrayElements} from './json-stream.js'

/**
 * Loads every program of `objectPath` and pins them under `progDir`. New maps are pinned under
 * `mapDir`; maps named in `reuse` (name -> pinned path) are taken as they are instead, which is
 * how a newer program is loaded onto maps that already hold flows.
 */
export async function loadAll(objectPath: string, progDir: string, options: {mapDir?: string; reuse?: Record<string, string>} = {}): Promise<void> {
  const args = ['prog', 'loadall', objectPath, progDir, 'type', 'classifier']
  for (const [name, path] of Object.entries(options.reuse ?? {})) args.push('map', 'name', name, 'pinned', path)
  if (options.mapDir) args.push('pinmaps', options.mapDir)
  try {
    await run('bpftool', args)
  } catch (error) {
    if (error instanceof CommandFailedError) {
      throw new StateError(`loading the meter into the kernel failed: ${loadFailureReason(error.stderr)}`, {cause: error})
    }
    throw error
  }
}

function loadFailureReason(stderr: string): string {
  if (/Operation not permitted|EPERM/.test(stderr)) return 'operation not permitted (run as root, with CAP_BPF and CAP_NET_ADMIN)'
  if (/verifier|BEGIN PROG LOAD LOG/.test(stderr)) {
    const last = stderr
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('libbpf:') && !l.startsWith(';'))
      .slice(-3)
    return `the kernel's verifier rejected the program (${last.join(' / ')})`
  }
  const line = stderr.split('\n').find((l) => /^(Error|libbpf: .*(failed|error))/i.test(l.trim()))
  return line?.trim() ?? stderr.trim().split('\n').pop() ?? 'unknown error'
}

/** One map entry as raw bytes: for a per-CPU map, `value` holds every CPU's slot in CPU order. */
export interface RawEntry {
  key: Buffer
  value: Buffer
  cpus: number
}

/** One element of `bpftool map dump -j`. */
export interface DumpElement {
  key: string[]
  /** The bytes; or, when the entry was deleted between bpftool's key walk and its lookup, {error: "..."}. */
  value?: string[] | {error?: string}
  values?: {cpu: number; value: string[]}[] | {error?: string}
}

/** Entries a dump passed over, counted for the caller to report. */
export interface DumpStats {
  /** Entries that vanished (deleted by a flush or a drain) between bpftool's key walk and its lookup. */
  vanished: number
}

function hexBytes(bytes: string[]): Buffer {
  const out = Buffer.allocUnsafe(bytes.length)
  for (let i = 0; i < bytes.length; i++) out[i] = Number.parseInt(bytes[i], 16)
  return out
}

/**
 * One element of a dump as raw bytes, or undefined for an entry that has no value to read: it was
 * deleted after bpftool listed its key (a flush or a drain running beside the dump), and bpftool
 * printed {"error": ...} in place of the value.
 */
export function decodeDumpElement(e: DumpElement, stride?: number): RawEntry | undefined {
  const key = hexBytes(e.key)
  if (e.values !== undefined) {
    if (!Array.isArray(e.values) || e.values.length === 0) return undefined
    const slot = stride ?? Math.ceil(e.values[0].value.length / 8) * 8
    const value = Buffer.alloc(slot * e.values.length)
    for (const v of e.values) value.set(hexBytes(v.value), v.cpu * slot)
    return {key, value, cpus: e.values.length}
  }
  if (e.value !== undefined && !Array.isArray(e.value)) return undefined
  return {key, value: hexBytes(e.value ?? []), cpus: 1}
}

/**
 * Streams the entries of a map known by id from `bpftool map dump -j`, decoded to raw bytes as
 * they arrive. The caller holds the map open meanwhile (an id names nothing once the map is freed).
 */
export async function* dumpMapById(id: number, stats?: DumpStats): AsyncGenerator<RawEntry> {
  yield* dumpEntries(['id', String(id)], undefined, stats)
}

async function* dumpEntries(which: string[], stride?: number, stats?: DumpStats): AsyncGenerator<RawEntry> {
  const child = spawnStreaming('bpftool', ['map', 'dump', ...which, '-j'])
  let finished = false
  try {
    for await (const element of jsonArrayElements(child.stdout)) {
      const entry = decodeDumpElement(element as DumpElement, stride)
      if (entry) yield entry
      else if (stats) stats.vanished++
    }
    finished = true
  } finally {
    if (!finished) child.kill()
  }
  await child.done
}
