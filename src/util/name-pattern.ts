/**
 * Patterns over names: the namespaces and interfaces a `meters:` entry of the config follows.
 *
 * A glob is the shell's: `*` any run of characters (none included), `?` one character, `[abc]`,
 * `[a-z]` and `[!a-z]` (or `[^a-z]`) one character of (or not of) a set, and `\` takes the next
 * character as it is. It matches the whole name. A namespace may also be given as `/REGEX/`, a
 * JavaScript regular expression that matches anywhere in the name (anchor it with ^ and $), or as
 * `root`, the root namespace, which no glob or regular expression takes. An interface glob with a
 * leading `!` excludes what it matches; loopback (`lo`) is taken only when named as it is.
 *
 * Parsing throws a PatternError whose message says what is wrong in one line; the config turns it
 * into FILE:LINE:COL.
 */

/** What is wrong with a pattern, in one line (without where it is), and what is allowed instead when it is not the usual. */
export class PatternError extends Error {
  constructor(
    message: string,
    readonly allowed?: string,
  ) {
    super(message)
  }
}

/** The most characters an interface name has (IFNAMSIZ - 1). */
const IFNAME_MAX = 15

/** A namespace pattern: `root`, one name, a glob or a regular expression. */
export type NetnsPattern = {kind: 'root'; text: string} | {kind: 'name'; text: string; name: string} | {kind: 'glob' | 'regex'; text: string; regex: RegExp}

/** One glob of an interface list. */
export interface InterfaceGlob {
  text: string
  exclude: boolean
  /** The glob has no wildcard: it names one interface. */
  literal: boolean
  regex: RegExp
}

/** Whether `text` holds a wildcard (`*`, `?` or `[`) that is not escaped. */
function hasWildcard(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\') i++
    else if ('*?['.includes(text[i])) return true
  }
  return false
}

function escapeRegex(c: string): string {
  return /[\\^$.*+?()[\]{}|/-]/.test(c) ? `\\${c}` : c
}

/** A glob as an anchored regular expression, and the fewest characters a name it matches has. */
function compileGlob(glob: string): {regex: RegExp; minLength: number} {
  if (glob === '') throw new PatternError('an empty pattern')
  let source = ''
  let minLength = 0
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]
    if (c === '\\') {
      if (i + 1 >= glob.length) throw new PatternError(`'${glob}' ends in a lone \\ (write \\\\ for a backslash)`)
      source += escapeRegex(glob[++i])
      minLength++
    } else if (c === '*') {
      source += '.*'
    } else if (c === '?') {
      source += '.'
      minLength++
    } else if (c === '[') {
      const {regex, end} = compileClass(glob, i)
      source += regex
      minLength++
      i = end
    } else {
      source += escapeRegex(c)
      minLength++
    }
  }
  return {regex: new RegExp(`^${source}$`, 's'), minLength}
}

/** The character class that opens at `start`: its regular expression and the index of its `]`. */
function compileClass(glob: string, start: number): {regex: string; end: number} {
  let i = start + 1
  const negated = glob[i] === '!' || glob[i] === '^'
  if (negated) i++
  const members: string[] = []
  let first = true
  for (; i < glob.length; i++) {
    let c = glob[i]
    // A ] right after [ (or [!) is a member, as in the shell.
    if (c === ']' && !first) return {regex: `[${negated ? '^' : ''}${members.join('')}]`, end: i}
    first = false
    if (c === '\\') {
      if (i + 1 >= glob.length) break
      c = glob[++i]
    }
    if (glob[i + 1] === '-' && i + 2 < glob.length && glob[i + 2] !== ']') {
      let to = glob[i + 2]
      i += 2
      if (to === '\\') {
        if (i + 1 >= glob.length) break
        to = glob[++i]
      }
      if (to < c) throw new PatternError(`'${glob}' has the range ${c}-${to}, which runs backwards (write ${to}-${c})`)
      members.push(`${escapeRegex(c)}-${escapeRegex(to)}`)
    } else {
      members.push(escapeRegex(c))
    }
  }
  throw new PatternError(`'${glob}' opens a [ that no ] closes (write \\[ for a bracket)`)
}

/** Reads a namespace pattern as the config writes it. */
export function parseNetnsPattern(input: string): NetnsPattern {
  const text = input.trim()
  if (text === '') throw new PatternError('an empty pattern')
  if (text === 'root') return {kind: 'root', text}
  if (text.startsWith('/')) {
    if (text.length < 3 || !text.endsWith('/'))
      throw new PatternError(`'${text}' starts a regular expression with / but does not end it with one (write /REGEX/)`)
    const body = text.slice(1, -1)
    try {
      return {kind: 'regex', text, regex: new RegExp(body)}
    } catch (error) {
      // "Invalid regular expression: /(/: Unterminated group": the part after the pattern says why.
      const why = (error as Error).message.split(': ').pop() ?? 'invalid'
      throw new PatternError(`'${text}' is not a valid regular expression (${why.toLowerCase()})`)
    }
  }
  // A backslash escapes a wildcard: such a name is matched as a glob, which reads the escapes.
  if (hasWildcard(text) || text.includes('\\')) {
    if (text.includes('/')) throw new PatternError(`'${text}' has a /, which no namespace name has`)
    return {kind: 'glob', text, regex: compileGlob(text).regex}
  }
  if (text === '.' || text === '..' || text.includes('/') || text.includes('\0'))
    throw new PatternError(`'${text}' is not a namespace name`, 'a namespace name from `ip netns list` (no /), or root')
  return {kind: 'name', text, name: text}
}

/** Whether a namespace (null: the root namespace) is one `pattern` takes. */
export function netnsMatches(pattern: NetnsPattern, netns: string | null): boolean {
  switch (pattern.kind) {
    case 'root':
      return netns === null
    case 'name':
      return netns === pattern.name
    default:
      return netns !== null && pattern.regex.test(netns)
  }
}

/** Reads one glob of an interface list (`eth*`, `!eth9`). */
export function parseInterfaceGlob(input: string): InterfaceGlob {
  const exclude = input.startsWith('!')
  const glob = exclude ? input.slice(1) : input
  if (glob === '') throw new PatternError(exclude ? 'a lone ! (write !GLOB to leave interfaces out)' : 'an empty pattern')
  if (/[\s/:]/.test(glob)) throw new PatternError(`'${glob}' has a space, / or :, which no interface name has`)
  const {regex, minLength} = compileGlob(glob)
  if (minLength > IFNAME_MAX) throw new PatternError(`'${glob}' matches only names longer than an interface name can be (${IFNAME_MAX} characters)`)
  return {text: input, exclude, literal: !hasWildcard(glob), regex}
}

/**
 * The interfaces an interface list takes: those an including glob matches (every one, when all
 * the globs exclude) and no excluding glob does. Loopback only when an including glob is `lo` itself.
 */
export class InterfaceSelector {
  readonly globs: readonly InterfaceGlob[]
  private readonly includes: InterfaceGlob[]
  private readonly excludes: InterfaceGlob[]

  constructor(texts: readonly string[]) {
    this.globs = texts.map((t) => parseInterfaceGlob(t))
    this.includes = this.globs.filter((g) => !g.exclude)
    this.excludes = this.globs.filter((g) => g.exclude)
  }

  matches(ifname: string): boolean {
    if (this.excludes.some((g) => g.regex.test(ifname))) return false
    if (ifname === 'lo') return this.includes.some((g) => g.literal && g.regex.test(ifname))
    return this.includes.length === 0 || this.includes.some((g) => g.regex.test(ifname))
  }
}
