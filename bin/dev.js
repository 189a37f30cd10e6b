#!/usr/bin/env node
// Like run.js, with oclif's development mode: full stack traces, no manifest cache.
// Run `npm run build` first (or `npx tsc -w` beside it); commands load from dist/.
import {execute} from '@oclif/core'

await execute({development: true, dir: import.meta.url})
