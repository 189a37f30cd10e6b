/** Runs traffic agents inside lab namespaces and collects what they report. */
import {fileURLToPath} from 'node:url'

import {run, start} from '../sys/exec.js'
import type {AgentSpec} from './agent.js'

const AGENT = fileURLToPath(new URL('./agent.js', import.meta.url))

/** The agent's result: the last line it printed, as JSON. */
function agentResult<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').pop()!) as T
}

/** Runs an agent to completion and returns its JSON result. */
export async function runAgent<T = Record<string, number>>(netns: string, spec: AgentSpec): Promise<T> {
  const {stdout} = await run(process.execPath, [AGENT, JSON.stringify(spec)], {netns, timeoutMs: 120_000})
  return agentResult<T>(stdout)
}

export interface RunningAgent<T> {
  /** Resolves with the agent's result (for sinks: after `stop()`, or once it has what it expected). */
  result: Promise<T>
  stop(): void
}

/**
 * Starts an agent in the background: a listening one resolves once it is ready; a sender (which
 * prints no "ready") at once, to be stopped when its traffic is no longer wanted.
 */
export async function startAgent<T = Record<string, number>>(netns: string, spec: AgentSpec): Promise<RunningAgent<T>> {
  const agent = start(process.execPath, [AGENT, JSON.stringify(spec)], {netns, timeoutMs: 300_000})
  const ready = new Promise<void>((resolve, reject) => {
    agent.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve()
    })
    agent.result.catch(reject)
  })
  if (spec.mode.endsWith('-sink')) await ready
  else ready.catch(() => {})
  const result = agent.result.then((r) => agentResult<T>(r.stdout))
  result.catch(() => {})
  return {result, stop: () => agent.kill('SIGTERM')}
}

/** ICMP echo: `count` requests of `size` payload bytes, one every `intervalS`. */
export async function ping(netns: string, host: string, count: number, size = 56, intervalS = 0.2): Promise<void> {
  await run('ping', [host.includes(':') ? '-6' : '-4', '-c', String(count), '-s', String(size), '-i', String(intervalS), '-W', '2', '-q', host], {netns})
}

/** The round trips `ping` measured, in milliseconds. */
export interface PingRtt {
  /** Each reply's, in the order they came. */
  times: number[]
  min: number
  median: number
  max: number
}

/** ICMP echo as `ping` does it, and the round trip of each reply (a lost request is an error). */
export async function pingRtt(netns: string, host: string, count: number, intervalS = 0.2): Promise<PingRtt> {
  const {stdout} = await run('ping', [host.includes(':') ? '-6' : '-4', '-c', String(count), '-i', String(intervalS), '-W', '2', host], {netns})
  const times = [...stdout.matchAll(/ time=([\d.]+) ms/g)].map((m) => Number(m[1]))
  if (times.length !== count) throw new Error(`${times.length} of ${count} echo replies from ${host}: ${stdout}`)
  const sorted = [...times].sort((a, b) => a - b)
  return {times, min: sorted[0], median: sorted[Math.floor(count / 2)], max: sorted[count - 1]}
}
