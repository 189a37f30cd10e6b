/**
 * The meters of older layouts, frozen in bpf/legacy/, the references today's program is measured
 * against in the same run: layout 1 (meter-v1.bpf.c: per-CPU, preallocated flow maps) and layout 2
 * (meter-v2.bpf.c: shared flow maps, no sampling). Compiled with today's clang flags (which add
 * -mcpu=v3 to those layout 1 shipped with), so that they differ by their source only; loaded with
 * `bpftool prog loadall` into a private pin directory of their own, never attached to anything.
 */
import {existsSync, mkdirSync, readdirSync, rmSync} from 'node:fs'
import {join} from 'node:path'

import {execa} from 'execa'

import {clangArgs} from '../../src/bpf/compile.js'
import {BpfMap} from '../../src/bpf/libbpf.js'
import {bpfSourceDir, pathsFromEnv} from '../../src/paths.js'
import {cleanup} from './util.js'

export interface LegacyMeter {
  /** Pinned programs: flowctl_ingress, flowctl_egress. */
  progDir: string
  /** Pinned maps: layout 1's flows4, flows4_a, flows4_b, pending4, ..., overflow, skip_socks, drain_state; layout 2's as loaded (flows4_live, ...). */
  mapDir: string
  /** Every pinned map's name. */
  maps(): string[]
  /** Sum of the memlock of every map it pinned (the kernel's own accounting). */
  memory(): number
  remove(): void
}

/** The layouts bpf/legacy/ keeps. */
export type LegacyLayout = 1 | 2

/** Compiles bpf/legacy/meter-v<layout>.bpf.c for `capacity` flows per map into the cache dir. */
export async function compileLegacyMeter(capacity: number, layout: LegacyLayout = 1): Promise<string> {
  const dir = pathsFromEnv().cacheDir
  mkdirSync(dir, {recursive: true})
  const object = join(dir, `meter-v${layout}-${capacity}.o`)
  if (!existsSync(object)) await execa('clang', clangArgs(join(bpfSourceDir(), 'legacy', `meter-v${layout}.bpf.c`), object, {capacity}))
  return object
}

/** Loads the meter of `layout` under <pin root>/<name>; removed by `remove()` or the bench's cleanup. */
export async function loadLegacyMeter(capacity: number, name: string, layout: LegacyLayout = 1): Promise<LegacyMeter> {
  const object = await compileLegacyMeter(capacity, layout)
  const dir = join(pathsFromEnv().pinRoot, name)
  const remove = () => rmSync(dir, {recursive: true, force: true})
  cleanup.push(`removing ${dir}`, remove)
  mkdirSync(dir, {recursive: true})
  const progDir = join(dir, 'prog')
  const mapDir = join(dir, 'maps')
  await execa('bpftool', ['prog', 'loadall', object, progDir, 'type', 'classifier', 'pinmaps', mapDir])
  const maps = () => readdirSync(mapDir).sort()
  return {
    progDir,
    mapDir,
    maps,
    memory() {
      let total = 0
      for (const m of maps()) {
        const map = BpfMap.open(join(mapDir, m))
        try {
          total += map.memlock()
        } finally {
          map.close()
        }
      }
      return total
    },
    remove,
  }
}
