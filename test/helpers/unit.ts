/** Small helpers shared by the unit suites (no root, no kernel). */
import {Writable} from 'node:stream'
import {fileURLToPath} from 'node:url'

/** The repository root (this file runs from dist/test/helpers/). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url))

/** Yields the given items one by one, asynchronously. */
export async function* fromArray<T>(items: Iterable<T>): AsyncGenerator<T> {
  for (const item of items) {
    await Promise.resolve()
    yield item
  }
}

/** A Writable that keeps everything written to it; `text()` returns it as one string. */
export function collector(options: {highWaterMark?: number; slow?: boolean} = {}): Writable & {text(): string} {
  const chunks: Buffer[] = []
  const w = new Writable({
    highWaterMark: options.highWaterMark,
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(Buffer.from(chunk))
      if (options.slow) setImmediate(callback)
      else callback()
    },
  }) as Writable & {text(): string}
  w.text = () => Buffer.concat(chunks).toString('utf8')
  return w
}

/** A deterministic pseudo-random generator (mulberry32), so failures reproduce. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
