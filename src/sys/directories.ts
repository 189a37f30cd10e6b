/**
 * Creating a directory and the parents it lacks, with a walk of our own: Node's
 * `mkdirSync(dir, {recursive: true})` (and `mkdir`'s, in a libuv thread) loops forever where the
 * kernel answers ENOENT to a mkdir under a parent that exists, as procfs does: asked for
 * /proc/flowctl it finds /proc (EEXIST), tries again (ENOENT), and so on, at 100 % CPU in one call
 * that no signal interrupts. This walk makes each missing directory once, top down, and throws
 * the first error; it takes as many steps as the path has parts.
 */
import {mkdirSync, statSync} from 'node:fs'
import {dirname, resolve} from 'node:path'

function code(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code
}

function notADirectory(path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${path}'`), {code: 'ENOTDIR', path, syscall: 'mkdir'})
}

/** The directories of `dir` that do not exist yet, from the top down, and the nearest one that does. */
export function missingDirectories(dir: string): {existing: string; missing: string[]} {
  const missing: string[] = []
  let path = resolve(dir)
  for (;;) {
    try {
      if (!statSync(path).isDirectory()) throw notADirectory(path)
      return {existing: path, missing: missing.reverse()}
    } catch (error) {
      if (code(error) !== 'ENOENT') throw error
      const parent = dirname(path)
      if (parent === path) throw error
      missing.push(path)
      path = parent
    }
  }
}

/** Creates `dir` and its missing parents (as `mkdir -p`), or throws the error of the first that fails. */
export function makeDirectories(dir: string): void {
  for (const path of missingDirectories(dir).missing) {
    try {
      mkdirSync(path)
    } catch (error) {
      // Made meanwhile by someone else: fine if it is a directory.
      if (code(error) !== 'EEXIST') throw error
      if (!statSync(path).isDirectory()) throw notADirectory(path)
    }
  }
}
