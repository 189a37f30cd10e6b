/**
 * A connected, non-blocking UDP socket owned through libc (koffi), for the IPFIX exporter:
 * - its file descriptor is ours, so its SO_COOKIE can go on the meter's skip list without
 *   reaching into Node's internals;
 * - many datagrams leave in one sendmmsg(2) call instead of one libuv send each;
 * - IP_RECVERR queues each ICMP error with the head of the datagram that caused it, so the
 *   exporter learns which message a collector that is down refused (a connected socket also
 *   fails its next send with the error, ECONNREFUSED for "port unreachable").
 * Linux only (x86-64 and arm64 share these struct layouts and constants).
 */
import {getSystemErrorName} from 'node:util'

import koffi from 'koffi'

import {FlowctlError} from '../errors.js'
import {parseAddress} from '../util/address.js'

const AF_INET = 2
const AF_INET6 = 10
const SOCK_DGRAM = 2
const SOCK_NONBLOCK = 0o4000
const SOCK_CLOEXEC = 0o2000000
const SOL_SOCKET = 1
const SO_ERROR = 4
const SO_SNDBUF = 7
const SO_COOKIE = 57
const SOL_IP = 0
const IP_RECVERR = 11
const SOL_IPV6 = 41
const IPV6_RECVERR = 25
const MSG_DONTWAIT = 0x40
const MSG_ERRQUEUE = 0x2000

export const EAGAIN = 11
export const EINTR = 4
export const ENOBUFS = 105
export const EMSGSIZE = 90

/** sendmmsg sends at most this many datagrams a call (the kernel's UIO_MAXIOV). */
export const MAX_BATCH = 1024

// struct iovec {void *base; size_t len}; struct msghdr (56 bytes, msg_iov at 16, msg_iovlen at
// 24, msg_control at 32, msg_controllen at 40, msg_flags at 48); struct mmsghdr {msghdr; unsigned len}.
const IOVEC = 16
const MSGHDR = 56
const MMSGHDR = 64

interface Libc {
  socket(domain: number, type: number, protocol: number): number
  bind(fd: number, addr: Buffer, len: number): number
  connect(fd: number, addr: Buffer, len: number): number
  getsockname(fd: number, addr: Buffer, len: Uint32Array): number
  getsockopt(fd: number, level: number, name: number, value: Buffer, len: Uint32Array): number
  setsockopt(fd: number, level: number, name: number, value: Buffer, len: number): number
  sendmmsg(fd: number, vec: Buffer, vlen: number, flags: number): number
  recvmsg(fd: number, msg: Buffer, flags: number): number
  close(fd: number): number
  if_nametoindex(name: string): number
}

let libc: Libc | undefined

function lib(): Libc {
  if (libc) return libc
  const c = koffi.load('libc.so.6')
  libc = {
    socket: c.func('int socket(int domain, int type, int protocol)'),
    bind: c.func('int bind(int fd, void *addr, uint32_t len)'),
    connect: c.func('int connect(int fd, void *addr, uint32_t len)'),
    getsockname: c.func('int getsockname(int fd, void *addr, void *len)'),
    getsockopt: c.func('int getsockopt(int fd, int level, int name, void *value, void *len)'),
    setsockopt: c.func('int setsockopt(int fd, int level, int name, void *value, uint32_t len)'),
    sendmmsg: c.func('int sendmmsg(int fd, void *vec, unsigned int vlen, int flags)'),
    recvmsg: c.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
    close: c.func('int close(int fd)'),
    if_nametoindex: c.func('unsigned int if_nametoindex(const char *name)'),
  }
  return libc
}

/** An errno as a Node-style error (`code` ECONNREFUSED, ...). */
export function socketError(errno: number, call: string): NodeJS.ErrnoException {
  let name = `errno ${errno}`
  try {
    name = getSystemErrorName(-errno)
  } catch {
    // unknown errno: keep the number
  }
  const error = new Error(`${call} ${name}`) as NodeJS.ErrnoException
  error.code = name
  error.errno = -errno
  error.syscall = call
  return error
}

/** A UDP endpoint given as an address literal (IPv6 may carry a zone, `fe80::1%eth0`). */
export interface SocketAddress {
  address: string
  port: number
}

function sockaddr(family: 4 | 6, endpoint: SocketAddress): Buffer {
  const [host, zone] = endpoint.address.split('%')
  const parsed = parseAddress(host)
  if (parsed.family !== family) throw new FlowctlError(`${endpoint.address} is not an IPv${family} address`)
  if (family === 4) {
    const sa = Buffer.alloc(16)
    sa.writeUInt16LE(AF_INET, 0)
    sa.writeUInt16BE(endpoint.port, 2)
    parsed.bytes.copy(sa, 4)
    return sa
  }
  const sa = Buffer.alloc(28)
  sa.writeUInt16LE(AF_INET6, 0)
  sa.writeUInt16BE(endpoint.port, 2)
  parsed.bytes.copy(sa, 8)
  if (zone) {
    const index = /^\d+$/.test(zone) ? Number(zone) : lib().if_nametoindex(zone)
    if (!index) throw new FlowctlError(`${endpoint.address}: no interface ${zone}`)
    sa.writeUInt32LE(index, 24)
  }
  return sa
}

/** Addresses of ArrayBuffers' memory (koffi.address costs microseconds; this is paid once per buffer). */
const bases = new WeakMap<ArrayBufferLike, number>()

function addressOf(buf: Buffer): number {
  let base = bases.get(buf.buffer)
  if (base === undefined) {
    base = Number(koffi.address(new Uint8Array(buf.buffer)))
    bases.set(buf.buffer, base)
  }
  return base + buf.byteOffset
}

function putPointer(buf: Buffer, off: number, address: number): void {
  buf.writeUInt32LE(address % 4_294_967_296, off)
  buf.writeUInt32LE(Math.floor(address / 4_294_967_296), off + 4)
}

/** An ICMP error the kernel queued for the socket: its errno and the head of the datagram refused. */
export interface QueuedError {
  errno: number
  /** The start of the refused datagram's payload, as far as the ICMP message carried it. */
  payload: Buffer
}

export class UdpSocket {
  readonly fd: number
  readonly family: 4 | 6
  private closed = false
  // sendmmsg's vectors: MAX_BATCH mmsghdr, each with one iovec, pointers set once.
  private readonly vec = Buffer.allocUnsafeSlow(MAX_BATCH * MMSGHDR).fill(0)
  private readonly iov = Buffer.allocUnsafeSlow(MAX_BATCH * IOVEC).fill(0)
  // recvmsg(MSG_ERRQUEUE): one msghdr, its iovec, the payload and the control buffers.
  private readonly errMsg = Buffer.allocUnsafeSlow(MSGHDR + IOVEC).fill(0)
  private readonly errData = Buffer.allocUnsafeSlow(2048)
  private readonly errControl = Buffer.allocUnsafeSlow(512)

  private constructor(fd: number, family: 4 | 6) {
    this.fd = fd
    this.family = family
    const iovBase = addressOf(this.iov)
    for (let i = 0; i < MAX_BATCH; i++) {
      putPointer(this.vec, i * MMSGHDR + 16, iovBase + i * IOVEC)
      this.vec.writeUInt32LE(1, i * MMSGHDR + 24)
    }
    putPointer(this.errMsg, MSGHDR, addressOf(this.errData))
    this.errMsg.writeUInt32LE(this.errData.length, MSGHDR + 8)
    putPointer(this.errMsg, 16, addressOf(this.errMsg) + MSGHDR)
    this.errMsg.writeUInt32LE(1, 24)
    putPointer(this.errMsg, 32, addressOf(this.errControl))
  }

  /**
   * A socket of the remote's family, bound to `source` when given (port 0 = any), connected to
   * `remote`, with the send buffer asked for. Throws a FlowctlError naming the call that failed.
   */
  static connect(remote: SocketAddress, source?: SocketAddress, options: {sendBufferBytes?: number} = {}): UdpSocket {
    const family = parseAddress(remote.address.split('%')[0]).family
    const c = lib()
    const fd = c.socket(family === 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if (fd < 0) throw new FlowctlError(`cannot open a UDP socket: ${socketError(koffi.errno(), 'socket').message}`)
    const socket = new UdpSocket(fd, family)
    try {
      const on = Buffer.alloc(4)
      on.writeInt32LE(1)
      if (family === 4) c.setsockopt(fd, SOL_IP, IP_RECVERR, on, 4)
      else c.setsockopt(fd, SOL_IPV6, IPV6_RECVERR, on, 4)
      if (options.sendBufferBytes) {
        const size = Buffer.alloc(4)
        size.writeInt32LE(options.sendBufferBytes)
        c.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, size, 4) // capped by net.core.wmem_max: what we get is fine
      }
      if (source) {
        const sa = sockaddr(family, source)
        if (c.bind(fd, sa, sa.length) !== 0) {
          const e = socketError(koffi.errno(), 'bind')
          throw new FlowctlError(`cannot send from ${source.address}:${source.port}: ${e.code}`, {cause: e})
        }
      }
      const sa = sockaddr(family, remote)
      if (c.connect(fd, sa, sa.length) !== 0) {
        const e = socketError(koffi.errno(), 'connect')
        throw new FlowctlError(`cannot send to ${remote.address}:${remote.port}: ${e.code}`, {cause: e})
      }
    } catch (error) {
      socket.close()
      throw error
    }
    return socket
  }

  /** The kernel's unique, never reused id of the socket. */
  cookie(): bigint {
    const value = Buffer.alloc(8)
    if (lib().getsockopt(this.fd, SOL_SOCKET, SO_COOKIE, value, new Uint32Array([8])) !== 0) throw socketError(koffi.errno(), 'getsockopt(SO_COOKIE)')
    return value.readBigUInt64LE(0)
  }

  get localPort(): number {
    const sa = Buffer.alloc(28)
    if (lib().getsockname(this.fd, sa, new Uint32Array([28])) !== 0) throw socketError(koffi.errno(), 'getsockname')
    return sa.readUInt16BE(2)
  }

  /**
   * Sends messages[from..to) (at most MAX_BATCH) in one sendmmsg call. Returns how many left;
   * when fewer than asked, `errno` says why the next one did not (EAGAIN: the send buffer is
   * full; ECONNREFUSED: the collector's port was unreachable; that message was not sent).
   * The messages' memory must not move: Buffers of off-heap ArrayBuffers (all of Node's are).
   */
  sendMany(messages: readonly Buffer[], from: number, to: number): {sent: number; errno: number} {
    const n = Math.min(to - from, MAX_BATCH)
    if (n <= 0) return {sent: 0, errno: 0}
    const iov = this.iov
    for (let i = 0; i < n; i++) {
      const m = messages[from + i]
      putPointer(iov, i * IOVEC, addressOf(m))
      putPointer(iov, i * IOVEC + 8, m.length)
    }
    const sent = lib().sendmmsg(this.fd, this.vec, n, 0)
    if (sent < 0) return {sent: 0, errno: koffi.errno()}
    if (sent < n) {
      // The kernel keeps the error of a partial batch for the next call; fetch it now.
      return {sent, errno: this.takeError() || EAGAIN}
    }
    return {sent, errno: 0}
  }

  /** The socket's pending error (SO_ERROR), cleared; 0 when none. */
  takeError(): number {
    const value = Buffer.alloc(4)
    if (lib().getsockopt(this.fd, SOL_SOCKET, SO_ERROR, value, new Uint32Array([4])) !== 0) return 0
    return value.readInt32LE(0)
  }

  /** Takes every ICMP error queued on the socket (IP_RECVERR), oldest first. */
  readErrorQueue(): QueuedError[] {
    const out: QueuedError[] = []
    const c = lib()
    for (;;) {
      this.errMsg.writeUInt32LE(this.errControl.length, 40)
      this.errMsg.writeUInt32LE(0, 44)
      const n = c.recvmsg(this.fd, this.errMsg, MSG_ERRQUEUE | MSG_DONTWAIT)
      if (n < 0) break
      out.push({errno: this.extendedErrno(), payload: Buffer.from(this.errData.subarray(0, n))})
    }
    return out
  }

  /** ee_errno of the sock_extended_err in the control message of the last recvmsg. */
  private extendedErrno(): number {
    const length = this.errMsg.readUInt32LE(40)
    for (let off = 0; off + 16 <= length;) {
      const len = this.errControl.readUInt32LE(off)
      const level = this.errControl.readInt32LE(off + 8)
      const type = this.errControl.readInt32LE(off + 12)
      if ((level === SOL_IP && type === IP_RECVERR) || (level === SOL_IPV6 && type === IPV6_RECVERR)) return this.errControl.readUInt32LE(off + 16)
      if (len < 16) break
      off += (len + 7) & ~7
    }
    return 0
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    lib().close(this.fd)
  }
}
