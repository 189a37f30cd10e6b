/**
 * The names of the metered interfaces, for flow logs and metric labels: flows carry an ifindex,
 * people read names. They come from what flowctl attached (attachments.json), read again at most
 * once a second when an unknown ifindex shows up; a name once known is kept, so the last flows of
 * a detached interface still carry it.
 */
import {readState, type Attachment} from '../bpf/state.js'
import type {Paths} from '../paths.js'
import {netnsLabel} from '../sys/netns.js'

export class InterfaceNames {
  private readonly names = new Map<string, string>()
  private attachments: Attachment[] = []
  private loadedAt = -Infinity

  constructor(
    private readonly paths: Paths,
    private readonly minIntervalMs = 1000,
  ) {}

  /** Reads the attachments again (at most once per interval unless forced). */
  refresh(force = false): void {
    const now = Date.now()
    if (!force && now - this.loadedAt < this.minIntervalMs) return
    this.loadedAt = now
    try {
      this.attachments = readState(this.paths).attachments
    } catch {
      return // a state file being rewritten or broken: keep what we know
    }
    for (const a of this.attachments) this.names.set(`${netnsLabel(a.netns)}/${a.ifindex}`, a.interface)
  }

  /** The interface's name, or `if<ifindex>` (as `flowctl dump` shows it) if flowctl never attached to it. */
  name(netns: string, ifindex: number): string {
    const key = `${netns}/${ifindex}`
    let name = this.names.get(key)
    if (name === undefined) {
      this.refresh()
      name = this.names.get(key)
    }
    return name ?? `if${ifindex}`
  }

  /** The attachments (interface and direction) of a namespace, by its label ('root' or the name). */
  attached(netns: string): Attachment[] {
    this.refresh()
    return this.attachments.filter((a) => netnsLabel(a.netns) === netns)
  }
}
