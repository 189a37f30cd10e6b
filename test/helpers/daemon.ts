/**
 * `flowctl daemon -c FILE` as a child process for the end-to-end suites, with its JSON log lines
 * parsed as they come, so a test can wait for an event and read the daemon's last words when
 * something fails.
 */
import {execa, type ResultPromise} from 'execa'

import {CLI, sleep} from './e2e.js'

export interface LogLine {
  event: string
  level: string
  [key: string]: unknown
}

/** `flowctl daemon -c FILE` as a child, with its JSON log lines. */
export class DaemonProcess {
  readonly log: LogLine[] = []
  readonly child: ResultPromise
  private stderrTail = ''

  /**
   * `env` adds to this process's environment (e.g. a router's own FLOWCTL_* directories);
   * `stopGraceMs`: how long stop() lets it finish before a SIGKILL (execa's default, 5 s, unless
   * its shutdown drain is known to take longer).
   */
  constructor(configFile: string, netns?: string, env: Record<string, string> = {}, options: {stopGraceMs?: number} = {}) {
    const argv = [CLI, 'daemon', '-c', configFile]
    const spawnOptions = {reject: false, env: {...process.env, ...env}, forceKillAfterDelay: options.stopGraceMs ?? 5000}
    this.child = netns
      ? execa('nsenter', [`--net=/run/netns/${netns}`, '--', process.execPath, ...argv], spawnOptions)
      : execa(process.execPath, argv, spawnOptions)
    let partial = ''
    this.child.stderr!.on('data', (d: Buffer) => {
      partial += d.toString()
      const lines = partial.split('\n')
      partial = lines.pop()!
      for (const line of lines) {
        this.stderrTail = `${this.stderrTail}${line}\n`.slice(-4000)
        try {
          this.log.push(JSON.parse(line) as LogLine)
        } catch {
          // not a log line (an error message); kept in the tail
        }
      }
    })
  }

  get pid(): number {
    return this.child.pid!
  }

  async waitForLog(event: string, match: (l: LogLine) => boolean = () => true, timeoutMs = 20_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.log.find((l) => l.event === event && match(l))
      if (found) return found
      if (this.child.exitCode !== null) throw new Error(`the daemon exited (${this.child.exitCode}) before logging ${event}: ${this.stderrTail}`)
      if (Date.now() > deadline) throw new Error(`timed out waiting for the daemon to log ${event}: ${this.stderrTail}`)
      await sleep(50)
    }
  }

  count(event: string): number {
    return this.log.filter((l) => l.event === event).length
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal)
  }

  /** Sends `signal` and resolves with the exit code (or the signal that ended it). */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | string> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal)
    const r = await this.child
    return r.exitCode ?? r.signal ?? -1
  }

  get tail(): string {
    return this.stderrTail
  }
}
