/**
 * `npm run bench`: flowctl's speed beside its references, measured in one run (shared, noisy
 * machines: every comparison runs its variants side by side). Needs root. See docs/benchmarks.md.
 *
 *   node dist/misc/bench/index.js [--only memory,kernel,drain,encoder,linerate,softflowd,replay,namespaces,follow,drops]
 *                                 [--quick] [--repeats N] [--verbose] [--profile DIR] [--namespaces N]
 *
 * Everything the bench makes lives under private roots (pins, run, state and cache dirs, named
 * fct-bench-<random>), and is removed at the end, on failure and on SIGINT.
 */
import {randomBytes} from 'node:crypto'
import {mkdirSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {parseArgs} from 'node:util'

import {cleanup, log, machine, renderTable, settle, type BenchOptions, type Row} from './util.js'

const SECTIONS = ['memory', 'kernel', 'drain', 'encoder', 'linerate', 'softflowd', 'replay', 'namespaces', 'follow', 'drops'] as const
/** Namespaces of the `namespaces` section unless --namespaces says otherwise. */
const NAMESPACES = 100
type Section = (typeof SECTIONS)[number]

function isolate(): string {
  const id = randomBytes(3).toString('hex')
  const roots = {
    FLOWCTL_PIN_ROOT: `/sys/fs/bpf/fct-bench-${id}`,
    FLOWCTL_RUN_DIR: `/run/fct-bench-${id}`,
    FLOWCTL_STATE_DIR: join(tmpdir(), `fct-bench-${id}`, 'state'),
    FLOWCTL_CACHE_DIR: join(tmpdir(), `fct-bench-${id}`, 'cache'),
  }
  for (const [name, dir] of Object.entries(roots)) {
    process.env[name] = dir
    mkdirSync(dir, {recursive: true})
  }
  cleanup.push('removing the private directories', () => {
    for (const dir of [roots.FLOWCTL_PIN_ROOT, roots.FLOWCTL_RUN_DIR, join(tmpdir(), `fct-bench-${id}`)]) rmSync(dir, {recursive: true, force: true})
  })
  return id
}

async function runSection(section: Section, options: BenchOptions, profile: string | undefined, namespaces: number): Promise<Row[]> {
  switch (section) {
    case 'memory':
      return (await import('./memory.js')).benchMemory(options)
    case 'kernel':
      return (await import('./kernel.js')).benchKernel(options)
    case 'drain':
      return (await import('./drain.js')).benchDrain(options, profile)
    case 'encoder':
      return (await import('./encoder.js')).benchEncoder(options)
    case 'linerate':
      return (await import('./linerate.js')).benchLineRate(options)
    case 'softflowd':
      return (await import('./linerate.js')).benchSoftflowd(options)
    case 'replay':
      return (await import('./replay.js')).benchReplay(options)
    case 'namespaces':
      return (await import('./namespaces.js')).benchNamespaces({...options, namespaces})
    case 'follow':
      return (await import('./follow.js')).benchFollow(options)
    case 'drops':
      return (await import('./drops.js')).benchDrops(options)
  }
}

async function main(): Promise<number> {
  const {values} = parseArgs({
    options: {
      only: {type: 'string'},
      quick: {type: 'boolean', default: false},
      repeats: {type: 'string'},
      verbose: {type: 'boolean', short: 'v', default: false},
      profile: {type: 'string'},
      namespaces: {type: 'string'},
      help: {type: 'boolean', short: 'h', default: false},
    },
  })
  if (values.help) {
    process.stdout.write(`usage: npm run bench -- [--only ${SECTIONS.join(',')}] [--quick] [--repeats N] [--verbose] [--profile DIR] [--namespaces N]\n`)
    return 0
  }
  const namespaces = values.namespaces ? Number(values.namespaces) : NAMESPACES
  if (!Number.isInteger(namespaces) || namespaces < 1 || namespaces > 500) {
    process.stderr.write(`bench: --namespaces ${values.namespaces}: expected a whole number from 1 to 500\n`)
    return 2
  }
  const only = values.only ? values.only.split(',').map((s) => s.trim()) : [...SECTIONS]
  const unknown = only.filter((s) => !SECTIONS.includes(s as Section))
  if (unknown.length) {
    process.stderr.write(`bench: unknown section ${unknown.join(', ')}: expected ${SECTIONS.join(', ')}\n`)
    return 2
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root (BPF, network namespaces)\n')
    return 2
  }
  const quick = values.quick
  const options: BenchOptions = {quick, repeats: values.repeats ? Number(values.repeats) : quick ? 3 : 5, verbose: values.verbose}
  const id = isolate()
  // Set by the signal handler while a section runs (an abort signal, not a flag the type checker narrows).
  const interrupted = new AbortController()
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted.signal.aborted) return
    interrupted.abort()
    log(`${signal}: cleaning up`)
    void cleanup.runAll().finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  const header = [`flowctl bench (${quick ? 'quick' : 'full'}, median of ${options.repeats} repeats, run fct-bench-${id})`, ...machine()]
  process.stdout.write(`${header.join('\n')}\n`)
  const rows: Row[] = []
  const started = performance.now()
  try {
    for (const section of only as Section[]) {
      const waited = await settle()
      const t0 = performance.now()
      log(`${section}...${waited > 1000 ? ` (after ${(waited / 1000).toFixed(1)} s for the machine to go quiet)` : ''}`)
      try {
        rows.push(...(await runSection(section, options, values.profile, namespaces)))
      } catch (error) {
        if (interrupted.signal.aborted) break
        log(`${section} failed: ${(error as Error).stack ?? String(error)}`)
        rows.push({figure: section, ours: '', reference: '', ratio: '', target: '', error: (error as Error).message.split('\n')[0]})
      }
      log(`${section}: ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    }
  } finally {
    await cleanup.runAll()
  }
  process.stdout.write(
    `\n${renderTable(rows)}\n\n${((performance.now() - started) / 1000).toFixed(0)} s; ratios: ours / reference (x), see docs/benchmarks.md\n`,
  )
  return rows.some((r) => r.error) ? 1 : 0
}

main().then(
  (code) => process.exit(code),
  async (error: Error) => {
    process.stderr.write(`bench: ${error.stack ?? error.message}\n`)
    await cleanup.runAll()
    process.exit(1)
  },
)
