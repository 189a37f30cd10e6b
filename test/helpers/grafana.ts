/**
 * Reading the Grafana dashboard (misc/grafana/flowctl.json) in tests: its PromQL expressions, the
 * metric names they use, and the expressions as Prometheus itself can run them (Grafana's
 * variables replaced by what "All" selects).
 */
import {readFileSync} from 'node:fs'
import {join} from 'node:path'

import {REPO_ROOT} from './unit.js'

/** Defined by the collectors' spool (another change), which the dashboard shows once it is there. */
export const SPOOL_METRICS = ['flowctl_ipfix_spool_messages', 'flowctl_ipfix_spool_bytes', 'flowctl_ipfix_spool_dropped_messages_total']

const DASHBOARD_FILE = join(REPO_ROOT, 'misc/grafana/flowctl.json')

export interface DashboardPanel {
  id: number
  type: string
  title: string
  description?: string
  datasource?: {type: string; uid: string}
  gridPos: {x: number; y: number; w: number; h: number}
  targets?: {refId: string; expr: string; legendFormat?: string; datasource?: {type: string; uid: string}}[]
  panels?: DashboardPanel[]
}

export interface DashboardVariable {
  name: string
  type: string
  query: string | {query: string}
  allValue?: string
  includeAll?: boolean
}

export interface Dashboard {
  uid: string
  title: string
  panels: DashboardPanel[]
  templating: {list: DashboardVariable[]}
}

export function loadDashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard
}

/** Every panel, those inside collapsed rows included. */
export function allPanels(d: Dashboard): DashboardPanel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])])
}

/** Each query of each panel: which panel, and its expression. */
export function dashboardExpressions(d: Dashboard): {panel: string; refId: string; expr: string}[] {
  return allPanels(d).flatMap((p) => (p.targets ?? []).map((t) => ({panel: p.title, refId: t.refId, expr: t.expr})))
}

/** The flowctl_ metric names an expression reads. */
export function metricNames(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\bflowctl_[a-z0-9_]+/g)].map((m) => m[0]))]
}

/** A query variable's expression: `label_values(EXPR, label)` gives EXPR and the label. */
export function variableQuery(v: DashboardVariable): {expr: string; label: string} | undefined {
  const text = typeof v.query === 'string' ? v.query : v.query.query
  const m = /^label_values\((.+),\s*(\w+)\)$/.exec(text)
  return m ? {expr: m[1], label: m[2]} : undefined
}

/**
 * The expression as Prometheus runs it: every dashboard variable as "All" selects it (its
 * allValue regex), and Grafana's `$__rate_interval` as `rateInterval`.
 */
export function resolveExpression(d: Dashboard, expr: string, rateInterval: string): string {
  let out = expr.replaceAll('$__rate_interval', rateInterval)
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue
    out = out.replaceAll(`\${${v.name}}`, v.allValue ?? '.*').replaceAll(`$${v.name}`, v.allValue ?? '.*')
  }
  return out
}
