/**
 * The Dockerfile cannot be built here (no container engine), so what can go wrong in it without a
 * build is checked: every path it copies into the build stage exists in the repository (and is not
 * left out of the build context by .dockerignore), and what the runtime stage takes from the build
 * is what `npm pack` ships (package.json "files"), plus the production node_modules.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import {execa} from 'execa'

import {REPO_ROOT} from '../helpers/unit.js'

interface Copy {
  stage: string
  from?: string
  sources: string[]
  dest: string
}

/** The COPY instructions of a Dockerfile, by stage, continuation lines joined. */
export function parseCopies(text: string): Copy[] {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
  const copies: Copy[] = []
  let stage = ''
  let index = 0
  for (const line of lines) {
    const from = /^FROM\s+\S+(?:\s+AS\s+(\S+))?/i.exec(line)
    if (from) {
      stage = from[1] ?? `stage${index}`
      index++
      continue
    }
    const copy = /^COPY\s+(.*)$/i.exec(line)
    if (!copy) continue
    const words = copy[1].split(/\s+/)
    const flags = words.filter((w) => w.startsWith('--'))
    const paths = words.filter((w) => !w.startsWith('--'))
    const fromFlag = flags.find((f) => f.startsWith('--from='))
    copies.push({stage, from: fromFlag?.slice('--from='.length), sources: paths.slice(0, -1), dest: paths[paths.length - 1]})
  }
  return copies
}

describe('Dockerfile', function () {
  const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8')
  const copies = parseCopies(dockerfile)
  const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
  let packed: string[] = []

  before(async function () {
    this.timeout(60_000)
    const {stdout} = await execa('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {cwd: REPO_ROOT})
    packed = (JSON.parse(stdout) as {files: {path: string}[]}[])[0].files.map((f) => f.path)
  })

  it("has a build stage on node:20-bookworm-slim and a runtime stage with the meter's toolchain", function () {
    assert.match(dockerfile, /^FROM node:20-bookworm-slim AS build$/m)
    assert.match(dockerfile, /npm ci\b/)
    assert.match(dockerfile, /npm prune --omit=dev/)
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
    assert.match(runtime, /^\nFROM node:20-bookworm-slim\n/)
    for (const pkg of ['clang', 'llvm', 'libbpf-dev', 'bpftool', 'iproute2', 'util-linux']) assert.match(runtime, new RegExp(`\\s${pkg}(\\s|$)`), pkg)
    for (const flag of ['--privileged', '--net=host', '-v /sys/fs/bpf:/sys/fs/bpf', '-v /run/netns:/run/netns']) assert.ok(dockerfile.includes(flag), flag)
  })

  it('copies into the build stage only paths that exist and are in the build context', function () {
    const fromContext = copies.filter((c) => !c.from)
    assert.ok(fromContext.length >= 4)
    for (const c of fromContext) {
      for (const source of c.sources) {
        assert.ok(existsSync(join(REPO_ROOT, source)), `COPY ${source}: no such path in the repository`)
        assert.ok(
          !ignored.some((pattern) => source === pattern || source.startsWith(`${pattern}/`)),
          `COPY ${source}: .dockerignore leaves it out of the context`,
        )
      }
    }
    // The lock file, so that `npm ci` installs what the tests ran with.
    assert.ok(fromContext.some((c) => c.sources.includes('package-lock.json')))
  })

  it('takes from the build stage what `npm pack` ships (package.json "files"), plus node_modules', function () {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {files: string[]; bin: Record<string, string>}
    for (const entry of ['bin', 'dist/src', 'bpf']) assert.ok(pkg.files.includes(entry), `package.json files has ${entry}`)
    for (const file of [
      'package.json',
      'README.md',
      'bin/run.js',
      'dist/src/commands/daemon.js',
      'dist/src/daemon/metrics/daemon-metrics.js',
      'bpf/meter.bpf.c',
      'bpf/flowctl.h',
      'misc/flowctl.service',
      'misc/config.example.yaml',
    ]) {
      assert.ok(packed.includes(file), `npm pack ships ${file}`)
    }
    assert.ok(!packed.some((f) => f.startsWith('dist/test/')), 'no compiled tests in the package')
    if (pkg.files.includes('oclif.manifest.json'))
      assert.ok(
        copies.some((c) => c.sources.includes('/src/oclif.manifest.json')),
        'the image copies the oclif manifest the package ships',
      )

    const fromBuild = copies.filter((c) => c.from === 'build')
    const buildInputs = new Set(copies.filter((c) => !c.from && c.stage === 'build').flatMap((c) => c.sources))
    for (const c of fromBuild) {
      for (const source of c.sources) {
        assert.ok(source.startsWith('/src/'), `COPY --from=build ${source}: the build's WORKDIR is /src`)
        const path = source.slice('/src/'.length)
        if (path === 'node_modules') continue // production dependencies, after npm prune
        assert.ok(packed.includes(path) || packed.some((f) => f.startsWith(`${path}/`)), `COPY --from=build ${source}: npm pack does not ship ${path}`)
        const top = path.split('/')[0]
        assert.ok(
          top === 'dist' || buildInputs.has(top) || buildInputs.has(path),
          `COPY --from=build ${source}: the build stage neither copies nor builds ${top}`,
        )
      }
    }
    // Everything the package ships that the CLI needs at run time is in the image.
    const copied = fromBuild.flatMap((c) => c.sources.map((s) => s.slice('/src/'.length)))
    for (const file of packed) {
      assert.ok(
        copied.some((p) => file === p || file.startsWith(`${p}/`)),
        `npm pack ships ${file} but the image does not copy it`,
      )
    }
  })

  it('links the CLI as flowctl and runs it', function () {
    assert.match(dockerfile, /ln -s \/opt\/flowctl\/bin\/run\.js \/usr\/local\/bin\/flowctl/)
    assert.match(dockerfile, /^ENTRYPOINT \["flowctl"\]$/m)
  })
})
