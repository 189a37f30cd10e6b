/**
 * Shared by the benchmark figures: statistics, the result table, the machine's description, and
 * the cleanup stack that leaves nothing behind (also on SIGINT).
 */
import {readFileSync} from 'node:fs'
import {cpus, release} from 'node:os'
import {setTimeout as sleep} from 'node:timers/promises'

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const s = [...values].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Relative spread of the repeats: (max - min) / median. */
export function spread(values: readonly number[]): number {
  if (values.length < 2) return 0
  return (Math.max(...values) - Math.min(...values)) / median(values)
}

/** One line of the table. `ours` and `reference` are display strings; `pass` is undefined when the line has no target. */
export interface Row {
  figure: string
  ours: string
  reference: string
  ratio: string
  target: string
  pass?: boolean
  /** Set when the line could not be measured: printed instead of PASS/MISS. */
  error?: string
}

export interface BenchOptions {
  quick: boolean
  /** Repeats of each measurement; the median is printed. */
  repeats: number
  verbose: boolean
}

export function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`)
}

/** 1234567 -> "1.23 M", 12345 -> "12.3 k". */
export function si(value: number, unit = ''): string {
  if (!Number.isFinite(value)) return '-'
  const abs = Math.abs(value)
  const [div, prefix] = abs >= 1e9 ? [1e9, 'G'] : abs >= 1e6 ? [1e6, 'M'] : abs >= 1e3 ? [1e3, 'k'] : [1, '']
  const v = value / div
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2
  return `${v.toFixed(digits)} ${prefix}${unit}`.trim()
}

export function fixed(value: number, digits = 2): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-'
}

export function ratio(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}x` : '-'
}

export function machine(): string[] {
  const list = cpus()
  let model = list[0]?.model?.trim() ?? 'unknown CPU'
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8')
    const m = /^model name\s*:\s*(.+)$/m.exec(info)
    if (m) model = m[1].trim()
  } catch {
    // not Linux
  }
  const mem = (() => {
    try {
      const m = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))
      return m ? `${(Number(m[1]) / 1024 / 1024).toFixed(1)} GiB RAM` : ''
    } catch {
      return ''
    }
  })()
  return [`CPU: ${model}, ${list.length} cores`, `kernel: ${release()}, Node ${process.version}${mem ? `, ${mem}` : ''}`]
}

export function renderTable(rows: readonly Row[]): string {
  const header = ['figure', 'ours', 'reference', 'ratio', 'target', 'result']
  const cells = rows.map((r) => [
    r.figure,
    r.ours,
    r.reference,
    r.ratio,
    r.target,
    r.error ? `ERROR: ${r.error}` : r.pass === undefined ? '' : r.pass ? 'PASS' : 'MISS',
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (i === 5 ? 0 : c[i].length))))
  const line = (c: string[]) =>
    c
      .map((v, i) => (i === 5 ? v : v.padEnd(widths[i])))
      .join('  ')
      .trimEnd()
  return [line(header), line(widths.map((w, i) => '-'.repeat(i === 5 ? 6 : w))), ...cells.map(line)].join('\n')
}

/**
 * Undo actions, run last-in first-out: by `runAll` in a finally block, and on SIGINT/SIGTERM
 * before the process exits.
 */
export class Cleanup {
  private readonly actions: {what: string; run: () => unknown}[] = []

  push(what: string, run: () => unknown): void {
    this.actions.push({what, run})
  }

  async runAll(): Promise<void> {
    while (this.actions.length) {
      const a = this.actions.pop()!
      try {
        await a.run()
      } catch (error) {
        log(`cleanup: ${a.what}: ${(error as Error).message}`)
      }
    }
  }
}

export const cleanup = new Cleanup()

/** Busy and total CPU jiffies of the whole machine, from /proc/stat. */
function cpuJiffies(): {busy: number; total: number} {
  const fields = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const total = fields.reduce((a, b) => a + b, 0)
  const idle = fields[3] + (fields[4] ?? 0) // idle + iowait
  return {busy: total - idle, total}
}

/**
 * Waits until the machine is quiet (at most 10 % of its CPU time busy over half a second) or
 * `maxMs` have passed, and returns how long it waited. A section that freed large maps leaves
 * the kernel freeing them in the background for seconds (kworkers): the next section's figures,
 * those that use both CPUs above all, would otherwise measure that work too.
 */
export async function settle(maxMs = 30_000): Promise<number> {
  const started = performance.now()
  for (;;) {
    const a = cpuJiffies()
    await sleep(500)
    const b = cpuJiffies()
    const busy = (b.busy - a.busy) / Math.max(1, b.total - a.total)
    const waited = performance.now() - started
    if (busy <= 0.1 || waited >= maxMs) return waited
  }
}
