/**
 * The daemon's own meters (issue 27): each `meters:` entry of the config that has `interfaces`
 * names namespaces (a name, root, a glob or /regex/) and interface globs, and the daemon keeps
 * the meter attached to every interface they take, as namespaces and interfaces come and go.
 *
 * It hears of change from the kernel (netns-events.ts) and reconciles one namespace at a time:
 * attaches what matches and is not attached, detaches what it owns that no longer matches (the
 * interface is gone, or a reload changed the patterns), and releases the set of a namespace that
 * is gone (its last drain, then its pins: its kernel memory returns). What it attached is listed
 * in owned-meters.ts; anything else (meters attached by hand) it never touches. Stopping leaves
 * its meters attached: they count on, and the next start takes them back.
 */
import {existsSync, readdirSync, type FSWatcher} from 'node:fs'

import {attachMeters, DEFAULT_HANDLE, DEFAULT_PREF, detachMeters} from '../../bpf/attach.js'
import {netnsGone, reclaimGoneSets} from '../../bpf/gone-sets.js'
import {findAttachment} from '../../bpf/meter-filters.js'
import {MeterSet} from '../../bpf/meter-set.js'
import {readState, sameNetns} from '../../bpf/state.js'
import type {Config, MeterSelection} from '../../config/config.js'
import {meterFor} from '../../config/meter-selection.js'
import {NotFoundError} from '../../errors.js'
import type {DirectionName} from '../../flow/record.js'
import type {Paths} from '../../paths.js'
import {listLinks, netnsLabel, type NetnsName} from '../../sys/netns.js'
import {InterfaceSelector} from '../../util/name-pattern.js'
import type {Logger} from '../log.js'
import {LinkMonitor, netnsMounted, NETNS_DIR, NsidNames, watchNamespaces} from './netns-events.js'
import {OwnedMeters} from './owned-meters.js'

export type FollowAction = 'attach' | 'detach' | 'release'
/** Why: the interface or namespace appeared (or was there at start), is gone, or a reload changed the patterns. */
export type FollowReason = 'appeared' | 'gone' | 'pattern-changed'

/** What the follower needs of the daemon. */
export interface FollowerHost {
  /** Opens the sets attached since the last look (and puts the collectors' sockets on their skip lists). */
  adoptMeters(): void
  /** The last drain of a namespace's set, then `removePins`. */
  releaseMeter(netns: NetnsName, removePins: () => Promise<unknown>): Promise<number>
}

interface FollowEntry {
  meter: MeterSelection
  selector: InterfaceSelector
  directions: DirectionName[]
}

/** How long a namespace whose file is not mounted yet (`ip netns add` half-way) waits to be looked at again. */
const NOT_MOUNTED_RETRY_MS = 50
/** How long a namespace whose reconcile failed waits for the next try: doubled at each failure in a row, up to a minute. */
const FAILED_RETRY_MS = 1000
const FAILED_RETRY_MAX_MS = 60_000
/** Events that come together (an interface and its peer, a burst of namespaces) are taken together. */
const GATHER_MS = 20

export class MeterFollower {
  private entries: FollowEntry[] = []
  private readonly owned: OwnedMeters
  private readonly nsids = new NsidNames()
  /** Namespaces given an nsid (their link events reach the monitor). */
  private readonly withNsid = new Set<string>()
  private readonly dirty = new Set<NetnsName>()
  private readonly retries = new Map<NetnsName, NodeJS.Timeout>()
  /** Failures in a row, by namespace (a filter of someone else's at our place fails until it goes). */
  private readonly failures = new Map<NetnsName, number>()
  private gatherTimer?: NodeJS.Timeout
  private working: Promise<void> = Promise.resolve()
  private busy = false
  private watcher?: FSWatcher
  private monitor?: LinkMonitor
  private stopped = false
  /** False while a reload detaches first: what would be attached then is, by the full pass after. */
  private attaching = true
  /** The entries that took an interface in the last full pass (the others are warned about). */
  private readonly matched = new Set<FollowEntry>()

  constructor(
    private readonly paths: Paths,
    config: Config,
    private readonly options: {log: Logger; host: FollowerHost; observer?: (action: FollowAction, reason: FollowReason) => void},
  ) {
    this.owned = new OwnedMeters(paths)
    this.configure(config)
  }

  private get log(): Logger {
    return this.options.log
  }

  private configure(config: Config): void {
    this.entries = (config.meters ?? [])
      .filter((m) => m.interfaces)
      .map((meter) => ({
        meter,
        selector: new InterfaceSelector(meter.interfaces!),
        directions: meter.direction === undefined || meter.direction === 'both' ? ['ingress', 'egress'] : [meter.direction],
      }))
  }

  /** Takes back what an earlier daemon attached, attaches what matches now, and starts listening. */
  async start(): Promise<void> {
    await this.everything()
  }

  /**
   * A new config (SIGHUP), first half, before the daemon takes it: the owned meters it no longer
   * takes are detached while the daemon still drains their sets under the old config, so a set
   * that goes with them gets its last drain (what it counted is exported) rather than being
   * dropped from the drain unread.
   */
  async detachUnwanted(config: Config): Promise<void> {
    this.configure(config)
    this.attaching = false
    try {
      await this.working
      for (const netns of this.owned.namespaces()) this.dirty.add(netns)
      await this.run()
    } finally {
      this.attaching = true
    }
  }

  /** A new config (SIGHUP), second half, once the daemon has it: new matches are attached. */
  async reload(config: Config): Promise<void> {
    this.configure(config)
    await this.everything()
  }

  /** Stops listening; what it attached stays attached. */
  async stop(): Promise<void> {
    this.stopped = true
    this.stopListening()
    if (this.gatherTimer) clearTimeout(this.gatherTimer)
    for (const t of this.retries.values()) clearTimeout(t)
    await this.working
  }

  private async everything(): Promise<void> {
    if (this.entries.length === 0 && this.owned.namespaces().length === 0) {
      this.stopListening()
      return
    }
    this.startListening()
    this.matched.clear()
    for (const netns of this.namespacesToLook()) this.dirty.add(netns)
    await this.run()
    for (const [i, entry] of this.entries.entries()) {
      if (this.matched.has(entry)) continue
      this.log.log('warn', 'follow-no-match', {
        meter: `meters[${i}]`,
        netns: entry.meter.netns ?? 'root',
        interfaces: entry.meter.interfaces,
        effect: 'nothing to attach now; one that appears is attached then',
      })
    }
  }

  /** Every namespace there is to look at: the root, the named ones, and those it owns meters in (gone ones too). */
  private namespacesToLook(): Set<NetnsName> {
    const names = existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR) : []
    return new Set<NetnsName>([null, ...names, ...this.owned.namespaces()])
  }

  private startListening(): void {
    if (this.watcher || this.stopped) return
    this.watcher = watchNamespaces((name) => {
      if (this.follows(name)) this.schedule(name)
    })
    this.monitor = new LinkMonitor(
      (nsid) => this.linkEvent(nsid),
      (error) => this.log.log('warn', 'follow-monitor-ended', {error: error?.message ?? 'exited', effect: 'started again in 1 s'}),
      // Link events of the gap were missed: every followed namespace is looked at again.
      () => {
        for (const netns of this.namespacesToLook()) if (this.follows(netns)) this.schedule(netns)
      },
    )
    this.monitor.start()
  }

  private stopListening(): void {
    this.watcher?.close()
    this.watcher = undefined
    this.monitor?.stop()
    this.monitor = undefined
  }

  /** Whether a namespace concerns the follower: an entry takes it, or it owns a meter there. */
  private follows(netns: NetnsName): boolean {
    return this.entryFor(netns) !== undefined || this.owned.of(netns).length > 0
  }

  /** The entry that decides for a namespace: the first that takes it, if that one has interfaces. */
  private entryFor(netns: NetnsName): FollowEntry | undefined {
    if (this.entries.length === 0) return undefined
    const first = meterFor(
      this.entries.map((e) => e.meter),
      netns,
    )
    return this.entries.find((e) => e.meter === first)
  }

  private linkEvent(nsid: number | null): void {
    if (nsid === null) {
      if (this.follows(null)) this.schedule(null)
      return
    }
    const name = this.nsids.name(nsid)
    if (name !== undefined) {
      if (this.follows(name)) this.schedule(name)
      return
    }
    // An nsid given since the last look: learn its name, then look there.
    this.nsids.refresh().then(
      () => {
        const learnt = this.nsids.name(nsid)
        if (learnt !== undefined && this.follows(learnt)) this.schedule(learnt)
      },
      (error: Error) => this.log.limited('follow-nsid', 'warn', 'follow-failed', {error: error.message}),
    )
  }

  private schedule(netns: NetnsName, delayMs = 0): void {
    if (this.stopped) return
    if (delayMs > 0) {
      if (this.retries.has(netns)) return
      this.retries.set(
        netns,
        setTimeout(() => {
          this.retries.delete(netns)
          this.schedule(netns)
        }, delayMs),
      )
      return
    }
    this.dirty.add(netns)
    if (this.busy || this.gatherTimer) return
    this.gatherTimer = setTimeout(() => {
      this.gatherTimer = undefined
      void this.run()
    }, GATHER_MS)
  }

  /** Reconciles the namespaces marked, one at a time, until none is left. */
  private run(): Promise<void> {
    if (this.busy) return this.working
    this.busy = true
    this.working = (async () => {
      try {
        while (this.dirty.size > 0 && !this.stopped) {
          const batch = [...this.dirty]
          this.dirty.clear()
          for (const netns of batch) {
            try {
              await this.reconcile(netns)
              this.failures.delete(netns)
            } catch (error) {
              const failures = (this.failures.get(netns) ?? 0) + 1
              this.failures.set(netns, failures)
              const retryMs = Math.min(FAILED_RETRY_MAX_MS, FAILED_RETRY_MS * 2 ** (failures - 1))
              this.log.limited(`follow:${netnsLabel(netns)}`, 'warn', 'follow-failed', {
                netns: netnsLabel(netns),
                error: (error as Error).message,
                effect: `tried again in ${retryMs / 1000} s`,
              })
              this.schedule(netns, retryMs)
            }
          }
        }
      } finally {
        this.busy = false
      }
    })()
    return this.working
  }

  private async reconcile(netns: NetnsName): Promise<void> {
    if (netns !== null) {
      if (!existsSync(`${NETNS_DIR}/${netns}`)) return this.release(netns)
      if (!netnsMounted(netns)) return this.schedule(netns, NOT_MOUNTED_RETRY_MS)
      // The name was deleted and made again: the set there belongs to the namespace that is gone.
      if (MeterSet.for(this.paths, netns).exists() && netnsGone(readState(this.paths), netns)) await this.release(netns)
    }
    const entry = this.entryFor(netns)
    if (!entry && this.owned.of(netns).length === 0) return
    if (entry && this.attaching && netns !== null && !this.withNsid.has(netns)) {
      // Before the interfaces are listed: one made after the listing then reaches the monitor.
      await this.nsids.assign(netns)
      this.withNsid.add(netns)
    }
    let links
    try {
      links = await listLinks(netns)
    } catch (error) {
      if (error instanceof NotFoundError) return this.schedule(netns) // deleted meanwhile: released next time
      throw error
    }
    const wanted = entry ? links.filter((l) => entry.selector.matches(l.ifname)) : []
    if (entry && wanted.length > 0) this.matched.add(entry)

    for (const m of this.owned.of(netns)) {
      if (entry && wanted.some((l) => l.ifname === m.interface) && entry.directions.includes(m.direction)) continue
      const reason: FollowReason = links.some((l) => l.ifname === m.interface) ? 'pattern-changed' : 'gone'
      await detachMeters(this.paths, {targets: [{netns, ifname: m.interface}], all: false, directions: [m.direction]}).catch((error: unknown) => {
        if (!(error instanceof NotFoundError)) throw error // not attached any more (detached by hand): only forgotten
      })
      this.owned.remove(netns, m.interface, m.direction)
      this.tell('detach', reason, {netns: netnsLabel(netns), interface: m.interface, direction: m.direction})
    }

    if (!entry || !this.attaching) return
    const state = readState(this.paths)
    // One interface that cannot be attached (someone else's filter at our place) keeps none of the others from it.
    let failed: Error | undefined
    for (const link of wanted) {
      // An attachment recorded for another ifindex is one of a deleted interface of the same name.
      const directions = entry.directions.filter((d) => findAttachment(state, netns, link.ifname, d)?.ifindex !== link.ifindex)
      if (directions.length === 0) continue
      const set = MeterSet.for(this.paths, netns)
      let outcomes: Awaited<ReturnType<typeof attachMeters>>
      try {
        outcomes = await attachMeters(this.paths, {
          targets: [{netns, ifname: link.ifname}],
          directions,
          // An existing set keeps its capacity (it is fixed); the entry's is for a set made now.
          capacity: set.exists() ? undefined : entry.meter.capacity,
          pref: DEFAULT_PREF,
          handle: DEFAULT_HANDLE,
          force: false,
          beforeFilters: () => this.options.host.adoptMeters(),
        })
      } catch (error) {
        failed ??= error as Error
        continue
      }
      for (const o of outcomes) {
        // 'unchanged': attached by hand already, and left to whoever attached it.
        if (o.result === 'unchanged') continue
        this.owned.add({netns, interface: o.interface, direction: o.direction})
        this.tell('attach', 'appeared', {netns: o.netns, interface: o.interface, direction: o.direction, progId: o.progId})
      }
    }
    if (failed !== undefined) throw failed
  }

  /**
   * A namespace that is gone: its set's last drain, then its pins go. Only a set the daemon owns
   * every meter of: one with meters attached by hand is left for `meter detach --gone`.
   */
  private async release(netns: string): Promise<void> {
    this.withNsid.delete(netns)
    this.nsids.forget(netns)
    const owned = this.owned.of(netns)
    if (owned.length === 0) return
    const set = MeterSet.for(this.paths, netns)
    const state = readState(this.paths)
    const byHand = state.attachments.filter((a) => sameNetns(a.netns, netns) && !this.owned.has(netns, a.interface, a.direction))
    if (set.exists() && byHand.length === 0) {
      const exported = await this.options.host.releaseMeter(netns, () => reclaimGoneSets(this.paths, (n) => n === netns))
      this.tell('release', 'gone', {netns, exported})
    } else if (set.exists()) {
      this.log.log('warn', 'follow-left', {
        netns,
        reason: 'gone',
        byHand: byHand.map((a) => `${a.interface}:${a.direction}`),
        effect: 'meter detach --gone reclaims it',
      })
    }
    this.owned.remove(netns)
  }

  private tell(action: FollowAction, reason: FollowReason, fields: Record<string, unknown>): void {
    this.log.log('info', `follow-${action}`, {...fields, reason})
    this.options.observer?.(action, reason)
  }
}
