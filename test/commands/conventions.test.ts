/**
 * oclif conventions every command keeps: a summary, examples in --help, and --json where it prints
 * data for people (a program gets the same data as JSON).
 */
import assert from 'node:assert/strict'
import {readdirSync, statSync} from 'node:fs'
import {join, relative} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

const COMMANDS = fileURLToPath(new URL('../../src/commands/', import.meta.url))
/**
 * Commands that print no data: the daemon logs JSON lines on stderr; code-dump prints C source and
 * completion a shell script, each meant to be read or sourced as it is.
 */
const NO_DATA = new Set(['daemon', 'ebpf code-dump', 'completion bash', 'completion zsh'])

function commandFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return commandFiles(path)
    return name.endsWith('.js') ? [path] : []
  })
}

interface CommandClass {
  summary?: string
  examples?: unknown[]
  flags?: Record<string, unknown>
}

describe('command conventions', function () {
  const files = commandFiles(COMMANDS)

  it('finds the commands', function () {
    assert.ok(files.length >= 10, files.join(', '))
  })

  for (const file of commandFiles(COMMANDS)) {
    const id = relative(COMMANDS, file).replace(/\.js$/, '').split('/').join(' ')
    it(`${id}: a summary, examples, and --json where it prints data`, async function () {
      const command = ((await import(pathToFileURL(file).href)) as {default: CommandClass}).default
      assert.ok(command.summary, 'a summary')
      assert.ok(Array.isArray(command.examples) && command.examples.length > 0, 'examples in --help')
      if (!NO_DATA.has(id)) assert.ok(command.flags && 'json' in command.flags, '--json')
    })
  }
})
