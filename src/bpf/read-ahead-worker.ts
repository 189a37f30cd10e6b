/**
 * The thread that reads a map for src/bpf/read-ahead.ts: on each request it reads the map from
 * its start, a read batch per BPF_MAP_LOOKUP_BATCH call, into the next empty slot of the shared ring,
 * and waits whenever the caller has not yet emptied the slot it needs next. The map's fd is the
 * caller's (one process, one fd table); the caller keeps it open until the read ends.
 */
import {parentPort} from 'node:worker_threads'

import {ENOENT, lookupBatchCall} from './libbpf.js'
import {ABORT, BUSY, COUNT, EMPTY, ERRNO, FAILED, FULL, LAST, SLOTS, STATE, slotBytes, type ReadRequest} from './read-ahead-protocol.js'

function serve(r: ReadRequest): void {
  const ctrl = new Int32Array(r.ctrl)
  const size = slotBytes(r)
  const inBatch = new Uint8Array(Math.max(8, r.keySize))
  const outBatch = new Uint8Array(Math.max(8, r.keySize))
  const count = new Uint32Array(1)
  try {
    for (let i = 0, first = true; ; i++, first = false) {
      const slot = i % SLOTS
      const state = slot * 3 + STATE
      // Wait for the caller to empty the slot (or to give up on this read).
      while (Atomics.load(ctrl, state) !== EMPTY) {
        if (Atomics.load(ctrl, ABORT)) return
        Atomics.wait(ctrl, state, Atomics.load(ctrl, state), 1000)
      }
      if (Atomics.load(ctrl, ABORT)) return
      const keys = new Uint8Array(r.data, slot * size, r.batchEntries * r.keySize)
      const values = new Uint8Array(r.data, slot * size + r.batchEntries * r.keySize, r.batchEntries * r.valueSize)
      count[0] = r.batchEntries
      let rc: number
      try {
        rc = lookupBatchCall(r.fd, first ? null : inBatch, outBatch, keys, values, count)
      } catch (error) {
        // koffi or libbpf failed to load in this thread: say so as an errno the caller reports.
        process.stderr.write(`flowctl: the map reader thread failed: ${(error as Error).message}\n`)
        rc = -1
      }
      if (rc < 0 && rc !== -ENOENT) {
        ctrl[slot * 3 + ERRNO] = -rc
        ctrl[slot * 3 + COUNT] = 0
        Atomics.store(ctrl, state, FAILED)
        Atomics.notify(ctrl, state)
        return
      }
      ctrl[slot * 3 + COUNT] = count[0]
      Atomics.store(ctrl, state, rc === -ENOENT ? LAST : FULL)
      Atomics.notify(ctrl, state)
      if (rc === -ENOENT) return
      inBatch.set(outBatch)
    }
  } finally {
    Atomics.store(ctrl, BUSY, 0)
    Atomics.notify(ctrl, BUSY)
  }
}

parentPort!.on('message', serve)
