/**
 * The layer order of docs/architecture.md, enforced over the import graph of src/ (every import,
 * type-only ones included): a module imports from its own folder or from a lower layer, never
 * from a higher one or from a peer folder of its own layer, and no chain of imports comes back to
 * where it started. A folder whose sub-folders are layered in turn (SUB_LAYERS) is held to the
 * same rule inside: its sub-folders only import down their own order.
 */
import assert from 'node:assert/strict'
import {readdirSync, readFileSync, statSync} from 'node:fs'
import {dirname, join, relative, resolve} from 'node:path'

import {REPO_ROOT} from '../helpers/unit.js'

/** Low to high. Folders on one line are peers: neither may import the other. */
export const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts'],
  ['paths.ts', 'util'],
  ['sys'],
  ['flow'],
  ['bpf', 'ipfix'],
  ['config'],
  ['view', 'daemon'],
  ['lab'],
  ['cli'],
  ['commands'],
]

/**
 * Folders whose files all sit in sub-folders layered in turn, low to high, peers on one line as
 * above: ipfix's wire format, under the exporter and the collector, which never import each other.
 */
export const SUB_LAYERS: Readonly<Record<string, readonly (readonly string[])[]>> = {
  ipfix: [['wire'], ['export', 'collect']],
}

const SRC = join(REPO_ROOT, 'src')

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return sourceFiles(path)
    return name.endsWith('.ts') ? [path] : []
  })
}

/** The unit of a file: its top folder under src/, or the file itself at the top. */
function unitOf(file: string): string {
  return relative(SRC, file).split('/')[0]
}

function rankOf(unit: string): number {
  const rank = LAYERS.findIndex((layer) => layer.includes(unit))
  assert.ok(rank >= 0, `src/${unit} is in no layer of test/architecture/layers.test.ts (add it, and to docs/architecture.md)`)
  return rank
}

/** The sub-folder of a file inside a unit of SUB_LAYERS ('wire' for src/ipfix/wire/codec.ts), or undefined for other units. */
function subUnitOf(file: string): string | undefined {
  const [unit, sub, ...rest] = relative(SRC, file).split('/')
  if (!(unit in SUB_LAYERS)) return undefined
  assert.ok(rest.length > 0, `src/${unit}/${sub} is outside the sub-folders of src/${unit} (put it in one of SUB_LAYERS, or add one)`)
  return sub
}

function subRankOf(unit: string, sub: string): number {
  const rank = SUB_LAYERS[unit].findIndex((layer) => layer.includes(sub))
  assert.ok(rank >= 0, `src/${unit}/${sub} is in no layer of SUB_LAYERS in test/architecture/layers.test.ts (add it, and to docs/architecture.md)`)
  return rank
}

/** Relative imports of a file (static, dynamic and re-exports), resolved to .ts paths. */
export function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)'(\.{1,2}\/[^']+)'/g)].map((m) => m[1])
  return specs.map((s) => resolve(dirname(file), s.replace(/\.js$/, '.ts')))
}

describe('architecture: layers only point down', function () {
  const files = sourceFiles(SRC)
  const graph = new Map(files.map((f) => [f, importsOf(f)]))

  it('every import resolves to a file of src/', function () {
    for (const [file, deps] of graph) {
      for (const dep of deps) assert.ok(graph.has(dep), `${relative(REPO_ROOT, file)} imports ${relative(REPO_ROOT, dep)}, which does not exist`)
    }
  })

  it('no module imports from a higher layer or from a peer folder of its own layer', function () {
    const wrong: string[] = []
    for (const [file, deps] of graph) {
      const unit = unitOf(file)
      for (const dep of deps) {
        const depUnit = unitOf(dep)
        if (depUnit === unit) {
          const sub = subUnitOf(file)
          const depSub = subUnitOf(dep)
          if (sub !== undefined && depSub !== undefined && sub !== depSub && subRankOf(unit, depSub) >= subRankOf(unit, sub)) {
            wrong.push(`${relative(SRC, file)} -> ${relative(SRC, dep)}`)
          }
          continue
        }
        if (rankOf(depUnit) >= rankOf(unit)) wrong.push(`${relative(SRC, file)} -> ${relative(SRC, dep)}`)
      }
    }
    assert.deepEqual(wrong, [], `imports that point up or sideways:\n  ${wrong.join('\n  ')}`)
  })

  it('no import circle, between files or between folders', function () {
    // Tarjan's strongly connected components: a component of more than one file is a circle.
    let index = 0
    const idx = new Map<string, number>()
    const low = new Map<string, number>()
    const stack: string[] = []
    const on = new Set<string>()
    const circles: string[][] = []
    const visit = (v: string): void => {
      idx.set(v, index)
      low.set(v, index++)
      stack.push(v)
      on.add(v)
      for (const w of graph.get(v) ?? []) {
        if (!idx.has(w)) {
          visit(w)
          low.set(v, Math.min(low.get(v)!, low.get(w)!))
        } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!))
      }
      if (low.get(v) === idx.get(v)) {
        const component: string[] = []
        let w: string
        do {
          w = stack.pop()!
          on.delete(w)
          component.push(relative(SRC, w))
        } while (w !== v)
        if (component.length > 1 || (graph.get(v) ?? []).includes(v)) circles.push(component.sort())
      }
    }
    for (const f of files) if (!idx.has(f)) visit(f)
    assert.deepEqual(circles, [], `import circles:\n  ${circles.map((c) => c.join(' <-> ')).join('\n  ')}`)
  })

  it('the layer test catches what it is for (an upward import and a circle in a made-up graph)', function () {
    // Guards the test itself: rankOf must order the layers as documented.
    assert.ok(rankOf('sys') < rankOf('bpf'))
    assert.ok(rankOf('bpf') === rankOf('ipfix'))
    assert.ok(rankOf('daemon') > rankOf('config'))
    assert.ok(rankOf('commands') > rankOf('cli'))
    assert.ok(subRankOf('ipfix', 'wire') < subRankOf('ipfix', 'export'))
    assert.ok(subRankOf('ipfix', 'export') === subRankOf('ipfix', 'collect'))
  })

  it('every file of a folder with sub-layers sits in one of them', function () {
    for (const file of files) {
      const unit = unitOf(file)
      if (unit in SUB_LAYERS) subRankOf(unit, subUnitOf(file)!)
    }
  })
})
