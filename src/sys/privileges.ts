/** What flowctl needs of the process it runs in. */
import {PermissionError} from '../errors.js'

/** Fails with a one-line error unless the process runs as root (BPF, tc and namespaces need it). */
export function requireRoot(action: string): void {
  if (process.getuid?.() !== 0) {
    throw new PermissionError(`${action} needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo`)
  }
}
