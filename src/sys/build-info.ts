/**
 * What `flowctl version` reports: which flowctl (version and git commit), on which Node and which
 * kernel. The commit is asked of git at run time, from the package's own directory, so a checkout
 * reports its HEAD (with "-dirty" when it has local changes) and an installed package "unknown".
 */
import {release} from 'node:os'

import {run} from './exec.js'

export interface BuildInfo {
  version: string
  commit: string
  node: string
  kernel: string
  platform: string
}

async function gitCommit(packageRoot: string): Promise<string> {
  try {
    const head = (await run('git', ['-C', packageRoot, 'rev-parse', '--short=12', 'HEAD'])).stdout.trim()
    if (!/^[0-9a-f]{7,40}$/.test(head)) return 'unknown'
    const status = (await run('git', ['-C', packageRoot, 'status', '--porcelain', '--untracked-files=no'])).stdout.trim()
    return status ? `${head}-dirty` : head
  } catch {
    // Not a git checkout (an installed package), or no git: nothing to tell.
    return 'unknown'
  }
}

export async function buildInfo(version: string, packageRoot: string): Promise<BuildInfo> {
  return {
    version,
    commit: await gitCommit(packageRoot),
    node: process.version,
    kernel: release(),
    platform: `${process.platform}-${process.arch}`,
  }
}
