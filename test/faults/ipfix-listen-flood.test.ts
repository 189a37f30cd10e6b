/**
 * Fault injection against `flowctl ipfix listen` (issue 13): the datagrams that took it from 77 MB
 * to 2.8 GB, each defining 4 templates of 60 enterprise fields under a new observation domain,
 * sent over a real UDP socket to the CLI as a child process. Its memory must stay bounded: it
 * says at exit how much it forgot, its --check report stays short, and its resident memory stays
 * far below what the flood would take unbounded.
 */
import assert from 'node:assert/strict'
import {createSocket} from 'node:dgram'
import {readFileSync} from 'node:fs'

import {execa} from 'execa'

import {DEFAULT_DECODER_LIMITS} from '../../src/ipfix/decoder.js'
import {CLI, sleep} from '../helpers/e2e.js'
import {templateFlood} from '../ipfix/messages.js'

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : Number.NaN
}

describe('ipfix listen under a template flood @e2e', function () {
  this.timeout(300_000)

  it('keeps templates, domains and the --check report bounded, counting what it forgot', async function () {
    const child = execa(process.execPath, [CLI, 'ipfix', 'listen', '--host', '127.0.0.1', '--port', '0', '--check', '--max-message-size', '65535'], {reject: false})
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    const deadline = Date.now() + 30_000
    let port = 0
    while (!port) {
      assert.ok(Date.now() < deadline, `no port: ${stderr}`)
      const m = /listening for IPFIX on udp 127\.0\.0\.1:(\d+)/.exec(stderr)
      if (m) port = Number(m[1])
      else await sleep(50)
    }
    const socket = createSocket('udp4')
    const domains = 3 * DEFAULT_DECODER_LIMITS.domains
    const before = rssMb(child.pid!)
    let peak = before
    try {
      // In bursts the receive buffer holds; each datagram a new domain.
      for (let odid = 1; odid <= domains; odid++) {
        const datagram = templateFlood(odid)
        await new Promise<void>((resolve, reject) => socket.send(datagram, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())))
        if (odid % 200 === 0) {
          await sleep(20)
          peak = Math.max(peak, rssMb(child.pid!))
        }
      }
      await sleep(1000)
      peak = Math.max(peak, rssMb(child.pid!))
    } finally {
      socket.close()
    }
    child.kill('SIGTERM')
    const r = await child
    // The flood itself is well-formed: the verdict is PASS (no data before templates, nothing malformed).
    const out = String(r.stderr)
    const forgot = /forgot (\d+) templates, (\d+) observation domains and (\d+) exporters/.exec(out)
    assert.ok(forgot, out.slice(0, 2000))
    const evictedDomains = Number(forgot[2])
    // At most `domains` are kept: every datagram that arrived beyond that evicted one domain.
    assert.ok(evictedDomains > 0 && evictedDomains <= domains - DEFAULT_DECODER_LIMITS.domains, `evicted ${evictedDomains}`)
    const received = Number(/IPFIX conformance: \w+ \((\d+) messages/.exec(out)?.[1])
    assert.equal(evictedDomains, received - DEFAULT_DECODER_LIMITS.domains, `every message past the limit evicted one domain (${received} received)`)
    // The report: 256 domains at most, the rest summarised in one line.
    const domainLines = out.split('\n').filter((l) => / domain \d+: \d+ message/.test(l))
    assert.equal(domainLines.length, 256)
    assert.match(out, new RegExp(`${received - 256} more exporter domains not shown`))
    assert.ok(out.split('\n').length < 256 * 12 + 20, `${out.split('\n').length} lines of report`)
    // Unbounded, 12 288 domains of 4 such templates took well over a gigabyte.
    assert.ok(peak < 400, `peak resident memory ${Math.round(peak)} MB (started at ${Math.round(before)} MB)`)
    console.log(`      listen: ${received} flood datagrams received, ${evictedDomains} domains evicted, RSS ${Math.round(before)} -> peak ${Math.round(peak)} MB`)
  })
})
