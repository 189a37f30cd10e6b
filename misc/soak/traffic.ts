/**
 * The soak's traffic, run inside the client namespace: `flows` UDP flows sending `size`-byte
 * datagrams round robin to host at about `pps` datagrams a second, until SIGTERM; then prints
 * {"sent": N, "failed": F, "flows": F, "ports": P} (datagrams the kernel accepted, which the link
 * counters check).
 *
 * A flow is a source port and a destination port: up to MAX_SOCKETS sockets (a process may hold
 * 20,000 descriptors here), each sending to as many destination ports from `port` on as the
 * flows need (flow i: socket i mod S to port + floor(i / S)). 2,000 flows are 2,000 sockets to
 * one port; 50,000 are 10,000 sockets to 5 ports.
 *
 * SIGSTOP and SIGCONT pause it (the soak does, around a meter's detach and attach): a stopped
 * process sends nothing, and a send is one system call, so no datagram is half sent.
 */
import {createSocket, type Socket} from 'node:dgram'

const MAX_SOCKETS = 10_000

interface Spec {
  host: string
  port: number
  flows: number
  pps: number
  size: number
}

async function main(spec: Spec): Promise<void> {
  const n = Math.min(spec.flows, MAX_SOCKETS)
  const sockets: Socket[] = []
  for (let i = 0; i < n; i++) {
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
      const flow = next
      next = (next + 1) % spec.flows
      sockets[flow % n].send(payload, spec.port + Math.floor(flow / n), spec.host, (error) => {
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
      process.stdout.write(`${JSON.stringify({sent, failed, flows: spec.flows, ports: Math.ceil(spec.flows / n)})}\n`, () => process.exit(0))
    }, 500)
  })
}

main(JSON.parse(process.argv[2]) as Spec).catch((error: Error) => {
  process.stderr.write(`soak traffic: ${error.message}\n`)
  process.exit(1)
})
