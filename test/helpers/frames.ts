/**
 * Many raw frames out of a lab interface, paced: for tests that need thousands of distinct flows
 * (a node agent sends one flow per run). The frames go to a file (each: a 16-bit little-endian
 * length, then the frame), which python3 sends through an AF_PACKET socket in the namespace,
 * `rate` frames a second in bursts of 64, so that the veth's backlog never overflows.
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
