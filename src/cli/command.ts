/**
 * The base of every flowctl command: a FlowctlError becomes one line on stderr and its exit
 * status; anything else is a bug and keeps oclif's full report.
 */
import {Command, Errors} from '@oclif/core'

import {FlowctlError} from '../errors.js'
import {pathsFromEnv, type Paths} from '../paths.js'

export abstract class FlowctlCommand extends Command {
  /** Where flowctl keeps things: the FLOWCTL_* variables, read once here at the edge. */
  protected readonly paths: Paths = pathsFromEnv()

  protected override async catch(error: Error & {exitCode?: number}): Promise<unknown> {
    if (error instanceof FlowctlError) {
      process.stderr.write(`flowctl: ${error.message}\n`)
      process.exitCode = error.exitCode
      return undefined
    }
    // oclif's own usage errors (unknown flag, missing value) are also one line.
    if (error instanceof Errors.CLIError && !(error instanceof Errors.ExitError)) {
      process.stderr.write(`flowctl: ${usageErrorLine(error.message)}\n`)
      process.exitCode = error.oclif.exit ?? 2
      return undefined
    }
    return super.catch(error)
  }

  /** Writes a value as one JSON document on stdout. */
  protected printJson(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
  }
}

/**
 * oclif's usage error as one line that keeps its reason: a flag that fails to parse comes as
 * "Parsing --capacity" with the reason on the next line ("Expected an integer but received: abc"),
 * and flags that do not go together as "The following error occurred:" with the reason below.
 */
export function usageErrorLine(message: string): string {
  const lines = message
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^See more help with/.test(l))
  if (lines.length === 0) return message.trim()
  if (lines.length > 1 && /^Parsing --?\S+$/.test(lines[0])) return `${lines[0]}: ${lines.slice(1).join(' ')}`
  // "The following error(s) occurred:" then one line per problem.
  if (lines.length > 1 && /^The following errors? occurred:$/.test(lines[0])) return lines.slice(1).join('; ')
  return lines[0]
}
