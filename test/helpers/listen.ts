/** `flowctl ipfix listen` as a child process, for suites that send to it and read what it decoded. */
import {spawn} from 'node:child_process'

import {REPO_ROOT} from './unit.js'

const CLI = `${REPO_ROOT}bin/run.js`

export interface Listener {
  port: number
  pid: number
  /** Resolves when the command exits. */
  done: Promise<{code: number | null; stdout: string; stderr: string}>
  stderr(): string
  /** What it printed so far. */
  stdout(): string
  kill(): void
}

/** Starts `flowctl ipfix listen ARGS` and resolves once it says which port it listens on. */
export function listen(args: string[]): Promise<Listener> {
  const child = spawn(process.execPath, [CLI, 'ipfix', 'listen', '--host', '127.0.0.1', '--port', '0', ...args], {stdio: ['ignore', 'pipe', 'pipe']})
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const done = new Promise<{code: number | null; stdout: string; stderr: string}>((resolve) => child.on('close', (code) => resolve({code, stdout, stderr})))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill()
      reject(new Error(`no 'listening' line within 20 s; stderr: ${stderr}`))
    }, 20_000)
    const onData = (): void => {
      const m = /^flowctl: listening for IPFIX on udp 127\.0\.0\.1:(\d+)$/m.exec(stderr)
      if (!m) return
      clearTimeout(timer)
      child.stderr.off('data', onData)
      resolve({port: Number(m[1]), pid: child.pid!, done, stderr: () => stderr, stdout: () => stdout, kill: () => child.kill('SIGTERM')})
    }
    child.stderr.on('data', onData)
    void done.then((r) => {
      clearTimeout(timer)
      reject(new Error(`flowctl ipfix listen exited ${r.code} before listening: ${r.stderr}`))
    })
  })
}
