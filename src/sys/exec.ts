/**
 * The one way flowctl runs other programs: execa, never a shell, and every failure turned into a
 * typed error whose message a person can act on (or, for a program flowctl runs on a user's
 * behalf and classifies itself, a hook, into a typed account of how it ended).
 */
import type {Readable} from 'node:stream'

import {execa, type ResultPromise} from 'execa'

import {CommandFailedError, ToolMissingError} from '../errors.js'
import {inOwnPidNamespace, ownPidNamespaceFailure} from './proc.js'

/** The Debian package that provides each program we run, for the "not installed" message. */
const PACKAGE_OF: Record<string, string> = {
  bpftool: 'bpftool',
  clang: 'clang',
  ip: 'iproute2',
  iperf3: 'iperf3',
  'llvm-strip': 'llvm',
  nsenter: 'util-linux',
  ping: 'iputils-ping',
  setpriv: 'util-linux',
  softflowd: 'softflowd',
  taskset: 'util-linux',
  tc: 'iproute2',
  tshark: 'tshark',
}

export interface RunOptions {
  /** Run inside this named network namespace (nsenter --net; /sys stays the host's, so pins survive). */
  netns?: string | null
  input?: string
  timeoutMs?: number
  env?: Record<string, string>
}

export interface RunResult {
  stdout: string
  stderr: string
}

/** The argv that runs `file args` in `netns` (or as is, for the root namespace). */
export function inNetns(netns: string | null | undefined, file: string, args: readonly string[]): [string, string[]] {
  if (!netns) return [file, [...args]]
  return ['nsenter', [`--net=/run/netns/${netns}`, '--', file, ...args]]
}

export async function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const [cmd, argv] = inNetns(options.netns, file, args)
  try {
    const result = await execa(cmd, argv, {
      input: options.input,
      timeout: options.timeoutMs,
      env: options.env,
      stripFinalNewline: true,
    })
    return {stdout: result.stdout, stderr: result.stderr}
  } catch (error) {
    throw toFlowctlError(error, file, args, options.netns)
  }
}

/**
 * Start a program whose output is read as a stream (too large to buffer, e.g. a map dump).
 * The caller consumes `stdout` and awaits `done`, which rejects with a typed error.
 */
export function spawnStreaming(file: string, args: readonly string[], options: RunOptions = {}) {
  const [cmd, argv] = inNetns(options.netns, file, args)
  const child: ResultPromise<{buffer: {stdout: false; stderr: true}; encoding: 'buffer'}> = execa(cmd, argv, {
    buffer: {stdout: false, stderr: true},
    encoding: 'buffer',
    timeout: options.timeoutMs,
  })
  const done = child.then(
    () => undefined,
    (error: unknown) => {
      throw toFlowctlError(error, file, args, options.netns)
    },
  )
  // The caller may stop reading early; the rejection is then observed through `done` only if awaited.
  done.catch(() => {})
  return {stdout: child.stdout, done, kill: () => child.kill()}
}

/** A program running in the background (a traffic agent): its output as it comes, its end, and a way to stop it. */
export interface RunningProgram {
  /** What it prints, as it comes (it is collected for `result` too). */
  stdout: Readable
  /** What it printed, once it exits 0; a typed error (ToolMissingError, CommandFailedError) otherwise, a kill included. */
  result: Promise<RunResult>
  kill(signal?: NodeJS.Signals): void
}

/** Start a program that runs beside the caller until it ends or is killed, its output read as it comes and kept. */
export function start(file: string, args: readonly string[], options: RunOptions = {}): RunningProgram {
  const [cmd, argv] = inNetns(options.netns, file, args)
  const child = execa(cmd, argv, {input: options.input, timeout: options.timeoutMs, env: options.env, stripFinalNewline: true})
  const result = child.then(
    (r) => ({stdout: r.stdout, stderr: r.stderr}),
    (error: unknown) => {
      throw toFlowctlError(error, file, args, options.netns)
    },
  )
  // A caller that only stops it may never look at the result: its rejection is then not an unhandled one.
  result.catch(() => {})
  return {stdout: child.stdout, result, kill: (signal = 'SIGTERM') => child.kill(signal)}
}

/** How a contained run ended, for a caller that tells its failures apart itself (hooks, their reasons). */
export type ContainedEnd =
  | {how: 'exited'; exitCode: number; stdout: string; stderr: string}
  | {how: 'killed'; signal: string; stderr: string}
  | {how: 'timed-out'}
  /** It printed more than `maxOutputBytes`, and was cut off. */
  | {how: 'too-much-output'}
  /** It did not run: the program or unshare is missing or cannot be run, or no PID namespace could be made. */
  | {how: 'not-started'; message: string}

export interface ContainedRunOptions {
  input: string
  timeoutMs: number
  maxOutputBytes: number
}

/** How long after its timeout a contained run's pipes are read at most (what we killed closes them sooner). */
const GIVE_UP_AFTER_TIMEOUT_MS = 500

/**
 * Runs `file args` as the first process of a PID namespace of its own (proc.ts), with `input` on
 * its stdin: when it exits, or is killed at its timeout (SIGKILL), every process it started dies
 * with it, whether it left the process group, cleared its environment, renamed itself or kept
 * forking. So nothing it started holds its stdout, or runs on, past the run. Never rejects: it
 * resolves with how the run ended, at the latest shortly after the timeout, whatever is left.
 */
export async function runContained(file: string, args: readonly string[], options: ContainedRunOptions): Promise<ContainedEnd> {
  const [wrapper, argv] = inOwnPidNamespace(file, args)
  const child = execa(wrapper, argv, {
    input: options.input,
    reject: false,
    // Its own process group too: a SIGKILL to the group reaches the program at once, even in the
    // instant before unshare's child has set its parent death signal.
    detached: true,
    stripFinalNewline: false,
    maxBuffer: options.maxOutputBytes,
    // If flowctl exits first: unshare ignores SIGTERM (it waits for the program), not SIGKILL.
    cleanup: true,
    killSignal: 'SIGKILL',
  })
  const deadline = {passed: false}
  let giveUp: NodeJS.Timeout | undefined
  const timer = setTimeout(() => {
    deadline.passed = true
    // unshare dies, so the program dies (--kill-child), so its namespace dies: everything it started.
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL')
    } catch {
      child.kill('SIGKILL')
    }
  }, options.timeoutMs)
  let result
  try {
    result = await Promise.race([
      child,
      // Nothing the program started outlives it, but a process it handed the pipes to (over a unix
      // socket) could hold them: stop reading them shortly after the timeout, so the caller moves on.
      new Promise<undefined>((resolve) => {
        giveUp = setTimeout(() => {
          child.stdout.destroy()
          child.stderr.destroy()
          resolve(undefined)
        }, options.timeoutMs + GIVE_UP_AFTER_TIMEOUT_MS)
      }),
    ])
  } finally {
    clearTimeout(timer)
    clearTimeout(giveUp)
  }
  if (deadline.passed || !result) return {how: 'timed-out'}
  const code = (result as {code?: string}).code
  if (result.exitCode === undefined && code === 'ENOENT') return {how: 'not-started', message: `${wrapper}: no such program (util-linux)`}
  if (result.exitCode === undefined && result.failed && !result.signal)
    return {how: 'not-started', message: `${file}: ${result.shortMessage ?? code ?? 'cannot run'}`}
  const stderr = result.stderr
  const unshareFailed = ownPidNamespaceFailure(file, result.exitCode, stderr)
  if (unshareFailed) return {how: 'not-started', message: unshareFailed.missing ? `${file}: no such program` : `${file}: ${unshareFailed.message}`}
  if (result.isMaxBuffer) return {how: 'too-much-output'}
  if (result.signal) return {how: 'killed', signal: result.signal, stderr}
  return {how: 'exited', exitCode: result.exitCode ?? -1, stdout: result.stdout, stderr}
}

interface ExecaLikeError {
  code?: string
  exitCode?: number
  stderr?: string | Uint8Array
  timedOut?: boolean
  shortMessage?: string
}

function toFlowctlError(error: unknown, file: string, args: readonly string[], netns?: string | null): Error {
  const e = error as ExecaLikeError
  const commandLine = [file, ...args].join(' ')
  if (e.code === 'ENOENT') {
    return new ToolMissingError(netns ? 'nsenter' : file, PACKAGE_OF[netns ? 'nsenter' : file] ?? file)
  }
  const stderr = typeof e.stderr === 'string' ? e.stderr : e.stderr ? Buffer.from(e.stderr).toString() : ''
  if (e.timedOut) return new CommandFailedError(commandLine, 'timed out', stderr, undefined)
  // nsenter reports a missing tool inside the namespace as exit 127 with "failed to execute".
  if (netns && e.exitCode === 127 && /failed to execute/.test(stderr)) {
    return new ToolMissingError(file, PACKAGE_OF[file] ?? file)
  }
  return new CommandFailedError(commandLine, firstMeaningfulLine(stderr) ?? `exit status ${e.exitCode}`, stderr, e.exitCode)
}

/** The line of a tool's stderr that says what went wrong, without libbpf's noise. */
export function firstMeaningfulLine(stderr: string): string | undefined {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^(libbpf: |Warning: bpftool is now running|If it used to work|processed \d+ insns)/.test(l))
  const error = lines.find((l) => /^(Error|RTNETLINK answers|Cannot|We have an error)/i.test(l))
  return error ?? lines[0]
}
