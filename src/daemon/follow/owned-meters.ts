/**
 * The meters the daemon attached itself (config `meters:` entries with `interfaces`), kept in
 * <run dir>/followed.json beside attachments.json: on tmpfs like the kernel state it describes,
 * so both vanish together at reboot, and it outlives the daemon, so the next start takes its
 * meters back. Only the daemon (one at a time: the one-daemon lock) writes it. A meter not listed
 * here was attached by hand, and the daemon never detaches it.
 */
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import writeFileAtomic from 'write-file-atomic'

import type {DirectionName} from '../../flow/record.js'
import type {Paths} from '../../paths.js'
import {makeDirectories} from '../../sys/directories.js'
import type {NetnsName} from '../../sys/netns.js'

export interface OwnedMeter {
  netns: NetnsName
  interface: string
  direction: DirectionName
}

interface OwnedFile {
  version: 1
  meters: OwnedMeter[]
}

export class OwnedMeters {
  private meters: OwnedMeter[]
  readonly file: string

  constructor(paths: Paths) {
    this.file = join(paths.runDir, 'followed.json')
    this.meters = OwnedMeters.read(this.file)
  }

  /** What the file holds; a file that cannot be read owns nothing (a meter then counts as attached by hand: it is left alone). */
  private static read(file: string): OwnedMeter[] {
    if (!existsSync(file)) return []
    try {
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<OwnedFile> | null
      return parsed?.version === 1 && Array.isArray(parsed.meters) ? parsed.meters : []
    } catch {
      return []
    }
  }

  of(netns: NetnsName): OwnedMeter[] {
    return this.meters.filter((m) => m.netns === netns)
  }

  has(netns: NetnsName, ifname: string, direction: DirectionName): boolean {
    return this.meters.some((m) => m.netns === netns && m.interface === ifname && m.direction === direction)
  }

  /** The namespaces where the daemon owns a meter. */
  namespaces(): NetnsName[] {
    return [...new Set(this.meters.map((m) => m.netns))]
  }

  add(meter: OwnedMeter): void {
    if (this.has(meter.netns, meter.interface, meter.direction)) return
    this.meters.push(meter)
    this.save()
  }

  remove(netns: NetnsName, ifname?: string, direction?: DirectionName): void {
    const before = this.meters.length
    this.meters = this.meters.filter(
      (m) => !(m.netns === netns && (ifname === undefined || m.interface === ifname) && (direction === undefined || m.direction === direction)),
    )
    if (this.meters.length !== before) this.save()
  }

  private save(): void {
    makeDirectories(join(this.file, '..'))
    writeFileAtomic.sync(this.file, `${JSON.stringify({version: 1, meters: this.meters} satisfies OwnedFile, null, 2)}\n`)
  }
}
