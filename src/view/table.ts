/** Plain text tables: left-aligned columns two spaces apart, numbers right-aligned. */
export function renderTable(header: string[], rows: string[][], options: {right?: number[]; widths?: number[]} = {}): string[] {
  const widths = options.widths ?? header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]?.length ?? 0)))
  const right = new Set(options.right ?? [])
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 && !right.has(i) ? c : right.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)]
}
