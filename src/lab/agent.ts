/**
 * A traffic agent, run inside a lab namespace (`nsenter --net=... node agent.js '<json spec>'`):
 * sends or receives exactly what it is told, so tests know every packet and byte that crossed.
 * Prints "ready" when listening and one JSON result line when done.
 */
import {createSocket, type Socket} from 'node:dgram'
import {createConnection, createServer} from 'node:net'

import koffi from 'koffi'

export type AgentSpec =
  | {mode: 'udp-sink'; host: string; port: number; expect?: number}
  | {mode: 'udp-send'; host: string; port: number; sport?: number; count: number; size: number; gapMs?: number; durationMs?: number}
  /**
   * `count` rounds of one datagram from each of `flows` sockets (ephemeral ports, reported as
   * `sports`), `gapMs` between rounds; SIGTERM ends it after the datagram being sent (the result
   * counts exactly what was sent).
   */
  | {mode: 'udp-rounds'; host: string; port: number; flows: number; count: number; size: number; gapMs?: number}
  | {mode: 'tcp-sink'; host: string; port: number}
  | {mode: 'tcp-send'; host: string; port: number; sport?: number; bytes: number}
  /**
   * One datagram for each of `flows` UDP flows: from up to `sockets` sockets (source ports,
   * default 10,000: a process may hold 20,000 descriptors here), each to as many destination
   * ports from `port` on as it takes (flow i: socket i mod S, port + floor(i / S)).
   */
  | {mode: 'udp-flows'; host: string; port: number; flows: number; size: number; sockets?: number}
  /** Raw Ethernet frames out of an interface (AF_PACKET), e.g. VLAN-tagged ones. */
  | {mode: 'raw-send'; ifname: string; frameHex: string; count: number}

function done(result: unknown): void {
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0))
}

function fail(error: Error): void {
  process.stderr.write(`agent: ${error.message}\n`)
  process.exit(1)
}

async function main(spec: AgentSpec): Promise<void> {
  switch (spec.mode) {
    case 'udp-sink': {
      const socket = createSocket(spec.host.includes(':') ? 'udp6' : 'udp4')
      let packets = 0
      let bytes = 0
      socket.on('message', (msg) => {
        packets++
        bytes += msg.length
        if (spec.expect && packets >= spec.expect) done({packets, bytes})
      })
      socket.on('error', fail)
      process.on('SIGTERM', () => done({packets, bytes}))
      socket.bind(spec.port, spec.host, () => process.stdout.write('ready\n'))
      return
    }
    case 'udp-send': {
      const socket = createSocket(spec.host.includes(':') ? 'udp6' : 'udp4')
      socket.on('error', fail)
      await new Promise<void>((resolve) => socket.bind(spec.sport ?? 0, resolve))
      const sport = socket.address().port
      const payload = Buffer.alloc(spec.size, 0x61)
      let sent = 0
      // Wall-clock times just before and just after the first and the last datagram was handed to
      // the kernel: the packet left between the two, which is what exported flow times are checked against.
      let firstBeforeMs = 0
      let firstMs = 0
      let lastBeforeMs = 0
      let lastMs = 0
      const deadline = spec.durationMs ? Date.now() + spec.durationMs : Infinity
      while (sent < spec.count && Date.now() < deadline) {
        lastBeforeMs = Date.now()
        await new Promise<void>((resolve, reject) => socket.send(payload, spec.port, spec.host, (e) => (e ? reject(e) : resolve())))
        lastMs = Date.now()
        if (sent === 0) {
          firstBeforeMs = lastBeforeMs
          firstMs = lastMs
        }
        sent++
        if (spec.gapMs) await new Promise((r) => setTimeout(r, spec.gapMs))
      }
      socket.close()
      done({packets: sent, bytes: sent * spec.size, sport, firstBeforeMs, firstMs, lastBeforeMs, lastMs})
      return
    }
    case 'udp-rounds': {
      const family = spec.host.includes(':') ? 'udp6' : 'udp4'
      const sockets = Array.from({length: spec.flows}, () => createSocket(family))
      for (const socket of sockets) {
        socket.on('error', fail)
        await new Promise<void>((resolve) => socket.bind(0, resolve))
      }
      const payload = Buffer.alloc(spec.size, 0x61)
      let sent = 0
      let stopping = false
      process.on('SIGTERM', () => (stopping = true))
      // A function, read after each await (a variable's test would be narrowed across them).
      const stopped = () => stopping
      for (let round = 0; round < spec.count && !stopped(); round++) {
        for (const socket of sockets) {
          if (stopped()) break
          await new Promise<void>((resolve, reject) => socket.send(payload, spec.port, spec.host, (e) => (e ? reject(e) : resolve())))
          sent++
        }
        if (spec.gapMs) await new Promise((r) => setTimeout(r, spec.gapMs))
      }
      const sports = sockets.map((socket) => socket.address().port)
      for (const socket of sockets) socket.close()
      done({packets: sent, bytes: sent * spec.size, sports})
      return
    }
    case 'udp-flows': {
      const n = Math.min(spec.flows, spec.sockets ?? 10_000)
      const sockets: Socket[] = []
      for (let i = 0; i < n; i++) {
        const s = createSocket(spec.host.includes(':') ? 'udp6' : 'udp4')
        s.on('error', fail)
        await new Promise<void>((resolve) => s.bind(0, resolve))
        sockets.push(s)
      }
      const payload = Buffer.alloc(spec.size, 0x63)
      let sent = 0
      let failed = 0
      // One at a time: the peer's backlog never overflows (the datagrams all cross the link).
      for (let i = 0; i < spec.flows; i++) {
        await new Promise<void>((resolve) => sockets[i % n].send(payload, spec.port + Math.floor(i / n), spec.host, (e) => (e ? failed++ : sent++, resolve())))
      }
      for (const s of sockets) s.close()
      done({packets: sent, bytes: sent * spec.size, failed, sockets: n, ports: Math.ceil(spec.flows / n)})
      return
    }
    case 'tcp-sink': {
      const server = createServer((conn) => {
        let bytes = 0
        conn.on('data', (d) => (bytes += d.length))
        conn.on('end', () => conn.end())
        conn.on('close', () => {
          server.close()
          done({bytes, peerPort: conn.remotePort})
        })
      })
      server.on('error', fail)
      server.listen(spec.port, spec.host, () => process.stdout.write('ready\n'))
      return
    }
    case 'tcp-send': {
      const connecting = process.hrtime.bigint()
      const conn = createConnection({host: spec.host, port: spec.port, localPort: spec.sport})
      conn.on('error', fail)
      conn.on('connect', () => {
        // From before the SYN left to after the kernel answered the SYN+ACK: at least the handshake's round trip.
        const connectMs = Number(process.hrtime.bigint() - connecting) / 1e6
        const localPort = conn.localPort
        const chunk = Buffer.alloc(Math.min(spec.bytes, 65536), 0x62)
        let left = spec.bytes
        const pump = (): void => {
          while (left > 0) {
            const n = Math.min(left, chunk.length)
            left -= n
            if (!conn.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
              conn.once('drain', pump)
              return
            }
          }
          conn.end()
        }
        pump()
        conn.on('data', () => {})
        conn.on('close', () => done({bytes: spec.bytes, localPort, connectMs}))
      })
      return
    }
    case 'raw-send': {
      const frame = Buffer.from(spec.frameHex, 'hex')
      done({packets: sendRaw(spec.ifname, frame, spec.count), bytes: frame.length * spec.count})
      return
    }
  }
}

const AF_PACKET = 17
const SOCK_RAW = 3

function sendRaw(ifname: string, frame: Buffer, count: number): number {
  const libc = koffi.load('libc.so.6')
  const socket = libc.func('int socket(int domain, int type, int protocol)')
  const sendto = libc.func('long sendto(int fd, void *buf, size_t len, int flags, void *addr, uint32_t addrlen)')
  const ifNameToIndex = libc.func('unsigned int if_nametoindex(const char *name)')
  const close = libc.func('int close(int fd)')
  const ifindex = ifNameToIndex(ifname) as number
  if (!ifindex) throw new Error(`no interface ${ifname}`)
  // Protocol 0: send only, receive nothing.
  const fd = socket(AF_PACKET, SOCK_RAW, 0) as number
  if (fd < 0) throw new Error('socket(AF_PACKET) failed')
  const addr = Buffer.alloc(20) // struct sockaddr_ll
  addr.writeUInt16LE(AF_PACKET, 0)
  addr.writeInt32LE(ifindex, 4)
  addr[11] = 6
  frame.copy(addr, 12, 0, 6)
  let sent = 0
  for (let i = 0; i < count; i++) {
    if ((sendto(fd, frame, frame.length, 0, addr, addr.length) as number) !== frame.length) throw new Error('sendto failed')
    sent++
  }
  close(fd)
  return sent
}

main(JSON.parse(process.argv[2]) as AgentSpec).catch(fail)
