/** How the console writes values: escaped text, bytes and durations with units, tables, badges. */

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export const esc = (s: unknown): string => String(s ?? '').replace(/[&<>"']/g, (c) => ENTITIES[c]!);

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export const ms = (v: number | null | undefined): string =>
  v === null || v === undefined ? '–' : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`;

export const time = (t: number): string => new Date(t).toLocaleTimeString();

export function table(headers: string[], rows: string[], attrs = ''): string {
  return (
    `<table ${attrs}><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>` +
    `<tbody>${rows.length ? rows.join('') : `<tr><td colspan="${headers.length}" class="muted">none</td></tr>`}</tbody></table>`
  );
}

export const badge = (s: string): string => `<span class="badge ${esc(s)}">${esc(s)}</span>`;
