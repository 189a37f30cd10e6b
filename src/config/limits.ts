/**
 * How much a config may hold, checked before anything looks at what it holds: the file's size
 * before it is parsed, and the length of each list in the parsed document before the schema walks
 * into it. A config of 400 000 collectors is refused in milliseconds, not after 15 s and 1 GB.
 */
import {isMap, isSeq, type Node} from 'yaml'

import {ConfigError, type ConfigSource, type PathKey} from './source.js'

/** The most a config may hold; far above what a router needs, far below what hurts the daemon. */
export const CONFIG_LIMITS = {
  /** Bytes of config text. */
  fileBytes: 256 * 1024,
  collectors: 64,
  logs: 16,
  templates: 256,
  fieldsPerTemplate: 128,
  hooksPerLog: 16,
  argsPerHook: 64,
  meters: 1024,
} as const

/** `256 KB` for 262144. */
function sizeText(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`
  if (bytes >= 1024) return `${Math.ceil(bytes / 1024)} KB`
  return `${bytes} bytes`
}

/** Refuses config text larger than CONFIG_LIMITS.fileBytes (`bytes` may be a lower bound). */
export function checkFileSize(bytes: number, file: string | null): void {
  if (bytes <= CONFIG_LIMITS.fileBytes) return
  throw new ConfigError(
    `the file is ${sizeText(bytes)}, more than the ${sizeText(CONFIG_LIMITS.fileBytes)} a config may have; allowed: a config of at most ${CONFIG_LIMITS.fileBytes} bytes ` +
      `(at most ${CONFIG_LIMITS.collectors} collectors, ${CONFIG_LIMITS.templates} templates and ${CONFIG_LIMITS.logs} logs)`,
    {file},
  )
}

/** Refuses a list longer than its limit, at the list, before anything in it is read. */
export function checkCounts(source: ConfigSource): void {
  const root = source.locate([]).value
  if (!isMap(root)) return
  const seq = (path: PathKey[]): Node[] => {
    const node = source.locate(path).value
    return isSeq(node) ? (node.items as Node[]) : []
  }
  const bound = (path: PathKey[], count: number, limit: number, what: string): void => {
    if (count <= limit) return
    source.fail(path, `${count} ${what}, more than the ${limit} flowctl accepts; allowed: at most ${limit} ${what}`)
  }
  bound(['collectors'], seq(['collectors']).length, CONFIG_LIMITS.collectors, 'collectors')
  bound(['logs'], seq(['logs']).length, CONFIG_LIMITS.logs, 'log outputs')
  bound(['outputs'], seq(['outputs']).length, CONFIG_LIMITS.collectors + CONFIG_LIMITS.logs, 'outputs')
  bound(['templates'], seq(['templates']).length, CONFIG_LIMITS.templates, 'templates')
  bound(['meters'], seq(['meters']).length, CONFIG_LIMITS.meters, 'meters')
  seq(['templates']).forEach((_, i) => {
    for (const key of ['fields', 'template']) bound(['templates', i, key], seq(['templates', i, key]).length, CONFIG_LIMITS.fieldsPerTemplate, 'fields')
  })
  seq(['collectors']).forEach((_, i) =>
    bound(['collectors', i, 'templates'], seq(['collectors', i, 'templates']).length, CONFIG_LIMITS.templates, 'template ids'),
  )
  const logs: PathKey[][] = [...seq(['logs']).map((_, i) => ['logs', i]), ...seq(['outputs']).map((_, i) => ['outputs', i, 'log'])]
  for (const log of logs) {
    const hooks = [...log, 'hooks']
    bound(hooks, seq(hooks).length, CONFIG_LIMITS.hooksPerLog, 'hooks')
    seq(hooks).forEach((_, j) => bound([...hooks, j, 'command'], seq([...hooks, j, 'command']).length, CONFIG_LIMITS.argsPerHook, 'arguments'))
  }
  seq(['outputs']).forEach((_, i) => {
    const ids = ['outputs', i, 'collector', 'templates']
    bound(ids, seq(ids).length, CONFIG_LIMITS.templates, 'template ids')
  })
}
