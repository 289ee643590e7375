/**
 * The chart of a running migration: bandwidth and dirty rate over time, with
 * axes in MiB/s and seconds, and the values at the cursor in the legend
 * (uPlot). One chart per migration lives across the view's refreshes: each
 * refresh moves the same element into the new page and adds the new sample,
 * so hovering is not interrupted.
 */
import uPlot from 'uplot';
import { bytes } from './format.js';

export interface Sample {
  atMs: number;
  bandwidth: number;
  dirtyRate: number;
}

const MiB = 1048576;
/** Tick steps on the rate axis: round numbers of MiB/s. */
const RATE_STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000].map((x) => x * MiB);

/** Tick steps on the time axis, in seconds. */
const TIME_STEPS = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
const seconds = (t: number): string => `${Number.isInteger(t) ? t : t.toFixed(1)} s`;

const rate = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : `${bytes(v)}/s`);

export class MigrationChart {
  private readonly samples: Sample[] = [];
  private plot: uPlot | undefined;

  constructor(readonly migration: string) {}

  get count(): number {
    return this.samples.length;
  }

  add(s: Sample): void {
    const last = this.samples[this.samples.length - 1];
    if (last && last.atMs >= s.atMs) return;
    this.samples.push(s);
    this.plot?.setData(this.data());
  }

  /** Puts the chart into `slot` (an element of the freshly rendered view). */
  mount(slot: HTMLElement): void {
    slot.dataset.samples = String(this.samples.length);
    if (this.samples.length < 2) {
      slot.innerHTML = '<p class="muted">the chart fills while memory is copied</p>';
      return;
    }
    if (!this.plot) this.plot = new uPlot(this.options(Math.max(320, Math.min(700, slot.clientWidth - 16))), this.data(), slot);
    else slot.append(this.plot.root);
  }

  destroy(): void {
    this.plot?.destroy();
    this.plot = undefined;
  }

  private data(): uPlot.AlignedData {
    const t0 = this.samples[0]?.atMs ?? 0;
    return [this.samples.map((s) => (s.atMs - t0) / 1000), this.samples.map((s) => s.bandwidth), this.samples.map((s) => s.dirtyRate)];
  }

  private options(width: number): uPlot.Options {
    const mib = (v: number): string => (v / MiB).toFixed(v > 0 && v < MiB ? 1 : 0);
    return {
      title: 'Memory copy',
      width,
      height: 200,
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(MiB, max * 1.1)] } },
      axes: [
        { label: 'seconds since the copy began', incrs: TIME_STEPS, values: (_u, ticks) => ticks.map(seconds) },
        { label: 'MiB/s', size: 56, incrs: RATE_STEPS, values: (_u, ticks) => ticks.map(mib) },
      ],
      series: [
        { label: 'time', value: (_u, v) => (v === null ? '–' : `${v.toFixed(1)} s`) },
        { label: 'bandwidth', stroke: '#2b6cb0', width: 2, value: (_u, v) => rate(v) },
        { label: 'dirty rate', stroke: '#b7791f', width: 2, value: (_u, v) => rate(v) },
      ],
      legend: { live: true },
    };
  }
}
