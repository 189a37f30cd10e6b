import assert from 'node:assert/strict'

import semver from 'semver'

import {MINIMUMS, parseBpftoolVersion, parseClangVersion, parseIpVersion} from '../../src/sys/dependencies.js'

describe('sys/dependencies version parsers', function () {
  describe('parseClangVersion', function () {
    const cases: [string, string | null][] = [
      ['Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu\nThread model: posix\nInstalledDir: /usr/bin\n', '14.0.6'],
      ['Debian clang version 16.0.6 (15~deb12u1)\nTarget: x86_64-pc-linux-gnu\n', '16.0.6'],
      ['clang version 17.0.6 (https://github.com/llvm/llvm-project 6009708b4367171ccdbf4b5905cb6a803753fe18)\nTarget: x86_64-unknown-linux-gnu\n', '17.0.6'],
      ['clang version 18.1.8 (Fedora 18.1.8-1.fc40)\n', '18.1.8'],
      ['Ubuntu clang version 14.0.0-1ubuntu1.1\nTarget: x86_64-pc-linux-gnu\n', '14.0.0'],
      ['clang version 10.0.0-4ubuntu1\n', '10.0.0'],
      ['', null],
      ['gcc (Debian 12.2.0-14) 12.2.0\n', null],
    ]
    for (const [out, version] of cases) {
      it(`${JSON.stringify(out.split('\n')[0])} -> ${version}`, () => assert.equal(parseClangVersion(out), version))
    }
  })

  describe('parseIpVersion', function () {
    it('reads iproute2 and libbpf versions', function () {
      assert.deepEqual(parseIpVersion('ip utility, iproute2-6.1.0, libbpf 1.1.2\n'), {iproute2: '6.1.0', libbpf: '1.1.2'})
      assert.deepEqual(parseIpVersion('ip utility, iproute2-6.8.0, libbpf 1.3.0'), {iproute2: '6.8.0', libbpf: '1.3.0'})
    })

    it('reports no libbpf for an iproute2 built without it', function () {
      assert.deepEqual(parseIpVersion('ip utility, iproute2-5.10.0\n'), {iproute2: '5.10.0', libbpf: null})
    })

    it('reads a two-part version', function () {
      assert.deepEqual(parseIpVersion('ip utility, iproute2-5.15, libbpf 0.5'), {iproute2: '5.15.0', libbpf: '0.5.0'})
    })

    it('reports an old date-named release (ss200127) as installed but below the minimum', function () {
      const {iproute2, libbpf} = parseIpVersion('ip utility, iproute2-ss200127\n')
      assert.ok(iproute2 !== null, 'an installed iproute2 must not read as not installed')
      assert.ok(semver.valid(iproute2), `not a version: ${iproute2}`)
      assert.ok(semver.lt(iproute2, MINIMUMS.iproute2), `${iproute2} is not below ${MINIMUMS.iproute2}`)
      assert.equal(libbpf, null)
    })

    it('reports nothing for unrelated output', function () {
      assert.deepEqual(parseIpVersion(''), {iproute2: null, libbpf: null})
      assert.deepEqual(parseIpVersion('Object "-V" is unknown, try "ip help".'), {iproute2: null, libbpf: null})
    })
  })

  describe('parseBpftoolVersion', function () {
    const cases: [string, string | null][] = [
      ['bpftool v7.1.0\nusing libbpf v1.1\nfeatures: libbpf_strict\n', '7.1.0'],
      ['/usr/sbin/bpftool v5.10.0\nfeatures:\n', '5.10.0'],
      ['/usr/lib/linux-tools/5.15.0-91-generic/bpftool v5.15.131\n', '5.15.131'],
      ['bpftool v7.4.0\nusing libbpf v1.4\nfeatures: llvm, skeletons\n', '7.4.0'],
      ['', null],
      ['bpftool: command not found', null],
    ]
    for (const [out, version] of cases) {
      it(`${JSON.stringify(out.split('\n')[0])} -> ${version}`, () => assert.equal(parseBpftoolVersion(out), version))
    }
  })
})
