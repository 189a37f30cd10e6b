/**
 * docs/architecture.md follows one config key from the file to the socket: the key must be one
 * the loader knows, and the problem it quotes must be the one the loader reports.
 */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'

import {parseConfig} from '../../src/config/load.js'
import {REPO_ROOT} from '../helpers/unit.js'

/** The YAML that sets `path` (keys and first list items, e.g. `collectors[0].address`) to `value`, and nothing else. */
function yamlSetting(path: string, value: string): string {
  let yaml = ''
  let prefix = ''
  let indent = ''
  const parts = path.split('.')
  for (const [i, part] of parts.entries()) {
    const m = /^(\w+)(\[0\])?$/.exec(part)
    assert.ok(m, `cannot write ${part} of ${path} as YAML`)
    yaml += `${prefix}${m[1]}:${i === parts.length - 1 ? ` ${value}` : ''}\n`
    // The next key opens the list's first item, or is a key of this map.
    prefix = `${indent}${m[2] ? '- ' : '  '}`
    indent += '  '
  }
  return yaml
}

describe('docs/architecture.md: the path of a config key', function () {
  const doc = readFileSync(join(REPO_ROOT, 'docs/architecture.md'), 'utf8')
  const section = doc.slice(doc.indexOf('## The path of a config key'))
  const key = /Take `([^`]+)`/.exec(section)?.[1]

  it('names a key the loader knows, and quotes the problem it reports for it', function () {
    assert.ok(key, 'the section names its key as Take `KEY`')
    const quoted = /`(config\.yaml:\d+:\d+: [^`]+)`/.exec(section.replace(/\n\s*/g, ' '))?.[1]
    assert.ok(quoted, 'the section quotes a problem as `config.yaml:LINE:COL: KEY: ...`')
    const value = /: '([^']*)'/.exec(quoted)?.[1] ?? ''
    let reported = ''
    try {
      parseConfig(yamlSetting(key, value), 'config.yaml')
    } catch (error) {
      reported = (error as Error).message
    }
    assert.match(reported, new RegExp(`^config\\.yaml:\\d+:\\d+: ${key.replace(/[[\].]/g, '\\$&')}: `), `the loader's report: ${reported}`)
    assert.doesNotMatch(reported, /unknown key/)
    assert.ok(reported.startsWith(quoted.replace(/ \.\.\.$/, '')), `the doc quotes ${quoted}, the loader reports ${reported}`)
  })
})
