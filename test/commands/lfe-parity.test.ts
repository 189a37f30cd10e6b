/**
 * linux-flow-exporter parity: the older tool's command lines and files, as its users have them,
 * run against flowctl. Its files are copied unchanged under test/fixtures/lfe/ (see NOTICE.flow-files).
 * What needs the kernel (namespaces, meters) is in test/e2e/lfe-parity.test.ts.
 */
import assert from 'node:assert/strict'
import {mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {release, tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {listen} from '../helpers/listen.js'
import {REPO_ROOT} from '../helpers/unit.js'

const CLI = `${REPO_ROOT}bin/run.js`
const FIXTURES = `${REPO_ROOT}test/fixtures/lfe/`
const DUMMY = `${FIXTURES}dummy_flow_test/`

async function flowctl(args: string[], options: {cwd?: string} = {}): Promise<{stdout: string; stderr: string; exitCode: number}> {
  const r = await execa(process.execPath, [CLI, ...args], {reject: false, timeout: 60_000, cwd: options.cwd})
  return {stdout: String(r.stdout), stderr: String(r.stderr), exitCode: r.exitCode ?? -1}
}

/** The decoded records of `ipfix listen --json`, without what changes from run to run. */
function records(stdout: string): Record<string, unknown>[] {
  return stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const {exporter, exportTime, sequenceNumber, observationDomainId, ...rest} = JSON.parse(line) as Record<string, unknown>
      void [exporter, exportTime, sequenceNumber, observationDomainId]
      return rest
    })
}

describe('linux-flow-exporter parity (files and command lines)', function () {
  this.timeout(120_000)
  let dir: string

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'flowctl-lfe-'))
  })
  after(async function () {
    await rm(dir, {recursive: true, force: true})
  })

  describe('examples/dummy_flow_test', function () {
    it('its config.yaml passes config check unchanged', async function () {
      const r = await flowctl(['config', 'check', '-c', `${DUMMY}config.yaml`])
      assert.equal(r.exitCode, 0, r.stderr)
      assert.match(r.stdout, /1001/)
      assert.match(r.stdout, /1002/)
    })

    it('`flowctl ipfix file -c config.yaml -f flow.yaml` sends every flow; fields a template lacks are said once and left out', async function () {
      // The one change to the older files: the collector is ours (the example's is a public address).
      const config = await readFile(`${DUMMY}config.yaml`, 'utf8')
      const l = await listen(['--json', '--count', '13'])
      const local = config.replace('35.194.97.218:2055', `127.0.0.1:${l.port}`).replace('0.0.0.0:50101', '127.0.0.1:0')
      assert.notEqual(local, config)
      await writeFile(join(dir, 'config.yaml'), local)
      const sent = await flowctl(['ipfix', 'file', '-c', join(dir, 'config.yaml'), '-f', `${DUMMY}flow.yaml`])
      assert.equal(sent.exitCode, 0, sent.stderr)
      assert.match(sent.stdout, new RegExp(`^127\\.0\\.0\\.1:${l.port}: 13 records in \\d+ messages`))
      const notes = sent.stderr.split('\n').filter((line) => /not sent/.test(line))
      assert.deepEqual(notes, [
        `flowctl: ${DUMMY}flow.yaml: not sent, as their template lacks them: sourceTransportPort, destinationTransportPort (template 1001)`,
      ])
      const r = await l.done
      assert.equal(r.code, 0, r.stderr)
      const got = records(r.stdout)
      assert.equal(got.length, 13)
      const first = {templateId: 1001, sourceIPv4Address: '10.1.0.1', destinationIPv4Address: '10.1.0.2', protocolIdentifier: 6, packetDeltaCount: 100}
      const second = {
        templateId: 1002,
        sourceIPv4Address: '10.1.0.1',
        destinationIPv4Address: '10.1.0.3',
        protocolIdentifier: 6,
        sourceTransportPort: 8888,
        destinationTransportPort: 22,
        packetDeltaCount: 1000,
      }
      assert.deepEqual(got, [...Array<typeof first>(6).fill(first), ...Array<typeof second>(7).fill(second)])
    })

    it('`ipfix send` is the same command', async function () {
      const help = await flowctl(['ipfix', 'file', '--help'])
      assert.equal(help.exitCode, 0, help.stderr)
      assert.match(help.stdout, /Send flows written in YAML/)
    })
  })

  describe('elements the older tool names', function () {
    const LFE_NAMES = [
      'FlowEndMilliseconds',
      'FlowStartMilliseconds',
      'FlowEndNanoseconds',
      'FlowStartNanoseconds',
      'OctetDeltaCount',
      'PacketDeltaCount',
      'IpVersion',
      'IngressInterface',
      'EgressInterface',
      'FlowDirection',
      'SourceIPv4Address',
      'DestinationIPv4Address',
      'SourceTransportPort',
      'DestinationTransportPort',
      'TcpControlBits',
      'ProtocolIdentifier',
      'IpClassOfService',
      'SourceIPv4PrefixLength',
      'DestinationIPv4PrefixLength',
      'IpNextHopIPv4Address',
      'BgpSourceAsNumber',
      'BgpDestinationAsNumber',
      'BgpNextHopIPv4Address',
      'IcmpTypeCodeIPv4',
      'MinimumTTL',
      'MaximumTTL',
      'FragmentIdentification',
      'VlanId',
      'FlowEndReason',
      'Dot1qVlanId',
      'Dot1qCustomerVlanId',
    ]

    it('a flow file may give every one of them (and forwardingStatus) with its value, in a template that names them', async function () {
      const l = await listen(['--json', '--count', '1'])
      const names = [...LFE_NAMES, 'forwardingStatus']
      await writeFile(
        join(dir, 'all.yaml'),
        `collectors:\n- remoteAddress: 127.0.0.1:${l.port}\nmaxIpfixMessageLen: 1400\ntemplates:\n- id: 1010\n  template:\n${names.map((n) => `  - name: ${n}\n`).join('')}`,
      )
      // Distinct values, each fitting its element's type.
      const value = (n: string, i: number): string => (/IPv4Address$/.test(n) ? `0x0a0100${(i + 16).toString(16)}` : String(i + 1))
      await writeFile(
        join(dir, 'all-flows.yaml'),
        `flowsets:\n- templateId: 1010\n  flows:\n  - ${names.map((n, i) => `${n}: ${value(n, i)}`).join('\n    ')}\n`,
      )
      const sent = await flowctl(['ipfix', 'send', '-c', join(dir, 'all.yaml'), '-f', join(dir, 'all-flows.yaml')])
      assert.equal(sent.exitCode, 0, sent.stderr)
      assert.equal(sent.stderr, '')
      const r = await l.done
      const [got] = records(r.stdout)
      const lower = (n: string) => n[0].toLowerCase() + n.slice(1)
      for (const [i, n] of names.entries()) {
        const key = lower(n).replace(/^ipVersion$/, 'ipVersion')
        const expected = /IPv4Address$/.test(n) ? `10.1.0.${i + 16}` : i + 1
        assert.ok(key in got, `${key} decoded (got ${Object.keys(got).join(', ')})`)
        if (/Nanoseconds|Milliseconds/.test(n)) continue // dateTime values decode as times
        assert.equal(got[key], expected, key)
      }
    })

    it('config check refuses those the kernel cannot give, saying why', async function () {
      const cases: [string, RegExp][] = [
        ['BgpSourceAsNumber', /bgpSourceAsNumber \(16\): BGP attributes live in a routing daemon's table/],
        ['SourceIPv4PrefixLength', /sourceIPv4PrefixLength \(9\): the prefix length of the route a packet matched/],
        ['FragmentIdentification', /fragmentIdentification \(54\): a flow spans many datagrams/],
      ]
      for (const [name, reason] of cases) {
        await writeFile(
          join(dir, 'one.yaml'),
          `collectors:\n- remoteAddress: 198.18.0.2:2055\ntemplates:\n- id: 1001\n  template:\n  - name: SourceIPv4Address\n  - name: ${name}\n`,
        )
        const r = await flowctl(['config', 'check', '-c', join(dir, 'one.yaml')])
        assert.equal(r.exitCode, 2, `${name}: ${r.stdout}`)
        assert.match(r.stderr, reason)
        assert.equal(r.stderr.trim().split('\n').length, 1)
      }
    })

    it('a flow naming no registry element is refused with a suggestion', async function () {
      await writeFile(join(dir, 'typo.yaml'), 'flowsets:\n- templateId: 1001\n  flows:\n  - SourceIPv4Adress: 0x0a010001\n')
      const r = await flowctl(['ipfix', 'send', '-c', `${DUMMY}config.yaml`, '-f', join(dir, 'typo.yaml')])
      assert.equal(r.exitCode, 2, r.stdout)
      assert.match(r.stderr, /flows\[0\]\.SourceIPv4Adress: unknown information element; did you mean sourceIPv4Address\?/)
    })
  })

  describe('commands', function () {
    it('`flowctl version` and `flowctl --version`: version, git commit, Node, kernel', async function () {
      const pkg = JSON.parse(await readFile(`${REPO_ROOT}package.json`, 'utf8')) as {version: string}
      for (const args of [['version'], ['--version']]) {
        const r = await flowctl(args)
        assert.equal(r.exitCode, 0, r.stderr)
        const lines = r.stdout.split('\n')
        assert.equal(lines[0], `flowctl ${pkg.version}`)
        assert.match(lines[1], /^git commit: ([0-9a-f]{12}(-dirty)?|unknown)$/)
        assert.equal(lines[2], `node: ${process.version} (${process.platform}-${process.arch})`)
        assert.equal(lines[3], `kernel: ${release()}`)
      }
      const head = await execa('git', ['-C', REPO_ROOT, 'rev-parse', '--short=12', 'HEAD'], {reject: false})
      if (head.exitCode === 0) {
        const info = JSON.parse((await flowctl(['version', '--json'])).stdout) as {commit: string}
        assert.equal(info.commit.replace(/-dirty$/, ''), String(head.stdout).trim())
      }
    })

    it('`flowctl ebpf code-dump` prints every C file the meter is built from', async function () {
      const r = await flowctl(['ebpf', 'code-dump'])
      assert.equal(r.exitCode, 0, r.stderr)
      const files = (await readdir(`${REPO_ROOT}bpf`)).filter((f) => /\.(c|h)$/.test(f)).sort()
      assert.ok(files.length >= 2, files.join(', '))
      let expected = ''
      for (const f of files) {
        const text = await readFile(`${REPO_ROOT}bpf/${f}`, 'utf8')
        expected += `/* ==== bpf/${f} ==== */\n${text}${text.endsWith('\n') ? '' : '\n'}`
      }
      assert.equal(`${r.stdout}\n`, expected)
    })

    it('`. <(flowctl completion bash)` installs a completion for flowctl that knows its commands', async function () {
      const r = await flowctl(['completion', 'bash'])
      assert.equal(r.exitCode, 0, r.stderr)
      await writeFile(join(dir, 'completion.bash'), r.stdout)
      const sourced = await execa('bash', ['-c', `. ${join(dir, 'completion.bash')} && complete -p flowctl`], {reject: false})
      assert.equal(sourced.exitCode, 0, String(sourced.stderr))
      assert.match(String(sourced.stdout), /^complete -F \S+ flowctl$/)
      for (const id of ['meter:attach', 'dump', 'flush', 'ipfix:send', 'ebpf:code-dump', 'version']) assert.match(r.stdout, new RegExp(`^${id} `, 'm'))
    })
  })

  describe('flag errors', function () {
    it('a value that does not parse says why', async function () {
      const r = await flowctl(['meter', 'attach', '--capacity', 'abc', '-n', 'eth0'])
      assert.equal(r.exitCode, 2)
      assert.equal(r.stderr, 'flowctl: Parsing --capacity: Expected an integer but received: abc')
    })

    it('meter detach --all with --netns or -n is refused, before anything is read', async function () {
      for (const args of [
        ['--all', '--netns', 'ns1'],
        ['--all', '-n', 'eth0'],
        ['--all', '-i', 'ns1:*'],
      ]) {
        const r = await flowctl(['meter', 'detach', ...args])
        assert.equal(r.exitCode, 2, args.join(' '))
        assert.match(r.stderr, /^flowctl: --all detaches every meter of every namespace: drop --all/)
      }
    })

    it('-l/--interface-max-flow-limit and --capacity do not go together', async function () {
      const r = await flowctl(['meter', 'attach', '-l', '6', '--capacity', '100', '-n', 'eth0'])
      assert.equal(r.exitCode, 2)
      assert.equal(r.stderr, 'flowctl: --capacity=100 cannot also be provided when using --interface-max-flow-limit')
    })
  })
})
