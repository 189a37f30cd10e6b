/**
 * The one way flowctl runs other programs: execa, never a shell, and every failure turned into a
 * typed error whose message a person can act on.
 */
import {execa, type ResultPromise} from 'execa'

import {CommandFailedError, ToolMissingError} from '../errors.js'

/** The Debian package that provides each program we run, for the "not installed" message. */
const PACKAGE_OF: Record<string, string> = {
  bpftool: 'bpftool',
  clang: 'clang',
  ip: 'iproute2',
  iperf3: 'iperf3',
  'llvm-strip': 'llvm',
  nsenter: 'util-linux',
  ping: 'iputils-ping',
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
  }) as never
  const done = child.then(
    () => undefined,
    (error: unknown) => {
      throw toFlowctlError(error, file, args, options.netns)
    },
  )
  // The caller may stop reading early; the rejection is then observed through `done` only if awaited.
  done.catch(() => {})
  return {stdout: child.stdout!, done, kill: () => child.kill()}
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
