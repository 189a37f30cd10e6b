/**
 * The layout-1 meter (bpf/legacy/meter-v1.bpf.c: per-CPU, preallocated flow maps), the reference
 * today's program is measured against in the same run. Compiled with today's clang flags (which
 * add -mcpu=v3 to those it shipped with), so that the two differ by their source only; loaded
 * with `bpftool prog loadall` into a private pin directory of its own, never attached to anything.
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
  /** Pinned maps: flows4, flows4_a, flows4_b, pending4, ..., overflow, skip_socks, drain_state. */
  mapDir: string
  /** Every pinned map's name. */
  maps(): string[]
  /** Sum of the memlock of every map it pinned (the kernel's own accounting). */
  memory(): number
  remove(): void
}

/** Compiles bpf/legacy/meter-v1.bpf.c for `capacity` flows per map into the cache dir. */
export async function compileLegacyMeter(capacity: number): Promise<string> {
  const dir = pathsFromEnv().cacheDir
  mkdirSync(dir, {recursive: true})
  const object = join(dir, `meter-v1-${capacity}.o`)
  if (!existsSync(object)) await execa('clang', clangArgs(join(bpfSourceDir(), 'legacy', 'meter-v1.bpf.c'), object, {capacity}))
  return object
}

/** Loads the layout-1 meter under <pin root>/<name>; removed by `remove()` or the bench's cleanup. */
export async function loadLegacyMeter(capacity: number, name: string): Promise<LegacyMeter> {
  const object = await compileLegacyMeter(capacity)
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
