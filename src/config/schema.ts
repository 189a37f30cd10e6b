/**
 * The shape of config.yaml as a valibot schema: which keys each map may have, the type and range
 * of each value, and the values that parse into something (addresses, element names, namespace
 * names). Every message is written for the key it belongs to (`expected an integer, got the
 * string '300' (write it without quotes); allowed: ...`); the issue's key path is turned into a
 * FILE:LINE:COL by source.ts. What needs two keys at once (ids that must be unique, a collector
 * naming a template, old and new names of one setting) is load.ts's. The building blocks are in
 * schema-values.ts, addresses in address-schema.ts, template fields in field-schema.ts.
 */
import * as v from 'valibot'

import {MAX_CAPACITY, MIN_CAPACITY} from '../bpf/compile.js'
import {MAX_SAMPLING_INTERVAL, MIN_SAMPLING_INTERVAL} from '../bpf/sampling.js'
import {parseInterfaceGlob, parseNetnsPattern, PatternError, type NetnsPattern} from '../util/name-pattern.js'
import {address} from './address-schema.js'
import {allowingUnfillable, fieldList} from './field-schema.js'
import {describe, expected, filePath, FLOORS, integer, list, map, seconds, text} from './schema-values.js'
import {problemText, type PathKey} from './source.js'

export {ADDRESS_ALLOWED, type ParsedAddress} from './address-schema.js'
export type {FieldValue} from './field-schema.js'

/** Room for the statistics options record flowctl sends (16 + 4 + 60 bytes). */
const MIN_MESSAGE_SIZE = 80
const MAX_MESSAGE_SIZE = 65_507

// --- the sections ---------------------------------------------------------------------------------------

const TEMPLATE_ID = 'a template id from 256 to 65535'

const template = map(
  {
    id: integer(256, 65535, `${TEMPLATE_ID} (0-255 are set ids)`),
    fields: v.nullish(fieldList),
    template: v.nullish(fieldList),
  },
  {id: TEMPLATE_ID},
)

/** Whether a string holds a C0 control character or DEL. */
function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return true
  }
  return false
}

const COLLECTOR_NAME = 'a name of 1 to 128 characters, no control characters (the collector in logs and metrics)'
const collectorName = v.pipe(
  text(COLLECTOR_NAME),
  v.check((s) => s.length <= 128, problemText('longer than 128 characters', COLLECTOR_NAME)),
  v.check((s) => !hasControlCharacter(s), problemText('a control character', COLLECTOR_NAME)),
)

const REPLAY_RATE = 'an integer from 10000 to 2^40 (bytes a second)'
const replayRate = integer(10_000, 2 ** 40, REPLAY_RATE)
const SEND_RATE = 'an integer from 10000 to 2^40 (bytes a second), or 0 (unpaced)'
/** 0 (unpaced) or a rate a timer can pace: below 10 kB/s one message would wait a tenth of a second. */
const sendRate = v.pipe(
  integer(0, 2 ** 40, SEND_RATE),
  v.check(
    (n) => n === 0 || n >= 10_000,
    (issue) => problemText(`${String(issue.input)} is out of range`, SEND_RATE),
  ),
)

/** A yes or no: biflow. */
const flag = v.boolean(expected('true or false', 'true or false'))

const collector = map({
  name: v.nullish(collectorName),
  address: v.nullish(address('remote')),
  remoteAddress: v.nullish(address('remote')),
  source: v.nullish(address('source')),
  localAddress: v.nullish(address('source')),
  templates: v.nullish(list(integer(0, 65535, 'a list of template ids'), 'a list of template ids')),
  replayBytesPerSecond: v.nullish(replayRate),
  sendBytesPerSecond: v.nullish(sendRate),
  biflow: v.nullish(flag),
})

const ARGV = 'a list [PROGRAM, ARG, ...]'
const argv = v.pipe(
  list(v.string(expected('a string', 'a string')), ARGV, problemText('the list is empty', ARGV)),
  v.rawCheck(({dataset, addIssue}) => {
    if (dataset.typed && dataset.value[0].trim() === '') {
      addIssue({
        message: problemText('empty string', 'a string'),
        path: [{type: 'array', origin: 'value', input: dataset.value, key: 0, value: dataset.value[0]}],
      })
    }
  }),
)
const PROGRAM = `a program, or ${ARGV}`
/** As the older tool did, a string is the whole program, run without a shell. */
const programText = v.pipe(
  text(PROGRAM),
  v.transform((s) => [s]),
)
const command = v.lazy((input) => (Array.isArray(input) ? argv : programText))

const hook = map({
  name: v.nullish(text('a name for logs')),
  command: v.nullish(command),
  shell: v.nullish(text('a shell script')),
  timeoutSeconds: v.nullish(seconds(FLOORS.hookTimeoutSeconds)),
})

const LOG_FILE = "a file path, or '-' for stdout"
const log = map(
  {
    file: filePath(LOG_FILE),
    hooks: v.nullish(list(hook, 'a list of hooks: {command: PROGRAM} or {shell: SCRIPT}')),
    biflow: v.nullish(flag),
  },
  {file: LOG_FILE},
)

const output = map({collector: v.nullish(collector), log: v.nullish(log)})

const NETNS = 'a namespace name from `ip netns list`, root, a glob (tenant-*) or a /regular expression/'
const netnsPattern = v.pipe(
  text(NETNS),
  v.rawTransform(({dataset, addIssue, NEVER}): NetnsPattern => {
    try {
      return parseNetnsPattern(dataset.value)
    } catch (error) {
      if (!(error instanceof PatternError)) throw error
      addIssue({message: problemText(error.message, error.allowed ?? NETNS)})
      return NEVER
    }
  }),
)

const INTERFACE_GLOB = 'an interface name or glob (eth*, veth?, en[a-z]*), or !GLOB to leave those out'
const interfaceGlob = v.pipe(
  text(INTERFACE_GLOB),
  v.rawCheck(({dataset, addIssue}) => {
    if (!dataset.typed) return
    try {
      parseInterfaceGlob(dataset.value)
    } catch (error) {
      if (!(error instanceof PatternError)) throw error
      addIssue({message: problemText(error.message, INTERFACE_GLOB)})
    }
  }),
)
const INTERFACES = 'a list of interface globs the daemon attaches to, e.g. ["eth*", "!eth9"]'

const DIRECTION = 'ingress, egress or both'
const direction = v.picklist(['ingress', 'egress', 'both'], (issue) => problemText(`expected ${DIRECTION}, got ${describe(issue.input)}`, DIRECTION))

const DROPS = "true (count the namespace's drops per flow, as meter attach --drops) or false"

const CAPACITY = `an integer from ${MIN_CAPACITY} to ${MAX_CAPACITY} (flows per flow map, as meter attach --capacity)`

const meter = map(
  {
    netns: netnsPattern,
    observationDomainId: v.nullish(integer(0, 0xffffffff)),
    interfaces: v.nullish(list(interfaceGlob, INTERFACES, problemText('the list is empty', INTERFACES))),
    direction: v.nullish(direction),
    capacity: v.nullish(integer(MIN_CAPACITY, MAX_CAPACITY, CAPACITY)),
    sampling: v.nullish(
      integer(
        MIN_SAMPLING_INTERVAL,
        MAX_SAMPLING_INTERVAL,
        `an integer from ${MIN_SAMPLING_INTERVAL} (every packet) to ${MAX_SAMPLING_INTERVAL} (1 packet in ${MAX_SAMPLING_INTERVAL})`,
      ),
    ),
    drops: v.nullish(v.boolean((issue) => problemText(`expected true or false, got ${describe(issue.input)}`, DROPS))),
  },
  {netns: NETNS},
)

const listen = v.lazy((input) => (input === '' ? v.literal('') : address('listen')))

const MESSAGE_SIZE = `an integer from ${MIN_MESSAGE_SIZE} to ${MAX_MESSAGE_SIZE} (bytes of UDP payload)`

/** The whole file. Every key may be left out or left empty. */
const CONFIG_SCHEMA = map({
  observationDomainId: v.nullish(integer(0, 0xffffffff)),
  enterpriseNumber: v.nullish(integer(1, 0xffffffff, "an IANA Private Enterprise Number from 1 to 4294967295 (yours), for flowctl's own IPFIX elements")),
  maxMessageSize: v.nullish(integer(MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE, MESSAGE_SIZE)),
  maxIpfixMessageLen: v.nullish(integer(MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE, MESSAGE_SIZE)),
  templateRefreshSeconds: v.nullish(seconds(FLOORS.templateRefreshSeconds)),
  timerTemplateFlushSeconds: v.nullish(seconds(FLOORS.templateRefreshSeconds)),
  statsIntervalSeconds: v.nullish(seconds()),
  spoolBytes: v.nullish(integer(0, 2 ** 40, 'an integer from 0 (no spool) to 2^40 (bytes held per collector while it is down)')),
  spoolTotalBytes: v.nullish(integer(0, 2 ** 40, 'an integer from 0 (no spool) to 2^40 (bytes held for all collectors together)')),
  replayBytesPerSecond: v.nullish(replayRate),
  sendBytesPerSecond: v.nullish(sendRate),
  drainIntervalSeconds: v.nullish(seconds(FLOORS.drainIntervalSeconds)),
  timerFinishedDrainSeconds: v.nullish(seconds(FLOORS.drainIntervalSeconds)),
  idleTimeoutSeconds: v.nullish(seconds()),
  activeTimeoutSeconds: v.nullish(seconds()),
  timerForceDrainSeconds: v.nullish(seconds()),
  collectors: v.nullish(list(collector, 'a list of collectors: {address: HOST:PORT}')),
  logs: v.nullish(list(log, 'a list of log outputs: {file: PATH, hooks: [...]}')),
  outputs: v.nullish(list(output, 'a list of {collector: {remoteAddress: HOST:PORT}} or {log: {file: PATH}}')),
  templates: v.nullish(
    list(
      template,
      'a list of templates: {id: 256..65535, fields: [NAME, ...]}',
      problemText('the list is empty', 'at least one template, or leave templates out for the default templates'),
    ),
  ),
  meters: v.nullish(
    list(
      meter,
      'a list of {netns: NAME, root or PATTERN, observationDomainId: ID, sampling: N, drops: BOOL, interfaces: [GLOB, ...], direction: DIRECTION, capacity: N}',
      problemText('the list is empty', 'at least one {netns: NAME or root}, or leave meters out for every attached meter'),
    ),
  ),
  metrics: v.nullish(map({listen: v.nullish(listen)})),
  stateFile: v.nullish(text('a file path')),
})

export type ConfigInput = v.InferOutput<typeof CONFIG_SCHEMA>
export type CollectorInput = v.InferOutput<typeof collector>
export type LogInput = v.InferOutput<typeof log>
export type TemplateInput = v.InferOutput<typeof template>

/** A problem the schema found: where (a key path and which of its nodes) and what, as one line. */
export interface SchemaProblem {
  path: PathKey[]
  anchor: 'value' | 'key' | 'map'
  message: string
}

/** Checks `data` (the document as plain data) against the schema: the output, or every problem found. */
export function checkShape(data: unknown, options: {allowUnfillable?: boolean} = {}): {ok: true; value: ConfigInput} | {ok: false; problems: SchemaProblem[]} {
  const result = allowingUnfillable(options.allowUnfillable === true, () => v.safeParse(CONFIG_SCHEMA, data ?? {}, {abortPipeEarly: true}))
  if (result.success) return {ok: true, value: result.output}
  return {
    ok: false,
    problems: result.issues.map((issue) => {
      const path = (issue.path ?? []).map((step) => step.key as PathKey)
      const last = issue.path?.at(-1)
      const anchor = last?.origin === 'key' ? (issue.expected === 'never' ? 'key' : 'map') : 'value'
      return {path, anchor, message: issue.message}
    }),
  }
}
