/**
 * The daemon's work on its meters, one task at a time: rounds of drains, early drains, a reload
 * and the stop never overlap (each waits for the one before it), and whether one runs now can be
 * asked without waiting.
 */
export class SerialWork {
  private tail: Promise<unknown> = Promise.resolve()
  private running = false

  /** Whether a task runs now. */
  get busy(): boolean {
    return this.running
  }

  /** Runs `task` once the tasks queued before it are done; its result or failure is the caller's. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const run = this.tail.then(async () => {
      this.running = true
      try {
        return await task()
      } finally {
        this.running = false
      }
    })
    this.tail = run.catch(() => {})
    return run
  }
}
