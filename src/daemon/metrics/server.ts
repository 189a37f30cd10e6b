/**
 * The HTTP side of the metrics: /metrics on `metrics.listen` (default 127.0.0.1:9999; empty =
 * off), moved to a new address on a reload only once that one is bound, and the one-line error
 * for an address that cannot be bound.
 */
import {createServer, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'

import {runningDaemon} from '../../bpf/state.js'
import {FlowctlError} from '../../errors.js'
import type {Paths} from '../../paths.js'
import type {Logger} from '../log.js'

export interface MetricsServerOptions {
  paths: Paths
  log: Logger
  /** The exposition text, brought up to date. */
  render: () => Promise<string>
  contentType: string
}

export class MetricsServer {
  private server?: Server
  private listenText: string | null = null

  constructor(private readonly options: MetricsServerOptions) {}

  /** Whether /metrics is served now. */
  get serving(): boolean {
    return this.server !== undefined
  }

  /** The address served, once listening (e.g. for a `:0` port). */
  get address(): AddressInfo | undefined {
    const a = this.server?.address()
    return a && typeof a === 'object' ? a : undefined
  }

  /**
   * Serves /metrics on HOST:PORT (null: stops serving). Called again with another address (a
   * reload), it moves there once the new one is bound; a failure leaves the old one serving.
   */
  async listen(listen: string | null, configFile: string | null = null): Promise<void> {
    if (listen === this.listenText && (listen === null || this.server)) return
    if (listen === null) {
      await this.close()
      this.listenText = null
      return
    }
    const {log} = this.options
    const {host, port} = splitHostPort(listen)
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, {allow: 'GET, HEAD'}).end()
        return
      }
      if (path === '/metrics') {
        this.options.render().then(
          (body) => res.writeHead(200, {'content-type': this.options.contentType}).end(req.method === 'HEAD' ? undefined : body),
          (error: Error) => {
            log.limited('metrics-scrape', 'error', 'metrics-scrape-failed', {error: error.message})
            res.writeHead(500, {'content-type': 'text/plain'}).end(`${error.message}\n`)
          },
        )
        return
      }
      if (path === '/') {
        res.writeHead(200, {'content-type': 'text/html'}).end('<html><body><h1>flowctl daemon</h1><p><a href="/metrics">/metrics</a></p></body></html>\n')
        return
      }
      res.writeHead(404, {'content-type': 'text/plain'}).end('not found: the metrics are at /metrics\n')
    })
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen({host, port}, () => {
          server.off('error', reject)
          resolve()
        })
      })
    } catch (error) {
      throw metricsListenError(listen, configFile, error as NodeJS.ErrnoException, runningDaemon(this.options.paths)?.pid)
    }
    server.on('error', (error) => log.limited('metrics-server', 'error', 'metrics-server-error', {error: error.message}))
    await this.close()
    this.server = server
    this.listenText = listen
    log.log('info', 'metrics-listening', {listen, url: `http://${host.includes(':') ? `[${host}]` : host}:${this.address?.port}/metrics`})
  }

  /** Stops serving (the address is remembered: listen() with it again serves anew). */
  async close(): Promise<void> {
    const server = this.server
    this.server = undefined
    if (!server) return
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }
}

/** HOST:PORT or [IPV6]:PORT, as the config loader checked it. */
export function splitHostPort(text: string): {host: string; port: number} {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text)
  if (!m) throw new FlowctlError(`metrics.listen: '${text}' is not HOST:PORT`)
  return {host: m[1], port: Number(m[2])}
}

/** The one-line error for a metrics port that cannot be bound, naming the config key. */
function metricsListenError(listen: string, configFile: string | null, error: NodeJS.ErrnoException, otherDaemonPid?: number): FlowctlError {
  const where = configFile ? ` (${configFile})` : ''
  const fix = `set another metrics.listen${where}, or metrics.listen: "" to serve no metrics`
  let problem: string
  switch (error.code) {
    case 'EADDRINUSE': {
      const other = otherDaemonPid
      problem = `the port is in use${other ? ` (another flowctl daemon, pid ${other}, is running)` : ' by another program (`ss -ltnp` shows which)'}`
      break
    }
    case 'EADDRNOTAVAIL':
      problem = 'no interface of this host has that address'
      break
    case 'EACCES':
      problem = 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)'
      break
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      problem = 'the host name does not resolve'
      break
    default:
      problem = error.message
  }
  return new FlowctlError(`metrics.listen: cannot listen on ${listen}: ${problem}${error.code ? ` (${error.code})` : ''}; ${fix}`, {cause: error})
}
