import assert from 'node:assert/strict'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import type {Config} from '../../src/config/config.js'
import {ConfigError, defaultConfig, loadConfig, parseConfig} from '../../src/config/load.js'
import {InvalidInputError} from '../../src/errors.js'
import {EXPORTABLE_ELEMENTS} from '../../src/ipfix/export/exportable-elements.js'
import {REPO_ROOT} from '../helpers/unit.js'

/** The older tool's example files, verbatim (see test/fixtures/lfe/NOTICE). */
const LFE_EXAMPLES = join(REPO_ROOT, 'test', 'fixtures', 'lfe', 'examples')

/** The older tool's config.yaml (linux-flow-exporter's agent). */
const OLD_CONFIG_YAML = `maxIpfixMessageLen: 100
timerFinishedDrainSeconds: 1
timerForceDrainSeconds: 30
timerTemplateFlushSeconds: 60
outputs:
- collector:
    remoteAddress: 35.194.97.218:2055
    localAddress: 0.0.0.0:50101
- collector:
    remoteAddress: localhost:2100
- log:
    file: /tmp/flowlog.json
    hooks:
    - name: add hostname
      shell: |
        #!/bin/sh
        jq '[.[] | . + {host: "x"}]'
    - command: /usr/bin/cmd1
templates:
- id: 1001
  template:
  - name: SourceIPv4Address
  - name: DestinationIPv4Address
  - name: ProtocolIdentifier
  - name: OctetDeltaCount
  - name: PacketDeltaCount
`

/** The older tool's README example. */
const OLD_README_YAML = `collectors:
- address: 10.146.0.6:2100
templates:
- id: 1024
  template:
  - FlowEndMilliseconds
  - FlowStartMilliseconds
  - OctetDeltaCount
  - PacketDeltaCount
  - IpVersion
  - FlowDirection
  - SourceIPv4Address
  - DestinationIPv4Address
`

const NEW_YAML = `observationDomainId: 42
maxMessageSize: 1200
templateRefreshSeconds: 30
statsIntervalSeconds: 120
spoolTotalBytes: 16777216
replayBytesPerSecond: 5000000
sendBytesPerSecond: 20000000
drainIntervalSeconds: 0.5
idleTimeoutSeconds: 10
activeTimeoutSeconds: 300
collectors:
- address: 198.18.0.2:4739
- address: "[2001:db8::2]:4739"
  source: "[2001:db8::1]:0"
  templates: [301]
- name: ' central '
  address: collector.example.net:2055
  source: 198.18.0.1:50101
  templates: [300, 301]
  replayBytesPerSecond: 1000000
  sendBytesPerSecond: 0
templates:
- id: 300
  fields:
  - sourceIPv4Address
  - DESTINATIONIPV4ADDRESS
  - {name: octetDeltaCount, length: 4}
  - name: packetDeltaCount
    length: 4
  - flowEndMilliseconds
- id: 301
  fields: [sourceIPv6Address, destinationIPv6Address, octetDeltaCount, flowEndMilliseconds]
logs:
- file: '-'
- file: /var/log/flowctl/flows.json
  hooks:
  - name: enrich
    command: [/usr/local/bin/enrich, --site, tokyo]
    timeoutSeconds: 2.5
  - shell: jq .
meters:
- netns: root
- netns: lab-a
  observationDomainId: 7
  sampling: 3
metrics:
  listen: '[::1]:9100'
stateFile: /run/flowctl/state.json
`

const DEFAULTS = {
  observationDomainId: 1,
  maxMessageSize: 1400,
  templateRefreshSeconds: 60,
  statsIntervalSeconds: 60,
  spoolBytes: 32 << 20,
  spoolTotalBytes: 64 << 20,
  replayBytesPerSecond: 5_000_000,
  sendBytesPerSecond: 0,
  drainIntervalSeconds: 1,
  idleTimeoutSeconds: 15,
  activeTimeoutSeconds: 60,
  metrics: {listen: '127.0.0.1:9999'},
  stateFile: null,
}

function pick(config: Config, keys: (keyof typeof DEFAULTS)[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, config[k]]))
}

describe('config/load', function () {
  describe("the older tool's configs", function () {
    it('loads its config.yaml with outputs, hooks, timers and {name} template fields', function () {
      const config = parseConfig(OLD_CONFIG_YAML, 'config.yaml')
      assert.deepEqual(config, {
        file: 'config.yaml',
        observationDomainId: 1,
        maxMessageSize: 100,
        templateRefreshSeconds: 60,
        statsIntervalSeconds: 60,
        spoolBytes: 32 << 20,
        spoolTotalBytes: 64 << 20,
        replayBytesPerSecond: 5_000_000,
        sendBytesPerSecond: 0,
        drainIntervalSeconds: 1,
        idleTimeoutSeconds: 15,
        activeTimeoutSeconds: 30,
        collectors: [
          {name: '35.194.97.218:2055', remote: {host: '35.194.97.218', port: 2055}, source: {host: '0.0.0.0', port: 50101}},
          {name: 'localhost:2100', remote: {host: 'localhost', port: 2100}},
        ],
        templates: [
          {
            id: 1001,
            fields: [
              {name: 'sourceIPv4Address', id: 8, length: 4},
              {name: 'destinationIPv4Address', id: 12, length: 4},
              {name: 'protocolIdentifier', id: 4, length: 1},
              {name: 'octetDeltaCount', id: 1, length: 8},
              {name: 'packetDeltaCount', id: 2, length: 8},
            ],
          },
        ],
        templatesDefaulted: false,
        logs: [
          {
            file: '/tmp/flowlog.json',
            hooks: [
              {name: 'add hostname', timeoutMs: 5000, shell: '#!/bin/sh\njq \'[.[] | . + {host: "x"}]\'\n'},
              {timeoutMs: 5000, command: ['/usr/bin/cmd1']},
            ],
          },
        ],
        metrics: {listen: '127.0.0.1:9999'},
        stateFile: null,
      })
    })

    it('keeps its maxIpfixMessageLen of 100: small sizes are fine while every template fits', function () {
      assert.equal(parseConfig(OLD_CONFIG_YAML, 'config.yaml').maxMessageSize, 100)
      const big = parseConfig(OLD_CONFIG_YAML.replace('maxIpfixMessageLen: 100', 'maxIpfixMessageLen: 1400'), 'config.yaml')
      assert.equal(big.maxMessageSize, 1400)
    })

    it('loads its examples/agent_output_hook/config.yaml verbatim: a log output alone, maxIpfixMessageLen 100', async function () {
      for (const name of ['config.yaml', 'config.016ca27.yaml']) {
        const file = join(LFE_EXAMPLES, 'agent_output_hook', name)
        const config = await loadConfig(file)
        assert.equal(config.maxMessageSize, 100, name)
        assert.deepEqual(config.collectors, [], name)
        assert.equal(config.logs.length, 1, name)
        assert.equal(config.logs[0].file, '/tmp/flowlog.json', name)
        assert.ok(config.logs[0].hooks.length >= 1, name)
        // The default templates do not fit 100 bytes, but no collector gets them: nothing is sent.
        assert.equal(config.templatesDefaulted, true, name)
      }
      const config = await loadConfig(join(LFE_EXAMPLES, 'agent_output_hook', 'config.yaml'))
      assert.deepEqual(
        config.logs[0].hooks.map((h) => [h.name, 'command' in h ? h.command : 'shell']),
        [
          ['hostname addition', ['./misc/hook_command_example_dummy.sh']],
          ['shell to resolve hostname', 'shell'],
          ['shell to resolve ifname from ifindex', 'shell'],
        ],
      )
      assert.deepEqual(pick(config, ['drainIntervalSeconds', 'templateRefreshSeconds']), {drainIntervalSeconds: 1, templateRefreshSeconds: 60})
      assert.equal(config.activeTimeoutSeconds, 30)
    })

    it('loads its README form: collectors with address, templates of plain names', function () {
      const config = parseConfig(OLD_README_YAML, 'config.yaml')
      assert.deepEqual(config.collectors, [{name: '10.146.0.6:2100', remote: {host: '10.146.0.6', port: 2100}}])
      assert.deepEqual(config.templates, [
        {
          id: 1024,
          fields: [
            {name: 'flowEndMilliseconds', id: 153, length: 8},
            {name: 'flowStartMilliseconds', id: 152, length: 8},
            {name: 'octetDeltaCount', id: 1, length: 8},
            {name: 'packetDeltaCount', id: 2, length: 8},
            {name: 'ipVersion', id: 60, length: 1},
            {name: 'flowDirection', id: 61, length: 1},
            {name: 'sourceIPv4Address', id: 8, length: 4},
            {name: 'destinationIPv4Address', id: 12, length: 4},
          ],
        },
      ])
      assert.equal(config.templatesDefaulted, false)
      assert.deepEqual(config.logs, [])
      assert.deepEqual(pick(config, Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]), DEFAULTS)
    })

    it('loads its config.yaml form of collectors: remoteAddress and localAddress', function () {
      const config = parseConfig('collectors:\n- remoteAddress: 10.146.0.6:2100\n  localAddress: 10.146.0.5:50101\n', 'config.yaml')
      assert.deepEqual(config.collectors, [{name: '10.146.0.6:2100', remote: {host: '10.146.0.6', port: 2100}, source: {host: '10.146.0.5', port: 50101}}])
    })
  })

  describe('the new form', function () {
    it('normalizes every setting', function () {
      const config = parseConfig(NEW_YAML, '/etc/flowctl/config.yaml')
      assert.deepEqual(config, {
        file: '/etc/flowctl/config.yaml',
        observationDomainId: 42,
        maxMessageSize: 1200,
        templateRefreshSeconds: 30,
        statsIntervalSeconds: 120,
        spoolBytes: 32 << 20,
        spoolTotalBytes: 16 << 20,
        replayBytesPerSecond: 5_000_000,
        sendBytesPerSecond: 20_000_000,
        drainIntervalSeconds: 0.5,
        idleTimeoutSeconds: 10,
        activeTimeoutSeconds: 300,
        collectors: [
          {name: '198.18.0.2:4739', remote: {host: '198.18.0.2', port: 4739}},
          {name: '[2001:db8::2]:4739', remote: {host: '2001:db8::2', port: 4739}, source: {host: '2001:db8::1', port: 0}, templateIds: [301]},
          {
            name: 'central',
            remote: {host: 'collector.example.net', port: 2055},
            source: {host: '198.18.0.1', port: 50101},
            templateIds: [300, 301],
            replayBytesPerSecond: 1_000_000,
            sendBytesPerSecond: 0,
          },
        ],
        templates: [
          {
            id: 300,
            fields: [
              {name: 'sourceIPv4Address', id: 8, length: 4},
              {name: 'destinationIPv4Address', id: 12, length: 4},
              {name: 'octetDeltaCount', id: 1, length: 4},
              {name: 'packetDeltaCount', id: 2, length: 4},
              {name: 'flowEndMilliseconds', id: 153, length: 8},
            ],
          },
          {
            id: 301,
            fields: [
              {name: 'sourceIPv6Address', id: 27, length: 16},
              {name: 'destinationIPv6Address', id: 28, length: 16},
              {name: 'octetDeltaCount', id: 1, length: 8},
              {name: 'flowEndMilliseconds', id: 153, length: 8},
            ],
          },
        ],
        templatesDefaulted: false,
        meters: [{netns: null}, {netns: 'lab-a', observationDomainId: 7, sampling: 3}],
        logs: [
          {file: '-', hooks: []},
          {
            file: '/var/log/flowctl/flows.json',
            hooks: [
              {name: 'enrich', timeoutMs: 2500, command: ['/usr/local/bin/enrich', '--site', 'tokyo']},
              {timeoutMs: 5000, shell: 'jq .'},
            ],
          },
        ],
        metrics: {listen: '[::1]:9100'},
        stateFile: '/run/flowctl/state.json',
      })
    })

    it('accepts each floor itself: drain 0.1 s, template refresh 1 s, hook timeout 0.1 s', function () {
      const config = parseConfig(
        'logs: [{file: /tmp/x, hooks: [{shell: cat, timeoutSeconds: 0.1}]}]\ndrainIntervalSeconds: 0.1\ntemplateRefreshSeconds: 1\n',
        null,
      )
      assert.equal(config.drainIntervalSeconds, 0.1)
      assert.equal(config.templateRefreshSeconds, 1)
      assert.equal(config.logs[0].hooks[0].timeoutMs, 100)
    })

    it('turns metrics off with an empty or null listen', function () {
      for (const listen of ["''", 'null', '']) {
        const config = parseConfig(`collectors: [{address: 192.0.2.1:4739}]\nmetrics:\n  listen: ${listen}\n`, null)
        assert.deepEqual(config.metrics, {listen: null}, listen)
      }
    })

    it('treats a key with an empty value as left out', function () {
      const config = parseConfig('collectors: [{address: 192.0.2.1:4739}]\ntemplates:\nidleTimeoutSeconds:\nmeters:\n', null)
      assert.equal(config.templatesDefaulted, true)
      assert.equal(config.idleTimeoutSeconds, 15)
      assert.equal('meters' in config, false)
    })

    it('asks for biflows per collector and per log (biflow: true), uniflows by default', function () {
      const config = parseConfig(
        'collectors:\n- address: 192.0.2.1:4739\n  biflow: true\n- address: 192.0.2.2:4739\n  biflow: false\n- address: 192.0.2.3:4739\nlogs:\n- {file: /tmp/a.json, biflow: true}\n- {file: /tmp/b.json}\n',
        null,
      )
      assert.deepEqual(
        config.collectors.map((c) => c.biflow),
        [true, undefined, undefined],
      )
      assert.deepEqual(config.logs, [
        {file: '/tmp/a.json', hooks: [], biflow: true},
        {file: '/tmp/b.json', hooks: []},
      ])
    })

    it('accepts a log output alone, and an alias to an anchor', function () {
      const config = parseConfig('logs: [{file: /tmp/a.json}]\n', null)
      assert.deepEqual(config.collectors, [])
      assert.deepEqual(config.logs, [{file: '/tmp/a.json', hooks: []}])
      const aliased = parseConfig('collectors:\n- address: 192.0.2.9:4739\n  templates: &t [257]\n- address: 192.0.2.10:4739\n  templates: *t\n', null)
      assert.deepEqual(
        aliased.collectors.map((c) => c.templateIds),
        [[257], [257]],
      )
    })
  })

  describe('templates and maxMessageSize', function () {
    const BIG =
      'templates:\n- id: 300\n  fields: [sourceIPv6Address, destinationIPv6Address, octetDeltaCount, packetDeltaCount, flowStartMilliseconds, flowEndMilliseconds]\n'
    const SMALL = '- id: 301\n  fields: [sourceIPv4Address, octetDeltaCount]\n'

    it('checks only the templates some collector gets: with no collector, no template is sent', function () {
      assert.equal(parseConfig('logs: [{file: /tmp/a}]\nmaxMessageSize: 80\n', null).maxMessageSize, 80)
      assert.equal(parseConfig(`logs: [{file: /tmp/a}]\nmaxMessageSize: 80\n${BIG}`, null).templates[0].id, 300)
      // 300 (64 bytes a record) does not fit 80 bytes; a collector that gets only 301 is fine.
      const config = parseConfig(`collectors: [{address: 192.0.2.1:4739, templates: [301]}]\nmaxMessageSize: 80\n${BIG}${SMALL}`, null)
      assert.deepEqual(config.collectors[0].templateIds, [301])
      assert.throws(() => parseConfig(`collectors: [{address: 192.0.2.1:4739, templates: [301, 300]}]\nmaxMessageSize: 80\n${BIG}${SMALL}`, null), {
        message: /^<config>:4:3: templates\[0\]: a record of this template takes 64 bytes/,
      })
      assert.throws(() => parseConfig(`collectors: [{address: 192.0.2.1:4739}]\nmaxMessageSize: 80\n${BIG}${SMALL}`, null), {
        message: /^<config>:4:3: templates\[0\]: /,
      })
    })

    it('accepts a template whose record fills maxMessageSize exactly, and not one byte less', function () {
      // 16 + 16 + 8 + 8 + 8 + 8 = 64 bytes a record, 20 of headers.
      assert.equal(parseConfig(`collectors: [{address: 192.0.2.1:4739}]\nmaxMessageSize: 84\n${BIG}`, null).maxMessageSize, 84)
      assert.throws(() => parseConfig(`collectors: [{address: 192.0.2.1:4739}]\nmaxMessageSize: 83\n${BIG}`, null), {
        message: /takes 64 bytes, which with the 20 bytes of message and set headers is more than maxMessageSize \(83\)/,
      })
    })
  })

  describe('meters the daemon attaches', function () {
    it('reads netns patterns, interface globs, direction and capacity; an entry without interfaces keeps its meaning', function () {
      const config = parseConfig(
        [
          'collectors: [{address: 192.0.2.1:4739}]',
          'meters:',
          '- netns: root',
          '- netns: tenant-*',
          '  interfaces: ["eth*", "v*", "!eth9"]',
          '  direction: ingress',
          '  capacity: 4096',
          '- netns: /^lab-[0-9]+$/',
          '  interfaces: [eth0]',
          '  observationDomainId: 3',
        ].join('\n') + '\n',
        'config.yaml',
      )
      assert.deepEqual(config.meters, [
        {netns: null},
        {netns: 'tenant-*', interfaces: ['eth*', 'v*', '!eth9'], direction: 'ingress', capacity: 4096},
        {netns: '/^lab-[0-9]+$/', interfaces: ['eth0'], observationDomainId: 3},
      ])
    })
  })

  describe('defaults', function () {
    it('fills in every default for a config with one collector', function () {
      const config = parseConfig('collectors:\n- address: 192.0.2.1:4739\n', 'config.yaml')
      assert.deepEqual(pick(config, Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]), DEFAULTS)
      assert.equal(config.templatesDefaulted, true)
      assert.equal(config.meters, undefined)
      assert.deepEqual(config.logs, [])
      assert.deepEqual(
        config.templates.map((t) => t.id),
        [256, 257],
      )
      const [v4, v6] = config.templates
      assert.deepEqual(v4.fields.slice(0, 3), [
        {name: 'sourceIPv4Address', id: 8, length: 4},
        {name: 'destinationIPv4Address', id: 12, length: 4},
        {name: 'sourceTransportPort', id: 7, length: 2},
      ])
      assert.deepEqual(v6.fields.slice(0, 2), [
        {name: 'sourceIPv6Address', id: 27, length: 16},
        {name: 'destinationIPv6Address', id: 28, length: 16},
      ])
      // The router's fields come last: the next hop of the family and the TTL range.
      assert.deepEqual(v4.fields.slice(-3), [
        {name: 'ipNextHopIPv4Address', id: 15, length: 4},
        {name: 'minimumTTL', id: 52, length: 1},
        {name: 'maximumTTL', id: 53, length: 1},
      ])
      assert.deepEqual(v6.fields.slice(-3), [
        {name: 'ipNextHopIPv6Address', id: 62, length: 16},
        {name: 'minimumTTL', id: 52, length: 1},
        {name: 'maximumTTL', id: 53, length: 1},
      ])
      assert.equal(v4.fields.length, 19)
    })

    it('defaultConfig is one collector at 127.0.0.1:4739 with the default templates', function () {
      const config = defaultConfig()
      assert.equal(config.file, null)
      assert.deepEqual(config.collectors, [{name: '127.0.0.1:4739', remote: {host: '127.0.0.1', port: 4739}}])
      assert.deepEqual(pick(config, Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]), DEFAULTS)
      assert.equal(config.templatesDefaulted, true)
      assert.deepEqual(config.templates, parseConfig('collectors: [{address: 127.0.0.1:4739}]\n', null).templates)
    })

    it('defaultConfig applies overrides and never shares its arrays', function () {
      const config = defaultConfig({maxMessageSize: 9000, file: 'x.yaml'})
      assert.equal(config.maxMessageSize, 9000)
      assert.equal(config.file, 'x.yaml')
      config.templates[0].fields.pop()
      config.collectors.pop()
      assert.equal(defaultConfig().templates[0].fields.length, 19)
      assert.equal(defaultConfig().collectors.length, 1)
    })
  })

  describe('loadConfig', function () {
    let dir: string
    before(async function () {
      dir = await mkdtemp(join(tmpdir(), 'flowctl-config-'))
    })
    after(async function () {
      await rm(dir, {recursive: true, force: true})
    })

    it('reads a file and names it in Config.file', async function () {
      const path = join(dir, 'config.yaml')
      await writeFile(path, OLD_README_YAML)
      const config = await loadConfig(path)
      assert.equal(config.file, path)
      assert.equal(config.templates[0].id, 1024)
    })

    it('reports a missing file as a ConfigError without a position', async function () {
      const path = join(dir, 'nope.yaml')
      await assert.rejects(loadConfig(path), (error: unknown) => {
        assert.ok(error instanceof ConfigError)
        assert.equal(error.message, `${path}: no such file (name the config with -c FILE)`)
        assert.equal(error.file, path)
        assert.equal(error.line, null)
        assert.equal(error.key, null)
        return true
      })
    })

    it('reports a directory as a ConfigError', async function () {
      await assert.rejects(loadConfig(dir), (error: unknown) => {
        assert.ok(error instanceof ConfigError)
        assert.equal(error.message, `${dir}: is a directory, not a config file`)
        return true
      })
    })
  })

  describe('ConfigError', function () {
    it('carries file, line, column and key, and exits 2 as invalid input', function () {
      assert.throws(
        () => parseConfig('collectors:\n- address: 192.0.2.1:4739\ntemplates:\n- id: 300\n  fields:\n  - name: SourceIPv4Adress\n', 'config.yaml'),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError)
          assert.ok(error instanceof InvalidInputError)
          assert.equal(error.exitCode, 2)
          assert.equal(error.file, 'config.yaml')
          assert.equal(error.line, 6)
          assert.equal(error.column, 11)
          assert.equal(error.key, 'templates[0].fields[0].name')
          assert.equal(
            error.message,
            "config.yaml:6:11: templates[0].fields[0].name: unknown information element 'SourceIPv4Adress'; did you mean sourceIPv4Address?",
          )
          return true
        },
      )
    })

    it('names text without a file <config>', function () {
      assert.throws(() => parseConfig('maxMessageSize: 5\n', null), {
        message: '<config>:1:17: maxMessageSize: 5 is out of range; allowed: an integer from 80 to 65507 (bytes of UDP payload)',
      })
    })
  })

  describe('bad configs', function () {
    const C = 'collectors:\n- address: 192.0.2.1:4739\n'
    const TOP =
      'observationDomainId, maxMessageSize, maxIpfixMessageLen, templateRefreshSeconds, timerTemplateFlushSeconds, statsIntervalSeconds, ' +
      'spoolBytes, spoolTotalBytes, replayBytesPerSecond, sendBytesPerSecond, drainIntervalSeconds, timerFinishedDrainSeconds, idleTimeoutSeconds, activeTimeoutSeconds, timerForceDrainSeconds, collectors, logs, ' +
      'outputs, templates, meters, metrics, stateFile'
    const EXPORTABLE = Object.keys(EXPORTABLE_ELEMENTS).join(', ')
    const REMOTE = 'HOST:PORT, IPV4:PORT or [IPV6]:PORT with a port from 1 to 65535'
    const SECONDS = 'a number of seconds greater than 0 and at most 2147483'
    const DRAIN_SECONDS = 'a number of seconds from 0.1 to 2147483'
    const REFRESH_SECONDS = 'a number of seconds from 1 to 2147483'
    const HOOK_SECONDS = 'a number of seconds from 0.1 to 2147483'
    const NO_OUTPUT =
      "at least one collector or log is required; allowed: collectors: [{address: HOST:PORT}], logs: [{file: PATH}], or the older tool's outputs: [{collector: {remoteAddress: HOST:PORT}}]"
    const HOOK = 'command: PROGRAM (or [PROGRAM, ARG, ...]) or shell: SCRIPT, one per hook'
    const LONG_TEMPLATE =
      '[sourceIPv6Address, destinationIPv6Address, flowStartMilliseconds, flowEndMilliseconds, flowStartMicroseconds, flowEndMicroseconds, ' +
      'flowStartNanoseconds, flowEndNanoseconds, octetDeltaCount, packetDeltaCount, flowStartSeconds, flowEndSeconds, flowDurationMilliseconds, flowDurationMicroseconds]'

    const ONE_BYTE_FIELDS = `[${[
      'octetDeltaCount',
      'packetDeltaCount',
      'sourceTransportPort',
      'destinationTransportPort',
      'protocolIdentifier',
      'tcpControlBits',
      'flowDirection',
      'flowEndReason',
      'ipClassOfService',
      'ipVersion',
      'ingressInterface',
      'egressInterface',
      'vlanId',
      'observationDomainId',
      'flowDurationMilliseconds',
    ]
      .map((name) => `{name: ${name}, length: 1}`)
      .join(', ')}]`

    const cases: [string, string, string][] = [
      // YAML itself
      ['a duplicate key', `${C}collectors: []\n`, 'config.yaml:3:1: invalid YAML: map keys must be unique'],
      [
        'an unclosed flow list',
        'templates: [1, 2\n',
        'config.yaml:2:1: invalid YAML: flow sequence in block collection must be sufficiently indented and end with a ]',
      ],
      ['tab indentation', 'collectors:\n\t- address: x\n', 'config.yaml:2:1: invalid YAML: tabs are not allowed as indentation'],
      [
        'an unquoted [IPv6]:PORT',
        'collectors:\n- address: [2001:db8::1]:4739\n',
        'config.yaml:2:25: invalid YAML: unexpected scalar at node end (an address in brackets must be quoted in YAML: "[2001:db8::1]:4739")',
      ],
      [
        'an unquoted [IPv6] read as a list',
        'collectors:\n- address: [2001:db8::1]\n',
        'config.yaml:2:12: collectors[0].address: [2001:db8::1] was read as a YAML list; allowed: a quoted address: "[2001:db8::1]:4739"',
      ],
      ['an alias without its anchor', 'collectors: *foo\n', 'config.yaml:1:13: collectors: the alias *foo names no anchor'],
      // structure and unknown keys
      ['a list at the top', '- a\n', `config.yaml:1:1: expected a map, got a list; allowed: a map with the keys ${TOP}`],
      ['an unknown top-level key', `${C}maxMessageLen: 1400\n`, `config.yaml:3:1: maxMessageLen: unknown key; allowed: ${TOP}`],
      [
        'a misspelt top-level key',
        `${C}drainIntervalSecond: 1\n`,
        `config.yaml:3:1: drainIntervalSecond: unknown key (did you mean drainIntervalSeconds?); allowed: ${TOP}`,
      ],
      [
        'a misspelt collector key',
        'collectors:\n- remoteAdress: 192.0.2.1:4739\n',
        'config.yaml:2:3: collectors[0].remoteAdress: unknown key (did you mean remoteAddress?); allowed: name, address, remoteAddress, source, localAddress, templates, replayBytesPerSecond, sendBytesPerSecond, biflow',
      ],
      [
        'an unknown output kind',
        'outputs:\n- logs: {file: /tmp/x}\n',
        'config.yaml:2:3: outputs[0].logs: unknown key (did you mean log?); allowed: collector, log',
      ],
      ['an unknown metrics key', `${C}metrics:\n  port: 9999\n`, 'config.yaml:4:3: metrics.port: unknown key; allowed: listen'],
      [
        'collectors as a string',
        'collectors: 10.0.0.1:4739\n',
        "config.yaml:1:13: collectors: expected a list, got the string '10.0.0.1:4739'; allowed: a list of collectors: {address: HOST:PORT}",
      ],
      [
        'templates as a map',
        `${C}templates: {id: 256}\n`,
        'config.yaml:3:12: templates: expected a list, got a map; allowed: a list of templates: {id: 256..65535, fields: [NAME, ...]}',
      ],
      ['stateFile as a number', `${C}stateFile: 5\n`, 'config.yaml:3:12: stateFile: expected a string, got the number 5; allowed: a file path'],
      // old and new names together
      [
        'maxMessageSize and maxIpfixMessageLen',
        `maxMessageSize: 1400\n${C}maxIpfixMessageLen: 1400\n`,
        "config.yaml:4:1: maxIpfixMessageLen: the same setting as maxMessageSize (line 1); allowed: only one of maxMessageSize or maxIpfixMessageLen (the older tool's name)",
      ],
      [
        'timerForceDrainSeconds and activeTimeoutSeconds',
        `${C}timerForceDrainSeconds: 30\nactiveTimeoutSeconds: 60\n`,
        "config.yaml:4:1: activeTimeoutSeconds: the same setting as timerForceDrainSeconds (line 3); allowed: only one of activeTimeoutSeconds or timerForceDrainSeconds (the older tool's name)",
      ],
      [
        'address and remoteAddress',
        'collectors:\n- address: 192.0.2.1:4739\n  remoteAddress: 192.0.2.2:4739\n',
        "config.yaml:3:3: collectors[0].remoteAddress: the same setting as address (line 2); allowed: only one of address or remoteAddress (the older tool's name)",
      ],
      [
        'fields and template',
        `${C}templates:\n- id: 300\n  fields: [octetDeltaCount]\n  template: [packetDeltaCount]\n`,
        "config.yaml:6:3: templates[0].template: the same setting as fields (line 5); allowed: only one of fields or template (the older tool's name)",
      ],
      [
        'outputs and collectors',
        `${C}outputs:\n- log: {file: /tmp/x}\n`,
        "config.yaml:3:1: outputs: outputs are also listed in collectors (line 1); allowed: either the older tool's outputs: [{collector: ...}, {log: ...}] or collectors: and logs:",
      ],
      // elements
      [
        'a misspelt element',
        `${C}templates:\n- id: 300\n  fields: [octetDeltaCount, SourceIPv4Adress]\n`,
        "config.yaml:5:29: templates[0].fields[1]: unknown information element 'SourceIPv4Adress'; did you mean sourceIPv4Address?",
      ],
      [
        'an element nothing like any',
        `${C}templates:\n- id: 300\n  fields:\n  - xyzzyplughfrobnicate\n`,
        `config.yaml:6:5: templates[0].fields[0]: unknown information element 'xyzzyplughfrobnicate'; allowed: an element flowctl can export: ${EXPORTABLE}`,
      ],
      [
        'an element flowctl cannot export',
        `${C}templates:\n- id: 300\n  fields:\n  - name: bgpSourceAsNumber\n`,
        `config.yaml:6:11: templates[0].fields[0].name: flowctl has no value for information element bgpSourceAsNumber (16): BGP attributes live in a routing daemon's table; the meter counts packets at tc and is not told which AS or BGP next hop a route came from; allowed: an element flowctl can export: ${EXPORTABLE}`,
      ],
      [
        'an element id instead of a name',
        `${C}templates:\n- id: 300\n  fields: [8]\n`,
        'config.yaml:5:12: templates[0].fields[0]: expected a string, got the number 8; allowed: an information element name',
      ],
      [
        'an element twice',
        `${C}templates:\n- id: 300\n  fields: [octetDeltaCount, OctetDeltaCount]\n`,
        'config.yaml:5:29: templates[0].fields[1]: octetDeltaCount is already fields[0] of this template; allowed: each element once per template',
      ],
      // lengths
      [
        'a reduced IPv4 address',
        `${C}templates:\n- id: 300\n  fields:\n  - {name: sourceIPv4Address, length: 2}\n`,
        'config.yaml:6:39: templates[0].fields[0].length: 2 is not a length for sourceIPv4Address (ipv4Address); allowed: 4',
      ],
      [
        'a counter longer than 8 bytes',
        `${C}templates:\n- id: 300\n  fields:\n  - {name: octetDeltaCount, length: 9}\n`,
        'config.yaml:6:37: templates[0].fields[0].length: 9 is not a length for octetDeltaCount (unsigned64); allowed: 1, 2, 3, 4, 5, 6, 7 or 8 (reduced-size encoding, RFC 7011 §6.2)',
      ],
      // templates
      [
        'a template id below 256',
        `${C}templates:\n- id: 255\n  fields: [octetDeltaCount]\n`,
        'config.yaml:4:7: templates[0].id: 255 is out of range; allowed: a template id from 256 to 65535 (0-255 are set ids)',
      ],
      [
        'a template id twice',
        `${C}templates:\n- id: 300\n  fields: [octetDeltaCount]\n- id: 300\n  fields: [packetDeltaCount]\n`,
        'config.yaml:6:7: templates[1].id: 300 is already the id of templates[0]; allowed: a unique template id from 256 to 65535',
      ],
      [
        'a quoted template id',
        `${C}templates:\n- id: '300'\n  fields: [octetDeltaCount]\n`,
        "config.yaml:4:7: templates[0].id: expected an integer, got the string '300' (write it without quotes); allowed: a template id from 256 to 65535 (0-255 are set ids)",
      ],
      [
        'a template without fields',
        `${C}templates:\n- id: 300\n  fields: []\n`,
        'config.yaml:5:11: templates[0].fields: a template needs at least one field; allowed: a list of information element names, or {name: NAME, length: BYTES}',
      ],
      [
        'a template without a field list',
        `${C}templates:\n- id: 300\n`,
        "config.yaml:4:3: templates[0].fields: missing; allowed: a list of information element names, or {name: NAME, length: BYTES} (or the older tool's template:)",
      ],
      [
        'a template of both families',
        `${C}templates:\n- id: 300\n  fields:\n  - sourceIPv4Address\n  - octetDeltaCount\n  - destinationIPv6Address\n`,
        'config.yaml:8:5: templates[0].fields[2]: destinationIPv6Address is IPv6-only but the template already has the IPv4-only sourceIPv4Address (fields[0]); ' +
          'a template cannot mix IPv4-only and IPv6-only fields; allowed: the fields of one address family per template (make one template for IPv4 and one for IPv6)',
      ],
      [
        'a template too large for maxMessageSize',
        `maxMessageSize: 128\n${C}templates:\n- id: 300\n  fields: ${LONG_TEMPLATE}\n`,
        'config.yaml:5:3: templates[0]: a record of this template takes 112 bytes, which with the 20 bytes of message and set headers is more than maxMessageSize (128), ' +
          'so it could never be sent; allowed: records of at most 108 bytes (drop fields, give shorter lengths, or raise maxMessageSize)',
      ],
      [
        'a template with too many fields to announce',
        `maxMessageSize: 80\n${C}templates:\n- id: 300\n  fields: ${ONE_BYTE_FIELDS}\n`,
        'config.yaml:5:3: templates[0]: announcing this template takes 64 bytes (4 + 4 per field), which with the 20 bytes of message and set headers is more than maxMessageSize (80), ' +
          'so it could never be sent; allowed: at most 14 fields (or raise maxMessageSize)',
      ],
      [
        'a collector naming a template that does not exist',
        'collectors:\n- address: 192.0.2.1:4739\n  templates: [256, 999]\n',
        'config.yaml:3:20: collectors[0].templates[1]: no template has the id 999; allowed: a list of template ids: 256, 257',
      ],
      // numbers
      ['a negative interval', `${C}drainIntervalSeconds: -1\n`, `config.yaml:3:23: drainIntervalSeconds: -1 is out of range; allowed: ${DRAIN_SECONDS}`],
      [
        'a negative spool size',
        `${C}spoolBytes: -1\n`,
        'config.yaml:3:13: spoolBytes: -1 is out of range; allowed: an integer from 0 (no spool) to 2^40 (bytes held per collector while it is down)',
      ],
      [
        'a replay too slow to make progress',
        `${C}replayBytesPerSecond: 0\n`,
        'config.yaml:3:23: replayBytesPerSecond: 0 is out of range; allowed: an integer from 10000 to 2^40 (bytes a second)',
      ],
      [
        "a collector's replay rate written with a unit",
        'collectors:\n- address: 192.0.2.1:4739\n  replayBytesPerSecond: 10MB\n',
        "config.yaml:3:25: collectors[0].replayBytesPerSecond: expected an integer, got the string '10MB'; allowed: an integer from 10000 to 2^40 (bytes a second)",
      ],
      [
        'a live pace too slow to make progress',
        `${C}sendBytesPerSecond: 5000\n`,
        'config.yaml:3:21: sendBytesPerSecond: 5000 is out of range; allowed: an integer from 10000 to 2^40 (bytes a second), or 0 (unpaced)',
      ],
      [
        'a paced export with no spool to wait in',
        `${C}spoolBytes: 0\nsendBytesPerSecond: 10000000\n`,
        'config.yaml:4:21: sendBytesPerSecond: the paced export waits its turn in the spool, and spoolBytes is 0: every message would be dropped; allowed: 0 (unpaced) while spoolBytes is 0, or a spoolBytes above 0',
      ],
      [
        "a collector's pace with no spool in all",
        'spoolTotalBytes: 0\ncollectors:\n- address: 192.0.2.1:4739\n- address: 192.0.2.2:4739\n  sendBytesPerSecond: 20000000\n',
        'config.yaml:5:23: collectors[1].sendBytesPerSecond: the paced export waits its turn in the spool, and spoolTotalBytes is 0: every message would be dropped; allowed: 0 (unpaced) while spoolTotalBytes is 0, or a spoolTotalBytes above 0',
      ],
      [
        "a collector's biflow as a word",
        'collectors:\n- address: 192.0.2.1:4739\n  biflow: yes\n',
        "config.yaml:3:11: collectors[0].biflow: expected true or false, got the string 'yes'; allowed: true or false",
      ],
      ['a zero timeout', `${C}idleTimeoutSeconds: 0\n`, `config.yaml:3:21: idleTimeoutSeconds: 0 is out of range; allowed: ${SECONDS}`],
      [
        'seconds with a unit',
        `${C}activeTimeoutSeconds: 60s\n`,
        `config.yaml:3:23: activeTimeoutSeconds: expected a number of seconds, got the string '60s'; allowed: ${SECONDS}`,
      ],
      [
        'quoted seconds',
        `${C}statsIntervalSeconds: '60'\n`,
        `config.yaml:3:23: statsIntervalSeconds: expected a number of seconds, got the string '60' (write it without quotes); allowed: ${SECONDS}`,
      ],
      [
        'a boolean interval',
        `${C}timerTemplateFlushSeconds: true\n`,
        `config.yaml:3:28: timerTemplateFlushSeconds: expected a number of seconds, got the boolean true; allowed: ${REFRESH_SECONDS}`,
      ],
      [
        'an idle timeout shorter than the drain interval',
        `${C}drainIntervalSeconds: 5\nidleTimeoutSeconds: 2\n`,
        'config.yaml:4:21: idleTimeoutSeconds: 2 is less than drainIntervalSeconds (5): flows leave only at a drain; allowed: at least 5',
      ],
      [
        'an active timeout shorter than the drain interval',
        `${C}timerFinishedDrainSeconds: 10\nidleTimeoutSeconds: 20\ntimerForceDrainSeconds: 5\n`,
        'config.yaml:5:25: timerForceDrainSeconds: 5 is less than timerFinishedDrainSeconds (10): flows leave only at a drain; allowed: at least 10',
      ],
      [
        'a drain interval longer than the default idle timeout',
        `${C}timerFinishedDrainSeconds: 100\n`,
        'config.yaml:3:28: timerFinishedDrainSeconds: 100 is more than idleTimeoutSeconds (15, the default); allowed: at most 15, or set idleTimeoutSeconds too',
      ],
      [
        'a drain interval below its floor',
        `${C}drainIntervalSeconds: 0.001\n`,
        'config.yaml:3:23: drainIntervalSeconds: 0.001 is less than 0.1: every drain walks the kernel maps, so draining more often costs CPU while idle and exports nothing sooner; ' +
          `allowed: ${DRAIN_SECONDS}`,
      ],
      [
        "the older tool's drain interval below the floor",
        `${C}timerFinishedDrainSeconds: 0.05\n`,
        'config.yaml:3:28: timerFinishedDrainSeconds: 0.05 is less than 0.1: every drain walks the kernel maps, so draining more often costs CPU while idle and exports nothing sooner; ' +
          `allowed: ${DRAIN_SECONDS}`,
      ],
      [
        'a template refresh below its floor',
        `${C}templateRefreshSeconds: 0.5\n`,
        `config.yaml:3:25: templateRefreshSeconds: 0.5 is less than 1: templates are sent again to every collector that often, which more often only floods the collectors; allowed: ${REFRESH_SECONDS}`,
      ],
      [
        'a hook timeout below its floor',
        'logs:\n- file: /tmp/x\n  hooks:\n  - shell: cat\n    timeoutSeconds: 0.05\n',
        'config.yaml:5:21: logs[0].hooks[0].timeoutSeconds: 0.05 is less than 0.1: starting a hook takes that long already, so a shorter timeout would kill every hook before it ran; ' +
          `allowed: ${HOOK_SECONDS}`,
      ],
      [
        'an observation domain beyond 32 bits',
        `${C}observationDomainId: 4294967296\n`,
        'config.yaml:3:22: observationDomainId: 4294967296 is out of range; allowed: an integer from 0 to 4294967295',
      ],
      [
        'a message size below 80',
        `${C}maxMessageSize: 79\n`,
        'config.yaml:3:17: maxMessageSize: 79 is out of range; allowed: an integer from 80 to 65507 (bytes of UDP payload)',
      ],
      [
        'a message size too small for the default templates',
        `${C}maxMessageSize: 100\n`,
        'config.yaml:3:17: maxMessageSize: 100 is too small for the default templates, whose largest record takes 101 bytes plus 20 of message and set headers; allowed: at least 121, or templates with fewer fields',
      ],
      [
        'a fractional message size',
        `${C}maxMessageSize: 1400.5\n`,
        'config.yaml:3:17: maxMessageSize: 1400.5 is not an integer; allowed: an integer from 80 to 65507 (bytes of UDP payload)',
      ],
      [
        'an old message size of 0',
        `${C}maxIpfixMessageLen: 0\n`,
        'config.yaml:3:21: maxIpfixMessageLen: 0 is out of range; allowed: an integer from 80 to 65507 (bytes of UDP payload)',
      ],
      [
        'a meter domain below 0',
        `${C}meters:\n- {netns: lab, observationDomainId: -1}\n`,
        'config.yaml:4:37: meters[0].observationDomainId: -1 is out of range; allowed: an integer from 0 to 4294967295',
      ],
      [
        'a meter sampling 1 in 0',
        `${C}meters:\n- netns: lab\n  sampling: 0\n`,
        'config.yaml:5:13: meters[0].sampling: 0 is out of range; allowed: an integer from 1 (every packet) to 65535 (1 packet in 65535)',
      ],
      [
        'a meter sampling past what a flow key holds',
        `${C}meters:\n- {netns: lab, sampling: 65536}\n`,
        'config.yaml:4:26: meters[0].sampling: 65536 is out of range; allowed: an integer from 1 (every packet) to 65535 (1 packet in 65535)',
      ],
      [
        'a meter sampling at a fraction',
        `${C}meters:\n- {netns: lab, sampling: 2.5}\n`,
        'config.yaml:4:26: meters[0].sampling: 2.5 is not an integer; allowed: an integer from 1 (every packet) to 65535 (1 packet in 65535)',
      ],
      // addresses
      [
        'an IPv4 address out of range',
        'collectors:\n- address: 300.1.1.1:2055\n',
        `config.yaml:2:12: collectors[0].address: '300.1.1.1' is not a valid IPv4 address; allowed: ${REMOTE}`,
      ],
      [
        'an address without a port',
        'collectors:\n- address: 10.0.0.1\n',
        `config.yaml:2:12: collectors[0].address: '10.0.0.1' has no port; allowed: ${REMOTE}, e.g. 10.0.0.1:4739`,
      ],
      [
        'a bare IPv6 address',
        "collectors:\n- address: '2001:db8::1'\n",
        "config.yaml:2:12: collectors[0].address: the IPv6 address '2001:db8::1' needs brackets and a port; allowed: [IPV6]:PORT, e.g. [2001:db8::1]:4739",
      ],
      ['a remote port 0', 'collectors:\n- address: 10.0.0.1:0\n', `config.yaml:2:12: collectors[0].address: port 0 is out of range; allowed: ${REMOTE}`],
      [
        'a source port beyond 65535',
        'collectors:\n- address: 10.0.0.1:4739\n  source: 0.0.0.0:70000\n',
        'config.yaml:3:11: collectors[0].source: port 70000 is out of range; allowed: IPV4:PORT or [IPV6]:PORT (or HOST:PORT) with a port from 0 (any) to 65535',
      ],
      [
        'an IPv6 source for an IPv4 collector',
        "collectors:\n- address: 10.0.0.1:4739\n  source: '[::]:0'\n",
        'config.yaml:3:11: collectors[0].source: the source is an IPv6 address but the collector 10.0.0.1:4739 is IPv4; allowed: an IPv4 source, e.g. 0.0.0.0:0',
      ],
      [
        'a host name with bad characters',
        'collectors:\n- address: bad_host!:4739\n',
        `config.yaml:2:12: collectors[0].address: 'bad_host!' is not an IPv4 address or a hostname; allowed: ${REMOTE}`,
      ],
      [
        'a metrics address without a port',
        `${C}metrics:\n  listen: 127.0.0.1\n`,
        "config.yaml:4:11: metrics.listen: '127.0.0.1' has no port; allowed: HOST:PORT, IPV4:PORT or [IPV6]:PORT with a port from 0 to 65535, e.g. 127.0.0.1:9999",
      ],
      [
        'the same collector twice',
        'collectors:\n- address: 10.0.0.1:4739\n- address: 10.0.0.1:4739\n',
        'config.yaml:3:12: collectors[1].address: the same collector as collectors[0].address; allowed: each collector once (collectors are named by their address in logs and metrics)',
      ],
      [
        'two collectors sending from one address and port',
        'collectors:\n- address: 10.0.0.1:4739\n  source: 10.0.0.9:5000\n- address: 10.0.0.2:4739\n  source: 10.0.0.9:5000\n',
        'config.yaml:5:11: collectors[1].source: the collector 10.0.0.2:4739 would send from the same address and port as the collector 10.0.0.1:4739 (collectors[0].source: 10.0.0.9:5000), ' +
          'and the second socket cannot bind; allowed: a source of its own for each collector (another port), or port 0 (any)',
      ],
      [
        'a collector sending from a port another one takes on every address',
        'outputs:\n- collector: {remoteAddress: 10.0.0.1:4739, localAddress: 0.0.0.0:5000}\n- collector: {remoteAddress: 10.0.0.2:4739, localAddress: 10.0.0.9:5000}\n',
        'config.yaml:3:59: outputs[1].collector.localAddress: the collector 10.0.0.2:4739 would send from the same port as the collector 10.0.0.1:4739 (outputs[0].collector.localAddress: 0.0.0.0:5000), ' +
          'and the second socket cannot bind; allowed: a source of its own for each collector (another port), or port 0 (any)',
      ],
      [
        'a NUL byte in a log file path',
        'logs:\n- file: "/var/log/flows\\0.json"\n',
        "config.yaml:2:9: logs[0].file: the path holds a NUL byte (\\0), which no file name can; allowed: a file path, or '-' for stdout",
      ],
      [
        'two collectors of one name',
        'collectors:\n- name: main\n  address: 10.0.0.1:4739\n- name: main\n  address: 10.0.0.2:4739\n',
        "config.yaml:4:9: collectors[1].name: the name main is collectors[0].name's too; allowed: a name of its own for each collector (its address as written, unless it has a name:)",
      ],
      [
        "a name that is another collector's address",
        'collectors:\n- address: 10.0.0.1:4739\n- name: 10.0.0.1:4739\n  address: 10.0.0.2:4739\n',
        "config.yaml:3:9: collectors[1].name: the name 10.0.0.1:4739 is collectors[0].address's too; allowed: a name of its own for each collector (its address as written, unless it has a name:)",
      ],
      [
        'an empty collector name',
        'collectors:\n- name: " "\n  address: 10.0.0.1:4739\n',
        'config.yaml:2:9: collectors[0].name: empty string; allowed: a name of 1 to 128 characters, no control characters (the collector in logs and metrics)',
      ],
      // outputs
      ['an empty file', '', `config.yaml:1:1: no output is configured: ${NO_OUTPUT}`],
      ['an empty collector list', 'collectors: []\n', `config.yaml:1:13: collectors: no output: ${NO_OUTPUT}`],
      [
        'an output that is both a collector and a log',
        'outputs:\n- collector: {remoteAddress: 10.0.0.1:2055}\n  log: {file: /tmp/x}\n',
        'config.yaml:3:3: outputs[0].log: an output is a collector or a log, not both; allowed: one of collector or log per list item',
      ],
      ['a log without a file', 'logs:\n- hooks: []\n', "config.yaml:2:3: logs[0].file: missing; allowed: a file path, or '-' for stdout"],
      [
        'the same log file twice',
        'logs:\n- file: /tmp/x\n- file: /tmp/x\n',
        'config.yaml:3:9: logs[1].file: the same file as logs[0].file; allowed: each file once',
      ],
      // hooks
      [
        'a hook with a command and a shell',
        'logs:\n- file: /tmp/x\n  hooks:\n  - command: /bin/cat\n    shell: cat\n',
        `config.yaml:5:5: logs[0].hooks[0].shell: a hook runs a command or a shell script, not both; allowed: ${HOOK}`,
      ],
      [
        'a hook with neither',
        'logs:\n- file: /tmp/x\n  hooks:\n  - name: nothing\n',
        `config.yaml:4:5: logs[0].hooks[0].command: missing: a hook needs a command or a shell script; allowed: ${HOOK}`,
      ],
      [
        'a hook with an empty argv',
        'logs:\n- file: /tmp/x\n  hooks:\n  - command: []\n',
        'config.yaml:4:14: logs[0].hooks[0].command: the list is empty; allowed: a list [PROGRAM, ARG, ...]',
      ],
      [
        'a hook timeout of 0',
        'logs:\n- file: /tmp/x\n  hooks:\n  - shell: cat\n    timeoutSeconds: 0\n',
        `config.yaml:5:21: logs[0].hooks[0].timeoutSeconds: 0 is out of range; allowed: ${HOOK_SECONDS}`,
      ],
      // meters
      [
        'a namespace name with a slash',
        `${C}meters:\n- netns: a/b\n`,
        "config.yaml:4:10: meters[0].netns: 'a/b' is not a namespace name; allowed: a namespace name from `ip netns list` (no /), or root",
      ],
      [
        'a namespace twice',
        `${C}meters:\n- netns: root\n- netns: lab\n- netns: root\n`,
        'config.yaml:6:10: meters[2].netns: root is already meters[0]; allowed: each namespace once',
      ],
      [
        'an interface glob with an unclosed bracket',
        `${C}meters:\n- netns: tenant-*\n  interfaces: [eth*, 'v[a-']\n`,
        "config.yaml:5:22: meters[0].interfaces[1]: 'v[a-' opens a [ that no ] closes (write \\[ for a bracket); allowed: an interface name or glob (eth*, veth?, en[a-z]*), or !GLOB to leave those out",
      ],
      [
        'a lone ! in the interfaces',
        `${C}meters:\n- netns: root\n  interfaces: ['!']\n`,
        'config.yaml:5:16: meters[0].interfaces[0]: a lone ! (write !GLOB to leave interfaces out); allowed: an interface name or glob (eth*, veth?, en[a-z]*), or !GLOB to leave those out',
      ],
      [
        'a namespace regular expression that does not compile',
        `${C}meters:\n- netns: /tenant-(/\n  interfaces: [eth0]\n`,
        "config.yaml:4:10: meters[0].netns: '/tenant-(/' is not a valid regular expression (unterminated group); allowed: a namespace name from `ip netns list`, root, a glob (tenant-*) or a /regular expression/",
      ],
      [
        'a direction without interfaces',
        `${C}meters:\n- netns: lab\n  direction: ingress\n`,
        'config.yaml:5:14: meters[0].direction: direction applies only to a meter the daemon attaches itself; allowed: interfaces: [GLOB, ...] beside it, or leave direction out',
      ],
      [
        'a direction that is not one',
        `${C}meters:\n- netns: lab\n  interfaces: [eth0]\n  direction: in\n`,
        "config.yaml:6:14: meters[0].direction: expected ingress, egress or both, got the string 'in'; allowed: ingress, egress or both",
      ],
      [
        'a capacity too small',
        `${C}meters:\n- netns: lab\n  interfaces: [eth0]\n  capacity: 8\n`,
        'config.yaml:6:13: meters[0].capacity: 8 is out of range; allowed: an integer from 16 to 16777216 (flows per flow map, as meter attach --capacity)',
      ],
      [
        'an empty meter list',
        `${C}meters: []\n`,
        'config.yaml:3:9: meters: the list is empty; allowed: at least one {netns: NAME or root}, or leave meters out for every attached meter',
      ],
    ]

    it('accepts collectors whose sources cannot take the same port: port 0, other ports, the IPv4 wildcard beside an IPv6 source', function () {
      const config = parseConfig(
        [
          'collectors:',
          '- {address: 10.0.0.1:4739, source: 10.0.0.9:0}',
          '- {address: 10.0.0.2:4739, source: 10.0.0.9:0}',
          '- {address: 10.0.0.3:4739, source: 10.0.0.9:5001}',
          '- {address: 10.0.0.4:4739, source: "0.0.0.0:5002"}',
          '- {address: "[fd00::4]:4739", source: "[fd00::9]:5002"}',
        ].join('\n') + '\n',
        'config.yaml',
      )
      assert.deepEqual(
        config.collectors.map((c) => c.source?.port),
        [0, 0, 5001, 5002, 5002],
      )
    })

    it('has a case for each rule', function () {
      assert.ok(cases.length >= 25)
      assert.equal(new Set(cases.map((c) => c[0])).size, cases.length)
    })

    for (const [title, text, message] of cases) {
      it(title, function () {
        assert.throws(
          () => parseConfig(text, 'config.yaml'),
          (error: unknown) => {
            assert.ok(error instanceof ConfigError, `not a ConfigError: ${String(error)}`)
            assert.equal(error.message, message)
            assert.equal(error.message.includes('\n'), false)
            return true
          },
        )
      })
    }
  })
})
