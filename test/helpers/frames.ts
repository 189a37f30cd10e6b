/**
 * Many raw frames out of a lab interface, paced: for tests that need thousands of distinct flows
 * (a node agent sends one flow per run). The frames go to a file (each: a 16-bit little-endian
 * length, then the frame), which python3 sends through an AF_PACKET socket in the namespace,
 * `rate` frames a second in bursts of 64, so that the veth's backlog never overflows.
 *
 * Frames for several interfaces of one namespace (a hub with a link to each of many namespaces)
 * go to a file of their own kind (each frame led by the 16-bit index of its interface in a list),
 * sent by one process with a socket per interface, paced in total.
 */
import {writeFileSync} from 'node:fs'

import {execa} from 'execa'

const SENDER = `
import socket, struct, sys, time
path, ifname, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = memoryview(open(path, 'rb').read())
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
off = 0
n = 0
t0 = time.monotonic()
while off < len(data):
    length = struct.unpack_from('<H', data, off)[0]
    off += 2
    s.send(data[off:off + length])
    off += length
    n += 1
    if n % 64 == 0:
        ahead = t0 + n / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
print(n)
`

const MULTI_SENDER = `
import socket, struct, sys, time
path, rate, ifnames = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
data = memoryview(open(path, 'rb').read())
sockets = []
for name in ifnames:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((name, 0))
    sockets.append(s)
off = 0
n = 0
t0 = time.monotonic()
while off < len(data):
    index, length = struct.unpack_from('<HH', data, off)
    off += 4
    sockets[index].send(data[off:off + length])
    off += length
    n += 1
    if n % 64 == 0:
        ahead = t0 + n / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
print(n)
`

/** Writes `frames` to `file` in the sender's format. */
export function writeFrameFile(file: string, frames: Iterable<Buffer>): void {
  const parts: Buffer[] = []
  for (const frame of frames) {
    const length = Buffer.alloc(2)
    length.writeUInt16LE(frame.length)
    parts.push(length, frame)
  }
  writeFileSync(file, Buffer.concat(parts))
}

/** Sends the frames of `file` out of `ifname` in `netns`, `ratePps` a second; resolves with the count sent. */
export async function sendFrameFile(netns: string, ifname: string, file: string, ratePps: number): Promise<number> {
  const sent = await execa('nsenter', [`--net=/run/netns/${netns}`, 'python3', '-c', SENDER, file, ifname, String(ratePps)])
  return Number(sent.stdout.trim())
}

/** A frame and the interface it leaves by (its index in the list given to sendInterfaceFrameFile). */
export interface InterfaceFrame {
  iface: number
  frame: Buffer
}

/** Writes `frames` to `file` in the several-interface sender's format. */
export function writeInterfaceFrameFile(file: string, frames: Iterable<InterfaceFrame>): void {
  const parts: Buffer[] = []
  for (const {iface, frame} of frames) {
    const head = Buffer.alloc(4)
    head.writeUInt16LE(iface, 0)
    head.writeUInt16LE(frame.length, 2)
    parts.push(head, frame)
  }
  writeFileSync(file, Buffer.concat(parts))
}

/**
 * Sends the frames of `file` (writeInterfaceFrameFile) out of `ifnames` in `netns`, in the file's
 * order, `ratePps` a second in all; resolves with the count sent.
 */
export async function sendInterfaceFrameFile(netns: string, file: string, ifnames: readonly string[], ratePps: number): Promise<number> {
  const sent = await execa('nsenter', [`--net=/run/netns/${netns}`, 'python3', '-c', MULTI_SENDER, file, String(ratePps), ...ifnames])
  return Number(sent.stdout.trim())
}
