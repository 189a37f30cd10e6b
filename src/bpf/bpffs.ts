/**
 * The pin root must be on a bpf filesystem (bpffs): pins anywhere else fail, and bpftool, asked
 * to pin outside one, mounts a bpffs of its own over the meter's directory, which then outlives
 * the meter and makes its removal fail with EBUSY. So the attach checks first: the standard
 * /sys/fs/bpf is mounted when it is not (as `dependency-check` says), any other place is refused
 * at once with the command that mounts it.
 */
import {existsSync} from 'node:fs'
import {statfs} from 'node:fs/promises'
import {dirname} from 'node:path'

import {StateError} from '../errors.js'
import type {Paths} from '../paths.js'
import {run} from '../sys/exec.js'

/** statfs(2) f_type of a bpf filesystem (BPF_FS_MAGIC in <linux/magic.h>). */
const BPF_FS_MAGIC = 0xcafe4a11
const STANDARD_BPFFS = '/sys/fs/bpf'

/** The directory itself, or its nearest ancestor that exists: where a pin under it would land. */
function nearestExisting(path: string): string {
  let dir = path
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir)
  return dir
}

async function onBpffs(path: string): Promise<boolean> {
  const {type} = await statfs(nearestExisting(path))
  return type === BPF_FS_MAGIC
}

export async function requirePinRootOnBpffs(paths: Paths): Promise<void> {
  const root = paths.pinRoot
  if (await onBpffs(root)) return
  const standard = root === STANDARD_BPFFS || root.startsWith(`${STANDARD_BPFFS}/`)
  if (standard && existsSync(STANDARD_BPFFS) && !(await onBpffs(STANDARD_BPFFS))) {
    try {
      await run('mount', ['-t', 'bpf', 'bpf', STANDARD_BPFFS])
    } catch (error) {
      throw new StateError(`bpffs is not mounted at ${STANDARD_BPFFS} and mounting it failed: run \`mount -t bpf bpf ${STANDARD_BPFFS}\``, {cause: error})
    }
    if (await onBpffs(root)) return
  }
  throw new StateError(
    `the pin root ${root} is not on a bpf filesystem: mount one there with \`mkdir -p ${root} && mount -t bpf bpf ${root}\`, or set FLOWCTL_PIN_ROOT to a directory under ${STANDARD_BPFFS}`,
  )
}
