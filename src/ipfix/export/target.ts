/**
 * What the IPFIX exporter is told to do, in its own terms: where a collector is and which
 * templates (by element name) to send. `src/config` builds these from the YAML file; nothing in
 * `src/ipfix` knows about the file.
 */

/** A UDP endpoint. */
export interface Endpoint {
  /** An IPv4 or IPv6 literal (without brackets; an IPv6 zone such as `%eth0` is kept) or a hostname. */
  host: string
  /** 1–65535 for a remote endpoint; 0–65535 for a source, where 0 means any port. */
  port: number
}

/** One IPFIX collector flows are sent to over UDP. */
export interface CollectorTarget {
  /**
   * The collector's name in logs and metrics (unique): the config's `name`, or the remote address
   * as written, e.g. '198.18.0.2:4739'. A reload that keeps the name keeps the collector (its
   * spool and sequence numbers), whatever else changes.
   */
  name: string
  /** Where to send. */
  remote: Endpoint
  /** The local address and port to send from (the older tool's `localAddress`); port 0 = any. Undefined = let the kernel choose. */
  source?: Endpoint
  /** Only these templates (and their records) go to this collector; undefined = all templates. */
  templateIds?: number[]
  /** How fast its spool is replayed when it answers again (bytes of messages a second); undefined = the exporter's default. */
  replayBytesPerSecond?: number
  /** How fast any message may leave for it (bytes a second; 0 = unpaced); undefined = the exporter's default. */
  sendBytesPerSecond?: number
  /** Biflows (RFC 5103): both directions of a connection in one record, in biflow templates (biflow-templates.ts); absent: uniflows. */
  biflow?: boolean
}

/** A template as named fields: the information element's registry name and its length on the wire. */
export interface TemplateSpec {
  id: number
  fields: readonly {name: string; length: number}[]
}

/** Whether two targets send to the same address from the same source (a move needs a new socket otherwise). */
export function sameEndpoints(a: CollectorTarget, b: CollectorTarget): boolean {
  const key = (t: CollectorTarget) => `${t.remote.host}|${t.remote.port}|${t.source?.host ?? ''}|${t.source?.port ?? ''}|${t.source ? 1 : 0}`
  return key(a) === key(b)
}
