/**
 * A fleet: eight routers export to one collector and the collector tells them apart. Each
 * "router" is a namespace with its own meter set and its own `flowctl daemon` (own pin root, run
 * and state directories, as on separate hosts), linked to one hub namespace; each pings the hub a
 * known number of times with its own payload size. The collector (the tests' Sink, like `flowctl ipfix
 * listen`) must see, per Observation Domain: one exporter, sequence numbers that count every data
 * record before (RFC 7011 §3.1) with no gap from 0 on, and exactly the packets and bytes that
 * router sent. Half the routers set the domain for the whole daemon (observationDomainId), half
 * per namespace (meters[].observationDomainId), as the README's fleet section says.
 *
 * Kept light for small machines: one hub, eight links, meters attached in this process, ping
 * for traffic, and each daemon stopped (SIGTERM: every flow exported as forced end) once its
 * traffic is sent.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {renderFields} from '../../src/ipfix/collect/render.js'
import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {Lab} from '../../src/lab/lab.js'
import {ping} from '../../src/lab/traffic.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {requireE2e, PrivateDirs} from '../helpers/e2e.js'
import {Sink} from '../ipfix/flows.js'

const ROUTERS = 8
/** IPv4 and ICMP echo headers. */
const ICMP_IP_HEADERS = 20 + 8

interface Router {
  index: number
  netns: string
  dirs: PrivateDirs
  domain: number
  pings: number
  size: number
  daemon?: DaemonProcess
}

describe('a fleet of routers exporting to one collector @e2e', function () {
  this.timeout(600_000)
  const id = randomBytes(3).toString('hex')
  const lab = new Lab(id)
  const routers: Router[] = []
  let tmp = ''
  let sink: Sink | undefined

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-fleet-'))
    sink = await Sink.start({timeToleranceSeconds: 600})
    const hub = await lab.namespace('hub')
    await lab.sysctl(hub, 'net.ipv4.ip_forward', '0')
    for (let i = 1; i <= ROUTERS; i++) {
      const netns = await lab.namespace(`r${i}`)
      // Domains as a site might number them: 10000 + router number.
      const router: Router = {index: i, netns, dirs: new PrivateDirs(`${id}-r${i}`), domain: 10_000 + i, pings: 2 + i, size: 40 + 10 * i}
      routers.push(router)
      await lab.veth(netns, 'up0', hub, `h${i}`, {v4: [`198.18.${40 + i}.1/24`, `198.18.${40 + i}.2/24`], quiet: true})
      await attachMeters(router.dirs.paths, {targets: [{netns, ifname: 'up0'}], directions: ['ingress', 'egress'], pref: 1, handle: 1, force: false})
      const domainYaml =
        i % 2 ? `observationDomainId: ${router.domain}\nmeters:\n- netns: ${netns}\n` : `meters:\n- netns: ${netns}\n  observationDomainId: ${router.domain}\n`
      const configFile = join(tmp, `r${i}.yaml`)
      writeFileSync(
        configFile,
        `collectors:\n- address: 127.0.0.1:${sink.port}\n${domainYaml}drainIntervalSeconds: 10\nidleTimeoutSeconds: 30\nactiveTimeoutSeconds: 60\n` +
          `metrics:\n  listen: ''\nstateFile: ${router.dirs.env.FLOWCTL_STATE_DIR}/daemon-state.json\n`,
      )
      // Rare drains (the final one, at SIGTERM, exports everything): eight daemons stay cheap.
      router.daemon = new DaemonProcess(configFile, undefined, router.dirs.env)
    }
    for (const r of routers) await r.daemon!.waitForLog('started', () => true, 60_000)
    for (const r of routers) await ping(r.netns, `198.18.${40 + r.index}.2`, r.pings, r.size, 0.02)
    // A daemon stopping exports every flow it holds or finds in the kernel (forced end).
    for (const r of routers) assert.equal(await r.daemon!.stop('SIGTERM'), 0, r.daemon!.tail)
  })

  after(async function () {
    for (const r of routers) {
      await r.daemon?.stop('SIGKILL').catch(() => {})
      await detachMeters(r.dirs.paths, {targets: [{netns: r.netns, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
      r.dirs.remove()
    }
    await sink?.stop()
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })

  /** The sink's messages of one domain, in arrival order. */
  const messagesOf = (domain: number) => sink!.received.filter((m) => m.message.header.observationDomainId === domain).map((m) => m.message)

  it('gives each router its own Observation Domain, from one exporter address each', async function () {
    await sink!.until(() => routers.every((r) => messagesOf(r.domain).some((m) => m.records.some((x) => !x.options))), 'data from every router', 20_000)
    const domains = new Set(sink!.received.map((m) => m.message.header.observationDomainId))
    assert.deepEqual([...domains].sort(), routers.map((r) => r.domain).sort(), 'no other domain (the default 1 is nowhere)')
    const exporters = routers.map((r) => new Set(messagesOf(r.domain).map((m) => m.exporter)))
    for (const [i, e] of exporters.entries()) assert.equal(e.size, 1, `router ${i + 1} sends from one address`)
    assert.equal(new Set(exporters.map((e) => [...e][0])).size, ROUTERS, 'eight exporter addresses')
  })

  it("numbers each domain's messages continuously: every data record counted, from 0, no gap", function () {
    for (const r of routers) {
      const messages = messagesOf(r.domain)
      assert.ok(messages.length >= 2, `router ${r.index}: templates and data`)
      let expected = 0
      for (const m of messages) {
        assert.equal(m.header.sequenceNumber, expected, `router ${r.index} (domain ${r.domain}): message ${messages.indexOf(m)}`)
        expected = (expected + m.records.length) >>> 0
      }
    }
    const report = sink!.checker.report()
    assert.deepEqual(report.reasons, [], 'the conformance checker agrees')
    assert.equal(sink!.malformed.length, 0)
  })

  it("counts exactly what each router sent, under that router's domain", function () {
    for (const r of routers) {
      const flows = sink!.records.filter((x) => !x.options && x.observationDomainId === r.domain).map((x) => renderFields(x.fields))
      assert.ok(flows.length > 0, `router ${r.index} exported flows`)
      assert.ok(
        flows.every((f) => f.protocolIdentifier === 1),
        `router ${r.index}: only its pings crossed the link`,
      )
      for (const direction of [1, 0]) {
        const mine = flows.filter((f) => f.flowDirection === direction)
        const packets = mine.reduce((n, f) => n + Number(f.packetDeltaCount), 0)
        const bytes = mine.reduce((n, f) => n + Number(f.octetDeltaCount), 0)
        const what = `router ${r.index} (domain ${r.domain}) ${direction ? 'echo requests out' : 'echo replies in'}`
        assert.deepEqual([packets, bytes], [r.pings, r.pings * (ICMP_IP_HEADERS + r.size)], what)
      }
    }
  })
})
