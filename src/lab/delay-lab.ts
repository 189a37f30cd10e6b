/**
 * A router lab whose links have round trips of real length: client — router — server, three
 * namespaces joined by delay lines (delay-line.ts: two TAP devices and a process passing frames
 * between them after a fixed delay), since this kernel has no netem to delay a veth with. For the
 * tests that time TCP handshakes as the router sees them. Numbered from 198.18.0.0/15 and
 * fd00::/8; `close()` stops the delay lines and removes the namespaces, also after a failure.
 *
 *   client c0 ——(clientDelayMs each way)—— r0 router r1 ——(serverDelayMs each way)—— s0 server
 */
import {randomBytes} from 'node:crypto'
import {setTimeout as sleep} from 'node:timers/promises'
import {fileURLToPath} from 'node:url'

import {run, start, type RunningProgram} from '../sys/exec.js'
import type {DelayLineSpec} from './delay-line.js'
import {Lab, mac, type VethPair} from './lab.js'

const DELAY_LINE = fileURLToPath(new URL('./delay-line.js', import.meta.url))
/** How long a delay line may take to stop after SIGTERM before it is killed. */
const STOP_GRACE_MS = 2000
/** Beyond the longest delay, how long the links are left to carry what they sent coming up. */
const SETTLE_MS = 100

export interface DelayLabOptions {
  /** Names fct-<id>-<role>; random when not given. */
  id?: string
  /** One-way delay of the client—router link in ms (its round trip is twice that). Default 10. */
  clientDelayMs?: number
  /** One-way delay of the router—server link in ms. Default 25. */
  serverDelayMs?: number
  /** IPv6 addresses and routes too. Default true. */
  ipv6?: boolean
}

/** One end of a link: its interface (a TAP device) and its addresses, without prefix length. */
export interface LinkEnd {
  netns: string
  ifname: string
  mac: string
  v4: string
  v6: string
}

export class DelayLab {
  readonly id: string
  /** The namespaces, for exec, sysctl and the interfaces' counters (linkStats). */
  readonly lab: Lab
  readonly clientDelayMs: number
  readonly serverDelayMs: number
  readonly ipv6: boolean
  /** c0: 198.18.60.2, fd00:60::2; default routes via the router. */
  readonly client: LinkEnd
  /** r0 toward the client (198.18.60.1, fd00:60::1), r1 toward the server (198.18.61.1, fd00:61::1); forwarding on. */
  readonly router: {netns: string; toClient: LinkEnd; toServer: LinkEnd}
  /** s0: 198.18.61.2, fd00:61::2; default routes via the router. */
  readonly server: LinkEnd
  private readonly delayLines: RunningProgram[] = []
  private closed = false

  constructor(options: DelayLabOptions = {}) {
    this.id = options.id ?? randomBytes(3).toString('hex')
    this.lab = new Lab(this.id)
    this.clientDelayMs = options.clientDelayMs ?? 10
    this.serverDelayMs = options.serverDelayMs ?? 25
    this.ipv6 = options.ipv6 ?? true
    const netns = (role: string) => `fct-${this.id}-${role}`
    const end = (role: string, ifname: string, net: number, host: number): LinkEnd => ({
      netns: netns(role),
      ifname,
      mac: mac(),
      v4: `198.18.${net}.${host}`,
      v6: `fd00:${net}::${host}`,
    })
    this.client = end('client', 'c0', 60, 2)
    this.router = {netns: netns('router'), toClient: end('router', 'r0', 60, 1), toServer: end('router', 'r1', 61, 1)}
    this.server = end('server', 's0', 61, 2)
  }

  /** Stands the lab up: namespaces, the two delay lines, addresses, forwarding and routes. */
  async build(): Promise<void> {
    for (const role of ['client', 'router', 'server']) await this.lab.namespace(role)
    await this.link(this.client, this.router.toClient, this.clientDelayMs)
    await this.link(this.router.toServer, this.server, this.serverDelayMs)
    await this.lab.routeThrough(
      this.router.netns,
      [
        {netns: this.client.netns, v4: this.router.toClient.v4, v6: this.router.toClient.v6},
        {netns: this.server.netns, v4: this.router.toServer.v4, v6: this.router.toServer.v6},
      ],
      this.ipv6,
    )
    // The multicast listener reports sent as the links came up are still crossing the slower link:
    // once they are through, nothing crosses a link but what a test sends.
    await sleep(2 * Math.max(this.clientDelayMs, this.serverDelayMs) + SETTLE_MS)
  }

  /** A delay line between `a` and `b`: its TAP devices made in the root namespace, then moved and named. */
  private async link(a: LinkEnd, b: LinkEnd, delayMs: number): Promise<void> {
    // Unique on the host while they are in the root namespace (at most 15 characters).
    const taps: [string, string] = [`fct-${this.id}-${a.ifname}`, `fct-${this.id}-${b.ifname}`]
    const spec: DelayLineSpec = {taps, delayMs}
    // setpriv --pdeathsig: the kernel ends the delay line if the test process dies, even by SIGKILL.
    const line = start('setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, DELAY_LINE, JSON.stringify(spec)])
    this.delayLines.push(line)
    await new Promise<void>((resolve, reject) => {
      line.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) resolve()
      })
      line.result.then(() => reject(new Error('the delay line ended before it was ready')), reject)
    })
    for (const [end, tap] of [
      [a, taps[0]],
      [b, taps[1]],
    ] as const) {
      await run('ip', ['link', 'set', 'dev', tap, 'netns', end.netns])
      await this.lab.exec(end.netns, 'ip', ['link', 'set', 'dev', tap, 'name', end.ifname, 'address', end.mac])
    }
    // IPv6 reports joining multicast groups (the addresses' solicited-node groups) as a link comes
    // up, and again up to a second later: all at once instead, so that build() can wait them out.
    if (this.ipv6) {
      for (const end of [a, b]) {
        for (const version of [1, 2]) await this.lab.sysctl(end.netns, `net.ipv6.conf.${end.ifname}.mldv${version}_unsolicited_report_interval`, '1')
      }
    }
    const pair: VethPair = {a, b}
    await this.lab.configureLink(pair, {
      v4: [`${a.v4}/24`, `${b.v4}/24`],
      v6: this.ipv6 ? [`${a.v6}/64`, `${b.v6}/64`] : undefined,
      quiet: true,
    })
  }

  /** Stops the delay lines (their TAP devices go with them) and removes the namespaces. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const line of this.delayLines) {
      line.kill('SIGTERM')
      const killer = setTimeout(() => line.kill('SIGKILL'), STOP_GRACE_MS)
      await line.result.catch(() => {})
      clearTimeout(killer)
    }
    await this.lab.destroy()
  }
}
