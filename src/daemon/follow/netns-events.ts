/**
 * Where the follower hears of change, from the kernel rather than by scanning:
 *
 * - namespaces: inotify on /run/netns (`ip netns add` and `del` create and remove a file there);
 * - interfaces: one `ip monitor link all-nsid` in the root namespace (under setpriv --pdeathsig,
 *   so it dies with the daemon). Its netlink socket has
 *   NETLINK_LISTEN_ALL_NSID, so it gets the link events of every namespace that has an nsid in the
 *   root namespace (`[nsid N]`, `[nsid current]` for the root's own), whatever their number: one
 *   process and one socket for all of them. A followed namespace is given an nsid
 *   (`ip netns set NAME auto`) before its interfaces are first listed, so no event falls between.
 *
 * Both only say where to look: the follower lists that namespace's interfaces and reconciles.
 */
import {existsSync, mkdirSync, statSync, watch, type FSWatcher} from 'node:fs'
import {createInterface} from 'node:readline'

import {CommandFailedError} from '../../errors.js'
import {run, spawnStreaming} from '../../sys/exec.js'

export const NETNS_DIR = '/run/netns'

/** Calls `onChange(name)` for each name created or removed in /run/netns. */
export function watchNamespaces(onChange: (name: string) => void): FSWatcher {
  if (!existsSync(NETNS_DIR)) mkdirSync(NETNS_DIR, {recursive: true})
  return watch(NETNS_DIR, {persistent: false}, (_event, filename) => {
    if (filename) onChange(filename.toString())
  })
}

/**
 * Whether /run/netns/NAME is a namespace yet: `ip netns add` creates the file, then mounts the
 * namespace on it; until then it is an empty file of tmpfs, not of nsfs.
 */
export function netnsMounted(name: string): boolean {
  try {
    return statSync(`${NETNS_DIR}/${name}`).dev === statSync('/proc/self/ns/net').dev
  } catch {
    return false
  }
}

/** The names of the namespaces in /run/netns, by the nsid the root namespace gave them. */
export class NsidNames {
  private names = new Map<number, string>()

  async refresh(): Promise<void> {
    const {stdout} = await run('ip', ['-json', 'netns', 'list-id'], {timeoutMs: 10_000})
    const ids = JSON.parse(stdout || '[]') as {nsid: number; name?: string}[]
    this.names = new Map(ids.filter((i) => i.name !== undefined).map((i) => [i.nsid, i.name!]))
  }

  name(nsid: number): string | undefined {
    return this.names.get(nsid)
  }

  /**
   * Gives the namespace an nsid in the root namespace, so that its link events reach the monitor,
   * and learns the names anew: a deleted namespace's nsid is soon another's.
   */
  async assign(name: string): Promise<void> {
    try {
      await run('ip', ['netns', 'set', name, 'auto'], {timeoutMs: 10_000})
    } catch (error) {
      // One it already has (`ip netns set` says "already has a nsid assigned") is as good.
      if (!(error instanceof CommandFailedError) || !/already has a nsid/.test(`${error.stderr} ${error.message}`)) throw error
    }
    await this.refresh()
  }

  /** A namespace that is gone: its nsid names it no more. */
  forget(name: string): void {
    for (const [nsid, n] of this.names) if (n === name) this.names.delete(nsid)
  }
}

/** One `ip monitor link all-nsid`: calls `onLink(nsid)` (null: the root namespace) for each link event. */
export class LinkMonitor {
  private child?: ReturnType<typeof spawnStreaming>
  private stopped = false
  private started = false
  private restartTimer?: NodeJS.Timeout

  /** `onRestarted`: the monitor was started again after it ended; what happened meanwhile was not heard. */
  constructor(
    private readonly onLink: (nsid: number | null) => void,
    private readonly onExit: (error: Error | undefined) => void,
    private readonly onRestarted: () => void = () => {},
  ) {}

  start(): void {
    if (this.stopped) return
    const restarted = this.started
    this.started = true
    // setpriv --pdeathsig: the kernel ends the monitor when the daemon dies, even by SIGKILL (an
    // orphaned monitor would otherwise live on until its next event found the pipe closed).
    const child = spawnStreaming('setpriv', ['--pdeathsig', 'TERM', '--', 'ip', 'monitor', 'link', 'all-nsid'])
    this.child = child
    const lines = createInterface({input: child.stdout})
    lines.on('line', (line) => {
      // "[nsid 3]Deleted 7: eth0@...": the first line of each event; the lines after it are indented.
      const m = /^\[nsid (\d+|current)\]/.exec(line)
      if (m) this.onLink(m[1] === 'current' ? null : Number(m[1]))
    })
    child.done.then(
      () => this.exited(undefined),
      (error: Error) => this.exited(error),
    )
    if (restarted) this.onRestarted()
  }

  /** A monitor that ended while we still follow is started again a second later. */
  private exited(error: Error | undefined): void {
    if (this.stopped) return
    this.onExit(error)
    this.restartTimer = setTimeout(() => this.start(), 1000)
  }

  stop(): void {
    this.stopped = true
    if (this.restartTimer) clearTimeout(this.restartTimer)
    this.child?.kill()
  }
}
