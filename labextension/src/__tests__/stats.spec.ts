import {
  DANGER_CLASS,
  STATS_MIME,
  StatsRenderer,
  barWidth,
  cpuBar,
  memoryBar,
  parseStats,
  percentOf,
  pidsBar,
  sparkPoints,
  statsRendererFactory
} from '../stats';
import { ERROR_CLASS } from '../util';
import { clone, mimeModel, statsPayload } from './samples';

const MiB = 1024 * 1024;

describe('bar math', () => {
  it('computes the percent of a limit, null without one', () => {
    expect(percentOf(128 * MiB, 512 * MiB)).toBe(25);
    expect(percentOf(10, null)).toBeNull();
    expect(percentOf(10, 0)).toBeNull();
    expect(percentOf(null, 100)).toBeNull();
    expect(percentOf(150, 100)).toBe(150);
  });

  it('clamps the bar width to 0..100', () => {
    expect(barWidth(150)).toBe(100);
    expect(barWidth(-3)).toBe(0);
    expect(barWidth(null)).toBe(0);
    expect(barWidth(42.5)).toBe(42.5);
  });

  it('fills the memory bar to the peak and marks the current value', () => {
    const bar = memoryBar({ current: 64 * MiB, peak: 128 * MiB, limit: 512 * MiB });
    expect(bar.fill).toBe(25);
    expect(bar.marker).toBe(12.5);
    expect(bar.text).toBe('memory: peak 128 MiB, now 64.0 MiB of 512 MiB (25%)');
    expect(bar.danger).toBe(false);
    expect(bar.nolimit).toBe(false);
  });

  it('has an empty, "no limit" memory bar without a limit', () => {
    const bar = memoryBar({ current: 1 * MiB, peak: 2 * MiB, limit: null });
    expect(bar.percent).toBeNull();
    expect(bar.fill).toBe(0);
    expect(bar.marker).toBeNull();
    expect(bar.nolimit).toBe(true);
    expect(bar.text).toContain('(no limit)');
  });

  it('turns the memory bar red on an OOM kill', () => {
    const bar = memoryBar({ current: 0, peak: 512 * MiB, limit: 512 * MiB }, true);
    expect(bar.danger).toBe(true);
    expect(bar.warn).toBe(false);
    expect(bar.text).toContain('out of memory');
  });

  it('measures CPU against the CPU limit (100% = one CPU)', () => {
    const bar = cpuBar({ percent_peak: 40, percent_avg: 10, limit_cpus: 0.5 });
    expect(bar.percent).toBe(80);
    expect(bar.fill).toBe(80);
    expect(bar.marker).toBe(20);
    expect(bar.text).toContain('of 0.5 CPUs (80% of the limit)');
    const two = cpuBar({ percent_peak: 150, percent_avg: 100, limit_cpus: 2 });
    expect(two.percent).toBe(75);
  });

  it('measures CPU against one CPU when there is no CPU limit', () => {
    const bar = cpuBar({ percent_peak: 250, percent_avg: 50, limit_cpus: null });
    expect(bar.percent).toBeNull();
    expect(bar.fill).toBe(100);
    expect(bar.marker).toBe(50);
    expect(bar.nolimit).toBe(true);
  });

  it('measures pids against the limit and marks a hit', () => {
    const bar = pidsBar({ peak: 16, limit: 64 });
    expect(bar.fill).toBe(25);
    expect(bar.text).toBe('processes: peak 16 of 64 (25%)');
    expect(pidsBar({ peak: 64, limit: 64 }, true).danger).toBe(true);
    expect(pidsBar({ peak: 63, limit: 64 }).warn).toBe(true);
    expect(pidsBar({ peak: 3, limit: null }).percent).toBeNull();
  });

  it('places sparkline points over time, bottom = 0 and top = the scale', () => {
    const pts = sparkPoints(
      [
        [0, 0, 0, 0],
        [1, 50, 0, 0],
        [2, 100, 0, 0],
        [3, NaN, 0, 0]
      ],
      1,
      100,
      200,
      40
    );
    expect(pts).toEqual([
      [0, 40],
      [100, 20],
      [200, 0]
    ]);
  });
});

describe('StatsRenderer', () => {
  it('is a safe factory for the stats MIME type', () => {
    expect(statsRendererFactory.safe).toBe(true);
    expect(statsRendererFactory.mimeTypes).toEqual([STATS_MIME]);
  });

  it('renders three bars and a red sparkline after an OOM kill', async () => {
    const r = new StatsRenderer({ mimeType: STATS_MIME } as any);
    await r.renderModel(mimeModel(STATS_MIME, statsPayload));
    const bars = r.node.querySelectorAll('.jp-SandboxStats-bar');
    expect(bars).toHaveLength(3);
    expect(bars[0].classList).toContain('jp-mod-memory');
    expect(bars[0].classList).toContain(DANGER_CLASS);
    expect((bars[0].querySelector('.jp-SandboxStats-fill') as HTMLElement).style.width).toBe(
      '100%'
    );
    expect(bars[1].classList).not.toContain(DANGER_CLASS);
    expect((bars[1].querySelector('.jp-SandboxStats-fill') as HTMLElement).style.width).toBe(
      '100%'
    );
    expect((bars[2].querySelector('.jp-SandboxStats-fill') as HTMLElement).style.width).toBe(
      '6.25%'
    );
    expect(r.node.querySelector('.jp-SandboxStats-alert')!.textContent).toContain(
      'Out of memory'
    );
    const svg = r.node.querySelector('svg.jp-SandboxStats-sparkline')!;
    expect(svg.classList.contains(DANGER_CLASS)).toBe(true);
    const mem = svg.querySelector('.jp-SandboxStats-memLine')!;
    expect(mem.getAttribute('points')!.split(' ')).toHaveLength(4);
    expect(r.node.querySelector('.jp-SandboxStats-header')!.textContent).toContain('nbs1-5');
  });

  it('shows a pids-limit hit in red and nothing red otherwise', async () => {
    const raw = clone(statsPayload) as any;
    raw.oom_killed = false;
    raw.pids_limit_hit = true;
    raw.pids.peak = 64;
    const r = new StatsRenderer({ mimeType: STATS_MIME } as any);
    await r.renderModel(mimeModel(STATS_MIME, raw));
    const bars = r.node.querySelectorAll('.jp-SandboxStats-bar');
    expect(bars[0].classList).not.toContain(DANGER_CLASS);
    expect(bars[2].classList).toContain(DANGER_CLASS);
    expect(r.node.querySelector('.jp-SandboxStats-alert')!.textContent).toContain(
      'Too many processes'
    );
    raw.pids_limit_hit = false;
    await r.renderModel(mimeModel(STATS_MIME, raw));
    expect(r.node.querySelectorAll(`.${DANGER_CLASS}`)).toHaveLength(0);
  });

  it('handles null limits and too few samples', async () => {
    const raw = clone(statsPayload) as any;
    raw.memory.limit = null;
    raw.pids.limit = null;
    raw.cpu.limit_cpus = null;
    raw.samples = [[0, 1, 2, 3]];
    raw.oom_killed = false;
    const p = parseStats(raw);
    expect(p.memory.limit).toBeNull();
    const r = new StatsRenderer({ mimeType: STATS_MIME } as any);
    await r.renderModel(mimeModel(STATS_MIME, raw));
    expect(r.node.querySelectorAll('.jp-mod-nolimit')).toHaveLength(3);
    expect(r.node.querySelector('.jp-SandboxStats-sparkline')!.textContent).toContain(
      'too short to plot'
    );
  });

  it('says what is wrong with a bad payload', async () => {
    const r = new StatsRenderer({ mimeType: STATS_MIME } as any);
    await r.renderModel(mimeModel(STATS_MIME, { version: 1, cell: 1 }));
    expect(r.node.querySelector(`.${ERROR_CLASS}`)!.textContent).toContain(
      'Cannot show this usage summary'
    );
    const bad = clone(statsPayload) as any;
    bad.memory.peak = 'lots';
    await r.renderModel(mimeModel(STATS_MIME, bad));
    expect(r.node.querySelector(`.${ERROR_CLASS}`)!.textContent).toContain(
      'memory.peak is not a number'
    );
    await r.renderModel(mimeModel(STATS_MIME, '{not json'));
    expect(r.node.querySelector(`.${ERROR_CLASS}`)).not.toBeNull();
  });
});
