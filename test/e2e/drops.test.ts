/**
 * Drops with their reasons end to end: a namespace router (client -> router -> server) with the
 * meter on both router interfaces and its drops on (`meter attach --drops`), the daemon exporting
 * with the drop counters in its templates, and tshark decoding the export. Four ways a router
 * drops a packet, each its own flow with exact drop counts and its forwardingStatus code (RFC 7270)
 * beside the packets the meter counted coming in; none of them leaves by the other interface. The
 * expired TTL in IPv6 too (hop limit 1); the drops in the metrics, the flow log and `top`; and the
 * config's `drops:` of a meter.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {attachMeters, detachMeters} from '../../src/bpf/attach.js'
import {dropHookAttached, dropsOn} from '../../src/bpf/drops.js'
import {MeterSet} from '../../src/bpf/meter-set.js'
import {DEFAULT_TEMPLATES} from '../../src/ipfix/export/exportable-elements.js'
import {Lab} from '../../src/lab/lab.js'
import {TopSampler} from '../../src/view/top.js'
import {runAgent, startAgent} from '../../src/lab/traffic.js'
import {run} from '../../src/sys/exec.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {sample} from '../helpers/prom.js'
import {requireE2e, PrivateDirs} from '../helpers/e2e.js'
import {requireTshark, tsharkDecodeIpfix, tsharkDissectIpfix, type TsharkRecord} from '../helpers/tshark.js'
import {Sink} from '../ipfix/flows.js'

const ACL_DENY = 129
const UNROUTABLE = 131
const FRAGMENTATION_AND_DF = 133
const BAD_TTL = 137
const SENT = 5
/** Drops each reason has at r0: one case each, and the TTL one in IPv4 and IPv6. */
const DROPS_BY_REASON: Record<string, number> = {NETFILTER_DROP: SENT, IP_INNOROUTES: SENT, TTL_EXPIRED: 2 * SENT, PKT_TOO_BIG: SENT}

describe('drops with their reasons through a namespace router @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`drops-${id}`)
  const lab = new Lab(id)
  let tmp = ''
  let router = ''
  let client = ''
  let records: TsharkRecord[] = []
  let logLines: Record<string, unknown>[] = []
  let metrics = ''
  const ifindex: Record<string, number> = {}
  let denied: {sport: number} | undefined
  let unroutable: {sport: number} | undefined

  before(async function () {
    requireE2e(this)
    await requireTshark(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-drops-'))
    privateDirs.apply()
    const routed = await lab.router(60, {ipv6: true})
    const {server} = routed
    ;({client, router} = routed)
    await lab.exec(router, 'ip', ['link', 'set', 'dev', 'r1', 'mtu', '1280'])
    await lab.exec(server, 'ip', ['link', 'set', 'dev', 's0', 'mtu', '1280'])
    await lab.exec(server, 'ip', ['addr', 'add', '198.18.62.1/32', 'dev', 'lo'])
    await lab.exec(router, 'ip', ['route', 'add', '198.18.62.0/24', 'via', '198.18.61.2'])
    // A locked MTU: the router's "fragmentation needed" does not lower the client's path MTU, so
    // every oversize packet leaves the client with DF set (ping -M do would refuse the next ones).
    await lab.exec(client, 'ip', ['route', 'add', '198.18.62.0/24', 'via', '198.18.60.1', 'mtu', 'lock', '1500'])
    // The firewall: UDP to port 7001 is dropped on its way through the router.
    await lab.exec(router, 'nft', ['add', 'table', 'inet', 'fct'])
    await lab.exec(router, 'nft', ['add', 'chain', 'inet', 'fct', 'through', '{ type filter hook forward priority 0; }'])
    await lab.exec(router, 'nft', ['add', 'rule', 'inet', 'fct', 'through', 'udp', 'dport', '7001', 'drop'])
    for (const name of ['r0', 'r1']) ifindex[name] = await lab.ifindex(router, name)
    await attachMeters(privateDirs.paths, {
      targets: [
        {netns: router, ifname: 'r0'},
        {netns: router, ifname: 'r1'},
      ],
      directions: ['ingress', 'egress'],
      pref: 1,
      handle: 1,
      force: false,
      drops: true,
    })

    const sink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    const config = join(tmp, 'config.yaml')
    const log = join(tmp, 'flows.jsonl')
    const extra = ['forwardingStatus', 'droppedPacketDeltaCount', 'droppedOctetDeltaCount']
    const templates = DEFAULT_TEMPLATES.map((t) => `- id: ${t.id}\n  fields: [${[...t.fields, ...extra].join(', ')}]`).join('\n')
    writeFileSync(
      config,
      `collectors:\n- address: 127.0.0.1:${sink.port}\nlogs:\n- file: ${log}\ntemplates:\n${templates}\nmetrics:\n  listen: '127.0.0.1:0'\nstateFile: ${join(tmp, 'state.json')}\n`,
    )
    const daemon = new DaemonProcess(config)
    try {
      await daemon.waitForLog('started')
      const url = String((await daemon.waitForLog('metrics-listening', () => true, 30_000)).url)
      const udpSink = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 7001})
      denied = await runAgent(client, {mode: 'udp-send', host: '198.18.61.2', port: 7001, count: SENT, size: 100, gapMs: 5})
      unroutable = await runAgent(client, {mode: 'udp-send', host: '198.19.7.1', port: 7002, count: SENT, size: 100, gapMs: 5})
      udpSink.stop()
      // TTL 1: it expires at the router (ping says so, and fails).
      await run('ping', ['-4', '-c', String(SENT), '-t', '1', '-i', '0.05', '-W', '1', '-q', '198.18.61.2'], {netns: client}).catch(() => {})
      // And IPv6: hop limit 1.
      await run('ping', ['-6', '-c', String(SENT), '-t', '1', '-i', '0.05', '-W', '1', '-q', 'fd00:61::2'], {netns: client}).catch(() => {})
      // 1400 bytes with DF towards a 1280-byte link.
      await run('ping', ['-4', '-c', String(SENT), '-M', 'do', '-s', '1372', '-i', '0.05', '-W', '1', '-q', '198.18.62.1'], {netns: client}).catch(() => {})
      // Every drop is in the metrics within a drain or two.
      const deadline = Date.now() + 30_000
      for (;;) {
        metrics = await (await fetch(url)).text()
        if (Object.entries(DROPS_BY_REASON).every(([reason, n]) => sample(metrics, 'flowctl_dropped_packets_total', {interface: 'r0', reason}) === n)) break
        if (Date.now() > deadline) break
        await sleep(200)
      }
      assert.equal(await daemon.stop(), 0, daemon.tail)
    } finally {
      await daemon.stop('SIGKILL').catch(() => {})
      await sink.stop()
    }
    records = await tsharkDecodeIpfix(sink.datagrams, sink.port)
    logLines = readFileSync(log, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
  })

  after(async function () {
    if (router) await detachMeters(privateDirs.paths, {targets: [{netns: router, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  /** The records of the flow from the client to `dst` (UDP from `sport`, or ICMP echo), by direction. */
  function flow(dst: string, match: (r: TsharkRecord) => boolean): {inbound: TsharkRecord; outbound: TsharkRecord[]} {
    const found = records.filter((r) => r.sourceIPv4Address === '198.18.60.2' && r.destinationIPv4Address === dst && match(r))
    const inbound = found.filter((r) => r.flowDirection === 0 && r.ingressInterface === ifindex.r0)
    assert.equal(inbound.length, 1, `one record of the flow to ${dst} coming in by r0 in ${JSON.stringify(found)}`)
    return {inbound: inbound[0], outbound: found.filter((r) => r.flowDirection === 1)}
  }
  const udpFrom = (sport: number) => (r: TsharkRecord) => r.protocolIdentifier === 17 && r.sourceTransportPort === sport
  const echo = (r: TsharkRecord) => r.protocolIdentifier === 1 && r.destinationTransportPort === 0x0800

  function assertDropped(r: TsharkRecord, ipBytes: number, code: number): void {
    assert.equal(r.packetDeltaCount, SENT, 'the meter counted every packet coming in')
    assert.equal(r.droppedPacketDeltaCount, SENT, 'and the router dropped every one')
    assert.equal(r.droppedOctetDeltaCount, SENT * ipBytes)
    assert.equal(Number(r.forwardingStatus), code)
  }

  it('counts packets a firewall rule drops as ACL deny (129)', function () {
    const {inbound, outbound} = flow('198.18.61.2', udpFrom(denied!.sport))
    assertDropped(inbound, 128, ACL_DENY)
    assert.deepEqual(outbound, [], 'nothing of it left by r1')
  })

  it('counts packets with no route as unroutable (131)', function () {
    const {inbound, outbound} = flow('198.19.7.1', udpFrom(unroutable!.sport))
    assertDropped(inbound, 128, UNROUTABLE)
    assert.deepEqual(outbound, [])
  })

  it('counts packets whose TTL expires at the router as bad TTL (137)', function () {
    const {inbound, outbound} = flow('198.18.61.2', echo)
    assertDropped(inbound, 84, BAD_TTL)
    assert.deepEqual(outbound, [])
  })

  it('counts IPv6 packets whose hop limit expires at the router as bad TTL (137)', function () {
    const found = records.filter(
      (r) => r.sourceIPv6Address === 'fd00:60::2' && r.destinationIPv6Address === 'fd00:61::2' && r.protocolIdentifier === 58 && r.flowDirection === 0,
    )
    assert.equal(found.length, 1, JSON.stringify(found))
    assert.equal(found[0].ingressInterface, ifindex.r0)
    // 56 bytes of data, the ICMPv6 header and the IPv6 header.
    assertDropped(found[0], 56 + 8 + 40, BAD_TTL)
    assert.deepEqual(
      records.filter((r) => r.destinationIPv6Address === 'fd00:61::2' && r.flowDirection === 1),
      [],
    )
  })

  it('counts packets too big for the next link with DF set as fragmentation and DF (133)', function () {
    const {inbound, outbound} = flow('198.18.62.1', echo)
    assertDropped(inbound, 1400, FRAGMENTATION_AND_DF)
    assert.deepEqual(outbound, [])
  })

  it("names the kernel's reason in the flow log", function () {
    const reasons = Object.fromEntries(
      logLines.filter((l) => l.src === '198.18.60.2' && l.direction === 'ingress' && l.dropReason).map((l) => [`${l.dst as string}/${l.proto as number}`, l]),
    )
    assert.equal(reasons['198.18.61.2/17']?.dropReason, 'NETFILTER_DROP')
    assert.equal(reasons['198.19.7.1/17']?.dropReason, 'IP_INNOROUTES')
    assert.equal(reasons['198.18.61.2/1']?.dropReason, 'TTL_EXPIRED')
    assert.equal(reasons['198.18.62.1/1']?.dropReason, 'PKT_TOO_BIG')
    assert.equal(reasons['198.18.62.1/1']?.droppedPkts, SENT)
  })

  it('counts every drop in flowctl_dropped_packets_total by interface and reason', function () {
    for (const [reason, n] of Object.entries(DROPS_BY_REASON)) {
      const labels = {interface: 'r0', reason}
      assert.equal(sample(metrics, 'flowctl_dropped_packets_total', labels), n, reason)
      assert.ok((sample(metrics, 'flowctl_dropped_bytes_total', labels) ?? 0) >= n * 84, reason)
      assert.equal(sample(metrics, 'flowctl_dropped_unmetered_packets_total', labels) ?? 0, 0, `${reason}: every flow was metered`)
    }
  })

  it("shows a flow's drops and the kernel's reason in top", async function () {
    const sampler = await TopSampler.open(privateDirs.paths, {netns: router, selector: {}})
    try {
      sampler.prime()
      const sent = await runAgent(client, {mode: 'udp-send', host: '198.18.61.2', port: 7001, count: SENT, size: 100})
      const row = sampler.sample('flow').rows.find((r) => r.label.includes(`:${sent.sport} >`) && r.label.startsWith('r0 ingress'))
      assert.ok(row, 'a row for the flow')
      assert.equal(row.packets, SENT)
      assert.equal(row.droppedPackets, SENT)
      assert.equal(row.dropReason, 'NETFILTER_DROP')
    } finally {
      sampler.close()
    }
  })

  it('takes the hook away with the last namespace that had drops on', async function () {
    assert.ok(dropHookAttached(privateDirs.paths), 'the hook is attached while the router is metered with drops')
    await detachMeters(privateDirs.paths, {targets: [{netns: router, ifname: '*'}], all: false, directions: ['ingress', 'egress']})
    assert.equal(dropHookAttached(privateDirs.paths), false)
    assert.equal(MeterSet.for(privateDirs.paths, router).exists(), false)
  })
})

describe('drops with the default templates: a dropped flow under the drops template, the others under 256 as ever @e2e', function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`drops-default-${id}`)
  const lab = new Lab(id)
  let tmp = ''
  let router = ''
  let records: {templateId: number; fields: TsharkRecord}[] = []
  let templateIds: number[][] = []
  let denied: {sport: number} | undefined
  let forwarded: {sport: number} | undefined

  before(async function () {
    requireE2e(this)
    await requireTshark(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-drops-default-'))
    privateDirs.apply()
    const routed = await lab.router(66)
    router = routed.router
    await lab.exec(router, 'nft', ['add', 'table', 'inet', 'fct'])
    await lab.exec(router, 'nft', ['add', 'chain', 'inet', 'fct', 'through', '{ type filter hook forward priority 0; }'])
    await lab.exec(router, 'nft', ['add', 'rule', 'inet', 'fct', 'through', 'udp', 'dport', '7001', 'drop'])
    await attachMeters(privateDirs.paths, {
      targets: [
        {netns: router, ifname: 'r0'},
        {netns: router, ifname: 'r1'},
      ],
      directions: ['ingress', 'egress'],
      pref: 1,
      handle: 1,
      force: false,
      drops: true,
    })
    const sink = await Sink.start({maxMessageSize: 1400, timeToleranceSeconds: 600})
    const config = join(tmp, 'config.yaml')
    // No templates: the defaults.
    writeFileSync(config, `collectors:\n- address: 127.0.0.1:${sink.port}\nmetrics:\n  listen: ''\nstateFile: ${join(tmp, 'state.json')}\n`)
    const daemon = new DaemonProcess(config)
    try {
      await daemon.waitForLog('started')
      const udpSink = await startAgent(routed.server, {mode: 'udp-sink', host: '0.0.0.0', port: 7002})
      denied = await runAgent(routed.client, {mode: 'udp-send', host: '198.18.67.2', port: 7001, count: SENT, size: 100, gapMs: 5})
      forwarded = await runAgent(routed.client, {mode: 'udp-send', host: '198.18.67.2', port: 7002, count: SENT, size: 100, gapMs: 5})
      udpSink.stop()
      assert.equal(await daemon.stop(), 0, daemon.tail)
    } finally {
      await daemon.stop('SIGKILL').catch(() => {})
      await sink.stop()
    }
    const dissected = await tsharkDissectIpfix(sink.datagrams, sink.port)
    assert.deepEqual(dissected.problems, [])
    records = dissected.records.filter((r) => !r.options)
    templateIds = sink.received.map((r) => r.message.templates.filter((t) => t.scopeFieldCount === 0).map((t) => t.id)).filter((ids) => ids.length > 0)
  })

  after(async function () {
    if (router) await detachMeters(privateDirs.paths, {targets: [{netns: router, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  const udpFrom = (sport: number) => records.filter((r) => r.fields.protocolIdentifier === 17 && r.fields.sourceTransportPort === sport)

  it('sends the dropped flow under 1256: the fields of 256, its drop counts and its ACL deny code (129)', function () {
    const found = udpFrom(denied!.sport)
    assert.equal(found.length, 1, `one record, coming in by r0: ${JSON.stringify(found)}`)
    assert.equal(found[0].templateId, 1256)
    assert.deepEqual(
      Object.keys(found[0].fields).sort(),
      [...DEFAULT_TEMPLATES[0].fields, 'forwardingStatus', 'droppedPacketDeltaCount', 'droppedOctetDeltaCount'].sort(),
    )
    assert.equal(found[0].fields.packetDeltaCount, SENT)
    assert.equal(found[0].fields.droppedPacketDeltaCount, SENT)
    assert.equal(found[0].fields.droppedOctetDeltaCount, SENT * 128)
    assert.equal(Number(found[0].fields.forwardingStatus), ACL_DENY)
    // 1256 is announced with the first record under it, not before.
    assert.equal(templateIds[0].includes(1256), false, JSON.stringify(templateIds))
    assert.ok(templateIds.some((ids) => ids.includes(1256)))
  })

  it('sends the forwarded flow under 256 as before, by both interfaces, without drop fields', function () {
    const found = udpFrom(forwarded!.sport)
    assert.deepEqual(
      found.map((r) => [r.templateId, r.fields.flowDirection, r.fields.packetDeltaCount]).sort(),
      [
        [256, 0, SENT],
        [256, 1, SENT],
      ].sort(),
      JSON.stringify(found),
    )
    for (const r of found) assert.deepEqual(Object.keys(r.fields).sort(), [...DEFAULT_TEMPLATES[0].fields].sort())
  })
})

describe("a meter's drops from the daemon's config @e2e", function () {
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`drops-config-${id}`)
  const lab = new Lab(id)
  let tmp = ''
  let host = ''

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-drops-config-'))
    privateDirs.apply()
    host = await lab.namespace('host')
    const peer = await lab.namespace('peer')
    await lab.veth(host, 'h0', peer, 'p0', {v4: ['198.18.63.1/24', '198.18.63.2/24'], quiet: true})
    await attachMeters(privateDirs.paths, {targets: [{netns: host, ifname: 'h0'}], directions: ['ingress'], pref: 1, handle: 1, force: false})
  })

  after(async function () {
    if (host) await detachMeters(privateDirs.paths, {targets: [], all: true, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  async function runDaemon(drops: boolean): Promise<void> {
    const config = join(tmp, 'config.yaml')
    writeFileSync(
      config,
      `logs:\n- file: /dev/null\nmeters:\n- netns: ${host}\n  drops: ${drops}\nmetrics:\n  listen: ''\nstateFile: ${join(tmp, 'state.json')}\n`,
    )
    const daemon = new DaemonProcess(config)
    try {
      await daemon.waitForLog('drops-set', (l) => l.drops === drops)
      assert.equal(await daemon.stop(), 0, daemon.tail)
    } finally {
      await daemon.stop('SIGKILL').catch(() => {})
    }
  }

  it('turns drops on when the daemon finds the meter, and off again', async function () {
    const set = MeterSet.for(privateDirs.paths, host)
    assert.equal(dropsOn(set), false, 'attached without drops')
    await runDaemon(true)
    assert.ok(dropsOn(set))
    assert.ok(dropHookAttached(privateDirs.paths))
    await runDaemon(false)
    assert.equal(dropsOn(set), false)
    assert.equal(dropHookAttached(privateDirs.paths), false, 'the only namespace with drops let the hook go')
  })
})

describe('drops of GSO packets, counted as the meter counts them @e2e', function () {
  this.timeout(120_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(`drops-gso-${id}`)
  const lab = new Lab(id)
  let tmp = ''
  let router = ''
  let flows: Record<string, unknown>[] = []

  before(async function () {
    requireE2e(this)
    tmp = mkdtempSync(join(tmpdir(), 'fct-drops-gso-'))
    privateDirs.apply()
    // Offloads on: the client's TCP hands its first flight to the link as one TSO packet, which
    // crosses the veth whole and is metered at r0 as its segments.
    const routed = await lab.router(64, {offloads: true})
    router = routed.router
    // Everything of the connection to port 7004 but its SYN is dropped on the way through: the
    // client, whose handshake completed, sends its data anyway, and retransmits it.
    await lab.exec(router, 'nft', ['add', 'table', 'inet', 'fct'])
    await lab.exec(router, 'nft', ['add', 'chain', 'inet', 'fct', 'through', '{ type filter hook forward priority 0; }'])
    await lab.exec(router, 'nft', ['add', 'rule', 'inet', 'fct', 'through', 'tcp', 'dport', '7004', 'tcp', 'flags', '!=', 'syn', 'drop'])
    await attachMeters(privateDirs.paths, {targets: [{netns: router, ifname: 'r0'}], directions: ['ingress'], pref: 1, handle: 1, force: false, drops: true})
    const log = join(tmp, 'flows.log')
    const config = join(tmp, 'config.yaml')
    writeFileSync(config, `logs:\n- file: ${log}\nmetrics:\n  listen: ''\nstateFile: ${join(tmp, 'state.json')}\n`)
    const daemon = new DaemonProcess(config)
    const sink = await startAgent(routed.server, {mode: 'tcp-sink', host: '0.0.0.0', port: 7004})
    try {
      await daemon.waitForLog('started')
      // 64 KiB at once: never delivered, so the sender is stopped after a few retransmissions.
      const sender = await startAgent(routed.client, {mode: 'tcp-send', host: '198.18.65.2', port: 7004, bytes: 65_536})
      await sleep(2500)
      // The client's link down first: its TCP would go on retransmitting after the sender is
      // gone, and a packet metered as the daemon stops is exported by the next daemon, not this one.
      await lab.exec(routed.client, 'ip', ['link', 'set', 'dev', 'c0', 'down'])
      sender.stop()
      await sleep(300)
      assert.equal(await daemon.stop(), 0, daemon.tail)
    } finally {
      sink.stop()
      await daemon.stop('SIGKILL').catch(() => {})
    }
    flows = readFileSync(log, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.dport === 7004 && l.direction === 'ingress')
  })

  after(async function () {
    if (router) await detachMeters(privateDirs.paths, {targets: [{netns: router, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it('drops every packet but the SYN, each segment of a GSO packet with its own IP and TCP headers, to the byte', function () {
    const sum = (k: string) => flows.reduce((n, l) => n + ((l[k] as number | undefined) ?? 0), 0)
    const [packets, bytes, dropped, droppedBytes] = [sum('pkts'), sum('bytes'), sum('droppedPkts'), sum('droppedBytes')]
    assert.ok(dropped > 10, `the first flight and retransmissions were dropped: ${JSON.stringify(flows)}`)
    // The SYN (IP 20 + TCP 40 with its options) is all that went through.
    assert.deepEqual([packets - dropped, bytes - droppedBytes], [1, 60], JSON.stringify(flows))
    assert.ok(
      flows.every((l) => l.dropReason === undefined || l.dropReason === 'NETFILTER_DROP'),
      JSON.stringify(flows),
    )
  })
})
