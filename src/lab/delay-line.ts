/**
 * A delay line, run as its own process by src/lab/delay-lab.ts (`node delay-line.js '<json spec>'`):
 * it creates two TAP devices in the namespace it starts in and passes every Ethernet frame read
 * from one to the other after a fixed one-way delay, both ways, in order. Two namespaces whose
 * interfaces are its two TAP devices are then joined by a link with that delay: this kernel has no
 * netem qdisc to delay packets with (docs/testing.md).
 *
 * The caller moves the devices into their namespaces after "ready"; the open file descriptors keep
 * working there. One thread, blocking in ppoll(2) with a nanosecond timeout until the next frame is
 * due or a frame arrives: a frame leaves within the timer's slack (tens of µs) of its due time,
 * never batched. It never ends by itself: SIGTERM (default action) or its parent's death
 * (setpriv --pdeathsig) ends it, and closing the descriptors removes the devices.
 */
import koffi from 'koffi'

export interface DelayLineSpec {
  /** The two TAP devices to create, at most 15 characters each. */
  taps: [string, string]
  /** One-way delay of each frame, in milliseconds (fractions allowed). */
  delayMs: number
}

const O_RDWR = 0o2
const O_NONBLOCK = 0o4000
const O_CLOEXEC = 0o2000000
/** _IOW('T', 202, int) */
const TUNSETIFF = 0x400454ca
const IFF_TAP = 0x0002
const IFF_NO_PI = 0x1000
const IFREQ_SIZE = 40
const POLLIN = 0x1
const EAGAIN = 11
const EINTR = 4
const EIO = 5
/** More than any frame a TAP device without offloads hands over (MTU 1500 plus its header, or a larger MTU). */
const FRAME_BUFFER = 65_536
/** How long before a frame is due its sleep ends (see the loop). */
const WAKE_EARLY_NS = 200_000

const libc = koffi.load('libc.so.6')
const open = libc.func('int open(const char *path, int flags)')
const ioctl = libc.func('int ioctl(int fd, unsigned long request, ...)')
const read = libc.func('long read(int fd, void *buf, size_t count)')
const write = libc.func('long write(int fd, void *buf, size_t count)')
const ppoll = libc.func('int ppoll(void *fds, unsigned long nfds, void *timeout, void *sigmask)')
const errnoLocation = libc.func('int *__errno_location()')
const prctl = libc.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)')
const schedSetscheduler = libc.func('int sched_setscheduler(int pid, int policy, void *param)')

const PR_SET_TIMERSLACK = 29
const SCHED_FIFO = 1
/** Low among real-time priorities: above every ordinary process, below the kernel's own threads. */
const FIFO_PRIORITY = 10

/**
 * Wakes on time even on a busy machine: a timer slack of 1 ns (not the default 50 µs) and, where
 * the machine allows it, real-time scheduling, so the tests' other processes never delay a frame.
 * The thread only ever blocks in ppoll, so it cannot starve anything. Best effort: without it the
 * delays are only less exact.
 */
function wakeOnTime(): void {
  prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
  const param = Buffer.alloc(4)
  param.writeInt32LE(FIFO_PRIORITY)
  schedSetscheduler(0, SCHED_FIFO, param)
}

function errno(): number {
  return koffi.decode(errnoLocation(), 'int') as number
}

function openTap(name: string): number {
  const fd = open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC) as number
  if (fd < 0) throw new Error(`cannot open /dev/net/tun (errno ${errno()})`)
  const ifreq = Buffer.alloc(IFREQ_SIZE)
  ifreq.write(name, 0, 15, 'ascii')
  ifreq.writeUInt16LE(IFF_TAP | IFF_NO_PI, 16)
  if ((ioctl(fd, TUNSETIFF, 'void *', ifreq) as number) < 0) throw new Error(`cannot create TAP device ${name} (errno ${errno()})`)
  return fd
}

/** Frames on their way one direction, oldest first: one delay for all, so due times only grow. */
class FrameQueue {
  private readonly frames: {due: number; frame: Buffer}[] = []
  private head = 0

  push(due: number, frame: Buffer): void {
    this.frames.push({due, frame})
  }

  /** When the oldest frame is due (ns), or undefined when none waits. */
  nextDue(): number | undefined {
    return this.head < this.frames.length ? this.frames[this.head].due : undefined
  }

  /** Takes the oldest frame if it is due at `now`. */
  takeDue(now: number): Buffer | undefined {
    if (this.head >= this.frames.length) return undefined
    const next = this.frames[this.head]
    if (next.due > now) return undefined
    this.head++
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames.splice(0, this.head)
      this.head = 0
    }
    return next.frame
  }
}

function nowNs(): number {
  return Number(process.hrtime.bigint())
}

function run(spec: DelayLineSpec): never {
  const delayNs = Math.round(spec.delayMs * 1e6)
  const fds = spec.taps.map(openTap)
  // queues[i]: frames read from fds[i], to be written to fds[1 - i].
  const queues = [new FrameQueue(), new FrameQueue()]
  const pollfds = Buffer.alloc(16) // two struct pollfd {int fd; short events; short revents}
  for (const [i, fd] of fds.entries()) {
    pollfds.writeInt32LE(fd, i * 8)
    pollfds.writeInt16LE(POLLIN, i * 8 + 4)
  }
  const timeout = Buffer.alloc(16) // struct timespec
  const buffer = Buffer.alloc(FRAME_BUFFER)
  wakeOnTime()
  process.stdout.write('ready\n')
  for (;;) {
    let now = nowNs()
    let next: number | undefined
    for (const [i, queue] of queues.entries()) {
      for (let frame = queue.takeDue(now); frame; frame = queue.takeDue(now)) {
        // A frame written while the peer is down (EIO: as the links come up) is lost, as on a cable
        // into a switched-off port.
        if ((write(fds[1 - i], frame, frame.length) as number) < 0 && errno() !== EIO)
          process.stderr.write(`delay-line: write to ${spec.taps[1 - i]} failed (errno ${errno()})\n`)
      }
      const due = queue.nextDue()
      if (due !== undefined && (next === undefined || due < next)) next = due
    }
    let waitFor: Buffer | null = null
    if (next !== undefined) {
      // Woken this much early, the last stretch polls without sleeping: a sleep here ends 50-100 µs
      // late (timer interrupts on this kind of virtual machine), a poll is back within microseconds.
      const ns = Math.max(0, next - now - WAKE_EARLY_NS)
      timeout.writeBigInt64LE(BigInt(Math.floor(ns / 1e9)), 0)
      timeout.writeBigInt64LE(BigInt(ns % 1e9), 8)
      waitFor = timeout
    }
    pollfds.writeInt16LE(0, 6)
    pollfds.writeInt16LE(0, 14)
    if ((ppoll(pollfds, 2, waitFor, null) as number) < 0 && errno() !== EINTR) throw new Error(`ppoll failed (errno ${errno()})`)
    for (const [i, fd] of fds.entries()) {
      if (!pollfds.readInt16LE(i * 8 + 6)) continue
      // Every frame waiting now, each stamped when it was taken.
      for (;;) {
        const n = read(fd, buffer, buffer.length) as number
        if (n < 0) {
          const e = errno()
          if (e === EAGAIN || e === EINTR) break
          throw new Error(`read from ${spec.taps[i]} failed (errno ${e})`)
        }
        now = nowNs()
        queues[i].push(now + delayNs, Buffer.from(buffer.subarray(0, n)))
      }
    }
  }
}

try {
  run(JSON.parse(process.argv[2]) as DelayLineSpec)
} catch (error) {
  process.stderr.write(`delay-line: ${(error as Error).message}\n`)
  process.exit(1)
}
