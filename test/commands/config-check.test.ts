import assert from 'node:assert/strict'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {REPO_ROOT} from '../helpers/unit.js'

const GOOD = `maxIpfixMessageLen: 100
timerFinishedDrainSeconds: 1
timerForceDrainSeconds: 30
outputs:
- collector:
    remoteAddress: 35.194.97.218:2055
    localAddress: 0.0.0.0:50101
- log:
    file: /tmp/flowlog.json
    hooks:
    - command: /usr/bin/cmd1
templates:
- id: 1001
  template:
  - name: SourceIPv4Address
  - name: OctetDeltaCount
  - {name: PacketDeltaCount, length: 4}
`

const BAD = `outputs:
- collector:
    remoteAddress: 35.194.97.218:2055
templates:
- id: 1001
  template:
  - name: SourceIPv4Adress
`

// execa strips the final newline of stdout and stderr.
async function check(args: string[]): Promise<{stdout: string; stderr: string; exitCode: number | undefined}> {
  const r = await execa(process.execPath, [`${REPO_ROOT}bin/run.js`, 'config', 'check', ...args], {reject: false, timeout: 60_000})
  return {stdout: String(r.stdout), stderr: String(r.stderr), exitCode: r.exitCode}
}

describe('commands/config check', function () {
  this.timeout(60_000)
  let dir: string
  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'flowctl-config-check-'))
    await writeFile(join(dir, 'good.yaml'), GOOD)
    await writeFile(join(dir, 'bad.yaml'), BAD)
  })
  after(async function () {
    await rm(dir, {recursive: true, force: true})
  })

  it('names the PEN and id of the enterprise-specific round-trip fields, and refuses them without a PEN in one line', async function () {
    const fields = 'fields: [sourceIPv4Address, tcpRttClientMicroseconds, tcpRttServerMicroseconds]'
    const withPen = join(dir, 'rtt.yaml')
    await writeFile(withPen, `enterpriseNumber: 32473\ncollectors:\n- address: 127.0.0.1:4739\ntemplates:\n- id: 300\n  ${fields}\n`)
    const ok = await check(['-c', withPen])
    assert.equal(ok.exitCode, 0, ok.stderr)
    assert.ok(
      ok.stdout.includes(
        '  300 (IPv4, 12 B per record): sourceIPv4Address, tcpRttClientMicroseconds (PEN 32473, id 1), tcpRttServerMicroseconds (PEN 32473, id 2)',
      ),
      ok.stdout,
    )
    const noPen = join(dir, 'rtt-nopen.yaml')
    await writeFile(noPen, `collectors:\n- address: 127.0.0.1:4739\ntemplates:\n- id: 300\n  ${fields}\n`)
    const refused = await check(['-c', noPen])
    assert.equal(refused.exitCode, 2)
    assert.equal(refused.stdout, '')
    assert.match(
      refused.stderr,
      /^flowctl: .*rtt-nopen\.yaml:5:31: templates\[0\]\.fields\[1\]: tcpRttClientMicroseconds is an enterprise-specific element: set enterpriseNumber .*$/,
    )
  })

  it("prints ok and a summary of the older tool's config", async function () {
    const file = join(dir, 'good.yaml')
    const r = await check(['-c', file])
    assert.equal(r.exitCode, 0, r.stderr)
    assert.deepEqual(r.stdout.split('\n'), [
      `${file}: ok (1 collector, 1 template, 1 log output)`,
      'settings: drain 1s, idle 15s, active 30s, template refresh 60s, stats 60s, max message 100 B, observation domain 1, metrics 127.0.0.1:9999',
      'templates:',
      '  1001 (IPv4, 16 B per record): sourceIPv4Address, octetDeltaCount, packetDeltaCount/4',
      '    flows with drops: template 2001 (+ forwardingStatus, droppedPacketDeltaCount, droppedOctetDeltaCount)',
      'collectors:',
      '  35.194.97.218:2055 from 0.0.0.0:50101 (all templates)',
      'spool: up to 32 MiB a collector, 64 MiB in all; worst case for 1 collector: 32 MiB held and 32.8 MiB of message buffers (64.8 MiB); replayed at 5 MB/s',
      'logs:',
      '  /tmp/flowlog.json (1 hook: /usr/bin/cmd1)',
      'meters: every attached meter',
    ])
    assert.equal(r.stderr, '')
  })

  it('warns of a meters entry with interfaces that takes no interface now, and passes', async function () {
    const file = join(dir, 'follow.yaml')
    await writeFile(
      file,
      `collectors: [{address: 192.0.2.1:4739}]\nstateFile: ${join(dir, 'state.json')}\nmeters:\n` +
        `- netns: "fct-nomatch-${process.pid}-*"\n  interfaces: ["eth*", "!eth9"]\n- netns: root\n  interfaces: [lo]\n  direction: ingress\n`,
    )
    const r = await check(['-c', file])
    assert.equal(r.exitCode, 0, r.stderr)
    assert.match(r.stdout, /^meters: fct-nomatch-\d+-\* \(the daemon attaches eth\*, !eth9, both ways\), root \(the daemon attaches lo, ingress\)$/m)
    // The root namespace has lo: only the first entry takes nothing.
    assert.equal(
      r.stderr,
      `flowctl: warning: meters[0] (fct-nomatch-${process.pid}-* (the daemon attaches eth*, !eth9, both ways)) takes no interface now; the daemon attaches one when it appears`,
    )
    assert.equal((await check(['-c', file, '--no-machine'])).stderr, '')
  })

  it('prints the normalized config with --json', async function () {
    const file = join(dir, 'good.yaml')
    const r = await check(['--config', file, '--json'])
    assert.equal(r.exitCode, 0, r.stderr)
    const config = JSON.parse(r.stdout) as {file: string; maxMessageSize: number; templates: unknown; logs: unknown}
    assert.equal(config.file, file)
    assert.equal(config.maxMessageSize, 100)
    assert.deepEqual(config.templates, [
      {
        id: 1001,
        fields: [
          {name: 'sourceIPv4Address', id: 8, length: 4},
          {name: 'octetDeltaCount', id: 1, length: 8},
          {name: 'packetDeltaCount', id: 2, length: 4},
        ],
      },
    ])
    assert.deepEqual(config.logs, [{file: '/tmp/flowlog.json', hooks: [{timeoutMs: 5000, command: ['/usr/bin/cmd1']}]}])
  })

  it('says the most memory the spools can take: the bounds held, and the message buffers of each collector and those kept for reuse', async function () {
    // 64 collectors at the defaults: 64 MiB together (not 64 x 32 MiB), 3 chunks of 256 KiB each
    // and the 128 kept for reuse.
    const many = join(dir, 'many.yaml')
    await writeFile(many, `collectors:\n${Array.from({length: 64}, (_, i) => `- address: 192.0.2.${i + 1}:4739\n`).join('')}`)
    const r = await check(['-c', many, '--no-machine'])
    assert.equal(r.exitCode, 0, r.stderr)
    assert.ok(
      r.stdout
        .split('\n')
        .includes(
          'spool: up to 32 MiB a collector, 64 MiB in all; worst case for 64 collectors: 64 MiB held and 80 MiB of message buffers (144 MiB); replayed at 5 MB/s',
        ),
      r.stdout,
    )
    // Smaller bounds, a named collector replayed at its own rate, the live export paced (one collector unpaced).
    const small = join(dir, 'small.yaml')
    await writeFile(
      small,
      'spoolBytes: 1048576\nspoolTotalBytes: 8388608\nreplayBytesPerSecond: 2500000\nsendBytesPerSecond: 15000000\ncollectors:\n- name: main\n  address: 192.0.2.1:4739\n  replayBytesPerSecond: 500000\n- address: 192.0.2.2:4739\n  sendBytesPerSecond: 0\n  biflow: true\n- address: "[2001:db8::1]:4739"\nlogs:\n- {file: /var/log/flowctl/biflows.json, biflow: true}\n',
    )
    const s = await check(['-c', small, '--no-machine'])
    assert.equal(s.exitCode, 0, s.stderr)
    const lines = s.stdout.split('\n')
    assert.deepEqual(lines.slice(lines.indexOf('collectors:') + 1, lines.indexOf('collectors:') + 5), [
      '  main at 192.0.2.1:4739 (all templates, replayed at 500 kB/s)',
      '  192.0.2.2:4739 (all templates, sent unpaced, biflows)',
      '  [2001:db8::1]:4739 (all templates)',
      'spool: up to 1 MiB a collector, 8 MiB in all; worst case for 3 collectors: 3 MiB held and 34.3 MiB of message buffers (37.3 MiB); replayed at 2.5 MB/s; sent at most 15 MB/s',
    ])
    assert.ok(lines.includes('  /var/log/flowctl/biflows.json (biflows)'), s.stdout)
  })

  it('prints the one-line error on stderr and exits 2 for a bad config', async function () {
    const file = join(dir, 'bad.yaml')
    const r = await check(['-c', file])
    assert.equal(r.exitCode, 2)
    assert.equal(r.stdout, '')
    assert.equal(
      r.stderr,
      `flowctl: ${file}:7:11: templates[0].template[0].name: unknown information element 'SourceIPv4Adress'; did you mean sourceIPv4Address?`,
    )
  })

  it("accepts the older tool's examples/agent_output_hook/config.yaml verbatim, the machine checks included", async function () {
    // Its log is /tmp/flowlog.json; it names hooks, and the fixture is not writable by others.
    const file = join(REPO_ROOT, 'test', 'fixtures', 'lfe', 'examples', 'agent_output_hook', 'config.yaml')
    const r = await check(['-c', file])
    assert.equal(r.exitCode, 0, r.stderr)
    assert.equal(r.stdout.split('\n')[0], `${file}: ok (0 collectors, 2 templates, default templates, 1 log output)`)
    assert.match(r.stdout, /\/tmp\/flowlog\.json \(3 hooks: hostname addition, shell to resolve hostname, shell to resolve ifname from ifindex\)/)
  })

  it('refuses what the daemon would on this machine, unless --no-machine', async function () {
    const file = join(dir, 'machine.yaml')
    await writeFile(file, `logs:\n- file: ${dir}/gone/flows.log\n`)
    const r = await check(['-c', file])
    assert.equal(r.exitCode, 2)
    assert.equal(r.stdout, '')
    assert.equal(
      r.stderr,
      `flowctl: ${file}: logs[0].file: the directory ${dir}/gone does not exist; allowed: a file in an existing directory (create it: mkdir -p ${dir}/gone)`,
    )
    const skipped = await check(['-c', file, '--no-machine'])
    assert.equal(skipped.exitCode, 0, skipped.stderr)
    assert.match(skipped.stdout, /: ok \(0 collectors, 2 templates, default templates, 1 log output\)/)
  })

  it('reads ./config.yaml by default and exits 2 when it is missing', async function () {
    const r = await execa(process.execPath, [`${REPO_ROOT}bin/run.js`, 'config', 'check'], {reject: false, cwd: dir, timeout: 60_000})
    assert.equal(r.exitCode, 2)
    assert.equal(String(r.stderr), 'flowctl: ./config.yaml: no such file (name the config with -c FILE)')
  })
})
