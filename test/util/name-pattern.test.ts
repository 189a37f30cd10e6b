import assert from 'node:assert/strict'

import {InterfaceSelector, netnsMatches, parseInterfaceGlob, parseNetnsPattern, PatternError} from '../../src/util/name-pattern.js'

describe('name patterns (config meters: netns and interfaces)', function () {
  it('reads root, names, globs and /regular expressions/ for namespaces', function () {
    const matches = (pattern: string, netns: string | null) => netnsMatches(parseNetnsPattern(pattern), netns)
    assert.equal(parseNetnsPattern('root').kind, 'root')
    assert.ok(matches('root', null) && !matches('root', 'root'))
    assert.ok(matches('customer-a', 'customer-a') && !matches('customer-a', 'customer-ab'))
    assert.ok(matches('tenant-*', 'tenant-') && matches('tenant-*', 'tenant-42') && !matches('tenant-*', 'my-tenant-1') && !matches('tenant-*', null))
    assert.ok(matches('t?-[0-9]', 'ta-7') && !matches('t?-[0-9]', 'ta-x') && matches('t-[!a-c]', 't-d') && !matches('t-[^a-c]', 't-b'))
    assert.ok(matches('a\\*', 'a*') && !matches('a\\*', 'ab'))
    // A regular expression matches anywhere unless anchored.
    assert.ok(matches('/lab-[0-9]+/', 'my-lab-12-x') && !matches('/^lab-[0-9]+$/', 'my-lab-12'))
  })

  it('reads interface globs, a leading ! excluding, and takes lo only when it is named', function () {
    const s = new InterfaceSelector(['eth*', 'v*', '!eth9'])
    assert.deepEqual(
      ['eth0', 'eth9', 'veth0', 'lo', 'wg0'].filter((n) => s.matches(n)),
      ['eth0', 'veth0'],
    )
    assert.deepEqual(
      ['eth0', 'lo', 'wg0'].filter((n) => new InterfaceSelector(['*']).matches(n)),
      ['eth0', 'wg0'],
    )
    assert.deepEqual(
      ['eth0', 'lo', 'wg0'].filter((n) => new InterfaceSelector(['!wg*']).matches(n)),
      ['eth0'],
    )
    assert.ok(new InterfaceSelector(['lo']).matches('lo'))
    assert.equal(parseInterfaceGlob('veth0.100').literal, true)
  })

  it('refuses what cannot be a pattern, in one line', function () {
    const refused: [() => unknown, RegExp][] = [
      [() => parseNetnsPattern('/(/'), /^'\/\(\/' is not a valid regular expression \(unterminated group\)$/],
      [() => parseNetnsPattern('/abc'), /does not end it with one \(write \/REGEX\/\)$/],
      [() => parseNetnsPattern('a/b'), /^'a\/b' is not a namespace name$/],
      [() => parseNetnsPattern('t-[a'), /opens a \[ that no \] closes/],
      [() => parseNetnsPattern('t-[z-a]'), /runs backwards \(write a-z\)$/],
      [() => parseInterfaceGlob('!'), /^a lone !/],
      [() => parseInterfaceGlob('eth 0'), /has a space, \/ or :/],
      [() => parseInterfaceGlob('abcdefghijklmnop*'), /longer than an interface name can be \(15 characters\)$/],
      [() => parseInterfaceGlob('eth\\'), /ends in a lone \\/],
    ]
    for (const [parse, message] of refused) {
      assert.throws(parse, (error: unknown) => error instanceof PatternError && message.test(error.message) && !error.message.includes('\n'))
    }
  })
})
