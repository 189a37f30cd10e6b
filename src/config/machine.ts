/**
 * What a loaded config needs of the machine it runs on: the directories of its log files, a
 * state file whose directory exists or can be made, a metrics host that resolves, and, when it names hooks (programs the daemon runs with its own
 * rights, root), a file no one but its owner can change. `flowctl config check` and the daemon (at
 * start and at each reload) both ask here, so the check refuses what the daemon would refuse.
 */
import {lookup} from 'node:dns/promises'
import {mkdtemp, rmdir, stat} from 'node:fs/promises'
import {isIP} from 'node:net'
import {dirname, join, resolve} from 'node:path'
import {userInfo} from 'node:os'

import {missingDirectories} from '../sys/directories.js'
import type {Config} from './config.js'
import {ConfigError, problemText} from './source.js'

export interface MachineCheckOptions {
  /** Resolves a host name; the system's resolver (what the metrics server's listen uses) by default. */
  lookup?: (host: string) => Promise<unknown>
}

/** Throws the ConfigError for the first thing the config needs that this machine lacks. */
export async function checkConfigOnMachine(config: Config, options: MachineCheckOptions = {}): Promise<void> {
  await checkFileMode(config)
  for (const [i, log] of config.logs.entries()) await checkLogDirectory(config, log.file, `logs[${i}].file`)
  if (config.stateFile !== null) await checkStateFileDirectory(config, config.stateFile, 'stateFile')
  if (config.metrics.listen !== null) await checkMetricsHost(config, config.metrics.listen, options.lookup ?? ((host) => lookup(host)))
}

/** The user the daemon runs as, in words. */
function daemonUser(): string {
  const uid = process.getuid?.()
  if (uid === 0) return 'root'
  try {
    return userInfo().username
  } catch {
    return `uid ${uid}`
  }
}

/**
 * A config that names hooks is a list of programs the daemon runs as its user (root): anyone who
 * can write the file can run anything as root at the next reload. Refuse a file group or others
 * may write.
 */
async function checkFileMode(config: Config): Promise<void> {
  if (config.file === null || !config.logs.some((l) => l.hooks.length > 0)) return
  let mode: number
  try {
    mode = (await stat(config.file)).mode
  } catch {
    // Loaded from it a moment ago; if it is gone now, the next load says so.
    return
  }
  const writers = [mode & 0o020 ? 'its group' : '', mode & 0o002 ? 'all users' : ''].filter(Boolean)
  if (writers.length === 0) return
  throw new ConfigError(
    problemText(
      `the file is writable by ${writers.join(' and ')} (mode ${(mode & 0o7777).toString(8).padStart(4, '0')}) and names hooks, which the daemon runs as ${daemonUser()}`,
      `a file only its owner can write: chmod go-w ${config.file}`,
    ),
    {file: config.file},
  )
}

/** The daemon appends to each log file and cannot create its directory: it must be there. */
async function checkLogDirectory(config: Config, file: string, key: string): Promise<void> {
  if (file === '-') return
  const path = resolve(file)
  const directory = dirname(path)
  const refuse = (problem: string, allowed: string): never => {
    throw new ConfigError(problemText(problem, allowed), {file: config.file, key})
  }
  try {
    if (!(await stat(directory)).isDirectory()) refuse(`${directory} is not a directory`, 'a file in an existing directory')
  } catch (error) {
    if (error instanceof ConfigError) throw error
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT') refuse(`the directory ${directory} does not exist`, `a file in an existing directory (create it: mkdir -p ${directory})`)
    if (code === 'ENOTDIR') refuse(`a part of ${directory} is not a directory`, 'a file in an existing directory')
    // EACCES and the like: this user cannot tell, the daemon's may; its start will say.
    return
  }
  const existing = await stat(path).catch(() => undefined)
  if (existing?.isDirectory()) refuse(`${file} is a directory`, 'a file path')
}

/**
 * The daemon creates the state file's directory when it is missing. Refuse a path where it cannot:
 * under a file, or where mkdir fails, as under /proc (which made the daemon spin, before it made
 * its directories itself). Whether it can is tried: a directory made and removed at once in the
 * nearest one that exists. Only refused here, not when the file itself cannot be written (a
 * read-only or full disk): the daemon runs on without it, and says so.
 */
async function checkStateFileDirectory(config: Config, file: string, key: string): Promise<void> {
  const directory = dirname(resolve(file))
  const refuse = (problem: string, allowed: string): never => {
    throw new ConfigError(problemText(problem, allowed), {file: config.file, key})
  }
  let existing: string
  let missing: string[]
  try {
    ;({existing, missing} = missingDirectories(directory))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR')
      refuse(`a part of ${directory} is not a directory`, 'a file in a directory that exists or can be created')
    return // EACCES and the like: this user cannot tell, the daemon's may
  }
  if (!missing.length) return
  try {
    await rmdir(await mkdtemp(join(existing, '.flowctl-check-')))
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'an error'
    // Another user may lack the rights the daemon (root) has: only root can tell.
    if (process.getuid?.() !== 0 && (code === 'EACCES' || code === 'EPERM')) return
    refuse(
      `the directory ${missing[0]} cannot be created (mkdir in ${existing} fails: ${code})`,
      'a file in a directory that exists or can be created, e.g. under /var/lib',
    )
  }
}

/** The host part of HOST:PORT or [IPV6]:PORT (as the config's parser accepted it). */
function hostOf(listen: string): string {
  if (listen.startsWith('[')) return listen.slice(1, listen.indexOf(']'))
  return listen.slice(0, listen.lastIndexOf(':'))
}

/** The daemon's metrics server listens on the host's address: a name that does not resolve stops it. */
async function checkMetricsHost(config: Config, listen: string, resolveHost: (host: string) => Promise<unknown>): Promise<void> {
  const host = hostOf(listen)
  if (isIP(host.split('%')[0]) !== 0) return
  try {
    await resolveHost(host)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message
    throw new ConfigError(
      problemText(
        `the host '${host}' does not resolve (${code}), so the metrics server cannot listen on it`,
        'an address or name of this machine, e.g. 127.0.0.1:9999, or "" for no metrics',
      ),
      {file: config.file, key: 'metrics.listen'},
      {cause: error},
    )
  }
}
