/**
 * The config text as the `yaml` library parsed it, and the one way a config problem becomes an
 * error: a key path (`collectors[0].address`) is found again in the document, and its node's range
 * gives the FILE:LINE:COL the message starts with. The schema (schema.ts) and the checks across
 * keys (load.ts) only ever name key paths; positions are this file's business.
 */
import {isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node, type YAMLError} from 'yaml'

import {InvalidInputError} from '../errors.js'

/** Where a config problem is: the file (null for text without one), its position, the key path. */
export interface ConfigErrorLocation {
  file: string | null
  line?: number | null
  column?: number | null
  key?: string | null
}

/** The name that stands for the file in messages about config text that has none. */
const NO_FILE = '<config>'

/**
 * A config that cannot be used, as one line: `FILE:LINE:COL: KEY: PROBLEM; allowed: WHAT`.
 * A missing or unreadable file has no position (`FILE: PROBLEM`); a YAML syntax error no key.
 */
export class ConfigError extends InvalidInputError {
  /** The file as given; null for text without a file. */
  readonly file: string | null
  /** 1-based; null when the problem has no position (e.g. the file is missing). */
  readonly line: number | null
  /** 1-based; null when the problem has no position. */
  readonly column: number | null
  /** The key path, e.g. `templates[1].template[2].name`; null for the file or document as a whole. */
  readonly key: string | null
  /** What is wrong (and what is allowed), without the location. */
  readonly problem: string

  constructor(problem: string, where: ConfigErrorLocation, options: {cause?: unknown} = {}) {
    const line = where.line ?? null
    const column = where.column ?? null
    const key = where.key ?? null
    const position = line === null ? '' : `:${line}:${column ?? 1}`
    super(`${where.file ?? NO_FILE}${position}: ${key === null ? '' : `${key}: `}${problem}`, options)
    this.file = where.file
    this.line = line
    this.column = column
    this.key = key
    this.problem = problem
  }
}

/** One step of a key path: a map key or a list index. */
export type PathKey = string | number

/** Which node of a key path a problem points at. */
export type Anchor =
  /** The value (or, when it has none, its key). */
  | 'value'
  /** The key itself: an unknown or repeated key. */
  | 'key'
  /** The map that holds (or lacks) the key: a missing key. */
  | 'map'

/** `collectors[0].address` for ['collectors', 0, 'address']; null for the document itself. */
export function formatPath(path: readonly PathKey[]): string | null {
  if (path.length === 0) return null
  return path.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? k : `.${k}`)).join('')
}

/** The problem with `allowed` appended the way every config message says it. */
export function problemText(problem: string, allowed?: string): string {
  return allowed === undefined ? problem : `${problem}; allowed: ${allowed}`
}

interface Located {
  /** The value at the path, if the path goes that far. */
  value?: Node | null
  /** The key of the last step, if it is a map key that is there. */
  key?: Node | null
  /** The last node the walk reached: the map or list that lacks the last step, or the value. */
  deepest: Node | null
}

/** A parsed config document that can point at any key path in it. */
export class ConfigSource {
  readonly lineCounter = new LineCounter()
  readonly doc: Document

  constructor(
    readonly file: string | null,
    readonly text: string,
  ) {
    try {
      this.doc = parseDocument(text, {lineCounter: this.lineCounter, prettyErrors: false})
    } catch (error) {
      // A deep nest of flow collections overflows the parser's stack.
      if (error instanceof RangeError) throw new ConfigError('invalid YAML: nested too deeply', {file, line: 1, column: 1}, {cause: error})
      throw error
    }
    if (this.doc.errors.length > 0) this.syntaxError(this.doc.errors[0])
  }

  /** The document as plain data (maps as objects, aliases resolved); null for an empty document. */
  toData(): unknown {
    for (const alias of this.danglingAliases()) this.failAt(alias, formatPath(this.pathOf(alias)), `the alias *${alias.source} names no anchor`)
    try {
      return this.doc.toJS({maxAliasCount: 100})
    } catch (error) {
      if (error instanceof RangeError) throw new ConfigError('the document is nested too deeply', {file: this.file, line: 1, column: 1}, {cause: error})
      if (error instanceof ReferenceError) throw new ConfigError(`aliases: ${error.message}`, {file: this.file, line: 1, column: 1}, {cause: error})
      throw error
    }
  }

  /** Throws the ConfigError for `path`, pointing at its value, its key or the map that lacks it. */
  fail(path: readonly PathKey[], problem: string, anchor: Anchor = 'value'): never {
    this.failAt(this.nodeAt(path, anchor), formatPath(path), problem)
  }

  /** The node a problem at `path` points at (see Anchor). */
  nodeAt(path: readonly PathKey[], anchor: Anchor): Node | null | undefined {
    const found = this.locate(path)
    if (anchor === 'key') return found.key ?? found.value ?? found.deepest
    // A missing key: the walk stopped at the map that lacks it.
    if (anchor === 'map') return found.deepest
    return rangeOf(found.value) !== undefined ? found.value : (found.key ?? found.deepest)
  }

  /** The 1-based line of the key at `path` (for "the same setting as X (line N)"). */
  lineOf(path: readonly PathKey[]): number {
    const found = this.locate(path)
    return this.position(found.key ?? found.value ?? found.deepest).line
  }

  /** Where in the text a problem at `path` points, for reporting the first problem in the file. */
  offsetOf(path: readonly PathKey[], anchor: Anchor = 'value'): number {
    return rangeOf(this.nodeAt(path, anchor))?.[0] ?? 0
  }

  /** Walks `path` through the document, following aliases. */
  locate(path: readonly PathKey[]): Located {
    let node = this.resolve(this.doc.contents)
    let key: Node | null | undefined
    for (const step of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(step))
        if (!pair) return {deepest: node}
        key = pair.key as Node
        const value = this.resolve(pair.value as Node | null)
        if (value === null) return {key, value: null, deepest: node}
        node = value
      } else if (isSeq(node) && typeof step === 'number' && step < node.items.length) {
        key = undefined
        const item = this.resolve(node.items[step] as Node | null)
        if (item === null) return {value: null, deepest: node}
        node = item
      } else {
        return {deepest: node}
      }
    }
    return {key, value: node, deepest: node}
  }

  // --- positions ---------------------------------------------------------------------------------

  private resolve(node: Node | null | undefined): Node | null {
    if (node === null || node === undefined) return null
    if (isAlias(node)) return (node.resolve(this.doc) as Node | undefined) ?? node
    return node
  }

  private position(node: Node | null | undefined): {line: number; column: number} {
    const range = rangeOf(node)
    if (!range) return {line: 1, column: 1}
    const {line, col} = this.lineCounter.linePos(range[0])
    return {line, column: col}
  }

  private failAt(node: Node | null | undefined, key: string | null, problem: string): never {
    throw new ConfigError(problem, {file: this.file, ...this.position(node), key})
  }

  private danglingAliases(): (Node & {source: string})[] {
    const found: (Node & {source: string})[] = []
    visit(this.doc, {
      Alias: (_key, alias) => {
        if (alias.resolve(this.doc) === undefined) found.push(alias)
      },
    })
    return found
  }

  /** The key path of a node, for messages about it. */
  private pathOf(target: Node): PathKey[] {
    let result: PathKey[] = []
    visit(this.doc, (_key, node, ancestors) => {
      if (node !== target) return undefined
      const path: PathKey[] = []
      const chain = [...ancestors, node]
      for (let i = 1; i < chain.length; i++) {
        const parent = chain[i - 1]
        const child = chain[i]
        if (isSeq(parent)) path.push(parent.items.indexOf(child))
        else if (isMap(parent)) continue
        else if (isScalar((parent as {key?: unknown}).key)) path.push(String((parent as {key: {value: unknown}}).key.value))
      }
      result = path
      return visit.BREAK
    })
    return result
  }

  private syntaxError(error: YAMLError): never {
    const {line, col} = this.lineCounter.linePos(error.pos[0])
    let message = error.message.replace(/\.$/, '')
    if (/^[A-Z][a-z]/.test(message)) message = message[0].toLowerCase() + message.slice(1)
    // An unquoted [IPv6]:PORT is a YAML flow list followed by junk.
    const lineText = this.text.split('\n')[line - 1] ?? ''
    const hint = /(^|[^'"\w])\[[\w:.%]*:[\w:.%]*\]:\d+/.test(lineText) ? ' (an address in brackets must be quoted in YAML: "[2001:db8::1]:4739")' : ''
    throw new ConfigError(`invalid YAML: ${message}${hint}`, {file: this.file, line, column: col})
  }
}

function rangeOf(node: unknown): [number, number, number] | undefined {
  const range = (node as {range?: [number, number, number] | null} | null | undefined)?.range
  return range ?? undefined
}
