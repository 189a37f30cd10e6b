/**
 * The Grafana dashboard without Prometheus: it reads only metrics the daemon defines (the spool's,
 * which the collectors' spool adds, are allowed before they exist), has a panel for each thing an
 * operator looks at, and is laid out and wired the way Grafana imports it. That every expression
 * returns data from a real daemon is test/e2e/grafana.test.ts.
 */
import assert from 'node:assert/strict'

import {type Registry} from 'prom-client'

import {createLogger} from '../../src/daemon/log.js'
import {DaemonMetrics} from '../../src/daemon/metrics/daemon-metrics.js'
import {pathsFromEnv} from '../../src/paths.js'
import {allPanels, dashboardExpressions, loadDashboard, metricNames, resolveExpression, SPOOL_METRICS, variableQuery} from '../helpers/grafana.js'

/** Every sample name the daemon can serve (a histogram's _bucket, _sum and _count). */
async function servedNames(): Promise<Set<string>> {
  const metrics = new DaemonMetrics({paths: pathsFromEnv({}), log: createLogger(() => {}), processMetrics: false})
  const registry: Registry = metrics.registry
  const names = new Set<string>()
  for (const m of await registry.getMetricsAsJSON()) {
    names.add(m.name)
    if (String(m.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${m.name}${suffix}`)
  }
  return names
}

describe('grafana dashboard (misc/grafana/flowctl.json)', function () {
  const dashboard = loadDashboard()
  const expressions = dashboardExpressions(dashboard)

  it("reads only metrics the daemon serves (or the spool's, still to come)", async function () {
    const served = await servedNames()
    const unknown = expressions.flatMap((e) =>
      metricNames(e.expr)
        .filter((n) => !served.has(n) && !SPOOL_METRICS.includes(n))
        .map((n) => `${e.panel}: ${n}`),
    )
    assert.deepEqual(unknown, [])
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) {
      for (const n of metricNames(variableQuery(v)!.expr)) assert.ok(served.has(n), `variable ${v.name} reads ${n}`)
    }
  })

  it('has a panel for each thing an operator looks at', function () {
    const panelReading = (metric: string, by?: string) =>
      expressions.filter((e) => metricNames(e.expr).includes(metric) && (!by || new RegExp(`by \\([^)]*\\b${by}\\b`).test(e.expr))).map((e) => e.panel)
    const wanted: [string, string, string?][] = [
      ['traffic by interface', 'flowctl_metered_bytes_total', 'interface'],
      ['traffic by protocol', 'flowctl_metered_bytes_total', 'protocol'],
      ['flows exported by end reason', 'flowctl_flows_exported_total', 'reason'],
      ['drain duration', 'flowctl_drain_duration_seconds_bucket'],
      ['map fill', 'flowctl_meter_map_fill_ratio'],
      ['not metered packets', 'flowctl_not_metered_packets_total'],
      ['collector send errors', 'flowctl_ipfix_send_errors_total', 'collector'],
      ['spool', 'flowctl_ipfix_spool_messages'],
      ['accuracy ratio', 'flowctl_interface_accuracy_ratio'],
      ['TCP handshake round trips', 'flowctl_tcp_handshake_rtt_seconds_bucket', 'le'],
    ]
    for (const [what, metric, by] of wanted) assert.ok(panelReading(metric, by).length > 0, `no panel shows ${what} (${metric}${by ? ` by ${by}` : ''})`)
  })

  it('filters every query by the router and namespace (or collector) chosen, and tells routers apart by instance', function () {
    for (const e of expressions) {
      for (const selector of e.expr.matchAll(/flowctl_[a-z0-9_]+\{([^}]*)\}/g)) {
        assert.match(selector[1], /instance=~"\$instance"/, `${e.panel} ${e.refId}`)
        assert.match(selector[1], /(netns|collector)=~"\$(netns|collector)"/, `${e.panel} ${e.refId}`)
      }
      assert.doesNotMatch(e.expr, /flowctl_[a-z0-9_]+(\[|\)|\s|$)/, `${e.panel} ${e.refId}: a metric without a selector`)
      assert.ok(!/\$\w/.test(resolveExpression(dashboard, e.expr, '1m')), `${e.panel} ${e.refId}: a variable the dashboard does not define`)
    }
  })

  it('is importable: one datasource variable used by every query, unique panel ids, a grid with no overlap', function () {
    assert.equal(dashboard.uid, 'flowctl')
    const ds = dashboard.templating.list.find((v) => v.type === 'datasource')
    assert.ok(ds?.query === 'prometheus')
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) {
      assert.ok(
        v.includeAll && v.allValue,
        `variable ${v.name} has "All", with an allValue regex (Grafana's default lists every value and can overflow the URL)`,
      )
    }
    const panels = allPanels(dashboard)
    assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, 'unique panel ids')
    const cells = new Map<string, string>()
    for (const p of panels) {
      if (p.type !== 'row') {
        assert.deepEqual(p.datasource, {type: 'prometheus', uid: `\${${ds.name}}`}, p.title)
        for (const t of p.targets ?? []) assert.deepEqual(t.datasource, p.datasource, `${p.title} ${t.refId}`)
        assert.ok(p.description, `${p.title} says what it shows`)
      }
      const {x, y, w, h} = p.gridPos
      assert.ok(x >= 0 && w > 0 && x + w <= 24, `${p.title} fits the 24 columns`)
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          const other = cells.get(`${i},${j}`)
          assert.equal(other, undefined, `${p.title} overlaps ${other}`)
          cells.set(`${i},${j}`, p.title)
        }
      }
    }
  })
})
