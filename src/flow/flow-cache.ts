/**
 * The daemon's table of flows taken from the kernel and not yet exported, keyed by the kernel's
 * own key bytes. Columns in typed arrays, an open-addressing index with linear probing: a million
 * flows cost about 100 bytes each and no garbage. Entries are kept dense (a removal moves the last
 * entry into the hole), so a scan over 0..size-1 sees every flow.
 */
export class FlowCache {
  readonly keySize: number
  readonly capacity: number
  size = 0
  readonly keys: Uint8Array
  readonly packets: Float64Array
  readonly bytes: Float64Array
  /** CLOCK_MONOTONIC ns as doubles: exact to tens of ns for years of uptime. */
  readonly firstNs: Float64Array
  readonly lastNs: Float64Array
  /** The drain that last merged into the entry (see struct drain_state). */
  readonly gen: Float64Array
  readonly tcpFlags: Uint8Array
  readonly tos: Uint8Array
  private readonly slots: Int32Array
  private readonly mask: number

  constructor(keySize: number, capacity: number) {
    this.keySize = keySize
    this.capacity = capacity
    this.keys = new Uint8Array(capacity * keySize)
    this.packets = new Float64Array(capacity)
    this.bytes = new Float64Array(capacity)
    this.firstNs = new Float64Array(capacity)
    this.lastNs = new Float64Array(capacity)
    this.gen = new Float64Array(capacity)
    this.tcpFlags = new Uint8Array(capacity)
    this.tos = new Uint8Array(capacity)
    let slots = 1
    while (slots < capacity * 2) slots <<= 1
    this.slots = new Int32Array(slots) // entry index + 1; 0 = empty
    this.mask = slots - 1
  }

  get full(): boolean {
    return this.size >= this.capacity
  }

  /** FNV-1a over the key bytes. */
  private hash(key: Uint8Array, off: number): number {
    let h = 0x811c9dc5
    for (let i = 0; i < this.keySize; i++) h = Math.imul(h ^ key[off + i], 0x01000193)
    return (h ^ (h >>> 15)) >>> 0
  }

  private sameKey(index: number, key: Uint8Array, off: number): boolean {
    const base = index * this.keySize
    for (let i = 0; i < this.keySize; i++) if (this.keys[base + i] !== key[off + i]) return false
    return true
  }

  /** The entry holding this key, or -1. */
  find(key: Uint8Array, off = 0): number {
    for (let s = this.hash(key, off) & this.mask; ; s = (s + 1) & this.mask) {
      const e = this.slots[s]
      if (e === 0) return -1
      if (this.sameKey(e - 1, key, off)) return e - 1
    }
  }

  /** Adds a zeroed entry for a key that is not there; the caller checks `full` first. */
  insert(key: Uint8Array, off = 0): number {
    if (this.full) throw new Error('flow cache is full')
    const index = this.size++
    this.keys.set(key.subarray(off, off + this.keySize), index * this.keySize)
    this.packets[index] = 0
    this.bytes[index] = 0
    this.firstNs[index] = 0
    this.lastNs[index] = 0
    this.gen[index] = 0
    this.tcpFlags[index] = 0
    this.tos[index] = 0
    let s = this.hash(key, off) & this.mask
    while (this.slots[s] !== 0) s = (s + 1) & this.mask
    this.slots[s] = index + 1
    return index
  }

  private slotOf(index: number): number {
    for (let s = this.hash(this.keys, index * this.keySize) & this.mask; ; s = (s + 1) & this.mask) {
      if (this.slots[s] === index + 1) return s
      if (this.slots[s] === 0) throw new Error('flow cache index is corrupt')
    }
  }

  /** Removes an entry; the last entry moves into its place (so iterate downwards when removing). */
  remove(index: number): void {
    this.unindex(this.slotOf(index))
    const last = this.size - 1
    if (index !== last) {
      this.slots[this.slotOf(last)] = index + 1
      this.keys.copyWithin(index * this.keySize, last * this.keySize, (last + 1) * this.keySize)
      this.packets[index] = this.packets[last]
      this.bytes[index] = this.bytes[last]
      this.firstNs[index] = this.firstNs[last]
      this.lastNs[index] = this.lastNs[last]
      this.gen[index] = this.gen[last]
      this.tcpFlags[index] = this.tcpFlags[last]
      this.tos[index] = this.tos[last]
    }
    this.size = last
  }

  /** Empties slot `s` and shifts back the entries of its probe run (no tombstones). */
  private unindex(s: number): void {
    let hole = s
    for (let next = (s + 1) & this.mask; this.slots[next] !== 0; next = (next + 1) & this.mask) {
      const home = this.hash(this.keys, (this.slots[next] - 1) * this.keySize) & this.mask
      // Move the entry back into the hole unless its home lies (cyclically) after the hole.
      const distHole = (hole - home) & this.mask
      const distNext = (next - home) & this.mask
      if (distHole <= distNext) {
        this.slots[hole] = this.slots[next]
        hole = next
      }
    }
    this.slots[hole] = 0
  }

  clear(): void {
    this.slots.fill(0)
    this.size = 0
  }
}
