/**
 * What flowctl needs from the machine, each checked against a minimum: the library behind
 * `flowctl dependency-check`.
 */
import {readFileSync} from 'node:fs'
import {release} from 'node:os'

import koffi from 'koffi'
import semver from 'semver'

import {FlowctlError} from '../errors.js'
import {run} from './exec.js'

type DependencyStatus = 'VALID' | 'INVALID' | 'NOT-INSTALLED'

export interface DependencyCheck {
  name: string
  found: string | null
  minimum: string
  status: DependencyStatus
  /** What to do about it, when not VALID. */
  hint?: string
}

/**
 * Minimums, and why:
 * - clang 11: BTF-defined maps with map-in-map initialisers and bounded loops compile reliably.
 * - kernel 5.12: atomic fetch-and-add/or on shared counters (BPF atomics, 5.12), bpf_ktime_get_coarse_ns (5.11), batch map ops (5.6),
 *   __sk_buff gso_segs/gso_size/sk (5.1-5.7).
 * - iproute2 5.11 linked with libbpf 0.3+: tc loads BTF-style SEC(".maps") objects through libbpf.
 * - bpftool 5.10: `prog loadall ... pinmaps` and `map name NAME pinned` reuse, JSON with BTF.
 * - libbpf.so.1 1.0: the daemon's batch map reads go through it.
 */
export const MINIMUMS = {
  clang: '11.0.0',
  kernel: '5.12.0',
  iproute2: '5.11.0',
  iproute2Libbpf: '0.3.0',
  bpftool: '5.10.0',
  libbpf: '1.0.0',
} as const

function coerce(text: string | undefined | null): string | null {
  return text ? (semver.coerce(text)?.version ?? null) : null
}

function judge(name: string, found: string | null, minimum: string, hint: string): DependencyCheck {
  if (!found) return {name, found, minimum, status: 'NOT-INSTALLED', hint}
  if (semver.lt(found, minimum)) return {name, found, minimum, status: 'INVALID', hint}
  return {name, found, minimum, status: 'VALID'}
}

async function toolOutput(file: string, args: string[]): Promise<string | null> {
  try {
    const {stdout, stderr} = await run(file, args)
    return `${stdout}\n${stderr}`
  } catch (error) {
    if (error instanceof FlowctlError && error.code === 'E_TOOL_MISSING') return null
    throw error
  }
}

export function parseClangVersion(out: string): string | null {
  return coerce(out.match(/clang version (\S+)/)?.[1])
}

export function parseIpVersion(out: string): {iproute2: string | null; libbpf: string | null} {
  // "ip utility, iproute2-6.1.0, libbpf 1.1.2"; releases before 5.x were named by date (ss200127).
  const iproute2 = out.match(/iproute2-(\d+\.\d+(?:\.\d+)?)/)?.[1]
  const libbpf = out.match(/libbpf (\d+\.\d+(?:\.\d+)?)/)?.[1]
  return {iproute2: coerce(iproute2) ?? (/iproute2-ss\d+/.test(out) ? '0.0.0' : null), libbpf: coerce(libbpf)}
}

export function parseBpftoolVersion(out: string): string | null {
  return coerce(out.match(/bpftool v?(\d+\.\d+(?:\.\d+)?)/)?.[1])
}

function libbpfVersion(): string | null {
  try {
    const lib = koffi.load('libbpf.so.1')
    const major = lib.func('uint32_t libbpf_major_version(void)')() as number
    const minor = lib.func('uint32_t libbpf_minor_version(void)')() as number
    return `${major}.${minor}.0`
  } catch {
    return null
  }
}

function bpffsMounted(): boolean {
  try {
    return readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .some((l) => {
        const [, mountpoint, type] = l.split(' ')
        return mountpoint === '/sys/fs/bpf' && type === 'bpf'
      })
  } catch {
    return false
  }
}

const CAPS = {CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21, CAP_PERFMON: 38, CAP_BPF: 39}

/** Capabilities in effect: CAP_BPF (or CAP_SYS_ADMIN), CAP_NET_ADMIN, and CAP_SYS_ADMIN to enter namespaces. */
function effectiveCapabilities(): string[] {
  const status = readFileSync('/proc/self/status', 'utf8')
  const hex = status.match(/^CapEff:\s*([0-9a-f]+)/m)?.[1] ?? '0'
  const mask = BigInt(`0x${hex}`)
  return Object.entries(CAPS)
    .filter(([, bit]) => (mask >> BigInt(bit)) & 1n)
    .map(([name]) => name)
}

export async function checkDependencies(): Promise<DependencyCheck[]> {
  const [clangOut, ipOut, bpftoolOut] = await Promise.all([toolOutput('clang', ['--version']), toolOutput('ip', ['-V']), toolOutput('bpftool', ['version'])])
  const ip = ipOut ? parseIpVersion(ipOut) : {iproute2: null, libbpf: null}
  const checks: DependencyCheck[] = [
    judge('clang', clangOut ? parseClangVersion(clangOut) : null, MINIMUMS.clang, 'apt-get install -y clang llvm'),
    judge('kernel', coerce(release()), MINIMUMS.kernel, 'a kernel of 5.12 or later is needed (Debian 12 has 6.1)'),
    judge('iproute2', ip.iproute2, MINIMUMS.iproute2, 'apt-get install -y iproute2'),
  ]
  const libbpfOfIp = judge(
    'iproute2 libbpf',
    ip.libbpf,
    MINIMUMS.iproute2Libbpf,
    "this iproute2 is built without libbpf and cannot load BTF-style maps: install Debian's iproute2 (bookworm or later)",
  )
  if (ipOut && !ip.libbpf) libbpfOfIp.status = 'INVALID'
  checks.push(
    libbpfOfIp,
    judge('bpftool', bpftoolOut ? parseBpftoolVersion(bpftoolOut) : null, MINIMUMS.bpftool, 'apt-get install -y bpftool'),
    judge('libbpf (libbpf.so.1)', libbpfVersion(), MINIMUMS.libbpf, 'apt-get install -y libbpf1'),
  )
  const mounted = bpffsMounted()
  checks.push({
    name: 'bpffs (/sys/fs/bpf)',
    found: mounted ? 'mounted' : null,
    minimum: 'mounted',
    status: mounted ? 'VALID' : 'NOT-INSTALLED',
    hint: mounted ? undefined : 'mount -t bpf bpf /sys/fs/bpf (flowctl meter attach also mounts it)',
  })
  const caps = effectiveCapabilities()
  const capable = (caps.includes('CAP_BPF') || caps.includes('CAP_SYS_ADMIN')) && caps.includes('CAP_NET_ADMIN') && caps.includes('CAP_SYS_ADMIN')
  checks.push({
    name: 'capabilities',
    found: caps.join(',') || 'none',
    minimum: 'CAP_BPF,CAP_NET_ADMIN,CAP_SYS_ADMIN',
    status: capable ? 'VALID' : 'INVALID',
    hint: capable ? undefined : 'run as root (CAP_SYS_ADMIN is needed to enter network namespaces)',
  })
  return checks
}
