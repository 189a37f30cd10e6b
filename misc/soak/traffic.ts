/**
 * The soak's traffic, run inside the client namespace: `flows` UDP sockets (one source port each,
 * so one flow each) sending `size`-byte datagrams round robin to host:port at about `pps`
 * datagrams a second, until SIGTERM; then prints {"sent": N, "flows": F} (datagrams the kernel
 * accepted, which the link counters check).
 */
import {createSocket, type Socket} from 'node:dgram'

interface Spec {
  host: string
  port: number
  flows: number
  pps: number
  size: number
}

async function main(spec: Spec): Promise<void> {
  const sockets: Socket[] = []
  for (let i = 0; i < spec.flows; i++) {
    const s = createSocket('udp4')
    await new Promise<void>((resolve) => s.bind(0, resolve))
    sockets.push(s)
  }
  const payload = Buffer.alloc(spec.size, 0x5a)
  let sent = 0
  let failed = 0
  let next = 0
  let stopping = false
  const tickMs = 20
  const perTick = Math.max(1, Math.round((spec.pps * tickMs) / 1000))
  const timer = setInterval(() => {
    for (let i = 0; i < perTick && !stopping; i++) {
      const s = sockets[next]
      next = (next + 1) % sockets.length
      s.send(payload, spec.port, spec.host, (error) => {
        if (error) failed++
        else sent++
      })
    }
  }, tickMs)
  process.stdout.write('ready\n')
  process.on('SIGTERM', () => {
    stopping = true
    clearInterval(timer)
    // Let the sends already handed to the sockets report back.
    setTimeout(() => {
      process.stdout.write(`${JSON.stringify({sent, failed, flows: sockets.length})}\n`, () => process.exit(0))
    }, 500)
  })
}

main(JSON.parse(process.argv[2]) as Spec).catch((error: Error) => {
  process.stderr.write(`soak traffic: ${error.message}\n`)
  process.exit(1)
})
