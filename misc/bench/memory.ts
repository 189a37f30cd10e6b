/**
 * Figure 7: the kernel memory of one meter set at capacity 1,048,576 flows per family, with 0,
 * 100 k and 1 M flows in its live IPv4 map (and 100 k in the IPv6 one, for the per-flow figure of
 * that family), beside the layout-1 meter (bpf/legacy/meter-v1.bpf.c) compiled for the same
 * capacity and loaded in the same run. Memory is the kernel's own accounting: the memlock line of
 * each map's fdinfo (MeterSet.memory() for today's layout; every pinned map of the old one).
 * Flows are written straight into the maps with BPF_MAP_UPDATE_BATCH, as the drain bench does:
 * what a map takes depends on how many entries it holds, not on what they say.
 */
import {compileMeter} from '../../src/bpf/compile.js'
import {BpfMap} from '../../src/bpf/libbpf.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {pathsFromEnv} from '../../src/paths.js'
import {join} from 'node:path'
import {loadLegacyMeter} from './legacy.js'
import {cleanup, fixed, log, ratio, si, type BenchOptions, type Row} from './util.js'

export const MEMORY_CAPACITY = 1 << 20
const FILL_CHUNK = 65_536

/**
 * Writes flows [from, to) into `map`: distinct keys (the flow's index in the key's first four
 * bytes, the ifindex slot, and its complement at `tail`), values with plausible counters.
 */
export function fillDistinct(map: BpfMap, from: number, to: number): void {
  const keySize = map.info.keySize
  const valueBytes = map.valueBytes
  const keys = Buffer.alloc(FILL_CHUNK * keySize)
  const values = Buffer.alloc(FILL_CHUNK * valueBytes)
  for (let start = from; start < to; start += FILL_CHUNK) {
    const n = Math.min(FILL_CHUNK, to - start)
    for (let j = 0; j < n; j++) {
      const i = start + j
      keys.writeUInt32LE(i, j * keySize)
      keys.writeUInt32LE(~i >>> 0, j * keySize + keySize - 4)
      values.writeBigUInt64LE(BigInt(1 + (i % 1000)), j * valueBytes)
      values.writeBigUInt64LE(BigInt(100 * (1 + (i % 1000))), j * valueBytes + 8)
    }
    map.updateBatch(keys, values, n)
  }
}

function mb(bytes: number): string {
  return `${fixed(bytes / 1e6, 1)} MB`
}

export async function benchMemory(options: BenchOptions): Promise<Row[]> {
  const capacity = MEMORY_CAPACITY
  const netns = 'fct-bench-memory'
  const set = MeterSet.for(pathsFromEnv(), netns)
  await set.create((await compileMeter({capacity}, pathsFromEnv().cacheDir)).objectPath, capacity)
  cleanup.push('removing the memory meter set', () => set.remove())
  const legacy = await loadLegacyMeter(capacity, 'memory-v1')
  const rows: Row[] = []
  try {
    const v1Empty = legacy.memory()
    const live4 = set.openFamily(4)
    const live6 = set.openFamily(6)
    const map4 = live4.openLive()
    const map6 = live6.openLive()
    const legacyMap = BpfMap.open(join(legacy.mapDir, 'flows4_a'))
    const samples: {flows: number; v2: number; v1: number}[] = []
    let filled = 0
    try {
      for (const flows of [0, 100_000, 1_000_000]) {
        fillDistinct(map4, filled, flows)
        fillDistinct(legacyMap, filled, flows)
        filled = flows
        const v2 = set.memory().now
        const v1 = legacy.memory()
        samples.push({flows, v2, v1})
        if (options.verbose) log(`memory: ${flows} IPv4 flows: layout 2 ${v2} B, layout 1 ${v1} B (empty ${v1Empty} B)`)
      }
      // IPv6: 100 k flows beside the IPv4 million, for the per-flow figure of that family.
      const before6 = set.memory().now
      fillDistinct(map6, 0, 100_000)
      const after6 = set.memory().now
      const atMost = set.memory().atMost
      for (const s of samples) {
        rows.push({
          figure: `kernel memory, capacity ${capacity.toLocaleString('en-US')}, ${s.flows ? si(s.flows) : 0} flows`,
          ours: mb(s.v2),
          reference: `layout 1 ${mb(s.v1)}`,
          ratio: ratio(s.v2 / s.v1),
          target: s.flows === 0 ? '<= 0.1x layout 1' : '',
          pass: s.flows === 0 ? s.v2 / s.v1 <= 0.1 : undefined,
        })
      }
      const [zero, , million] = samples
      const perFlow4 = (million.v2 - zero.v2) / (million.flows - zero.flows)
      const perFlow6 = (after6 - before6) / 100_000
      const v1PerEntry = zero.v1 / capacity
      rows.push({
        figure: 'kernel memory per flow (layout 2, 1 M IPv4 / 100 k IPv6)',
        ours: `${fixed(perFlow4, 0)} B IPv4, ${fixed(perFlow6, 0)} B IPv6`,
        reference: `layout 1 ${fixed(v1PerEntry, 0)} B per entry of capacity`,
        ratio: '',
        target: '',
      })
      rows.push({
        figure: 'kernel memory, capacity 1 M, at most (both families full, largest snapshot)',
        ours: mb(atMost),
        reference: `layout 1 ${mb(zero.v1)} (any number of flows)`,
        ratio: ratio(atMost / zero.v1),
        target: '',
      })
    } finally {
      legacyMap.close()
      map4.close()
      map6.close()
      live4.close()
      live6.close()
    }
  } finally {
    legacy.remove()
    await set.remove()
  }
  return rows
}
