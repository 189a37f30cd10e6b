/**
 * The Grafana dashboard against a real Prometheus: Debian's `prometheus` (misc/setup.sh installs
 * it), started here on a loopback port with a private config and storage, scrapes a real daemon
 * metering real traffic in a namespace lab; every PromQL expression of misc/grafana/flowctl.json,
 * with Grafana's variables as "All" selects them, must return data through the HTTP API. And
 * `promtool check metrics` has nothing to say about the daemon's /metrics.
 *
 * The collectors' spool metrics come with the spool; until the daemon serves them, the spool
 * panel's expressions are left out here (and said so in the test's output), never anything else.
 */
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa, type ResultPromise} from 'execa'

import {Lab} from '../../src/lab/lab.js'
import {ping, runAgent, startAgent, type RunningAgent} from '../../src/lab/traffic.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {cli, cliOk, requireE2e, sleep, PrivateDirs} from '../helpers/e2e.js'
import {dashboardExpressions, loadDashboard, metricNames, resolveExpression, SPOOL_METRICS, variableQuery} from '../helpers/grafana.js'
import {Sink} from '../ipfix/flows.js'

const PROMETHEUS = '/usr/bin/prometheus'
const PROMTOOL = '/usr/bin/promtool'
/** Scrapes every second, so a rate over 15 s has many samples without a long wait. */
const SCRAPE_INTERVAL = '1s'
const RATE_INTERVAL = '15s'

interface QueryResponse {
  status: string
  error?: string
  data?: {resultType: string; result: {metric: Record<string, string>; value: [number, string]}[]}
}

/** A TCP port the kernel has just given out and taken back (Prometheus has no `:0`). */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as {port: number}
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

describe('grafana dashboard against a real Prometheus @e2e', function () {
  this.timeout(240_000)
  const id = randomBytes(3).toString('hex')
  const privateDirs = new PrivateDirs(id)
  const lab = new Lab(id)
  const dashboard = loadDashboard()
  let tmp = ''
  let a = ''
  let b = ''
  let sink: Sink | undefined
  let daemon: DaemonProcess | undefined
  let prometheus: ResultPromise | undefined
  let prometheusUrl = ''
  let metricsUrl = ''
  const agents: RunningAgent<unknown>[] = []

  async function query(expr: string): Promise<QueryResponse> {
    const res = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`)
    return (await res.json()) as QueryResponse
  }

  before(async function () {
    requireE2e(this)
    for (const tool of [PROMETHEUS, PROMTOOL]) {
      if (!existsSync(tool)) {
        if (process.env.CI === 'true') throw new Error(`${tool} is not installed (run misc/setup.sh)`)
        this.skip()
      }
    }
    tmp = mkdtempSync(join(tmpdir(), 'fct-grafana-'))
    privateDirs.apply()
    a = await lab.namespace('a')
    b = await lab.namespace('b')
    await lab.veth(a, 'a0', b, 'b0', {v4: ['198.18.30.1/24', '198.18.30.2/24'], quiet: true})
    await cliOk(['meter', 'attach', '--netns', a, '-n', 'a0'])
    sink = await Sink.start({timeToleranceSeconds: 600})
    const configFile = join(tmp, 'flowctl.yaml')
    // Short timeouts: flows end (and are counted) while Prometheus watches.
    writeFileSync(
      configFile,
      `collectors:\n- address: 127.0.0.1:${sink.port}\ndrainIntervalSeconds: 0.5\nidleTimeoutSeconds: 1\nactiveTimeoutSeconds: 2\n` +
        `meters:\n- netns: ${a}\nmetrics:\n  listen: '127.0.0.1:0'\nstateFile: ${privateDirs.env.FLOWCTL_STATE_DIR}/daemon-state.json\n`,
    )
    daemon = new DaemonProcess(configFile)
    metricsUrl = String((await daemon.waitForLog('metrics-listening', () => true, 30_000)).url)
    await daemon.waitForLog('started')

    // Traffic for the whole run: a steady UDP stream (exported at each active timeout), and, once,
    // ICMP (idle timeout) and a TCP connection (end of flow).
    agents.push(await startAgent(b, {mode: 'udp-sink', host: '0.0.0.0', port: 7000}))
    agents.push(await startAgent(b, {mode: 'tcp-sink', host: '198.18.30.2', port: 8000}))
    agents.push(await startAgent(a, {mode: 'udp-send', host: '198.18.30.2', port: 7000, count: 1e9, size: 200, gapMs: 20, durationMs: 200_000}))
    await ping(a, '198.18.30.2', 3, 56, 0.05)
    await runAgent(a, {mode: 'tcp-send', host: '198.18.30.2', port: 8000, bytes: 50_000})

    const port = await freePort()
    prometheusUrl = `http://127.0.0.1:${port}`
    const promConfig = join(tmp, 'prometheus.yml')
    writeFileSync(
      promConfig,
      `global:\n  scrape_interval: ${SCRAPE_INTERVAL}\n  evaluation_interval: ${SCRAPE_INTERVAL}\n` +
        `scrape_configs:\n- job_name: flowctl\n  static_configs:\n  - targets: ['${new URL(metricsUrl).host}']\n`,
    )
    prometheus = execa(
      PROMETHEUS,
      [`--config.file=${promConfig}`, `--storage.tsdb.path=${join(tmp, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
      {
        reject: false,
        all: true,
      },
    )
    const deadline = Date.now() + 60_000
    for (;;) {
      const ready = await fetch(`${prometheusUrl}/-/ready`).then(
        (r) => r.ok,
        () => false,
      )
      if (ready) break
      if (prometheus.exitCode !== null || Date.now() > deadline) throw new Error(`prometheus did not get ready: ${String((await prometheus).all)}`)
      await sleep(200)
    }
  })

  after(async function () {
    for (const agent of agents) agent.stop()
    if (prometheus) {
      prometheus.kill('SIGTERM')
      await prometheus
    }
    if (daemon) await daemon.stop('SIGKILL').catch(() => {})
    await sink?.stop()
    if (a) await cli(['meter', 'detach', '--netns', a]).catch(() => {})
    await lab.destroy()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
    privateDirs.remove()
  })

  it('promtool check metrics finds nothing to say about /metrics', async function () {
    // Once the daemon has told the metrics of a drain (on a loaded machine its first drain may come
    // after the setup above): the check wants every family the daemon serves in use.
    let status = 0
    let text = ''
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(250)) {
      const res = await fetch(metricsUrl)
      status = res.status
      text = await res.text()
      if (status === 200 && /^flowctl_drains_total\{/m.test(text)) break
    }
    assert.match(text, /^flowctl_drains_total\{/m, `the daemon serves its metrics (HTTP ${status}): ${text.slice(0, 300)}`)
    const r = await execa(PROMTOOL, ['check', 'metrics'], {input: text, reject: false, all: true})
    assert.equal(r.exitCode, 0, String(r.all))
    assert.equal(String(r.all).trim(), '')
  })

  it('every expression of the dashboard and its variables returns data from the daemon', async function () {
    const served = await (await fetch(metricsUrl)).text()
    const absent = SPOOL_METRICS.filter((n) => !new RegExp(`^# TYPE ${n} `, 'm').test(served))
    const all = dashboardExpressions(dashboard)
    const expressions = all.filter((e) => !metricNames(e.expr).some((n) => absent.includes(n)))
    if (absent.length > 0) {
      const left = all.filter((e) => !expressions.includes(e)).map((e) => `${e.panel} ${e.refId}`)
      console.log(`      (the daemon serves no ${absent.join(', ')} yet: left out ${left.join(', ')})`)
    }
    assert.ok(expressions.length >= all.length - 3, 'only the spool panel may be left out')
    const variables = dashboard.templating.list.flatMap((v) => {
      const q = variableQuery(v)
      return q ? [{panel: `variable ${v.name}`, refId: q.label, expr: q.expr}] : []
    })
    assert.equal(variables.length, dashboard.templating.list.filter((v) => v.type === 'query').length, 'every query variable is label_values(...)')

    // Rates need two scrapes of a series in the window, the accuracy ratio two kernel readings:
    // poll until one round has data for every expression.
    let missing: string[]
    const deadline = Date.now() + 90_000
    for (;;) {
      missing = []
      for (const e of [...expressions, ...variables]) {
        const resolved = resolveExpression(dashboard, e.expr, RATE_INTERVAL)
        const r = await query(resolved)
        assert.equal(r.status, 'success', `${e.panel} ${e.refId}: ${resolved}: ${r.error}`)
        const values = r.data!.result.filter((s) => !Number.isNaN(Number(s.value[1])))
        const hasLabel = e.panel.startsWith('variable ') ? values.some((s) => s.metric[e.refId]) : true
        if (values.length === 0 || !hasLabel) missing.push(`${e.panel} ${e.refId}: ${resolved}`)
      }
      if (missing.length === 0) break
      if (Date.now() > deadline) break
      await sleep(2000)
    }
    assert.deepEqual(missing, [], 'expressions without data')
  })
})
