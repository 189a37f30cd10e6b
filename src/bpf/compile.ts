/**
 * Compiles the meter with clang, once per distinct source and options: the object is cached under
 * its content hash (sources, flags and the compiler's own version), so attaching a hundred
 * interfaces compiles once, and a new flowctl or clang compiles again.
 */
import {createHash} from 'node:crypto'
import {existsSync} from 'node:fs'
import {readdir, readFile, rename, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {InvalidInputError} from '../errors.js'
import {bpfSourceDir} from '../paths.js'
import {makeDirectories} from '../sys/directories.js'
import {run} from '../sys/exec.js'
import {PENDING_CHUNK_BYTES} from './layout.js'

/** Flows per family a meter set holds between two drains; memory is taken only as flows arrive. */
export const DEFAULT_CAPACITY = 1_048_576
export const MIN_CAPACITY = 16
export const MAX_CAPACITY = 1 << 24

export interface MeterBuildOptions {
  /** Flows each flow map holds (per address family). */
  capacity: number
  /** The snapshot's chunk size of the meter set it is for (an older one may have another than bpf/flowctl.h's). */
  pendingChunkBytes?: number
}

export interface CompiledMeter {
  objectPath: string
  /** Hex sha256 of everything that went into the object. */
  digest: string
  /** Whether the object came from the cache. */
  cached: boolean
}

/** Debian's multiarch directory that holds <asm/types.h>, which <linux/bpf.h> includes. */
function multiarchInclude(): string | undefined {
  const triplet = {
    x64: 'x86_64-linux-gnu',
    arm64: 'aarch64-linux-gnu',
    arm: 'arm-linux-gnueabihf',
    ppc64: 'powerpc64le-linux-gnu',
    s390x: 's390x-linux-gnu',
    riscv64: 'riscv64-linux-gnu',
  }[process.arch as string]
  const dir = triplet && `/usr/include/${triplet}`
  return dir && existsSync(dir) ? dir : undefined
}

export function validateCapacity(capacity: number): number {
  if (!Number.isInteger(capacity) || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY) {
    throw new InvalidInputError(`invalid capacity ${capacity}: expected an integer from ${MIN_CAPACITY} to ${MAX_CAPACITY}`)
  }
  return capacity
}

export function clangArgs(source: string, output: string, options: MeterBuildOptions): string[] {
  const include = multiarchInclude()
  return [
    '-O2',
    '-g',
    '-target',
    'bpf',
    // v3: 32-bit jumps and the atomic fetch-and-add/or the shared flow counters need (kernel 5.12).
    '-mcpu=v3',
    '-Wall',
    '-Wno-unused-function',
    `-DFLOWCTL_CAPACITY=${options.capacity}`,
    // Only another size than the header's is named: a program for the header's size is the same object (and digest) either way.
    ...(options.pendingChunkBytes && options.pendingChunkBytes !== PENDING_CHUNK_BYTES ? [`-DFLOWCTL_PENDING_CHUNK_BYTES=${options.pendingChunkBytes}`] : []),
    ...(include ? [`-I${include}`] : []),
    '-c',
    source,
    '-o',
    output,
  ]
}

let clangVersion: string | undefined

async function compilerIdentity(): Promise<string> {
  clangVersion ??= (await run('clang', ['--version'])).stdout.split('\n')[0]
  return clangVersion
}

/** The C sources the meter is built from (bpf/*.c and *.h), by file name, in name order. */
export async function meterSources(): Promise<{name: string; text: Buffer}[]> {
  const dir = bpfSourceDir()
  const names = (await readdir(dir)).filter((f) => /\.(c|h)$/.test(f)).sort()
  return Promise.all(names.map(async (name) => ({name, text: await readFile(join(dir, name))})))
}

/** The digest of the sources (every one in bpf/: they share headers), the program's and the options, without compiling. */
async function objectDigest(source: string, options: MeterBuildOptions): Promise<string> {
  const hash = createHash('sha256')
  for (const {name, text} of await meterSources()) {
    hash.update(`${name}\0`)
    hash.update(text)
  }
  hash.update(clangArgs(source, 'out.o', options).join(' '))
  hash.update(await compilerIdentity())
  return hash.digest('hex')
}

/** Compiles the meter into `cacheDir` (or finds it there). */
export function compileMeter(options: MeterBuildOptions, cacheDir: string): Promise<CompiledMeter> {
  return compileBpfObject('meter.bpf.c', options, cacheDir)
}

/** Compiles bpf/<source> (meter.bpf.c, drops.bpf.c) into `cacheDir` as <name>-<digest>.o, or finds it there. */
export async function compileBpfObject(source: string, options: MeterBuildOptions, cacheDir: string): Promise<CompiledMeter> {
  validateCapacity(options.capacity)
  const digest = await objectDigest(source, options)
  const objectPath = join(cacheDir, `${source.replace(/\.bpf\.c$/, '')}-${digest.slice(0, 16)}.o`)
  if (existsSync(objectPath)) return {objectPath, digest, cached: true}

  makeDirectories(cacheDir)
  // Compile beside the final name and rename: concurrent attaches never see half an object.
  const tmp = `${objectPath}.${process.pid}.tmp`
  try {
    await run('clang', clangArgs(join(bpfSourceDir(), source), tmp, options))
    await rename(tmp, objectPath)
  } finally {
    await rm(tmp, {force: true})
  }
  return {objectPath, digest, cached: false}
}
