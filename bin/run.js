#!/usr/bin/env node
import {execute} from '@oclif/core'

// `--version` tells what `flowctl version` does: oclif's own line lacks the git commit and the kernel.
const args = process.argv.slice(2)
await execute({dir: import.meta.url, args: args[0] === '--version' ? ['version', ...args.slice(1)] : args})
