/**
 * The embedded default: a small lab of two namespaces joined by a metered veth, some traffic of
 * every kind the meter parses, and the flows it counted. Everything it creates is removed at the
 * end, also when interrupted.
 */
import {attachMeters, detachMeters} from '../bpf/attach.js'
import type {Flow} from '../flow/flow.js'
import {queryFlows} from '../flow/query.js'
import {Lab} from './lab.js'
import {ping, runAgent, startAgent} from './traffic.js'

export interface DemoTraffic {
  what: string
  packets: number
  bytes: number
}

export interface MeterDemoResult {
  flows: Flow[]
  sent: DemoTraffic[]
}

export async function runMeterDemo(log: (line: string) => void): Promise<MeterDemoResult> {
  const lab = new Lab()
  const onSignal = () => {
    log('interrupted: removing the lab')
    void lab.destroy().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  let client: string | undefined
  try {
    client = await lab.namespace('client')
    const server = await lab.namespace('server')
    await lab.veth(client, 'veth0', server, 'veth1', {
      v4: ['198.18.0.1/24', '198.18.0.2/24'],
      v6: ['fd00:f10::1/64', 'fd00:f10::2/64'],
      quiet: true,
    })
    log(`lab: ${client} (198.18.0.1, fd00:f10::1) <-> ${server} (198.18.0.2, fd00:f10::2)`)
    await attachMeters({targets: [{netns: client, ifname: 'veth0'}], directions: ['ingress', 'egress'], pref: 1, handle: 1, force: false})
    log(`meter attached to ${client}:veth0, both directions`)

    const sent: DemoTraffic[] = []
    const udp = await startAgent(server, {mode: 'udp-sink', host: '0.0.0.0', port: 5353})
    const r1 = await runAgent(client, {mode: 'udp-send', host: '198.18.0.2', port: 5353, count: 50, size: 200})
    sent.push({what: `udp 198.18.0.1:${r1.sport} -> 198.18.0.2:5353`, packets: 50, bytes: 50 * (20 + 8 + 200)})
    udp.stop()
    const udp6 = await startAgent(server, {mode: 'udp-sink', host: '::', port: 5353})
    const r2 = await runAgent(client, {mode: 'udp-send', host: 'fd00:f10::2', port: 5353, count: 30, size: 400})
    sent.push({what: `udp [fd00:f10::1]:${r2.sport} -> [fd00:f10::2]:5353`, packets: 30, bytes: 30 * (40 + 8 + 400)})
    udp6.stop()
    const tcp = await startAgent(server, {mode: 'tcp-sink', host: '0.0.0.0', port: 8080})
    const r3 = await runAgent(client, {mode: 'tcp-send', host: '198.18.0.2', port: 8080, bytes: 1_000_000})
    await tcp.result
    sent.push({what: `tcp 198.18.0.1:${r3.localPort} -> 198.18.0.2:8080 (1 MB, then FIN)`, packets: Number.NaN, bytes: Number.NaN})
    await ping(client, '198.18.0.2', 5)
    sent.push({what: 'icmp echo 198.18.0.1 -> 198.18.0.2', packets: 5, bytes: 5 * (20 + 8 + 56)})
    await ping(client, 'fd00:f10::2', 5)
    sent.push({what: 'icmpv6 echo fd00:f10::1 -> fd00:f10::2', packets: 5, bytes: 5 * (40 + 8 + 56)})

    const flows: Flow[] = []
    for await (const f of queryFlows({netns: client, selector: {}})) flows.push(f)
    return {flows, sent}
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    if (client) await detachMeters({targets: [{netns: client, ifname: '*'}], all: false, directions: ['ingress', 'egress']}).catch(() => {})
    await lab.destroy()
    log('lab removed')
  }
}
