/**
 * The daemon's configuration after loading: every default filled in, every name resolved against
 * the IANA registry, every address split into host and port. `src/config/load.ts` turns a YAML
 * file (the new keys or the older linux-flow-exporter's) into this; nothing else reads YAML.
 */

import type {CollectorTarget, Endpoint} from '../ipfix/export/target.js'

export type {Endpoint}

/** One IPFIX collector flows are sent to over UDP (the exporter's own CollectorTarget). */
export type CollectorConfig = CollectorTarget

/** One field of a template: an IANA information element and the length it is encoded in. */
export interface TemplateFieldConfig {
  /** The registry's spelling, e.g. 'sourceIPv4Address' (the config may use any case). */
  name: string
  /** The registry's element id. */
  id: number
  /** Bytes on the wire: the type's natural length, or a reduced size (RFC 7011 §6.2). */
  length: number
  /** flowctl's own enterprise-specific elements: the PEN they go out under (Config.enterpriseNumber); absent for the registry's. */
  enterpriseNumber?: number
}

/** An IPFIX template: its id (256–65535, unique) and at least one field. */
export interface TemplateConfig {
  id: number
  fields: TemplateFieldConfig[]
}

/**
 * A program a log output's records pass through (JSON array on stdin, JSON array on stdout), as
 * the older tool's hooks did. `command` is an argv run without a shell; `shell` is a script run
 * by /bin/sh, which the config has to ask for explicitly.
 */
export type HookConfig = {
  /** A label for logs; the older tool's `name`. */
  name?: string
  /** How long the hook may run (config: `timeoutSeconds`, default 5). */
  timeoutMs: number
} & ({command: string[]} | {shell: string})

/** Flow records written as JSON lines to a file, after the hooks. */
export interface LogOutputConfig {
  /** A path, or '-' for stdout. */
  file: string
  /** Run in order; empty when none. */
  hooks: HookConfig[]
  /** Each record a biflow (RFC 5103: both directions of a connection, src/flow/biflow.ts); absent: uniflows. */
  biflow?: boolean
}

/** A meter (one network namespace) whose flows the daemon exports. */
export interface MeterSelection {
  /**
   * The `ip netns` name, or null for the root namespace (written `root` in the config), or a
   * pattern over names as written: a glob (`tenant-*`) or `/REGEX/` (see src/util/name-pattern.ts).
   */
  netns: string | null
  /** Overrides Config.observationDomainId for this meter's flows. */
  observationDomainId?: number
  /**
   * Interface globs (a leading ! excludes): present, the daemon attaches the meter itself to the
   * interfaces they take in every namespace `netns` takes, as they come and go. Absent, the entry
   * selects meters attached by hand.
   */
  interfaces?: string[]
  /** The directions the daemon attaches (with `interfaces`); default both. */
  direction?: 'ingress' | 'egress' | 'both'
  /** Flows per flow map of a set the daemon makes (with `interfaces`); default as meter attach. */
  capacity?: number
  /**
   * The meter counts 1 packet in N (1: every packet): set by the daemon when it finds the meter
   * (at start, on attach) and on reload. Undefined: the meter keeps the rate it has (`meter attach
   * --sampling`, 1 for a new one).
   */
  sampling?: number
  /**
   * Count the namespace's dropped packets per flow, with the kernel's reason (`meter attach
   * --drops`): true turns them on when the daemon finds the meter and on reload, false off.
   * Undefined: as the meter is.
   */
  drops?: boolean
}

/** The normalized daemon configuration. */
export interface Config {
  /** The file it was loaded from (as given); null for the embedded default or text without a file. */
  file: string | null
  /** IPFIX observation domain of exported messages, 0..2^32-1; default 1. */
  observationDomainId: number
  /**
   * The IANA Private Enterprise Number flowctl's own elements (the TCP round trips) go out under in
   * IPFIX; undefined (the default): none, and a template may not name them.
   */
  enterpriseNumber?: number
  /** Largest IPFIX message (UDP payload) sent, 80..65507; default 1400. The older tool's `maxIpfixMessageLen`. */
  maxMessageSize: number
  /** How often templates are sent again over UDP; default 60. The older tool's `timerTemplateFlushSeconds`. */
  templateRefreshSeconds: number
  /**
   * Bytes of IPFIX messages held for each collector while it is down (ICMP port unreachable),
   * replayed when it answers again, and sent in the last second (until they count as arrived);
   * the oldest are dropped (and counted) past it. Default 32 MiB; 0 = none.
   */
  spoolBytes: number
  /** The same for all collectors together: past it, the oldest message any of them holds goes. Default 64 MiB. */
  spoolTotalBytes: number
  /** How fast a collector that answers again gets its spool (bytes a second), unless the collector says; default 5 MB/s. */
  replayBytesPerSecond: number
  /**
   * How fast any message may leave for a collector (bytes a second), unless the collector says:
   * every message then goes out paced like a replay, in bursts a collector's default receive
   * buffer holds, and what waits its turn is held within spoolBytes. Default 0: unpaced.
   */
  sendBytesPerSecond: number
  /** How often exporter statistics (options records) are sent; default 60. */
  statsIntervalSeconds: number
  /**
   * How often flows are taken from the kernel; default 1. Finished (FIN/RST) flows leave at the
   * first drain after they go quiet. The older tool's `timerFinishedDrainSeconds`.
   */
  drainIntervalSeconds: number
  /** A flow quiet this long is exported and forgotten; default 15; at least drainIntervalSeconds. */
  idleTimeoutSeconds: number
  /**
   * A flow that lasts longer is exported every interval, as deltas; default 60; at least
   * drainIntervalSeconds. The older tool's `timerForceDrainSeconds`.
   */
  activeTimeoutSeconds: number
  /** IPFIX collectors, in config order. */
  collectors: CollectorConfig[]
  /** The templates; DEFAULT_TEMPLATES (registry ids, natural lengths) when the file names none. */
  templates: TemplateConfig[]
  /** True when `templates` are the defaults because the file named none. */
  templatesDefaulted: boolean
  /** The meters to export; undefined = every attached meter. */
  meters?: MeterSelection[]
  /** JSON log outputs, in config order. */
  logs: LogOutputConfig[]
  /** Prometheus metrics endpoint: HOST:PORT to listen on, or null for none. Default '127.0.0.1:9999' (the older tool's port). */
  metrics: {listen: string | null}
  /** Where the daemon keeps its state between runs; null: daemon-state.json in the state directory (/var/lib/flowctl). */
  stateFile: string | null
}
