/**
 * The kernel's bpf() map commands, through libbpf's thin syscall wrappers (libbpf.so.1, which
 * iproute2 itself links against) called with koffi. Only what needs speed or atomicity lives
 * here: batch reads and deletes of whole maps, the swap of the live flow map, map metadata.
 * libbpf 1.x returns -errno from these calls.
 */
import {readFileSync} from 'node:fs'

import koffi from 'koffi'

import {BpfError, ToolMissingError} from '../errors.js'

interface Libbpf {
  objGet(path: string): number
  mapGetFdById(id: number): number
  objPin(fd: number, path: string): number
  objGetInfoByFd(fd: number, info: Buffer, len: Uint32Array): number
  mapCreate(type: number, name: string | null, keySize: number, valueSize: number, maxEntries: number, opts: Buffer | null): number
  lookupElem(fd: number, key: Buffer, value: Buffer): number
  updateElem(fd: number, key: Buffer, value: Buffer, flags: bigint): number
  deleteElem(fd: number, key: Buffer): number
  getNextKey(fd: number, key: Buffer | null, next: Buffer): number
  // Properties, not methods: forEachBatch picks one of the two and calls it unbound.
  lookupBatch: (fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: Uint32Array, opts: null) => number
  lookupAndDeleteBatch: (fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: Uint32Array, opts: null) => number
  deleteBatch(fd: number, keys: Buffer, count: Uint32Array, opts: null): number
  updateBatch(fd: number, keys: Buffer, values: Buffer, count: Uint32Array, opts: null): number
  numPossibleCpus(): number
  rawTracepointOpen(name: string, progFd: number): number
  close(fd: number): number
  /**
   * The same calls run in one of libuv's threads (koffi's async calls), the result handed to the
   * callback on the event loop: for the calls that wait in the kernel (an outer map's update waits
   * for an RCU grace period) or that read while the caller works (batch reads ahead).
   */
  updateElemAsync: (fd: number, key: Buffer, value: Buffer, flags: bigint, done: AsyncDone) => void
  lookupBatchAsync: (
    fd: number,
    inBatch: Buffer | null,
    outBatch: Buffer,
    keys: Buffer,
    values: Buffer,
    count: Uint32Array,
    opts: null,
    done: AsyncDone,
  ) => void
}

/** What koffi calls once an async call returns (err: a failure of the call itself, not an errno). */
type AsyncDone = (err: unknown, rc: number) => void

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(typeof err === 'string' ? err : 'an asynchronous libbpf call failed')
}

let cached: Libbpf | undefined

function lib(): Libbpf {
  if (cached) return cached
  let bpf: koffi.IKoffiLib
  let libc: koffi.IKoffiLib
  try {
    bpf = koffi.load('libbpf.so.1')
    libc = koffi.load('libc.so.6')
  } catch {
    throw new ToolMissingError('libbpf.so.1', 'libbpf1')
  }
  const updateElem = bpf.func('int bpf_map_update_elem(int fd, void *key, void *value, uint64_t flags)')
  const lookupBatch = bpf.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, void *count, void *opts)')
  cached = {
    objGet: bpf.func('int bpf_obj_get(const char *pathname)'),
    mapGetFdById: bpf.func('int bpf_map_get_fd_by_id(uint32_t id)'),
    objPin: bpf.func('int bpf_obj_pin(int fd, const char *pathname)'),
    objGetInfoByFd: bpf.func('int bpf_obj_get_info_by_fd(int fd, void *info, void *info_len)'),
    mapCreate: bpf.func('int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, void *opts)'),
    lookupElem: bpf.func('int bpf_map_lookup_elem(int fd, void *key, void *value)'),
    updateElem,
    deleteElem: bpf.func('int bpf_map_delete_elem(int fd, void *key)'),
    getNextKey: bpf.func('int bpf_map_get_next_key(int fd, void *key, void *next_key)'),
    lookupBatch,
    lookupAndDeleteBatch: bpf.func(
      'int bpf_map_lookup_and_delete_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, void *count, void *opts)',
    ),
    deleteBatch: bpf.func('int bpf_map_delete_batch(int fd, void *keys, void *count, void *opts)'),
    updateBatch: bpf.func('int bpf_map_update_batch(int fd, void *keys, void *values, void *count, void *opts)'),
    numPossibleCpus: bpf.func('int libbpf_num_possible_cpus(void)'),
    rawTracepointOpen: bpf.func('int bpf_raw_tracepoint_open(const char *name, int prog_fd)'),
    close: libc.func('int close(int fd)'),
    updateElemAsync: (...args) => {
      updateElem.async(...args)
    },
    lookupBatchAsync: (...args) => {
      lookupBatch.async(...args)
    },
  }
  return cached
}

const ENOENT = 2
const ENOSPC = 28
const ENOMEM = 12

/** The update flag for "create or replace" (BPF_NOEXIST and BPF_EXIST are not used). */
const BPF_ANY = 0n

/** BPF_F_NO_PREALLOC: a hash that allocates each element when it is inserted. */
export const BPF_F_NO_PREALLOC = 1

export const MAP_TYPE = {
  hash: 1,
  array: 2,
  percpuHash: 5,
  percpuArray: 6,
  arrayOfMaps: 12,
  lruHash: 9,
} as const

export interface MapInfo {
  type: number
  id: number
  keySize: number
  valueSize: number
  maxEntries: number
  flags: number
  name: string
}

let possibleCpus: number | undefined

/** CPUs the kernel may run on: the number of slots in every per-CPU value. */
export function numPossibleCpus(): number {
  if (possibleCpus === undefined) {
    const n = lib().numPossibleCpus()
    if (n <= 0) throw new BpfError('reading the number of possible CPUs', -n)
    possibleCpus = n
  }
  return possibleCpus
}

function check(rc: number, operation: string, hint?: string): number {
  if (rc < 0) throw new BpfError(operation, -rc, hint)
  return rc
}

/**
 * An open bpf map, by file descriptor. Close it when done; fds are not collected.
 */
export class BpfMap {
  readonly fd: number
  readonly info: MapInfo
  readonly path: string

  private constructor(fd: number, info: MapInfo, path: string) {
    this.fd = fd
    this.info = info
    this.path = path
  }

  /** `shownAs`: the path messages name, when `path` reaches the pin another way (through a held directory). */
  static open(path: string, shownAs = path): BpfMap {
    const fd = lib().objGet(path)
    if (fd < 0) {
      const errno = -fd
      throw new BpfError(`opening pinned map ${shownAs}`, errno, errno === ENOENT ? 'not pinned: is the meter attached?' : undefined)
    }
    try {
      return new BpfMap(fd, mapInfoByFd(fd, shownAs), shownAs)
    } catch (error) {
      lib().close(fd)
      throw error
    }
  }

  /**
   * Opens a pinned map that another process may unpin at any moment (a drained map, beside the
   * daemon that commits it): undefined once it is gone.
   */
  static openIfPinned(path: string): BpfMap | undefined {
    try {
      return BpfMap.open(path)
    } catch (error) {
      if (error instanceof BpfError && error.errno === ENOENT) return undefined
      throw error
    }
  }

  /** Creates an unpinned map (used by tests and benchmarks). */
  static create(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, flags = 0): BpfMap {
    const rc = lib().mapCreate(type, name, keySize, valueSize, maxEntries, flags ? mapCreateOpts(flags) : null)
    const fd = check(rc, `creating map ${name}`, rc === -ENOMEM ? `memory for a map of ${maxEntries} entries is short (or the memlock limit is)` : undefined)
    return new BpfMap(fd, mapInfoByFd(fd, name), '')
  }

  /** A new, empty, unpinned map shaped exactly like `info` (type, sizes, capacity, flags, name). */
  static createLike(info: MapInfo): BpfMap {
    return BpfMap.create(info.type, info.name, info.keySize, info.valueSize, info.maxEntries, info.flags)
  }

  /** Opens a map by its kernel id (one that is not pinned, such as the live flow map). */
  static openById(id: number, describe = `map id ${id}`): BpfMap {
    const fd = lib().mapGetFdById(id)
    if (fd < 0) throw new BpfError(`opening ${describe}`, -fd, -fd === ENOENT ? 'it no longer exists' : undefined)
    try {
      return new BpfMap(fd, mapInfoByFd(fd, describe), '')
    } catch (error) {
      lib().close(fd)
      throw error
    }
  }

  /**
   * Kernel memory the map takes now, in bytes, as the kernel accounts it (`memlock` in its fdinfo;
   * for a map allocated per element this grows with the entries).
   */
  memlock(): number {
    const text = readFileSync(`/proc/self/fdinfo/${this.fd}`, 'latin1')
    const m = /^memlock:\s*(\d+)/m.exec(text)
    return m ? Number(m[1]) : 0
  }

  pin(path: string): void {
    check(lib().objPin(this.fd, path), `pinning map at ${path}`)
  }

  close(): void {
    lib().close(this.fd)
  }

  get perCpu(): boolean {
    return this.info.type === MAP_TYPE.percpuHash || this.info.type === MAP_TYPE.percpuArray
  }

  /** Bytes of one value as user space sees it (all CPUs' slots for a per-CPU map). */
  get valueBytes(): number {
    return this.perCpu ? Math.ceil(this.info.valueSize / 8) * 8 * numPossibleCpus() : this.info.valueSize
  }

  lookup(key: Buffer, value: Buffer = Buffer.alloc(this.valueBytes)): Buffer | undefined {
    const rc = lib().lookupElem(this.fd, key, value)
    if (rc === -ENOENT) return undefined
    check(rc, `looking up a key in ${this.describe()}`)
    return value
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    check(lib().updateElem(this.fd, key, value, flags), `updating ${this.describe()}`)
  }

  /**
   * update() in one of libuv's threads, resolved when the kernel has returned: for an update that
   * waits in the kernel (an ARRAY_OF_MAPS slot waits for a grace period), so that the event loop
   * goes on meanwhile and several such waits overlap. `key` and `value` must stay untouched until
   * it resolves.
   */
  updateAsync(key: Buffer, value: Buffer, flags = BPF_ANY): Promise<void> {
    return new Promise((resolve, reject) => {
      lib().updateElemAsync(this.fd, key, value, flags, (err, rc) => {
        if (err) reject(asError(err))
        else if (rc < 0) reject(new BpfError(`updating ${this.describe()}`, -rc))
        else resolve()
      })
    })
  }

  /** Returns whether the key was there. */
  delete(key: Buffer): boolean {
    const rc = lib().deleteElem(this.fd, key)
    if (rc === -ENOENT) return false
    check(rc, `deleting a key from ${this.describe()}`)
    return true
  }

  /**
   * Reads (and with `andDelete`, removes) every entry, a read batch of `batchEntries` at a time (one
   * bpf() call), calling `onBatch` with the keys and values buffers and the number of entries in them. The buffers are reused
   * between calls. With andDelete the map must not be written meanwhile (a quiescent flow map).
   */
  forEachBatch(
    onBatch: (keys: Buffer, values: Buffer, count: number) => void,
    options: {andDelete?: boolean; batchEntries?: number; keys?: Buffer; values?: Buffer} = {},
  ): number {
    let batchEntries = options.batchEntries ?? 4096
    const keySize = this.info.keySize
    // Whole allocations (never slices of Node's pool): aligned, so callers may view them as words.
    let keys = options.keys ?? Buffer.allocUnsafeSlow(batchEntries * keySize)
    let values = options.values ?? Buffer.allocUnsafeSlow(batchEntries * this.valueBytes)
    const inBatch = Buffer.alloc(Math.max(8, keySize))
    const outBatch = Buffer.alloc(Math.max(8, keySize))
    const count = new Uint32Array(1)
    const call = options.andDelete ? lib().lookupAndDeleteBatch : lib().lookupBatch
    let first = true
    let total = 0
    for (;;) {
      count[0] = batchEntries
      const rc = call(this.fd, first ? null : inBatch, outBatch, keys, values, count, null)
      if (rc < 0 && rc !== -ENOENT) {
        // A hash bucket holds more entries than fit in one read batch: retry with room for them.
        if (rc === -ENOSPC && batchEntries < 1 << 20) {
          batchEntries *= 4
          keys = Buffer.allocUnsafeSlow(batchEntries * keySize)
          values = Buffer.allocUnsafeSlow(batchEntries * this.valueBytes)
          continue
        }
        check(rc, `reading ${this.describe()} in batches`)
      }
      if (count[0] > 0) {
        total += count[0]
        onBatch(keys, values, count[0])
      }
      if (rc === -ENOENT) return total
      outBatch.copy(inBatch)
      first = false
    }
  }

  /** Whether the map holds no entry: one bpf() call, for its first key. */
  isEmpty(): boolean {
    const rc = lib().getNextKey(this.fd, null, Buffer.alloc(this.info.keySize))
    if (rc === -ENOENT) return true
    check(rc, `reading the first key of ${this.describe()}`)
    return false
  }

  /** Number of entries now in the map. */
  count(): number {
    return this.forEachBatch(() => {}, {batchEntries: 8192})
  }

  deleteBatch(keys: Buffer, n: number): void {
    if (n === 0) return
    const count = new Uint32Array([n])
    const rc = lib().deleteBatch(this.fd, keys, count, null)
    // ENOENT: some keys were already gone, which is what we wanted.
    if (rc < 0 && rc !== -ENOENT) check(rc, `deleting from ${this.describe()} in a batch`)
  }

  updateBatch(keys: Buffer, values: Buffer, n: number, flags = BPF_ANY): void {
    if (n === 0) return
    if (flags !== BPF_ANY) throw new Error('updateBatch supports BPF_ANY only')
    const count = new Uint32Array([n])
    check(lib().updateBatch(this.fd, keys, values, count, null), `writing ${n} entries to ${this.describe()}`)
  }

  private describe(): string {
    return this.path ? `map ${this.path}` : `map ${this.info.name}`
  }
}

/**
 * struct bpf_map_create_opts as libbpf 1.x reads it: sz, btf_fd, btf_key_type_id,
 * btf_value_type_id, btf_vmlinux_value_type_id, inner_map_fd, map_flags (offset 28), map_extra,
 * numa_node, map_ifindex. libbpf checks `sz` and accepts a smaller (older) struct.
 */
function mapCreateOpts(flags: number): Buffer {
  const opts = Buffer.alloc(48)
  opts.writeBigUInt64LE(48n, 0)
  opts.writeUInt32LE(flags, 28)
  return opts
}

function mapInfoByFd(fd: number, what: string): MapInfo {
  const info = Buffer.alloc(88)
  const len = new Uint32Array([info.length])
  check(lib().objGetInfoByFd(fd, info, len), `reading map info of ${what}`)
  const nameEnd = info.indexOf(0, 24)
  return {
    type: info.readUInt32LE(0),
    id: info.readUInt32LE(4),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    maxEntries: info.readUInt32LE(16),
    flags: info.readUInt32LE(20),
    name: info.toString('latin1', 24, nameEnd >= 24 && nameEnd < 40 ? nameEnd : 40),
  }
}

/** Id and tag of a pinned program. */
export function progInfo(path: string): {id: number; tag: string} {
  const fd = lib().objGet(path)
  if (fd < 0) throw new BpfError(`opening pinned program ${path}`, -fd)
  try {
    const info = Buffer.alloc(256)
    const len = new Uint32Array([info.length])
    check(lib().objGetInfoByFd(fd, info, len), `reading program info of ${path}`)
    return {id: info.readUInt32LE(4), tag: info.toString('hex', 8, 16)}
  } finally {
    lib().close(fd)
  }
}

/**
 * Attaches the pinned program at `progPath` to the raw tracepoint `tracepoint` and pins the link
 * at `linkPath`: the attachment lasts while the pin does (unlink it to detach), not only while
 * this process runs.
 */
export function attachRawTracepoint(progPath: string, tracepoint: string, linkPath: string): void {
  const prog = lib().objGet(progPath)
  if (prog < 0) throw new BpfError(`opening pinned program ${progPath}`, -prog)
  try {
    const link = check(lib().rawTracepointOpen(tracepoint, prog), `attaching ${progPath} to the raw tracepoint ${tracepoint}`)
    try {
      check(lib().objPin(link, linkPath), `pinning the link at ${linkPath}`)
    } finally {
      lib().close(link)
    }
  } finally {
    lib().close(prog)
  }
}

/** The id of the map an ARRAY_OF_MAPS slot points at (user space reads ids, writes fds). */
export function innerMapId(outer: BpfMap, slot = 0): number | undefined {
  const key = Buffer.alloc(4)
  key.writeUInt32LE(slot)
  const value = outer.lookup(key, Buffer.alloc(4))
  return value?.readUInt32LE(0)
}

/**
 * Points an ARRAY_OF_MAPS slot at `inner`. The kernel returns only after synchronize_rcu():
 * no program that could still see the previous map is running any more.
 */
export function setInnerMap(outer: BpfMap, inner: BpfMap, slot = 0): void {
  const key = Buffer.alloc(4)
  key.writeUInt32LE(slot)
  const value = Buffer.alloc(4)
  value.writeUInt32LE(inner.fd)
  outer.update(key, value)
}

/**
 * setInnerMap() in one of libuv's threads (BpfMap.updateAsync): the grace period is waited for
 * there, and many slots updated at once wait for about one grace period in all instead of one
 * each (measured here: 32 updates in flight took 13-18 ms, one alone 8-20 ms).
 */
export function setInnerMapAsync(outer: BpfMap, inner: BpfMap, slot = 0): Promise<void> {
  const key = Buffer.alloc(4)
  key.writeUInt32LE(slot)
  const value = Buffer.alloc(4)
  value.writeUInt32LE(inner.fd)
  return outer.updateAsync(key, value)
}

/**
 * lookupBatchCall() in one of libuv's threads: resolves with its return value (0, -ENOENT at the
 * map's end, or another -errno). The buffers must stay untouched until it resolves.
 */
export function lookupBatchAsync(fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: Uint32Array): Promise<number> {
  return new Promise((resolve, reject) => {
    lib().lookupBatchAsync(fd, inBatch, outBatch, keys, values, count, null, (err, rc) => {
      if (err) reject(asError(err))
      else resolve(rc)
    })
  })
}

/**
 * One BPF_MAP_LOOKUP_BATCH call on map `fd` (a null `inBatch` starts at the beginning): returns
 * 0, -ENOENT when the map's end was reached (with `count[0]` entries still read), or another
 * -errno. For src/bpf/read-ahead-worker.ts, which reads in a thread of its own.
 */
export function lookupBatchCall(
  fd: number,
  inBatch: Uint8Array | null,
  outBatch: Uint8Array,
  keys: Uint8Array,
  values: Uint8Array,
  count: Uint32Array,
): number {
  return lib().lookupBatch(fd, inBatch as Buffer | null, outBatch as Buffer, keys as Buffer, values as Buffer, count, null)
}

export {ENOENT, ENOSPC}
