import assert from 'node:assert/strict'

import {CommandFailedError, ToolMissingError} from '../../src/errors.js'
import {firstMeaningfulLine, inNetns, run, runContained, start} from '../../src/sys/exec.js'

describe('sys/exec', function () {
  describe('run', function () {
    it('returns stdout and stderr of a program that succeeds', async function () {
      const r = await run(process.execPath, ['-e', 'process.stdout.write("out\\n"); process.stderr.write("err\\n")'])
      assert.deepEqual(r, {stdout: 'out', stderr: 'err'})
    })

    it('passes input on stdin', async function () {
      const r = await run(process.execPath, ['-e', 'process.stdin.pipe(process.stdout)'], {input: 'hello'})
      assert.equal(r.stdout, 'hello')
    })

    it('maps a program that does not exist to ToolMissingError', async function () {
      await assert.rejects(run('flowctl-no-such-tool', ['--version']), (e: unknown) => {
        assert.ok(e instanceof ToolMissingError, `got ${String(e)}`)
        assert.equal(e.tool, 'flowctl-no-such-tool')
        assert.equal(e.code, 'E_TOOL_MISSING')
        assert.match(e.message, /flowctl-no-such-tool is not installed/)
        return true
      })
    })

    it('names the Debian package of a known tool that is missing', async function () {
      await assert.rejects(run('ip', ['-V'], {env: {PATH: '/flowctl-nonexistent-dir'}}), (e: unknown) => {
        assert.ok(e instanceof ToolMissingError, `got ${String(e)}`)
        assert.equal(e.tool, 'ip')
        assert.match(e.message, /apt-get install -y iproute2/)
        return true
      })
    })

    it('reports a missing nsenter when running in a namespace', async function () {
      await assert.rejects(run('ip', ['link'], {netns: 'ns1', env: {PATH: '/flowctl-nonexistent-dir'}}), (e: unknown) => {
        assert.ok(e instanceof ToolMissingError, `got ${String(e)}`)
        assert.equal(e.tool, 'nsenter')
        assert.match(e.message, /util-linux/)
        return true
      })
    })

    it('maps a failing program to CommandFailedError with the meaningful stderr line', async function () {
      await assert.rejects(run('ip', ['link', 'show', 'dev', 'no-such-dev-xyz']), (e: unknown) => {
        assert.ok(e instanceof CommandFailedError, `got ${String(e)}`)
        assert.equal(e.command, 'ip link show dev no-such-dev-xyz')
        assert.equal(e.exitStatus, 1)
        assert.match(e.stderr, /no-such-dev-xyz/)
        assert.equal(e.message, '`ip link show dev no-such-dev-xyz` failed: Device "no-such-dev-xyz" does not exist.')
        return true
      })
    })

    it('prefers the Error line over noise before it', async function () {
      const script = 'console.error("libbpf: loading object\\nsome preamble\\nError: the real reason\\nmore"); process.exit(3)'
      await assert.rejects(run(process.execPath, ['-e', script]), (e: unknown) => {
        assert.ok(e instanceof CommandFailedError)
        assert.equal(e.exitStatus, 3)
        assert.match(e.message, /failed: Error: the real reason$/)
        return true
      })
    })

    it('falls back to the exit status when stderr is empty', async function () {
      await assert.rejects(run(process.execPath, ['-e', 'process.exit(4)']), (e: unknown) => {
        assert.ok(e instanceof CommandFailedError)
        assert.equal(e.exitStatus, 4)
        assert.match(e.message, /failed: exit status 4$/)
        return true
      })
    })

    it('reports a timeout', async function () {
      await assert.rejects(run(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], {timeoutMs: 200}), (e: unknown) => {
        assert.ok(e instanceof CommandFailedError)
        assert.match(e.message, /timed out/)
        return true
      })
    })
  })

  describe('start', function () {
    it('streams the output as it comes, and resolves with all of it once stopped', async function () {
      // The handler first: a SIGTERM sent once it says ready finds it.
      const script =
        'process.on("SIGTERM", () => process.stdout.write("done\\n", () => process.exit(0))); process.stdout.write("ready\\n"); setInterval(() => {}, 1000)'
      const program = start(process.execPath, ['-e', script])
      await new Promise<void>((resolve) => program.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve()))
      program.kill('SIGTERM')
      assert.deepEqual(await program.result, {stdout: 'ready\ndone', stderr: ''})
    })

    it('rejects with CommandFailedError when killed by a signal it does not handle', async function () {
      const program = start(process.execPath, ['-e', 'setInterval(() => {}, 1000)'])
      program.kill('SIGKILL')
      await assert.rejects(program.result, CommandFailedError)
    })

    it('rejects with CommandFailedError naming the stderr line of a failing program', async function () {
      await assert.rejects(start(process.execPath, ['-e', 'console.error("Error: no way"); process.exit(2)']).result, (e: unknown) => {
        assert.ok(e instanceof CommandFailedError)
        assert.equal(e.exitStatus, 2)
        assert.match(e.message, /failed: Error: no way$/)
        return true
      })
    })

    it('rejects with ToolMissingError for a program that does not exist', async function () {
      await assert.rejects(start('flowctl-no-such-tool', []).result, ToolMissingError)
    })
  })

  describe('runContained', function () {
    const options = {input: 'in', timeoutMs: 10_000, maxOutputBytes: 1 << 20}

    it('passes the input and tells how the program exited, with what it printed', async function () {
      const end = await runContained('/bin/sh', ['-c', 'cat; echo " err" >&2; exit 3'], options)
      assert.deepEqual(end, {how: 'exited', exitCode: 3, stdout: 'in', stderr: ' err\n'})
    })

    it('tells a program that does not exist apart from one that failed', async function () {
      assert.deepEqual(await runContained('/nonexistent/program', [], options), {how: 'not-started', message: '/nonexistent/program: no such program'})
    })

    it('tells a run cut off at its timeout, and one that printed too much', async function () {
      assert.deepEqual(await runContained('/bin/sh', ['-c', 'sleep 30'], {...options, timeoutMs: 300}), {how: 'timed-out'})
      assert.deepEqual(await runContained('/bin/sh', ['-c', 'head -c 2000000 /dev/zero'], options), {how: 'too-much-output'})
    })
  })

  describe('firstMeaningfulLine', function () {
    it('skips libbpf and bpftool noise', function () {
      const stderr = [
        'libbpf: elf: skipping unrecognized data section(7) .rodata.str1.1',
        'Warning: bpftool is now running in libbpf strict mode and has more stringent requirements about BPF programs.',
        "If it used to work for this object file but now doesn't, see --legacy option for more details.",
        'processed 1234 insns (limit 1000000) max_states_per_insn 4 total_states 100 peak_states 100 mark_read 10',
        '',
        'Error: failed to pin program tc',
      ].join('\n')
      assert.equal(firstMeaningfulLine(stderr), 'Error: failed to pin program tc')
    })

    it('prefers an error line over an earlier other line', function () {
      assert.equal(firstMeaningfulLine('Note: something\nRTNETLINK answers: File exists\n'), 'RTNETLINK answers: File exists')
      assert.equal(firstMeaningfulLine('x\nCannot find device "eth9"'), 'Cannot find device "eth9"')
      assert.equal(firstMeaningfulLine('x\nWe have an error talking to the kernel'), 'We have an error talking to the kernel')
    })

    it('otherwise returns the first non-noise line, trimmed', function () {
      assert.equal(firstMeaningfulLine('libbpf: a\n   Device "x" does not exist.  \nsecond'), 'Device "x" does not exist.')
    })

    it('returns undefined when nothing is left', function () {
      assert.equal(firstMeaningfulLine(''), undefined)
      assert.equal(firstMeaningfulLine('\n  \n'), undefined)
      assert.equal(firstMeaningfulLine('libbpf: only noise\nlibbpf: more noise\n'), undefined)
    })
  })

  describe('inNetns', function () {
    it('runs the program as is in the root namespace', function () {
      const args = ['-j', 'link']
      for (const ns of [null, undefined, '']) {
        const [file, argv] = inNetns(ns, 'ip', args)
        assert.equal(file, 'ip')
        assert.deepEqual(argv, ['-j', 'link'])
        assert.notEqual(argv, args, 'must be a copy')
      }
    })

    it('wraps the program in nsenter for a named namespace', function () {
      assert.deepEqual(inNetns('lab-a', 'tc', ['filter', 'show', 'dev', 'eth0']), [
        'nsenter',
        ['--net=/run/netns/lab-a', '--', 'tc', 'filter', 'show', 'dev', 'eth0'],
      ])
    })

    it('keeps arguments that look like options after --', function () {
      const [, argv] = inNetns('x', 'ip', ['--net=/evil', '-V'])
      assert.deepEqual(argv, ['--net=/run/netns/x', '--', 'ip', '--net=/evil', '-V'])
    })
  })
})
