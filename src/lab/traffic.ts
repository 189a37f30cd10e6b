/** Runs traffic agents inside lab namespaces and collects what they report. */
import {fileURLToPath} from 'node:url'

import {execa, type ResultPromise} from 'execa'

import {run} from '../sys/exec.js'
import type {AgentSpec} from './agent.js'

const AGENT = fileURLToPath(new URL('./agent.js', import.meta.url))

function agentArgv(netns: string, spec: AgentSpec): [string, string[]] {
  return ['nsenter', [`--net=/run/netns/${netns}`, '--', process.execPath, AGENT, JSON.stringify(spec)]]
}

/** Runs an agent to completion and returns its JSON result. */
export async function runAgent<T = Record<string, number>>(netns: string, spec: AgentSpec): Promise<T> {
  const [file, args] = agentArgv(netns, spec)
  const {stdout} = await execa(file, args, {timeout: 120_000})
  return JSON.parse(stdout.trim().split('\n').pop()!) as T
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
  const [file, args] = agentArgv(netns, spec)
  const child: ResultPromise = execa(file, args, {timeout: 300_000})
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve()
    })
    child.catch(reject)
  })
  if (spec.mode.endsWith('-sink')) await ready
  else ready.catch(() => {})
  const result = child.then((r) => {
    const lines = String(r.stdout).trim().split('\n')
    return JSON.parse(lines[lines.length - 1]) as T
  })
  result.catch(() => {})
  return {result, stop: () => child.kill('SIGTERM')}
}

/** ICMP echo: `count` requests of `size` payload bytes, one every `intervalS`. */
export async function ping(netns: string, host: string, count: number, size = 56, intervalS = 0.2): Promise<void> {
  await run('ping', [host.includes(':') ? '-6' : '-4', '-c', String(count), '-s', String(size), '-i', String(intervalS), '-W', '2', '-q', host], {netns})
}
