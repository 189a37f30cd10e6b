/**
 * A traffic agent, run inside a lab namespace (`nsenter --net=... node agent.js '<json spec>'`):
 * sends or receives exactly what it is told, so tests know every packet and byte that crossed.
 * Prints "ready" when listening and one JSON result line when done.
 */
import {createSocket} from 'node:dgram'
import {createConnection, createServer} from 'node:net'

export type AgentSpec =
  | {mode: 'udp-sink'; host: string; port: number; expect?: number}
  | {mode: 'udp-send'; host: string; port: number; sport?: number; count: number; size: number; gapMs?: number; durationMs?: number}
  | {mode: 'tcp-sink'; host: string; port: number}
  | {mode: 'tcp-send'; host: string; port: number; sport?: number; bytes: number}

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
      const deadline = spec.durationMs ? Date.now() + spec.durationMs : Infinity
      while (sent < spec.count && Date.now() < deadline) {
        await new Promise<void>((resolve, reject) => socket.send(payload, spec.port, spec.host, (e) => (e ? reject(e) : resolve())))
        sent++
        if (spec.gapMs) await new Promise((r) => setTimeout(r, spec.gapMs))
      }
      socket.close()
      done({packets: sent, bytes: sent * spec.size, sport})
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
      const conn = createConnection({host: spec.host, port: spec.port, localPort: spec.sport})
      conn.on('error', fail)
      conn.on('connect', () => {
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
        conn.on('close', () => done({bytes: spec.bytes, localPort}))
      })
      return
    }
  }
}

main(JSON.parse(process.argv[2]) as AgentSpec).catch(fail)
