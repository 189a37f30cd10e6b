/**
 * Hooks: programs a flow log's records pass through before they are written, as the older
 * linux-flow-exporter ran them. A hook gets the records as one JSON array on stdin and prints the
 * (enriched, filtered, rewritten) records as one JSON array on stdout.
 *
 * `command` is an argv run without a shell; `shell` is a script run by `/bin/sh -c`, which the
 * config has to ask for by that key. Each run is the first process of a PID namespace of its own
 * (`runContained` in src/sys/exec.ts), which nothing it starts can leave: when it exits, or is killed at its
 * timeout (SIGKILL), every process it started dies with it, whether it left the process group
 * (`setsid cmd &`), cleared its environment, renamed itself or kept forking. So nothing a hook
 * started holds its stdout, or runs on, past the run. The log moves on at the timeout whatever is
 * left. A failure is a HookFailure with a reason for logs and metrics; the caller writes the
 * records as they were before the hook.
 */
import type {HookConfig} from '../config/config.js'
import {runContained} from '../sys/exec.js'

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

/** The most a hook may print (a runaway one is cut off and counted as garbage). */
const MAX_OUTPUT_BYTES = 256 << 20

function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '') ?? ''
  return line.length > 200 ? `${line.slice(0, 200)}...` : line
}

/** Runs one hook on the records; resolves with what it printed, or rejects with a HookFailure. */
export async function runHook(hook: HookConfig, records: readonly FlowRecord[]): Promise<FlowRecord[]> {
  const [file, args] = 'command' in hook ? [hook.command[0], hook.command.slice(1)] : ['/bin/sh', ['-c', hook.shell]]
  const end = await runContained(file, args, {input: JSON.stringify(records), timeoutMs: hook.timeoutMs, maxOutputBytes: MAX_OUTPUT_BYTES})
  switch (end.how) {
    case 'timed-out':
      throw new HookFailure('timeout', `did not finish within ${hook.timeoutMs / 1000}s (killed with everything it started)`)
    case 'not-started':
      throw new HookFailure('spawn', end.message)
    case 'too-much-output':
      throw new HookFailure('garbage', `printed more than ${MAX_OUTPUT_BYTES >> 20} MiB`)
    case 'killed':
      throw new HookFailure('exit', `killed by ${end.signal}${end.stderr ? `: ${firstLine(end.stderr)}` : ''}`)
    case 'exited':
      if (end.exitCode !== 0) throw new HookFailure('exit', `exit status ${end.exitCode}${end.stderr ? `: ${firstLine(end.stderr)}` : ''}`)
      return parseRecords(end.stdout)
  }
}

/** The records a hook printed: one JSON array of objects. */
function parseRecords(stdout: string): FlowRecord[] {
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
