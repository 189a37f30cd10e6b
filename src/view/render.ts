/**
 * Streams flows to stdout as a table for people or a JSON array for programs, holding at most a
 * thousand rows (to size the columns), never the whole table.
 */
import type {Writable} from 'node:stream'

import {endpoint, type Flow} from './flow.js'
import {renderTable} from './table.js'

const NARROW_HEADER = ['NETNS', 'INTERFACE', 'DIR', 'PROTO', 'SRC', 'DST', 'PACKETS', 'BYTES', 'TCP FLAGS', 'START', 'END']
/**
 * `dump -o wide` (the older tool's wide output) adds what the key holds besides, and the raw times.
 * Columns flowctl added (SAMPLING) come after the older tool's, so scripts that cut its columns by
 * position still find them where they were.
 */
const WIDE_HEADER = [...NARROW_HEADER, 'IFINDEX', 'VLAN', 'TOS', 'START MS', 'END MS', 'SAMPLING']
const NARROW_RIGHT = [6, 7]
const WIDE_RIGHT = [...NARROW_RIGHT, 11, 12, 13, 14, 15]
const SIZING_ROWS = 1000

function localTime(ms: number): string {
  if (!ms) return '-'
  const d = new Date(ms)
  const pad = (n: number, w = 2) => String(n).padStart(w, '0')
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
}

/** 1 packet in N, as the sampling rate is written: "1:10". */
export function samplingText(interval: number): string {
  return `1:${interval}`
}

function narrowRow(f: Flow): string[] {
  return [
    f.netns,
    f.interface,
    f.direction,
    f.protoName,
    endpoint(f, 'src'),
    endpoint(f, 'dst'),
    // A sampled count says so where it stands, so that nobody reads it as the whole: the
    // table's columns are set before all rows are seen, so no column only for sampled flows.
    f.samplingInterval > 1 ? `${f.packets} (${samplingText(f.samplingInterval)})` : String(f.packets),
    String(f.bytes),
    f.proto === 6 ? f.tcpFlagsText : '',
    localTime(f.start),
    localTime(f.end),
  ]
}

function wideRow(f: Flow): string[] {
  return [
    ...narrowRow(f),
    String(f.ifindex),
    f.vlanId ? String(f.vlanId) : '-',
    `0x${f.tos.toString(16).padStart(2, '0')}`,
    String(f.start),
    String(f.end),
    samplingText(f.samplingInterval),
  ]
}

function write(out: Writable, text: string): Promise<void> | undefined {
  if (out.write(text)) return undefined
  return new Promise((resolve) => out.once('drain', resolve))
}

export async function writeFlowTable(flows: AsyncIterable<Flow>, out: Writable, options: {wide?: boolean} = {}): Promise<number> {
  const [HEADER, RIGHT, row] = options.wide ? [WIDE_HEADER, WIDE_RIGHT, wideRow] : [NARROW_HEADER, NARROW_RIGHT, narrowRow]
  const first: string[][] = []
  let widths: number[] | undefined
  let count = 0
  for await (const f of flows) {
    count++
    if (!widths) {
      first.push(row(f))
      if (first.length < SIZING_ROWS) continue
      widths = HEADER.map((h, i) => Math.max(h.length, ...first.map((r) => r[i].length)))
      await write(out, `${renderTable(HEADER, first, {right: RIGHT, widths}).join('\n')}\n`)
      continue
    }
    await write(
      out,
      `${renderTable(HEADER, [row(f)], {right: RIGHT, widths})
        .slice(1)
        .join('\n')}\n`,
    )
  }
  if (!widths && first.length) await write(out, `${renderTable(HEADER, first, {right: RIGHT}).join('\n')}\n`)
  return count
}

export async function writeFlowJson(flows: AsyncIterable<Flow>, out: Writable): Promise<number> {
  let count = 0
  await write(out, '[')
  for await (const f of flows) {
    await write(out, `${count ? ',' : ''}\n  ${JSON.stringify(f)}`)
    count++
  }
  await write(out, count ? '\n]\n' : ']\n')
  return count
}
