/**
 * checkConfigOnMachine: what `flowctl config check` and the daemon (at start and reload) refuse
 * about this machine, on real files, modes and the system's resolver.
 */
import assert from 'node:assert/strict'
import {existsSync, readdirSync} from 'node:fs'
import {chmod, mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {parseConfig} from '../../src/config/load.js'
import {checkConfigOnMachine} from '../../src/config/machine.js'
import {ConfigError} from '../../src/config/source.js'
import {DaemonProcess} from '../helpers/daemon.js'
import {PrivateDirs, requireE2e} from '../helpers/e2e.js'

describe('config/machine', function () {
  let dir: string
  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'flowctl-machine-'))
  })
  after(async function () {
    await rm(dir, {recursive: true, force: true})
  })

  /** Writes `yaml` to a file of `mode` and loads it. */
  async function config(name: string, yaml: string, mode = 0o644) {
    const file = join(dir, name)
    await writeFile(file, yaml)
    await chmod(file, mode)
    return parseConfig(yaml, file)
  }

  async function refusal(config: ReturnType<typeof parseConfig>): Promise<ConfigError> {
    try {
      await checkConfigOnMachine(config)
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error))
      assert.equal(error.message.includes('\n'), false)
      return error
    }
    assert.fail('the config was accepted')
  }

  describe('log files', function () {
    it('accepts a log in an existing directory, stdout, and a relative path in the current one', async function () {
      await checkConfigOnMachine(await config('a.yaml', `logs:\n- file: ${dir}/flows.log\n- file: '-'\n- file: flows-here.log\n`))
    })

    it('refuses a log whose directory does not exist, with the mkdir to fix it', async function () {
      const c = await config('b.yaml', `logs:\n- file: ${dir}/flows.log\n- file: ${dir}/no/such/flows.log\n`)
      const error = await refusal(c)
      assert.equal(
        error.message,
        `${dir}/b.yaml: logs[1].file: the directory ${dir}/no/such does not exist; allowed: a file in an existing directory (create it: mkdir -p ${dir}/no/such)`,
      )
      await mkdir(join(dir, 'no', 'such'), {recursive: true})
      await checkConfigOnMachine(c)
    })

    it('refuses a log path that is a directory, or under a file', async function () {
      await mkdir(join(dir, 'adir'))
      await writeFile(join(dir, 'afile'), '')
      assert.match(
        (await refusal(await config('c.yaml', `logs:\n- file: ${dir}/adir\n`))).message,
        /logs\[0\]\.file: .*\/adir is a directory; allowed: a file path$/,
      )
      assert.match((await refusal(await config('d.yaml', `logs:\n- file: ${dir}/afile/flows.log\n`))).message, /logs\[0\]\.file: .*\/afile is not a directory/)
    })
  })

  describe('the state file', function () {
    const LOG = `logs:\n- file: '-'\n`

    it('accepts one in an existing directory, or in one it can create, without creating it', async function () {
      await checkConfigOnMachine(await config('s1.yaml', `${LOG}stateFile: ${dir}/state.json\n`))
      await checkConfigOnMachine(await config('s2.yaml', `${LOG}stateFile: ${dir}/new/deeper/state.json\n`))
      assert.equal(existsSync(join(dir, 'new')), false)
      assert.deepEqual(
        readdirSync(dir).filter((f) => f.startsWith('.flowctl-check-')),
        [],
        'the trial directory is removed',
      )
    })

    it('refuses one under a missing /proc path, where mkdir fails (the daemon spun there at 100 % CPU), naming the key', async function () {
      const error = await refusal(await config('s3.yaml', `${LOG}stateFile: /proc/flowctl/state.json\n`))
      assert.equal(
        error.message,
        `${dir}/s3.yaml: stateFile: the directory /proc/flowctl cannot be created (mkdir in /proc fails: ENOENT); allowed: a file in a directory that exists or can be created, e.g. under /var/lib`,
      )
      assert.match(
        (await refusal(await config('s4.yaml', `${LOG}stateFile: /proc/self/nope/a/state.json\n`))).message,
        /stateFile: the directory \/proc\/self\/nope cannot be created \(mkdir in \/proc\/self fails: ENOENT\)/,
      )
    })

    it('refuses one under a file', async function () {
      await writeFile(join(dir, 'plain'), '')
      assert.match(
        (await refusal(await config('s5.yaml', `${LOG}stateFile: ${dir}/plain/sub/state.json\n`))).message,
        /stateFile: a part of .*\/plain\/sub is not a directory; allowed: /,
      )
    })
  })

  describe('the metrics host', function () {
    const LOG = `logs:\n- file: '-'\n`

    it('accepts addresses without a lookup, and a name the resolver knows', async function () {
      let asked = 0
      const lookup = () => {
        asked++
        return Promise.resolve()
      }
      for (const listen of ['127.0.0.1:9999', "'[::1]:9999'", "'[fe80::1%lo]:9999'", "''"]) {
        await checkConfigOnMachine(await config('e.yaml', `${LOG}metrics:\n  listen: ${listen}\n`), {lookup})
      }
      assert.equal(asked, 0)
      // localhost is in /etc/hosts: the system's resolver, no network.
      await checkConfigOnMachine(await config('e.yaml', `${LOG}metrics:\n  listen: localhost:9999\n`))
    })

    it('refuses a name that does not resolve (.invalid never does, RFC 6761)', async function () {
      this.timeout(30_000)
      const error = await refusal(await config('f.yaml', `${LOG}metrics:\n  listen: flowctl-test.invalid:9999\n`))
      assert.match(
        error.message,
        /^.*\/f\.yaml: metrics\.listen: the host 'flowctl-test\.invalid' does not resolve \((ENOTFOUND|EAI_AGAIN)\), so the metrics server cannot listen on it; allowed: /,
      )
    })
  })

  describe('a config that names hooks', function () {
    const HOOKS = `logs:\n- file: '-'\n  hooks:\n  - command: /bin/cat\n`

    it('refuses it when group or others may write it, saying how to fix the mode', async function () {
      const file = join(dir, 'hooks.yaml')
      const c = await config('hooks.yaml', HOOKS, 0o664)
      assert.equal(
        (await refusal(c)).message,
        `${file}: the file is writable by its group (mode 0664) and names hooks, which the daemon runs as ${process.getuid?.() === 0 ? 'root' : (await import('node:os')).userInfo().username}; ` +
          `allowed: a file only its owner can write: chmod go-w ${file}`,
      )
      await chmod(file, 0o646)
      assert.match((await refusal(c)).message, /writable by all users \(mode 0646\)/)
      await chmod(file, 0o666)
      assert.match((await refusal(c)).message, /writable by its group and all users \(mode 0666\)/)
      await chmod(file, 0o644)
      await checkConfigOnMachine(c)
    })

    it('accepts a file anyone may write when it names no hook', async function () {
      await checkConfigOnMachine(await config('nohooks.yaml', `logs:\n- file: '-'\n`, 0o666))
    })
  })

  describe('the daemon @e2e', function () {
    this.timeout(60_000)
    // Were the check missing, the daemon would start: on directories of its own, never the machine's.
    const dirs = new PrivateDirs(`mach${process.pid}`)
    before(function () {
      requireE2e(this)
      dirs.apply()
    })
    after(function () {
      dirs.remove()
    })

    it('refuses to start on what config check refuses, with the same line, before anything starts', async function () {
      const file = join(dir, 'daemon.yaml')
      await writeFile(file, `logs:\n- file: ${dir}/missing/flows.log\nmetrics:\n  listen: ''\n`)
      const d = new DaemonProcess(file)
      const timer = setTimeout(() => d.signal('SIGKILL'), 20_000)
      const result = await d.child
      clearTimeout(timer)
      assert.equal(result.exitCode, 2, d.tail)
      assert.equal(
        d.tail.trim(),
        `flowctl: ${file}: logs[0].file: the directory ${dir}/missing does not exist; allowed: a file in an existing directory (create it: mkdir -p ${dir}/missing)`,
      )
    })

    it('refuses a reload that config check would refuse, and keeps running', async function () {
      // No meter is attached in these directories: the daemon runs, exporting nothing.
      const file = join(dir, 'reload.yaml')
      const good = `logs:\n- file: ${dir}/flows.log\n  hooks:\n  - command: /bin/cat\nmetrics:\n  listen: ''\n`
      await writeFile(file, good)
      await chmod(file, 0o644)
      const d = new DaemonProcess(file)
      try {
        await d.waitForLog('started')
        await chmod(file, 0o666)
        d.signal('SIGHUP')
        const refused = await d.waitForLog('reload-refused')
        assert.match(
          String(refused.error),
          /writable by its group and all users \(mode 0666\) and names hooks, which the daemon runs as root; allowed: a file only its owner can write: chmod go-w /,
        )
        await chmod(file, 0o644)
        await writeFile(file, good.replace(`${dir}/flows.log`, `${dir}/gone/flows.log`))
        d.signal('SIGHUP')
        await d.waitForLog('reload-refused', (l) => String(l.error).includes(`the directory ${dir}/gone does not exist`))
        await writeFile(file, good)
        d.signal('SIGHUP')
        await d.waitForLog('reloaded')
      } finally {
        assert.equal(await d.stop(), 0, d.tail)
      }
    })
  })
})
