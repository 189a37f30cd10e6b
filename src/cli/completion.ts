/**
 * Shell completion scripts, from @oclif/plugin-autocomplete: it writes them into flowctl's cache
 * directory (`autocomplete:create`); `flowctl completion bash` prints the one for bash, so the
 * older tool's `. <(flowctl completion bash)` keeps working.
 */
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import type {Config} from '@oclif/core'

import {StateError} from '../errors.js'

export type CompletionShell = 'bash' | 'zsh'

export async function completionScript(config: Config, shell: CompletionShell): Promise<string> {
  await config.runCommand('autocomplete:create')
  const file = shell === 'bash' ? join('bash', `${config.bin}.bash`) : join('zsh', `_${config.bin}`)
  const path = join(config.cacheDir, 'autocomplete', 'functions', file)
  try {
    return await readFile(path, 'utf8')
  } catch (error) {
    throw new StateError(`the ${shell} completion script was not written to ${path}: ${(error as Error).message}`, {cause: error})
  }
}
