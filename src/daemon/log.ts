/**
 * Structured logs: one JSON object per line on stderr (stdout stays free for flow logs), with a
 * time, a level and an event name. Repeated errors of one kind are rate-limited: the first is
 * logged, the next ones are counted and reported with the next that gets through.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error'

export interface Logger {
  log(level: Level, event: string, fields?: Record<string, unknown>): void
  /** Logs at most once per `intervalMs` for `key`, saying how many were suppressed. */
  limited(key: string, level: Level, event: string, fields?: Record<string, unknown>, intervalMs?: number): void
}

export function createLogger(write: (line: string) => void = (l) => process.stderr.write(l), minLevel: Level = 'info'): Logger {
  const order: Level[] = ['debug', 'info', 'warn', 'error']
  const last = new Map<string, {at: number; suppressed: number}>()
  const log = (level: Level, event: string, fields: Record<string, unknown> = {}) => {
    if (order.indexOf(level) < order.indexOf(minLevel)) return
    write(`${JSON.stringify({time: new Date().toISOString(), level, event, ...fields}, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))}\n`)
  }
  return {
    log,
    limited(key, level, event, fields = {}, intervalMs = 10_000) {
      const now = Date.now()
      const seen = last.get(key)
      if (seen && now - seen.at < intervalMs) {
        seen.suppressed++
        return
      }
      last.set(key, {at: now, suppressed: 0})
      log(level, event, seen?.suppressed ? {...fields, suppressed: seen.suppressed} : fields)
    },
  }
}
