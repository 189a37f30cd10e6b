/**
 * Every failure a person can act on is a FlowctlError: one line that says what is wrong and what
 * to do, and the exit status. Commands print the message and exit; nothing else prints stacks.
 */
import {getSystemErrorName} from 'node:util'

export class FlowctlError extends Error {
  readonly code: string
  readonly exitCode: number

  constructor(message: string, options: {cause?: unknown; code?: string; exitCode?: number} = {}) {
    super(message, {cause: options.cause})
    this.name = new.target.name
    this.code = options.code ?? 'E_FLOWCTL'
    this.exitCode = options.exitCode ?? 1
  }
}

/** Something the user named (namespace, interface, file, flow) does not exist. */
export class NotFoundError extends FlowctlError {
  constructor(message: string, options: {cause?: unknown} = {}) {
    super(message, {...options, code: 'E_NOT_FOUND'})
  }
}

/** A flag, selector or config value that is not valid. */
export class InvalidInputError extends FlowctlError {
  constructor(message: string, options: {cause?: unknown} = {}) {
    super(message, {...options, code: 'E_INVALID_INPUT', exitCode: 2})
  }
}

/** A program flowctl runs is not installed. */
export class ToolMissingError extends FlowctlError {
  readonly tool: string

  constructor(tool: string, debianPackage: string) {
    super(`${tool} is not installed: install it with \`apt-get install -y ${debianPackage}\` (see \`flowctl dependency-check\`)`, {
      code: 'E_TOOL_MISSING',
    })
    this.tool = tool
  }
}

/** A program flowctl ran exited with an error. */
export class CommandFailedError extends FlowctlError {
  readonly command: string
  readonly stderr: string
  readonly exitStatus: number | undefined

  constructor(command: string, detail: string, stderr: string, exitStatus: number | undefined) {
    super(`\`${command}\` failed: ${detail}`, {code: 'E_COMMAND_FAILED'})
    this.command = command
    this.stderr = stderr
    this.exitStatus = exitStatus
  }
}

/** The process lacks root or a capability it needs. */
export class PermissionError extends FlowctlError {
  constructor(message: string, options: {cause?: unknown} = {}) {
    super(message, {...options, code: 'E_PERMISSION'})
  }
}

/** Kernel or on-disk state that flowctl cannot use as it is (e.g. maps pinned by another version). */
export class StateError extends FlowctlError {
  constructor(message: string, options: {cause?: unknown} = {}) {
    super(message, {...options, code: 'E_STATE'})
  }
}

/** A call into the kernel's bpf() interface failed. */
export class BpfError extends FlowctlError {
  readonly errno: number

  constructor(operation: string, errno: number, hint = '') {
    super(`${operation} failed: ${errnoName(errno)}${hint ? `: ${hint}` : ''}`, {code: 'E_BPF'})
    this.errno = errno
  }
}

/** What an errno means where its bare name does not say what to do. */
const ERRNO_HINTS: Record<string, string> = {
  EPERM: 'operation not permitted; run as root',
  ENOENT: 'no such entry',
  E2BIG: 'map is full',
  ENOMEM: 'out of memory',
  EACCES: 'permission denied',
  EINVAL: 'invalid argument',
  ENOTSUP: 'not supported by this kernel',
}

/** An errno (positive: the kernel's -errno negated) by its name, e.g. 'ENOENT (no such entry)'. */
export function errnoName(errno: number): string {
  let name: string
  try {
    name = getSystemErrorName(-errno)
  } catch {
    return `errno ${errno}`
  }
  if (name.startsWith('Unknown system error')) return `errno ${errno}`
  const hint = ERRNO_HINTS[name]
  return hint ? `${name} (${hint})` : name
}
