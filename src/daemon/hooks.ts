/**
 * Hooks: programs a flow log's records pass through before they are written, as the older
 * linux-flow-exporter ran them. A hook gets the records as one JSON array on stdin and prints the
 * (enriched, filtered, rewritten) records as one JSON array on stdout.
 *
 * `command` is an argv run without a shell; `shell` is a script run by `/bin/sh -c`, which the
 * config has to ask for by that key. Each run is the first process of a PID namespace of its own
 * (src/sys/proc.ts), which nothing it starts can leave: when it exits, or is killed at its
 * timeout (SIGKILL), every process it started dies with it, whether it left the process group
 * (`setsid cmd &`), cleared its environment, renamed itself or kept forking. So nothing a hook
 * started holds its stdout, or runs on, past the run. The log moves on at the timeout whatever is
 * left. A failure is a HookFailure with a reason for logs and metrics; the caller writes the
 * records as they were before the hook.
 */
import {execa} from 'execa'

import type {HookConfig} from '../config/config.js'
import {inOwnPidNamespace, ownPidNamespaceFailure} from '../sys/proc.js'

export type HookFailureReason = 'spawn' | 'exit' | 'timeout' | 'garbage'

export class HookFailure extends Error {
  readonly reason: HookFailureReason

  constructor(reason: HookFailureReason, message: string) {
    super(message)
    this.reason = reason
  }
}

/** A flow record as written: a JSON object. */
export type FlowRecord = Record<string, unknown>

/** The name a hook goes by in logs and metrics: its `name`, else its program, else `shell`. */
export function hookLabel(hook: HookConfig): string {
  if (hook.name) return hook.name
  return 'command' in hook ? hook.command[0] : 'shell'
}

/** How long after its timeout a hook's pipes are read at most (what we killed closes them sooner). */
const GIVE_UP_AFTER_TIMEOUT_MS = 500

/** The most a hook may print (a runaway one is cut off and counted as garbage). */
const MAX_OUTPUT_BYTES = 256 << 20

function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '') ?? ''
  return line.length > 200 ? `${line.slice(0, 200)}...` : line
}

/** Runs one hook on the records; resolves with what it printed, or rejects with a HookFailure. */
export async function runHook(hook: HookConfig, records: readonly FlowRecord[]): Promise<FlowRecord[]> {
  const [file, args] = 'command' in hook ? [hook.command[0], hook.command.slice(1)] : ['/bin/sh', ['-c', hook.shell]]
  const [wrapper, argv] = inOwnPidNamespace(file, args)
  const child = execa(wrapper, argv, {
    input: JSON.stringify(records),
    reject: false,
    // Its own process group too: a SIGKILL to the group reaches the hook at once, even in the
    // instant before unshare's child has set its parent death signal.
    detached: true,
    stripFinalNewline: false,
    maxBuffer: MAX_OUTPUT_BYTES,
    // If the daemon exits first: unshare ignores SIGTERM (it waits for the hook), not SIGKILL.
    cleanup: true,
    killSignal: 'SIGKILL',
  })
  let timedOut = false
  let giveUp: NodeJS.Timeout | undefined
  const timer = setTimeout(() => {
    timedOut = true
    // unshare dies, so the hook dies (--kill-child), so its namespace dies: everything it started.
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL')
    } catch {
      child.kill('SIGKILL')
    }
  }, hook.timeoutMs)
  let result
  try {
    result = await Promise.race([
      child,
      // Nothing the hook started outlives it, but a process it handed the pipes to (over a unix
      // socket) could hold them: stop reading them shortly after the timeout, so the log moves on.
      new Promise<undefined>((resolve) => {
        giveUp = setTimeout(() => {
          child.stdout?.destroy()
          child.stderr?.destroy()
          resolve(undefined)
        }, hook.timeoutMs + GIVE_UP_AFTER_TIMEOUT_MS)
      }),
    ])
  } finally {
    clearTimeout(timer)
    clearTimeout(giveUp)
  }
  if (timedOut || !result) throw new HookFailure('timeout', `did not finish within ${hook.timeoutMs / 1000}s (killed with everything it started)`)
  const code = (result as {code?: string}).code
  if (result.exitCode === undefined && code === 'ENOENT') throw new HookFailure('spawn', `${wrapper}: no such program (util-linux)`)
  if (result.exitCode === undefined && result.failed && !result.signal)
    throw new HookFailure('spawn', `${file}: ${result.shortMessage ?? code ?? 'cannot run'}`)
  const unshareFailed = ownPidNamespaceFailure(file, result.exitCode, String(result.stderr ?? ''))
  if (unshareFailed) throw new HookFailure('spawn', unshareFailed.missing ? `${file}: no such program` : `${file}: ${unshareFailed.message}`)
  if (result.isMaxBuffer) throw new HookFailure('garbage', `printed more than ${MAX_OUTPUT_BYTES >> 20} MiB`)
  if (result.signal) throw new HookFailure('exit', `killed by ${result.signal}${result.stderr ? `: ${firstLine(String(result.stderr))}` : ''}`)
  if (result.exitCode !== 0) throw new HookFailure('exit', `exit status ${result.exitCode}${result.stderr ? `: ${firstLine(String(result.stderr))}` : ''}`)
  const stdout = String(result.stdout)
  let parsed: unknown
  try {
    parsed = JSON.parse(stdout)
  } catch {
    throw new HookFailure('garbage', `printed no JSON array: ${JSON.stringify(firstLine(stdout) || '(nothing)')}`)
  }
  if (!Array.isArray(parsed)) throw new HookFailure('garbage', `printed JSON that is not an array (${parsed === null ? 'null' : typeof parsed})`)
  const bad = parsed.findIndex((r) => r === null || typeof r !== 'object' || Array.isArray(r))
  if (bad >= 0) throw new HookFailure('garbage', `item ${bad} of the array it printed is not a JSON object`)
  return parsed as FlowRecord[]
}

/**
 * Runs the hooks in order; a hook that fails is reported and skipped, so the next one (and the
 * log) gets the records as they were before it.
 */
export async function applyHooks(
  hooks: readonly HookConfig[],
  records: FlowRecord[],
  onFailure: (hook: HookConfig, failure: HookFailure) => void,
): Promise<FlowRecord[]> {
  let current = records
  for (const hook of hooks) {
    try {
      current = await runHook(hook, current)
    } catch (error) {
      onFailure(hook, error instanceof HookFailure ? error : new HookFailure('spawn', (error as Error).message))
    }
  }
  return current
}
