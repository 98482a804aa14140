/**
 * The cgroup usage of one cell (`application/vnd.jupyter-sandbox.stats+json`),
 * the frozen summary the kernel's live meter turns into when the cell ends:
 * three bars (memory current/peak against the limit, CPU peak/average against
 * the CPU limit, pids peak against the limit) and a sparkline of the samples.
 * An OOM kill or a pids-limit hit turns its bar and the sparkline red and
 * says so in words.
 *
 * CPU percentages are Docker's: 100% is one CPU busy, so a limit of 0.5 CPUs
 * is full at 50%.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import {
  PayloadError,
  checkVersion,
  el,
  errorBox,
  formatBytes,
  formatDuration,
  isObject,
  num,
  requireArray,
  requireObject,
  str
} from './util';

export const STATS_MIME = 'application/vnd.jupyter-sandbox.stats+json';

/** CSS classes (see style/stats.css). */
export const STATS_CLASS = 'jp-SandboxStats';
export const STATS_HEADER_CLASS = 'jp-SandboxStats-header';
export const BAR_CLASS = 'jp-SandboxStats-bar';
export const BAR_TRACK_CLASS = 'jp-SandboxStats-track';
export const BAR_FILL_CLASS = 'jp-SandboxStats-fill';
export const BAR_MARKER_CLASS = 'jp-SandboxStats-marker';
export const BAR_LABEL_CLASS = 'jp-SandboxStats-label';
export const SPARKLINE_CLASS = 'jp-SandboxStats-sparkline';
export const ALERT_CLASS = 'jp-SandboxStats-alert';
export const DANGER_CLASS = 'jp-mod-danger';
export const WARN_CLASS = 'jp-mod-warn';
export const NOLIMIT_CLASS = 'jp-mod-nolimit';

/** [seconds since start, memory bytes, CPU percent, pids]. */
export type Sample = [number, number, number, number];

export interface IStatsPayload {
  version: number;
  cell: number | null;
  container: string;
  duration: number | null;
  samples: Sample[];
  memory: { current: number | null; peak: number | null; limit: number | null };
  cpu: { percent_peak: number | null; percent_avg: number | null; limit_cpus: number | null };
  pids: { peak: number | null; limit: number | null };
  oom_killed: boolean;
  pids_limit_hit: boolean;
}

/** A bar as drawn: widths in percent of the track, a label, and its state. */
export interface IBar {
  name: 'memory' | 'cpu' | 'pids';
  /** Percent of the limit (may exceed 100), or null with no limit. */
  percent: number | null;
  /** Width of the fill, 0..100. */
  fill: number;
  /** Where a second value (memory current, CPU average) sits, 0..100, if any. */
  marker: number | null;
  text: string;
  danger: boolean;
  warn: boolean;
  nolimit: boolean;
}

// -- the math -------------------------------------------------------------------------

/** value / limit as a percentage; null when there is no (positive) limit or no value. */
export function percentOf(
  value: number | null | undefined,
  limit: number | null | undefined
): number | null {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return null;
  }
  if (limit === null || limit === undefined || !Number.isFinite(limit) || limit <= 0) {
    return null;
  }
  return (value / limit) * 100;
}

/** A percentage as a bar width: clamped to 0..100 (null -> 0). */
export function barWidth(percent: number | null): number {
  if (percent === null || !Number.isFinite(percent)) {
    return 0;
  }
  return Math.max(0, Math.min(100, percent));
}

function pct(percent: number | null): string {
  if (percent === null) {
    return '';
  }
  return percent < 10 ? percent.toFixed(1) + '%' : Math.round(percent) + '%';
}

const WARN_AT = 90;

export function memoryBar(memory: IStatsPayload['memory'], oomKilled = false): IBar {
  const percent = percentOf(memory.peak, memory.limit);
  const current = percentOf(memory.current, memory.limit);
  let text = `memory: peak ${formatBytes(memory.peak)}`;
  if (memory.current !== null) {
    text += `, now ${formatBytes(memory.current)}`;
  }
  text += memory.limit !== null ? ` of ${formatBytes(memory.limit)} (${pct(percent)})` : ' (no limit)';
  if (oomKilled) {
    text += ' \u2014 out of memory: killed';
  }
  return {
    name: 'memory',
    percent,
    fill: barWidth(percent),
    marker: current === null ? null : barWidth(current),
    text,
    danger: oomKilled,
    warn: !oomKilled && percent !== null && percent >= WARN_AT,
    nolimit: memory.limit === null
  };
}

/** CPU: 100% = one CPU, so the limit's capacity is limit_cpus * 100 (one CPU with no limit). */
export function cpuBar(cpu: IStatsPayload['cpu']): IBar {
  const capacity = cpu.limit_cpus !== null && cpu.limit_cpus > 0 ? cpu.limit_cpus * 100 : null;
  const percent = percentOf(cpu.percent_peak, capacity ?? 100);
  const avg = percentOf(cpu.percent_avg, capacity ?? 100);
  let text = `CPU: peak ${pct(cpu.percent_peak ?? 0)}, average ${pct(cpu.percent_avg ?? 0)}`;
  if (capacity !== null) {
    text += ` of ${cpu.limit_cpus} CPU${cpu.limit_cpus === 1 ? '' : 's'} (${pct(percent)} of the limit)`;
  } else {
    text += ' (100% = one CPU; no CPU limit)';
  }
  return {
    name: 'cpu',
    percent: capacity !== null ? percent : null,
    fill: barWidth(percent),
    marker: avg === null ? null : barWidth(avg),
    text,
    danger: false,
    warn: capacity !== null && percent !== null && percent >= WARN_AT,
    nolimit: capacity === null
  };
}

export function pidsBar(pids: IStatsPayload['pids'], limitHit = false): IBar {
  const percent = percentOf(pids.peak, pids.limit);
  let text = `processes: peak ${pids.peak ?? '?'}`;
  text += pids.limit !== null ? ` of ${pids.limit} (${pct(percent)})` : ' (no limit)';
  if (limitHit) {
    text += ' \u2014 limit hit: fork failed';
  }
  return {
    name: 'pids',
    percent,
    fill: barWidth(percent),
    marker: null,
    text,
    danger: limitHit,
    warn: !limitHit && percent !== null && percent >= WARN_AT,
    nolimit: pids.limit === null
  };
}

export function statsBars(payload: IStatsPayload): IBar[] {
  return [
    memoryBar(payload.memory, payload.oom_killed),
    cpuBar(payload.cpu),
    pidsBar(payload.pids, payload.pids_limit_hit)
  ];
}

/**
 * The points of a sparkline: x over the sample times, y from the bottom
 * (height) up to the top (0) for 0..scale. Samples with a non-number value
 * are skipped.
 */
export function sparkPoints(
  samples: Sample[],
  column: 1 | 2 | 3,
  scale: number,
  width: number,
  height: number
): Array<[number, number]> {
  const usable = samples.filter(s => Number.isFinite(s[0]) && Number.isFinite(s[column]));
  if (!usable.length) {
    return [];
  }
  const t0 = usable[0][0];
  const span = usable[usable.length - 1][0] - t0 || 1;
  const top = scale > 0 ? scale : 1;
  return usable.map(s => {
    const x = ((s[0] - t0) / span) * width;
    const y = height - Math.max(0, Math.min(1, s[column] / top)) * height;
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  });
}

// -- parsing --------------------------------------------------------------------------

function parseSample(raw: unknown, i: number): Sample {
  const a = requireArray(raw, `samples[${i}]`);
  const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : NaN);
  return [n(a[0]), n(a[1]), n(a[2]), n(a[3])];
}

/** Check a stats+json payload (a JSON string is parsed first). */
export function parseStats(data: unknown): IStatsPayload {
  if (typeof data === 'string') {
    data = JSON.parse(data);
  }
  const o = requireObject(data, 'the usage summary');
  checkVersion(o, 'the usage summary');
  if (!isObject(o.memory) && !isObject(o.cpu) && !isObject(o.pids)) {
    throw new PayloadError('the usage summary has no "memory", "cpu" or "pids"');
  }
  const memory = isObject(o.memory) ? o.memory : {};
  const cpu = isObject(o.cpu) ? o.cpu : {};
  const pids = isObject(o.pids) ? o.pids : {};
  return {
    version: 1,
    cell: num(o.cell, 'cell', true),
    container: str(o.container, 'container'),
    duration: num(o.duration, 'duration', true),
    samples: o.samples === undefined || o.samples === null ? [] : requireArray(o.samples, 'samples').map(parseSample),
    memory: {
      current: num(memory.current, 'memory.current', true),
      peak: num(memory.peak, 'memory.peak', true),
      limit: num(memory.limit, 'memory.limit', true)
    },
    cpu: {
      percent_peak: num(cpu.percent_peak, 'cpu.percent_peak', true),
      percent_avg: num(cpu.percent_avg, 'cpu.percent_avg', true),
      limit_cpus: num(cpu.limit_cpus, 'cpu.limit_cpus', true)
    },
    pids: {
      peak: num(pids.peak, 'pids.peak', true),
      limit: num(pids.limit, 'pids.limit', true)
    },
    oom_killed: o.oom_killed === true,
    pids_limit_hit: o.pids_limit_hit === true
  };
}

// -- the DOM --------------------------------------------------------------------------

export function renderBar(bar: IBar): HTMLElement {
  const box = el('div', `${BAR_CLASS} jp-mod-${bar.name}`);
  box.classList.toggle(DANGER_CLASS, bar.danger);
  box.classList.toggle(WARN_CLASS, bar.warn);
  box.classList.toggle(NOLIMIT_CLASS, bar.nolimit);
  box.appendChild(el('div', BAR_LABEL_CLASS, bar.text));
  const track = el('div', BAR_TRACK_CLASS);
  track.setAttribute('role', 'meter');
  track.setAttribute('aria-label', bar.text);
  track.setAttribute('aria-valuemin', '0');
  track.setAttribute('aria-valuemax', '100');
  track.setAttribute('aria-valuenow', String(Math.round(bar.fill)));
  const fill = el('div', BAR_FILL_CLASS);
  fill.style.width = `${bar.fill}%`;
  track.appendChild(fill);
  if (bar.marker !== null) {
    const marker = el('div', BAR_MARKER_CLASS);
    marker.style.left = `${bar.marker}%`;
    track.appendChild(marker);
  }
  box.appendChild(track);
  return box;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const SPARK_W = 300;
const SPARK_H = 40;

/** Memory (solid) and CPU (dashed) over the cell's run, as a small inline SVG. */
export function renderSparkline(payload: IStatsPayload): Element {
  const samples = payload.samples;
  if (samples.length < 2) {
    return el(
      'div',
      `${SPARKLINE_CLASS} jp-mod-empty`,
      samples.length ? 'one sample: too short to plot' : 'no samples'
    );
  }
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', SPARKLINE_CLASS);
  svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  if (payload.oom_killed || payload.pids_limit_hit) {
    svg.classList.add(DANGER_CLASS);
  }
  const title = document.createElementNS(SVG_NS, 'title');
  title.textContent = `memory (solid) and CPU (dashed) over ${samples.length} samples`;
  svg.appendChild(title);

  const finite = (xs: number[]) => xs.filter(Number.isFinite);
  const memMax = Math.max(0, ...finite(samples.map(s => s[1])));
  const cpuMax = Math.max(0, ...finite(samples.map(s => s[2])));
  const memScale = payload.memory.limit ?? (memMax || 1);
  const cpuScale =
    payload.cpu.limit_cpus !== null && payload.cpu.limit_cpus > 0
      ? payload.cpu.limit_cpus * 100
      : Math.max(100, cpuMax);
  const line = (column: 1 | 2, scale: number, cls: string) => {
    const points = sparkPoints(samples, column, scale, SPARK_W, SPARK_H);
    const poly = document.createElementNS(SVG_NS, 'polyline');
    poly.setAttribute('class', cls);
    poly.setAttribute('points', points.map(p => p.join(',')).join(' '));
    poly.setAttribute('fill', 'none');
    poly.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.appendChild(poly);
  };
  line(2, cpuScale, 'jp-SandboxStats-cpuLine');
  line(1, memScale, 'jp-SandboxStats-memLine');
  return svg;
}

export function renderStats(payload: IStatsPayload): HTMLElement {
  const box = el('div', 'jp-SandboxStats-body');
  const header = el('div', STATS_HEADER_CLASS);
  header.appendChild(
    el('span', 'jp-SandboxStats-title', payload.cell !== null ? `cell ${payload.cell}` : 'usage')
  );
  if (payload.container) {
    header.appendChild(el('span', 'jp-SandboxStats-container', payload.container));
  }
  if (payload.duration !== null) {
    header.appendChild(el('span', 'jp-SandboxStats-duration', formatDuration(payload.duration)));
  }
  box.appendChild(header);
  if (payload.oom_killed) {
    box.appendChild(
      el(
        'div',
        `${ALERT_CLASS} ${DANGER_CLASS}`,
        `Out of memory: the kernel killed a process when the cell reached its memory limit` +
          (payload.memory.limit !== null ? ` (${formatBytes(payload.memory.limit)})` : '') +
          '.'
      )
    );
  }
  if (payload.pids_limit_hit) {
    box.appendChild(
      el(
        'div',
        `${ALERT_CLASS} ${DANGER_CLASS}`,
        `Too many processes: the cell reached its pids limit` +
          (payload.pids.limit !== null ? ` (${payload.pids.limit})` : '') +
          ', so starting another process failed.'
      )
    );
  }
  for (const bar of statsBars(payload)) {
    box.appendChild(renderBar(bar));
  }
  box.appendChild(renderSparkline(payload));
  return box;
}

/** The MIME renderer: a widget that renders a stats+json model. */
export class StatsRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass(STATS_CLASS);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[this._mimeType];
    this.node.textContent = '';
    try {
      this.node.appendChild(renderStats(parseStats(data)));
    } catch (error) {
      this.node.appendChild(errorBox('usage summary', error, data));
    }
    return Promise.resolve();
  }

  private _mimeType: string;
}

export const statsRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [STATS_MIME],
  defaultRank: 0,
  createRenderer: options => new StatsRenderer(options)
};
