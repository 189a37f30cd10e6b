/**
 * How a transport paces what waits in its spool (a backlog replayed after an outage or a move,
 * and the whole live export when sendBytesPerSecond is set): the rates (the target's own, or the
 * defaults), a token bucket that lets messages go no faster than the rate, in bursts a
 * collector's default receive buffer holds (a collector drops what its socket buffer cannot
 * take, and nobody hears of it), and the timer that comes back for the rest.
 */
import type {CollectorTarget} from './target.js'

/**
 * 5 MB/s (40 Mbit/s: about 3,500 messages of 1400 bytes, 75,000 IPv4 flows of the default
 * template a second). Into nfcapd 1.7.1 on loopback with its default receive buffer
 * (docs/benchmarks.md, figure 8), replays lost nothing up to 20 MB/s on a quiet machine, but at
 * 10 MB/s they lost now and then when nfcapd had to wait for a busy CPU (load 3-4), where 5 MB/s
 * lost nothing: a quarter of what held on a quiet host, for a collector host that is
 * slower, busier or shared with other exporters. It is still several times the live export of a
 * busy router, so a backlog drains while what is exported meanwhile waits behind it; a full
 * default spool goes in about 7 s.
 */
export const DEFAULT_REPLAY_BYTES_PER_SECOND = 5_000_000
/**
 * The most a replay sends at once: 32 KiB, 23 messages of 1400 bytes. A collector's socket
 * buffer is net.core.rmem_default (208 KiB) unless it asks for more, and each datagram takes its
 * kernel buffer's size there (about 2.3 KiB on loopback, up to 4.5 KiB behind some NICs): 32 KiB
 * takes at most half of it. (Into nfcapd on loopback, bursts of 128 KiB and more lost messages.)
 */
export const REPLAY_BURST_BYTES = 32 << 10
/** At a high rate the bursts are this much of a second's worth instead (timers fire every millisecond or so at best). */
const REPLAY_BURST_MS = 2

/** The most that leaves at once at `bytesPerSecond`. */
function burstBytes(bytesPerSecond: number): number {
  return Math.max(REPLAY_BURST_BYTES, (bytesPerSecond * REPLAY_BURST_MS) / 1000)
}

/** The rates a transport paces by: its target's own, or the defaults every collector gets (a config reload may change them). */
export class PaceRates {
  constructor(
    private replay: number,
    private send: number,
  ) {}

  /** New defaults, for a target that has none of its own (config reload). */
  setDefaults(rates: {replayBytesPerSecond?: number; sendBytesPerSecond?: number}): void {
    if (rates.replayBytesPerSecond !== undefined) this.replay = rates.replayBytesPerSecond
    if (rates.sendBytesPerSecond !== undefined) this.send = rates.sendBytesPerSecond
  }

  /** Bytes a second a backlog goes out at. */
  replayFor(target: CollectorTarget): number {
    return target.replayBytesPerSecond ?? this.replay
  }

  /** Bytes a second any message may leave at (0 = unpaced: only a backlog goes through the pacer). */
  sendFor(target: CollectorTarget): number {
    return target.sendBytesPerSecond ?? this.send
  }

  /**
   * The token bucket's rate: a backlog after an outage or a move (`replaying`) goes at
   * replayBytesPerSecond, and no message ever faster than sendBytesPerSecond when that is set.
   */
  bucketRate(target: CollectorTarget, replaying: boolean): number {
    const send = this.sendFor(target)
    if (!replaying && send > 0) return send
    return send > 0 ? Math.min(send, this.replayFor(target)) : this.replayFor(target)
  }
}

/** The token bucket and the timer of a transport's paced turns. */
export class Pacer {
  /** Bytes that may leave now, as of `tokensAt` (clock()). */
  private tokens = 0
  private tokensAt = 0
  /** The rate and burst of the last refill. */
  private rate = DEFAULT_REPLAY_BYTES_PER_SECOND
  private burst = REPLAY_BURST_BYTES
  private timer?: NodeJS.Timeout

  /** `clock`: monotonic, in ms; `onTurn`: sends the next part of what waits. */
  constructor(
    private readonly clock: () => number,
    private readonly onTurn: () => void,
  ) {}

  /** Whether a turn is scheduled (one at a time). */
  get scheduled(): boolean {
    return this.timer !== undefined
  }

  /** Takes a turn after `delayMs`, unless one is scheduled already. */
  schedule(delayMs = 0): void {
    if (this.timer) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.onTurn()
    }, delayMs)
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
  }

  /** A backlog starts at `bytesPerSecond` with a whole burst in the bucket (the collector's buffer had the probe's time to empty). */
  fill(bytesPerSecond: number): void {
    this.rate = bytesPerSecond
    this.burst = burstBytes(bytesPerSecond)
    this.tokens = this.burst
    this.tokensAt = this.clock()
  }

  /** Adds what `bytesPerSecond` earned since the last look, up to a burst. */
  refill(bytesPerSecond: number): void {
    const now = this.clock()
    this.rate = bytesPerSecond
    this.burst = burstBytes(bytesPerSecond)
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.tokensAt) * bytesPerSecond) / 1000)
    this.tokensAt = now
  }

  /**
   * Whether a message of `length` bytes may join a batch already holding `batchBytes` (none:
   * `first`). What fits the tokens; the first message goes once a burst's worth is there even if
   * it is larger (the bucket then owes it).
   */
  admits(batchBytes: number, length: number, first: boolean): boolean {
    if (first) return length <= this.tokens || this.tokens >= this.burst
    return batchBytes + length <= this.tokens
  }

  /** A message of `length` bytes left. */
  spend(length: number): void {
    this.tokens -= length
  }

  /** Comes back when the bucket holds half a burst (or the next message, of `nextLength` bytes), not at every millisecond. */
  scheduleFor(nextLength: number): void {
    const wanted = Math.min(this.burst, Math.max(this.burst / 2, nextLength))
    this.schedule(Math.max(1, Math.ceil(((wanted - this.tokens) * 1000) / this.rate)))
  }
}
