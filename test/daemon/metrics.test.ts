/**
 * The daemon's metrics without a kernel: counts from hand-made batches and drain reports, the
 * accuracy pairing with (fake) interface counters, the HTTP endpoint, and a port already taken.
 */
import assert from 'node:assert/strict'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {createServer} from 'node:http'
import type {AddressInfo} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {FlowctlError} from '../../src/errors.js'
import {END_REASON, FlowBatch} from '../../src/flow/batch.js'
import {addToTally, type DrainReport} from '../../src/daemon/drain.js'
import {createLogger} from '../../src/daemon/log.js'
import {pathsFromEnv, type Paths} from '../../src/paths.js'
import {DaemonMetrics} from '../../src/daemon/metrics/daemon-metrics.js'
import {EVENT_LOOP_LOOK_MS} from '../../src/daemon/metrics/definitions.js'
import {splitHostPort} from '../../src/daemon/metrics/server.js'
import type {LinkCounters} from '../../src/sys/netns.js'
import {sample} from '../helpers/prom.js'

function report(netns: string, seen: [number, number, number][], taken = 0): {netns: string} & DrainReport {
  return {
    netns,
    taken,
    exported: {},
    pending: 3,
    ms: 2.5,
    phases: {swapMs: 0.5, mergeMs: 1, expireMs: 0.5, commitMs: 0.5},
    seen: new Map(seen.map(([slot, packets, bytes]) => [slot, {packets, bytes}])),
    takenByFamily: {4: taken, 6: 0},
    swapped: true,
    liveEntries: {4: 4096, 6: 4096},
  }
}

describe('daemon metrics', function () {
  let runDir: string
  let paths: Paths
  const logged: string[] = []
  const log = createLogger((l) => logged.push(l))

  before(function () {
    runDir = mkdtempSync(join(tmpdir(), 'fct-metrics-'))
    paths = {...pathsFromEnv({}), runDir}
    const attachment = (direction: string) => ({
      netns: 'fct-m',
      interface: 'eth9',
      ifindex: 9,
      direction,
      pref: 1,
      handle: 1,
      progId: 1,
      digest: 'x',
      attachedAt: '',
      qdiscCreated: false,
    })
    writeFileSync(join(runDir, 'attachments.json'), JSON.stringify({version: 1, meterSets: [], attachments: [attachment('ingress'), attachment('egress')]}))
  })

  after(function () {
    rmSync(runDir, {recursive: true, force: true})
  })

  it('counts packets and bytes of exported flows per interface, direction and protocol, and flows by end reason', async function () {
    const metrics = new DaemonMetrics({paths, log, processMetrics: false})
    const b = new FlowBatch(4, 4)
    b.netns = 'fct-m'
    const flows = [
      // ifindex, direction, proto, packets, bytes, reason
      [9, 1, 17, 20, 2560, END_REASON.idleTimeout],
      [9, 1, 17, 5, 640, END_REASON.activeTimeout],
      [9, 0, 6, 7, 500, END_REASON.endOfFlowDetected],
      [4, 0, 1, 4, 336, END_REASON.idleTimeout],
    ]
    flows.forEach(([ifindex, direction, proto, packets, bytes, reason], i) => {
      b.ifindex[i] = ifindex
      b.direction[i] = direction
      b.proto[i] = proto
      b.packets[i] = packets
      b.bytes[i] = bytes
      b.endReason[i] = reason
    })
    b.length = 4
    metrics.countBatch(b)
    metrics.countBatch(b)
    const text = await metrics.text()
    assert.equal(sample(text, 'flowctl_metered_packets_total', {netns: 'fct-m', interface: 'eth9', direction: 'egress', protocol: 'udp'}), 50)
    assert.equal(sample(text, 'flowctl_metered_bytes_total', {netns: 'fct-m', interface: 'eth9', direction: 'egress', protocol: 'udp'}), 6400)
    assert.equal(sample(text, 'flowctl_metered_packets_total', {interface: 'eth9', direction: 'ingress', protocol: 'tcp'}), 14)
    assert.equal(sample(text, 'flowctl_metered_bytes_total', {interface: 'if4', protocol: 'icmp'}), 672)
    assert.equal(sample(text, 'flowctl_flows_exported_total', {netns: 'fct-m', reason: 'idle_timeout'}), 4)
    assert.equal(sample(text, 'flowctl_flows_exported_total', {reason: 'end_of_flow'}), 2)
    assert.equal(sample(text, 'flowctl_flows_exported_total', {reason: 'active_timeout'}), 2)
  })

  it('counts a sampled flow as what it stands for (its counts times N), and flow records by the rate they were counted at', async function () {
    const metrics = new DaemonMetrics({paths, log, processMetrics: false})
    const b = new FlowBatch(4, 3)
    b.netns = 'fct-m'
    b.length = 3
    b.ifindex.set([9, 9, 9])
    b.direction.set([1, 1, 1])
    b.proto.set([17, 17, 17])
    b.packets.set([20, 3, 7])
    b.bytes.set([2000, 300, 700])
    b.endReason.set([END_REASON.idleTimeout, END_REASON.idleTimeout, END_REASON.idleTimeout])
    // Counted 1 in 10, 1 in 10 and every packet (the rate changed while they ran).
    b.samplingInterval.set([10, 10, 1])
    metrics.countBatch(b)
    const text = await metrics.text()
    const udp = {netns: 'fct-m', interface: 'eth9', direction: 'egress', protocol: 'udp'}
    assert.equal(sample(text, 'flowctl_metered_packets_total', udp), 230 + 7)
    assert.equal(sample(text, 'flowctl_metered_bytes_total', udp), 23_000 + 700)
    assert.equal(sample(text, 'flowctl_flows_exported_by_sampling_total', {netns: 'fct-m', sampling_interval: '10'}), 2)
    assert.equal(sample(text, 'flowctl_flows_exported_by_sampling_total', {netns: 'fct-m', sampling_interval: '1'}), 1)
  })

  it("compares a sampled meter's estimate with the kernel's counters, and says the error sampling gives it: sampling is not loss", async function () {
    let kernel: LinkCounters = {rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0}
    const metrics = new DaemonMetrics({paths, log, processMetrics: false, sampleIntervalMs: 0, readLinks: () => Promise.resolve(new Map([[9, {...kernel}]]))})
    metrics.countDrain(report('fct-m', [], 0))
    await metrics.settled()
    // 10,000 packets of 100 IP bytes out; the meter counted 1,010 of them at 1 in 10, in 10 flows.
    kernel = {...kernel, txPackets: 10_000, txBytes: 10_000 * 114}
    const tally = {packets: 0, bytes: 0}
    for (let f = 0; f < 10; f++) addToTally(tally, 101, 10_100, 10)
    metrics.countDrain({...report('fct-m', [], 0), seen: new Map([[19, tally]])})
    await metrics.settled()
    const text = await metrics.text()
    const egress = {netns: 'fct-m', interface: 'eth9', direction: 'egress'}
    assert.equal(sample(text, 'flowctl_interface_meter_packets_total', egress), 10_100, 'counted x 10')
    assert.equal(sample(text, 'flowctl_interface_meter_bytes_total', egress), 1_010_000)
    const ratio = sample(text, 'flowctl_interface_accuracy_ratio', egress)!
    assert.ok(Math.abs(ratio - 1.01) < 1e-9, `the estimate against the kernel: ${ratio}`)
    // Each frame of 114 bytes counted with probability 1/10: Var = 10 * 9 * 1010 * 114^2; the error, its root over the kernel's bytes.
    const error = sample(text, 'flowctl_interface_accuracy_sampling_error_ratio', egress)!
    assert.ok(Math.abs(error - Math.sqrt(90 * 1010 * 114 * 114) / 1_140_000) < 1e-12, `sampling error ${error}`)
    assert.ok(Math.abs(ratio - 1) < 3 * error, 'within what sampling alone gives')
    assert.equal(sample(text, 'flowctl_interface_accuracy_sampling_error_ratio', {...egress, direction: 'ingress'}), 0, 'no sampling, no error')
  })

  it('counts drains, their duration and fill, and pairs what the meter saw with the kernel counters', async function () {
    let kernel: LinkCounters = {rxPackets: 100, rxBytes: 10_000, txPackets: 200, txBytes: 20_000}
    const metrics = new DaemonMetrics({paths, log, processMetrics: false, sampleIntervalMs: 0, readLinks: () => Promise.resolve(new Map([[9, {...kernel}]]))})
    // The first drain holds what was counted before the daemon: a baseline only.
    metrics.countDrain(report('fct-m', [[19, 1000, 1_000_000]], 12))
    await metrics.settled()
    // 10 packets of 100 IP bytes out, 4 of 50 in; the kernel adds 14 bytes of Ethernet header each.
    kernel = {rxPackets: 104, rxBytes: 10_000 + 4 * 64, txPackets: 210, txBytes: 20_000 + 10 * 114}
    metrics.countDrain(
      report(
        'fct-m',
        [
          [19, 10, 1000],
          [18, 4, 200],
        ],
        2,
      ),
    )
    await metrics.settled()
    const text = await metrics.text()
    const eth9 = (direction: string) => ({netns: 'fct-m', interface: 'eth9', direction})
    assert.equal(sample(text, 'flowctl_drains_total', {netns: 'fct-m'}), 2)
    assert.equal(sample(text, 'flowctl_drain_duration_seconds_count', {netns: 'fct-m'}), 2)
    assert.equal(sample(text, 'flowctl_drain_duration_seconds_sum', {netns: 'fct-m'}), 0.005)
    assert.equal(sample(text, 'flowctl_drain_entries_total', {netns: 'fct-m'}), 14)
    assert.equal(sample(text, 'flowctl_meter_map_flows', {netns: 'fct-m', family: 'ipv4'}), 2)
    assert.equal(sample(text, 'flowctl_interface_meter_packets_total', eth9('egress')), 10)
    assert.equal(sample(text, 'flowctl_interface_meter_bytes_total', eth9('egress')), 1000)
    assert.equal(sample(text, 'flowctl_interface_kernel_packets_total', eth9('egress')), 10)
    assert.equal(sample(text, 'flowctl_interface_kernel_bytes_total', eth9('egress')), 1140)
    assert.equal(sample(text, 'flowctl_interface_accuracy_ratio', eth9('egress')), 1)
    assert.equal(sample(text, 'flowctl_interface_meter_bytes_total', eth9('ingress')), 200)
    assert.equal(sample(text, 'flowctl_interface_kernel_bytes_total', eth9('ingress')), 256)
    assert.equal(sample(text, 'flowctl_interface_accuracy_ratio', eth9('ingress')), 1)
    // The interface carried 2 packets the meter did not see (ARP, say).
    kernel = {...kernel, txPackets: kernel.txPackets + 2, txBytes: kernel.txBytes + 2 * 60}
    metrics.countDrain(report('fct-m', [], 0))
    await metrics.settled()
    const after = await metrics.text()
    assert.equal(sample(after, 'flowctl_interface_kernel_packets_total', eth9('egress')), 12)
    assert.equal(sample(after, 'flowctl_interface_accuracy_ratio', eth9('egress')), 1140 / 1260)
  })

  it('keeps what the meter saw for the next sample when the kernel counters cannot be read', async function () {
    let fail = false
    let tx = 0
    const metrics = new DaemonMetrics({
      paths,
      log,
      processMetrics: false,
      sampleIntervalMs: 0,
      readLinks: () =>
        fail ? Promise.reject(new Error('no such namespace')) : Promise.resolve(new Map([[9, {rxPackets: 0, rxBytes: 0, txPackets: tx, txBytes: tx * 114}]])),
    })
    metrics.countDrain(report('fct-m', [], 0))
    await metrics.settled()
    fail = true
    tx = 3
    metrics.countDrain(report('fct-m', [[19, 3, 300]], 0))
    await metrics.settled()
    fail = false
    tx = 5
    metrics.countDrain(report('fct-m', [[19, 2, 200]], 0))
    await metrics.settled()
    const text = await metrics.text()
    assert.equal(sample(text, 'flowctl_interface_meter_packets_total', {interface: 'eth9', direction: 'egress'}), 5)
    assert.equal(sample(text, 'flowctl_interface_kernel_packets_total', {interface: 'eth9', direction: 'egress'}), 5)
    assert.ok(logged.some((l) => l.includes('metrics-read-failed')))
  })

  it('serves /metrics over HTTP, moves to a new address on reload, and says which key when the port is taken', async function () {
    const metrics = new DaemonMetrics({paths, log})
    await metrics.listen('127.0.0.1:0')
    const port = metrics.address!.port
    const res = await fetch(`http://127.0.0.1:${port}/metrics`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/)
    const text = await res.text()
    assert.equal(sample(text, 'flowctl_config_reloads_total', {result: 'ok'}), 0)
    assert.ok(sample(text, 'flowctl_process_resident_memory_bytes')! > 0, 'process metrics, prefixed')
    assert.match(text, /# TYPE flowctl_build_info gauge/)
    assert.equal((await fetch(`http://127.0.0.1:${port}/nope`)).status, 404)

    // Another program has the port.
    const other = createServer()
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r))
    const taken = (other.address() as AddressInfo).port
    try {
      const second = new DaemonMetrics({paths, log, processMetrics: false})
      await assert.rejects(second.listen(`127.0.0.1:${taken}`, '/etc/flowctl/config.yaml'), (error: unknown) => {
        assert.ok(error instanceof FlowctlError)
        assert.match(
          error.message,
          new RegExp(
            `^metrics\\.listen: cannot listen on 127\\.0\\.0\\.1:${taken}: the port is in use .*\\(EADDRINUSE\\); set another metrics\\.listen \\(/etc/flowctl/config\\.yaml\\)`,
          ),
        )
        assert.equal(error.message.split('\n').length, 1)
        return true
      })
      // A reload to the taken port fails and keeps serving where it was.
      await assert.rejects(metrics.listen(`127.0.0.1:${taken}`), /EADDRINUSE/)
      assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 200)
    } finally {
      other.close()
    }
    await metrics.listen('127.0.0.2:0')
    assert.equal(metrics.address!.address, '127.0.0.2')
    await metrics.listen(null)
    assert.equal(metrics.address, undefined)
    await metrics.close()
  })

  it('looks at the event loop every EVENT_LOOP_LOOK_MS, not every 10 ms (each look wakes an idle daemon)', async function () {
    const metrics = new DaemonMetrics({paths, log})
    await metrics.text() // (a scrape starts the lag gauges' period afresh)
    await sleep(5 * EVENT_LOOP_LOOK_MS)
    const text = await metrics.text()
    // Each lag gauge is the time between two looks: the shortest is the period, or longer on a busy loop.
    const shortest = sample(text, 'flowctl_nodejs_eventloop_lag_min_seconds')!
    assert.ok(shortest >= (0.9 * EVENT_LOOP_LOOK_MS) / 1000, `the shortest time between two looks at the event loop: ${shortest} s`)
    assert.ok(sample(text, 'flowctl_nodejs_eventloop_lag_max_seconds')! > 0, 'the loop was looked at in the wait')
  })

  it('splits HOST:PORT and [IPV6]:PORT', function () {
    assert.deepEqual(splitHostPort('127.0.0.1:9999'), {host: '127.0.0.1', port: 9999})
    assert.deepEqual(splitHostPort('[::1]:9999'), {host: '::1', port: 9999})
    assert.deepEqual(splitHostPort('localhost:0'), {host: 'localhost', port: 0})
  })
})
