/**
 * Where flowctl keeps things, as one value passed down from the edge. Commands (and the bench and
 * tests) build it once with `pathsFromEnv()`; libraries never read the environment, so two
 * callers in one process (the demo beside an operator's meters, test suites) cannot disturb each
 * other. Operators normally leave the variables alone; tests use them to keep runs apart.
 */
import {join} from 'node:path'

export interface Paths {
  /** bpffs directory holding one subdirectory of programs and maps per metered namespace (FLOWCTL_PIN_ROOT). */
  readonly pinRoot: string
  /** Runtime state: what is attached, locks, the daemon's pid (FLOWCTL_RUN_DIR); lives and dies with the kernel state it describes. */
  readonly runDir: string
  /** Compiled meter objects, by content hash (FLOWCTL_CACHE_DIR). */
  readonly cacheDir: string
  /** State that must survive a restart of the daemon, e.g. IPFIX sequence numbers (FLOWCTL_STATE_DIR). */
  readonly stateDir: string
}

const DEFAULT_PATHS: Paths = Object.freeze({
  pinRoot: '/sys/fs/bpf/flowctl',
  runDir: '/run/flowctl',
  cacheDir: '/var/cache/flowctl',
  stateDir: '/var/lib/flowctl',
})

/** The paths, each from its FLOWCTL_* variable when set: read once, where the program starts. */
export function pathsFromEnv(env: NodeJS.ProcessEnv = process.env): Paths {
  return Object.freeze({
    pinRoot: env.FLOWCTL_PIN_ROOT || DEFAULT_PATHS.pinRoot,
    runDir: env.FLOWCTL_RUN_DIR || DEFAULT_PATHS.runDir,
    cacheDir: env.FLOWCTL_CACHE_DIR || DEFAULT_PATHS.cacheDir,
    stateDir: env.FLOWCTL_STATE_DIR || DEFAULT_PATHS.stateDir,
  })
}

/** The daemon's state file when the config names none. */
export function defaultStateFile(paths: Paths): string {
  return join(paths.stateDir, 'daemon-state.json')
}

/** The C sources of the meter, shipped with the package. */
export function bpfSourceDir(): string {
  return new URL('../../bpf/', import.meta.url).pathname
}
