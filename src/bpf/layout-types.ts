/**
 * The shape of the generated layout modules (layout.generated.ts and its legacy siblings): each C
 * struct of bpf/flowctl.h becomes a StructLayout with its size and every member's byte offset and
 * size, read from the BTF clang writes, so TypeScript never restates an offset.
 */
export interface FieldLayout {
  readonly offset: number
  readonly size: number
  /** The struct this member is, when it is one (its own layout is generated beside it). */
  readonly struct?: string
}

export interface StructLayout {
  readonly name: string
  readonly size: number
  readonly fields: Readonly<Record<string, FieldLayout>>
}
