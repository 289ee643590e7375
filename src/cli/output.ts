/**
 * Human output: tables, sizes, durations, and a one-line progress display
 * that only draws on a terminal.
 */

export function print(s: string): void {
  process.stdout.write(s + '\n');
}

export function json(v: unknown): void {
  print(JSON.stringify(v, null, 2));
}

export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

export function bytes(n: number | undefined | null): string {
  if (n === undefined || n === null) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

export function ms(n: number | undefined | null): string {
  if (n === undefined || n === null) return '-';
  return n >= 10_000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`;
}

export class Progress {
  private active = false;
  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get enabled(): boolean {
    return Boolean(this.stream.isTTY);
  }

  update(line: string): void {
    if (!this.enabled) return;
    const width = this.stream.columns ?? 100;
    this.stream.write(`\r\x1b[2K${line.slice(0, width - 1)}`);
    this.active = true;
  }

  done(final?: string): void {
    if (this.active) this.stream.write('\r\x1b[2K');
    this.active = false;
    if (final && this.enabled) this.stream.write(final + '\n');
  }
}
