/**
 * Running a program so that killing it kills everything it started: in a PID namespace of its own,
 * whose first process it is, through unshare(1) (util-linux, which nsenter comes with).
 *
 * A process cannot leave its PID namespace: a new session (`setsid cmd &`), a double fork, a
 * blank environment or another name do not take it out. When the namespace's first process dies,
 * the kernel SIGKILLs every other process in it and refuses them new children meanwhile, so a
 * fork loop cannot outrun the kill. `--kill-child` ties that first process to unshare (its parent
 * death signal is SIGKILL): killing unshare, the process we started, kills them all, and so does
 * the program's own exit. It needs CAP_SYS_ADMIN, which the daemon has (misc/flowctl.service).
 *
 * Chosen over a cgroup of its own per run (cgroup.kill, kernel 5.14): the first process must be
 * in the cgroup before it can fork, which needs clone3(CLONE_INTO_CGROUP) or a helper that moves
 * itself and then execs (a shell, or the daemon itself moving in and out around each spawn), and
 * under systemd the service's cgroup is not ours to write (misc/flowctl.service neither delegates
 * it nor leaves /sys/fs/cgroup writable: ProtectControlGroups=yes).
 *
 * What the program sees: its pid is 1 in its namespace and /proc is the host's (its
 * /proc/self is its host pid). As a namespace's first process, the signals it sends itself are
 * ignored unless it handles them (kill $$ does not end it); faults (SIGSEGV) and kills from
 * outside still do.
 */

/** The argv that runs `file args` as the first process of a PID namespace of its own. */
export function inOwnPidNamespace(file: string, args: readonly string[]): [string, string[]] {
  return ['unshare', ['--pid', '--fork', '--kill-child', '--', file, ...args]]
}

/**
 * Why unshare itself failed (it could not make the namespace, or not run the program), from its
 * exit status and stderr; undefined when what ran was the program.
 */
export function ownPidNamespaceFailure(file: string, exitCode: number | undefined, stderr: string): {missing: boolean; message: string} | undefined {
  const line = stderr.split('\n').find((l) => l.startsWith('unshare: '))
  if (!line) return undefined
  // "unshare: failed to execute FILE: No such file or directory" (127, or 126 when it cannot run).
  if ((exitCode === 127 || exitCode === 126) && line.startsWith(`unshare: failed to execute ${file}: `)) {
    return {missing: exitCode === 127, message: line.slice(`unshare: failed to execute ${file}: `.length)}
  }
  // "unshare: unshare failed: Operation not permitted": no CAP_SYS_ADMIN (a container without it).
  if (exitCode === 1 && /^unshare: (unshare failed|cannot|failed)/.test(line))
    return {missing: false, message: `cannot make a PID namespace of its own (${line})`}
  return undefined
}
