/**
 * Where flowctl keeps things. Each root can be moved with an environment variable, which the
 * tests use to keep runs apart; operators normally leave them alone.
 */
import {join} from 'node:path'

/** bpffs directory holding one subdirectory of programs and maps per metered namespace. */
export function pinRoot(): string {
  return process.env.FLOWCTL_PIN_ROOT ?? '/sys/fs/bpf/flowctl'
}

/** Runtime state (what is attached, locks): lives and dies with the kernel state it describes. */
export function runDir(): string {
  return process.env.FLOWCTL_RUN_DIR ?? '/run/flowctl'
}

/** Compiled meter objects, by content hash. */
export function cacheDir(): string {
  return process.env.FLOWCTL_CACHE_DIR ?? '/var/cache/flowctl'
}

/** State that must survive a restart of the daemon (IPFIX sequence numbers). */
export function stateDir(): string {
  return process.env.FLOWCTL_STATE_DIR ?? '/var/lib/flowctl'
}

/** The C sources of the meter, shipped with the package. */
export function bpfSourceDir(): string {
  return new URL('../../bpf/', import.meta.url).pathname
}

export function attachmentsFile(): string {
  return join(runDir(), 'attachments.json')
}
