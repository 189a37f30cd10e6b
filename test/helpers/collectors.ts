/**
 * Real collectors for the tests, on 127.0.0.1 and a free UDP port: nfcapd 1.7 (nfdump) and
 * nfacctd (pmacct) with its print plugin writing CSV. Each is started in the foreground, waited
 * for until it listens, and stopped by its pid (SIGTERM for nfcapd: it writes its file; SIGINT for
 * nfacctd: the print plugin writes what it holds). Both scale the counts of a sampled export by
 * the rate they read (nfcapd always, nfacctd with `nfacctd_renormalize: true`), so their totals
 * are what the exporter's counts stand for. The command lines are those the research for issue
 * 22 checked on this machine (docs/collectors.md).
 */
import {createSocket} from 'node:dgram'
import {mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {execa, type ResultPromise} from 'execa'

/** A UDP port nothing on 127.0.0.1 holds now (bound and let go: the collector takes it next). */
export async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4')
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve))
  const port = s.address().port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

async function waitFor(what: string, done: () => boolean, child: ResultPromise, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!done()) {
    if (child.exitCode !== null) throw new Error(`${what}: it exited (${child.exitCode})`)
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await sleep(50)
  }
}

export interface NfdumpTotals {
  flows: number
  packets: number
  bytes: number
  /** nfcapd's count of messages whose sequence number it did not expect. */
  sequenceFailures: number
}

/** nfcapd writing into a directory of its own. */
export class Nfcapd {
  private stopped = false

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly child: ResultPromise,
    private readonly output: () => string,
  ) {}

  /**
   * nfcapd on 127.0.0.1:`port` (a free one when not given), writing into `dir`/flows, once it listens;
   * `receiveBuffer`: its -B (SO_RCVBUF asked for: the kernel caps it at net.core.rmem_max, and
   * doubles it), its default buffer when not given.
   */
  static async start(dir: string, port?: number, options: {receiveBuffer?: number} = {}): Promise<Nfcapd> {
    const flows = join(dir, 'flows')
    mkdirSync(flows, {recursive: true})
    const p = port ?? (await freeUdpPort())
    const buffer = options.receiveBuffer ? ['-B', String(options.receiveBuffer)] : []
    // -t 3600: one file for the whole test (a run across a rotation leaves two; -R reads them all).
    const child = execa('nfcapd', ['-b', '127.0.0.1', '-p', String(p), '-w', flows, '-t', '3600', '-I', 'flowctl', ...buffer], {reject: false, all: true})
    let out = ''
    child.all.on('data', (chunk: Buffer) => (out += chunk.toString()))
    const c = new Nfcapd(dir, p, child, () => out)
    try {
      await waitFor('nfcapd did not start', () => out.includes('Startup nfcapd.'), child)
    } catch (error) {
      await c.stop()
      throw new Error(`${(error as Error).message}: ${out}`, {cause: error})
    }
    return c
  }

  /** What its socket's receive buffer could not take so far (the drops column of /proc/net/udp). */
  socketDrops(): number {
    const local = `0100007F:${this.port.toString(16).toUpperCase().padStart(4, '0')}`
    const line = readFileSync('/proc/net/udp', 'utf8')
      .split('\n')
      .find((l) => l.trim().split(/\s+/)[1] === local)
    return line ? Number(line.trim().split(/\s+/).at(-1)) : Number.NaN
  }

  /** What nfcapd printed (its log goes to stdout in the foreground). */
  get log(): string {
    return this.output()
  }

  /** SIGTERM: nfcapd writes its file and exits. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.child.pid !== undefined && this.child.exitCode === null) process.kill(this.child.pid, 'SIGTERM')
    await this.child
  }

  /** The totals nfdump reads from what nfcapd wrote (scaled by the rate nfcapd read, which it applies as it writes). */
  async totals(): Promise<NfdumpTotals> {
    const {stdout} = await execa('nfdump', ['-R', join(this.dir, 'flows'), '-q', '-N', '-o', 'null', '-I'])
    const field = (key: string) => {
      const m = new RegExp(`^${key}: (\\d+)`, 'm').exec(stdout)
      if (!m) throw new Error(`nfdump -I printed no ${key}: ${stdout}`)
      return Number(m[1])
    }
    return {flows: field('Flows'), packets: field('Packets'), bytes: field('Bytes'), sequenceFailures: field('Sequence failures')}
  }

  /** `nfdump -o fmt:...` lines of every flow, as nfdump prints them (-N: plain numbers). */
  async flows(format: string): Promise<string[]> {
    const {stdout} = await execa('nfdump', ['-R', join(this.dir, 'flows'), '-q', '-N', '-o', `fmt:${format}`], {maxBuffer: 64 << 20})
    return stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
  }

  /** `nfdump -E` of each file nfcapd wrote: the exporters it saw, with each one's samplers ("packet interval: 1, packet space: 9"). */
  async exporters(): Promise<string> {
    const dir = join(this.dir, 'flows')
    const files = readdirSync(dir).filter((f) => /^nfcapd\.\d+$/.test(f))
    const out: string[] = []
    for (const f of files) out.push(String((await execa('nfdump', ['-E', join(dir, f)])).stdout))
    return out.join('\n')
  }
}

/** One row of nfacctd's CSV (print plugin), by column name. */
export type NfacctdRow = Record<string, string>

/** nfacctd with the print plugin writing CSV into a directory of its own. */
export class Nfacctd {
  private stopped = false

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly child: ResultPromise,
  ) {}

  /**
   * nfacctd on 127.0.0.1:`port` (a free one when not given), aggregating by flow, interfaces and
   * sampling rate; `renormalize`: scale counts by the rate read (nfacctd_renormalize), whereupon
   * the SAMPLING_RATE column says 1; without it, SAMPLING_RATE is the rate read, 0 when none.
   */
  static async start(dir: string, options: {renormalize: boolean; port?: number}): Promise<Nfacctd> {
    mkdirSync(dir, {recursive: true})
    const port = options.port ?? (await freeUdpPort())
    const config = join(dir, 'nfacctd.conf')
    writeFileSync(
      config,
      [
        'daemonize: false',
        'nfacctd_ip: 127.0.0.1',
        `nfacctd_port: ${port}`,
        `nfacctd_renormalize: ${options.renormalize}`,
        'nfacctd_time_new: true',
        `logfile: ${join(dir, 'log')}`,
        'plugins: print[p]',
        'aggregate[p]: src_host, dst_host, src_port, dst_port, proto, in_iface, out_iface, sampling_rate',
        'print_output[p]: csv',
        `print_output_file[p]: ${join(dir, 'out.csv')}`,
        'print_output_file_append[p]: true',
        // The plugin writes what it holds at SIGINT; refreshes before that are appended.
        'print_refresh_time[p]: 3600',
      ].join('\n') + '\n',
    )
    const child = execa('nfacctd', ['-f', config], {reject: false, all: true})
    const c = new Nfacctd(dir, port, child)
    const log = () => {
      try {
        return readFileSync(join(dir, 'log'), 'utf8')
      } catch {
        return ''
      }
    }
    try {
      await waitFor('nfacctd did not start', () => log().includes(`waiting for NetFlow/IPFIX data on 127.0.0.1:${port}`), child)
    } catch (error) {
      await c.stop()
      throw new Error(`${(error as Error).message}: ${log()}`, {cause: error})
    }
    return c
  }

  /** SIGINT: the print plugin writes what it holds, and nfacctd exits. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.child.pid !== undefined && this.child.exitCode === null) process.kill(this.child.pid, 'SIGINT')
    await this.child
  }

  /** The CSV rows written (call after stop()). */
  rows(): NfacctdRow[] {
    let text: string
    try {
      text = readFileSync(join(this.dir, 'out.csv'), 'utf8')
    } catch {
      return []
    }
    const lines = text.split('\n').filter((l) => l.trim() !== '')
    const header = lines.find((l) => l.startsWith('IN_IFACE'))?.split(',')
    if (!header) return []
    return lines.filter((l) => !l.startsWith('IN_IFACE')).map((l) => Object.fromEntries(l.split(',').map((v, i) => [header[i], v])))
  }

  /** Packets and bytes summed over every row. */
  totals(): {rows: number; packets: number; bytes: number} {
    const rows = this.rows()
    return {rows: rows.length, packets: rows.reduce((n, r) => n + Number(r.PACKETS), 0), bytes: rows.reduce((n, r) => n + Number(r.BYTES), 0)}
  }
}
