/**
 * The names of interfaces, for flow logs, metric labels and the exporters' interface options
 * records: flows carry an ifindex, people and collectors read names.
 *
 * Two sources. What flowctl attached (attachments.json), read again at most once a second when
 * an unknown ifindex shows up: a name once known is kept, so the last flows of a detached
 * interface still carry it. And every interface of the metered namespaces with its alias (`ip
 * link`, readLinks): the other interface of a flow too, which nothing attached. Those are read
 * again in the background when an ifindex is missing (at most once a second) and when they are
 * older than maxAgeMs (renames, new aliases); an interface that is gone keeps its name until
 * the read after next, for the flows it still ends.
 */
import {readState, type Attachment} from '../bpf/state.js'
import type {InterfaceLabel} from '../ipfix/export/interface-options.js'
import type {Paths} from '../paths.js'
import {listLinks, netnsLabel, type NetnsName} from '../sys/netns.js'

/** An interface as `ip link` shows it. */
interface LinkName {
  name: string
  alias?: string
}

export interface InterfaceNamesOptions {
  /** Attachments are read again at most this often when an ifindex is unknown (default 1 s); so are links. */
  minIntervalMs?: number
  /** Links are read again, in the background, once they are older than this (default 60 s). */
  maxAgeMs?: number
  /** Reads a namespace's links (default listLinks). */
  listLinks?: (netns: NetnsName) => Promise<{ifindex: number; ifname: string; alias?: string}[]>
  now?: () => number
}

export class InterfaceNames {
  private readonly names = new Map<string, string>()
  private attachments: Attachment[] = []
  private loadedAt = -Infinity
  private readonly minIntervalMs: number
  private readonly maxAgeMs: number
  private readonly readLinksOf: NonNullable<InterfaceNamesOptions['listLinks']>
  private readonly now: () => number
  /** The namespaces whose links are read, by label. */
  private readonly watched = new Map<string, NetnsName>()
  /** Their interfaces by label and ifindex: as last read, and as read the time before (for interfaces just gone). */
  private links = new Map<string, Map<number, LinkName>>()
  private previousLinks = new Map<string, Map<number, LinkName>>()
  private linksReadAt = -Infinity
  private reading: Promise<void> | undefined

  constructor(
    private readonly paths: Paths,
    options: InterfaceNamesOptions | number = {},
  ) {
    const o = typeof options === 'number' ? {minIntervalMs: options} : options
    this.minIntervalMs = o.minIntervalMs ?? 1000
    this.maxAgeMs = o.maxAgeMs ?? 60_000
    this.readLinksOf = o.listLinks ?? listLinks
    this.now = o.now ?? Date.now
  }

  /** Reads the attachments again (at most once per interval unless forced). */
  refresh(force = false): void {
    const now = this.now()
    if (!force && now - this.loadedAt < this.minIntervalMs) return
    this.loadedAt = now
    try {
      this.attachments = readState(this.paths).attachments
    } catch {
      return // a state file being rewritten or broken: keep what we know
    }
    for (const a of this.attachments) this.names.set(`${netnsLabel(a.netns)}/${a.ifindex}`, a.interface)
  }

  /**
   * Reads every interface of these namespaces (and of those watched before) now, and keeps them
   * watched. A namespace that cannot be read (gone) keeps what was read of it.
   */
  async readLinks(netns: readonly NetnsName[] = []): Promise<void> {
    for (const n of netns) this.watched.set(netnsLabel(n), n)
    await this.reading
    this.reading = this.readWatched()
    try {
      await this.reading
    } finally {
      this.reading = undefined
    }
  }

  /** Resolves once a read in the background, if one runs, has ended. */
  async settled(): Promise<void> {
    await this.reading
  }

  private async readWatched(): Promise<void> {
    this.linksReadAt = this.now()
    const next = new Map<string, Map<number, LinkName>>()
    for (const [label, netns] of this.watched) {
      try {
        const links = await this.readLinksOf(netns)
        next.set(label, new Map(links.map((l) => [l.ifindex, {name: l.ifname, alias: l.alias === '' ? undefined : l.alias}])))
      } catch {
        const kept = this.links.get(label)
        if (kept) next.set(label, kept)
      }
    }
    this.previousLinks = this.links
    this.links = next
  }

  /** Starts a read in the background when `missing` and the last is older than minIntervalMs, or when it is older than maxAgeMs. */
  private readSoon(missing: boolean): void {
    if (this.reading || this.watched.size === 0) return
    const age = this.now() - this.linksReadAt
    if (age < (missing ? this.minIntervalMs : this.maxAgeMs)) return
    this.reading = this.readWatched()
      .catch(() => {})
      .finally(() => (this.reading = undefined))
  }

  /** The interface of a watched namespace, as last read (or read the time before). */
  private link(netns: string, ifindex: number): LinkName | undefined {
    const link = this.links.get(netns)?.get(ifindex) ?? this.previousLinks.get(netns)?.get(ifindex)
    this.readSoon(link === undefined && this.watched.has(netns))
    return link
  }

  /** The interface's name, or `if<ifindex>` (as `flowctl dump` shows it) if flowctl never attached to it and never read its namespace. */
  name(netns: string, ifindex: number): string {
    const link = this.link(netns, ifindex)
    if (link) return link.name
    const key = `${netns}/${ifindex}`
    let name = this.names.get(key)
    if (name === undefined) {
      this.refresh()
      name = this.names.get(key)
    }
    return name ?? `if${ifindex}`
  }

  /**
   * The interface of ifindex `ifindex` in the namespaces `netns` (those of one observation
   * domain) as the options records name it; undefined when none of them has it, or when two
   * have different interfaces of that ifindex (the records of the domain cannot tell them apart).
   */
  label(netns: readonly string[], ifindex: number): InterfaceLabel | undefined {
    let found: InterfaceLabel | undefined
    for (const n of netns) {
      const link = this.link(n, ifindex)
      if (!link) continue
      const label = {name: link.name, description: link.alias ?? link.name}
      if (found && (found.name !== label.name || found.description !== label.description)) return undefined
      found = label
    }
    return found
  }

  /**
   * The ifindexes that namespaces of one domain (`netns`) each give to an interface of their
   * own (with another name or alias): their records cannot be told apart, so they are named
   * to no collector.
   */
  conflicts(netns: readonly string[]): number[] {
    const out = new Set<number>()
    const seen = new Map<number, string>()
    for (const n of netns) {
      for (const [ifindex, link] of this.links.get(n) ?? []) {
        const key = `${link.name}\u0000${link.alias ?? ''}`
        const other = seen.get(ifindex)
        if (other === undefined) seen.set(ifindex, key)
        else if (other !== key) out.add(ifindex)
      }
    }
    return [...out].sort((a, b) => a - b)
  }

  /** The attachments (interface and direction) of a namespace, by its label ('root' or the name). */
  attached(netns: string): Attachment[] {
    this.refresh()
    return this.attachments.filter((a) => netnsLabel(a.netns) === netns)
  }
}
