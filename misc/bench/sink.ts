/**
 * A light IPFIX sink for the drain benchmark, run as a child process (fork, with IPC): counts
 * the data records of every datagram on a loopback UDP port, from the set lengths and the
 * templates it has seen, checks the sequence numbers for gaps, and reads the kernel's drop
 * counter of its socket. Its receive buffer is forced to 256 MiB (SO_RCVBUFFORCE, root) so that
 * a burst of a million flows fits without raising net.core.rmem_max for the whole machine.
 *
 * IPC: it sends {port} once bound; answers {type:'count'} with SinkCounts.
 */
import {createSocket} from 'node:dgram'
import {readFileSync} from 'node:fs'

import koffi from 'koffi'

export interface SinkCounts {
  records: number
  datagrams: number
  octets: number
  /** Records missing by the sequence numbers. */
  sequenceGaps: number
  /** The kernel's drop counter of the socket (/proc/net/udp). */
  drops: number
  rcvbuf: number
}

const SOL_SOCKET = 1
const SO_RCVBUFFORCE = 33

function socketFd(socket: object): number | undefined {
  const state = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol')
  const fd = state ? (socket as Record<symbol, {handle?: {fd?: number}} | undefined>)[state]?.handle?.fd : undefined
  return typeof fd === 'number' && fd >= 0 ? fd : undefined
}

function forceReceiveBuffer(fd: number, bytes: number): void {
  const libc = koffi.load('libc.so.6')
  const setsockopt = libc.func('int setsockopt(int fd, int level, int name, void *value, uint32_t len)')
  const value = Buffer.alloc(4)
  value.writeInt32LE(bytes)
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, value, 4)
}

function udpDrops(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`
  for (const line of readFileSync('/proc/self/net/udp', 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/)
    if (cols[1]?.endsWith(hex)) return Number(cols[cols.length - 1])
  }
  return 0
}

function main(): void {
  const counts: SinkCounts = {records: 0, datagrams: 0, octets: 0, sequenceGaps: 0, drops: 0, rcvbuf: 0}
  const recordLength = new Map<number, number>()
  /** Template ids of options templates (set 3): their records are not flows. */
  const optionsTemplates = new Set<number>()
  const nextSeq = new Map<number, number>()
  const socket = createSocket('udp4')
  socket.on('message', (msg: Buffer) => {
    counts.datagrams++
    counts.octets += msg.length
    if (msg.length < 16) return
    const length = Math.min(msg.readUInt16BE(2), msg.length)
    const seq = msg.readUInt32BE(8)
    const domain = msg.readUInt32BE(12)
    const expected = nextSeq.get(domain)
    if (expected !== undefined && seq !== expected) counts.sequenceGaps += (seq - expected) >>> 0
    let records = 0
    // Options data records (the sampling rate, interface names) count in the sequence numbers, not as flows.
    let optionsRecords = 0
    for (let off = 16; off + 4 <= length;) {
      const setId = msg.readUInt16BE(off)
      const setLength = msg.readUInt16BE(off + 2)
      if (setLength < 4) break
      const end = Math.min(off + setLength, length)
      if (setId === 2 || setId === 3) {
        // Template records: id, field count, then (id, length[, enterprise]) per field; an
        // options template record has its scope field count after the field count.
        for (let p = off + 4; p + 4 <= end;) {
          const id = msg.readUInt16BE(p)
          const fields = msg.readUInt16BE(p + 2)
          p += setId === 3 ? 6 : 4
          if (setId === 3) optionsTemplates.add(id)
          else optionsTemplates.delete(id)
          let total = 0
          for (let f = 0; f < fields; f++) {
            const ie = msg.readUInt16BE(p)
            total += msg.readUInt16BE(p + 2)
            p += ie & 0x8000 ? 8 : 4
          }
          recordLength.set(id, total)
        }
      } else if (setId >= 256) {
        const len = recordLength.get(setId)
        if (len && optionsTemplates.has(setId)) optionsRecords += Math.floor((end - off - 4) / len)
        else if (len) records += Math.floor((end - off - 4) / len)
      }
      off += setLength
    }
    counts.records += records
    nextSeq.set(domain, (seq + records + optionsRecords) >>> 0)
  })
  socket.bind({address: '127.0.0.1', port: 0}, () => {
    const fd = socketFd(socket)
    if (fd !== undefined) forceReceiveBuffer(fd, 256 << 20)
    counts.rcvbuf = socket.getRecvBufferSize()
    process.send!({port: socket.address().port})
  })
  process.on('message', (m: {type: string}) => {
    if (m.type === 'count') process.send!({...counts, drops: udpDrops(socket.address().port)})
    if (m.type === 'stop') socket.close(() => process.exit(0))
  })
  process.on('disconnect', () => process.exit(0))
}

main()
