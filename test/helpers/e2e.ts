/**
 * Shared by the end-to-end suites: the precondition check (in CI a missing precondition is a
 * failure, never a skip), and running the CLI as a user would.
 */
import {existsSync, rmSync} from 'node:fs'
import {fileURLToPath} from 'node:url'

import {execa} from 'execa'

import {pathsFromEnv, type Paths} from '../../src/paths.js'

export const REPO = fileURLToPath(new URL('../../../', import.meta.url))
export const CLI = `${REPO}bin/run.js`

function missingPrecondition(): string | undefined {
  if (process.getuid?.() !== 0) return 'end-to-end tests need root'
  if (!existsSync('/sys/fs/bpf')) return 'no /sys/fs/bpf'
  for (const tool of ['/usr/bin/clang', '/usr/sbin/bpftool', '/usr/sbin/tc', '/usr/bin/ping', '/usr/sbin/ethtool']) {
    if (!existsSync(tool) && !existsSync(tool.replace('/usr/sbin/', '/sbin/'))) return `${tool} is not installed (run misc/setup.sh)`
  }
  return undefined
}

/** Skips the suite where it cannot run, except in CI, where that is a failure. */
export function requireE2e(ctx: Mocha.Context): void {
  const missing = missingPrecondition()
  if (!missing) return
  if (process.env.CI === 'true') throw new Error(`end-to-end precondition failed in CI: ${missing}`)
  ctx.skip()
}

export interface CliResult {
  stdout: string
  stderr: string
  exitCode: number
}

export async function cli(args: string[], options: {env?: Record<string, string>; uid?: number} = {}): Promise<CliResult> {
  const r = await execa(process.execPath, [CLI, ...args], {reject: false, env: options.env, uid: options.uid, gid: options.uid, timeout: 120_000})
  return {stdout: String(r.stdout), stderr: String(r.stderr), exitCode: r.exitCode ?? -1}
}

/** Runs the CLI and fails with its stderr unless it exits 0. */
export async function cliOk(args: string[], options: {env?: Record<string, string>} = {}): Promise<string> {
  const r = await cli(args, options)
  if (r.exitCode !== 0) throw new Error(`flowctl ${args.join(' ')} exited ${r.exitCode}: ${r.stderr || r.stdout}`)
  return r.stdout
}

export async function cliJson<T>(args: string[]): Promise<T> {
  return JSON.parse(await cliOk([...args, '--json'])) as T
}

/** The suites' pause between polls: the platform's promise timer. */
export {setTimeout as sleep} from 'node:timers/promises'

/**
 * Private pin, run and state directories (FLOWCTL_*) for one suite and the processes it starts,
 * so it never meets another run's meters or daemon. `apply()` in before(), `remove()` in after().
 */
export class PrivateDirs {
  readonly env: {FLOWCTL_PIN_ROOT: string; FLOWCTL_RUN_DIR: string; FLOWCTL_STATE_DIR: string}
  private readonly saved: Record<string, string | undefined> = {}

  /** The same directories as a Paths value, for the library calls a suite makes in-process. */
  readonly paths: Paths

  constructor(id: string) {
    this.env = {FLOWCTL_PIN_ROOT: `/sys/fs/bpf/fct-${id}`, FLOWCTL_RUN_DIR: `/run/fct-${id}`, FLOWCTL_STATE_DIR: `/tmp/fct-${id}-state`}
    this.paths = pathsFromEnv({...process.env, ...this.env})
  }

  apply(): void {
    for (const [k, v] of Object.entries(this.env)) {
      this.saved[k] = process.env[k]
      process.env[k] = v
    }
  }

  /** Removes the directories and puts the environment back. */
  remove(): void {
    for (const dir of Object.values(this.env)) rmSync(dir, {recursive: true, force: true})
    for (const [k, v] of Object.entries(this.saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}
