/**
 * The "Sandbox" side panel: the current notebook's sandbox — its image, layer
 * stack, limits and live usage — and the user's containers and images.
 *
 * It talks to the kernel over a comm (target `jupyter_sandbox.panel`), opened
 * only when the current notebook's kernel is the sandbox kernel (kernelspec
 * name "sandbox"). It sends {"request": "snapshot"} and the kernel answers
 * {"type": "snapshot", ...}; while a cell runs the kernel pushes
 * {"type": "usage", ...} (a few times a second) and {"type": "idle"} at the
 * end. The panel asks again when the kernel changes, after each execution and
 * on "idle" (one request at a time: a burst of cells makes one more request).
 */

import type { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { ISignal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { ILayer, ILayersState, newLayersState, parseLayers, renderStack } from './layers';
import { IBar, barWidth, percentOf, renderBar } from './stats';
import {
  PayloadError,
  el,
  errorBox,
  formatBytes,
  isObject,
  num,
  requireArray,
  requireObject,
  str
} from './util';

export const COMM_TARGET = 'jupyter_sandbox.panel';
export const SANDBOX_KERNEL = 'sandbox';
export const PANEL_ID = 'jupyter-sandbox-panel';

/** CSS classes (see style/panel.css). */
export const PANEL_CLASS = 'jp-SandboxPanel';
export const PANEL_CONTENT_CLASS = 'jp-SandboxPanel-content';
export const PANEL_SECTION_CLASS = 'jp-SandboxPanel-section';
export const PANEL_MESSAGE_CLASS = 'jp-SandboxPanel-message';
export const PANEL_USAGE_CLASS = 'jp-SandboxPanel-usage';
export const PANEL_STATUS_CLASS = 'jp-SandboxPanel-status';

export interface ILimits {
  memory: number | null;
  cpus: number | null;
  pids: number | null;
}

export interface IContainerInfo {
  name: string;
  image: string;
  state: string;
  status: string;
}

export interface IImageInfo {
  tags: string[];
  id: string;
  size: number | null;
}

export interface ISnapshot {
  image: string;
  image_id: string;
  layers: ILayer[];
  limits: ILimits;
  containers: IContainerInfo[];
  images: IImageInfo[];
}

/** One live sample: memory bytes, CPU percent (100 = one CPU), pids; and the peaks so far. */
export interface IUsage {
  t: number | null;
  memory: number | null;
  cpu: number | null;
  pids: number | null;
  memory_peak: number | null;
  cpu_peak: number | null;
  pids_peak: number | null;
  cell: number | null;
  container: string;
  limits: ILimits | null;
}

// -- messages -------------------------------------------------------------------------

function parseLimits(raw: unknown): ILimits {
  const o = isObject(raw) ? raw : {};
  return {
    memory: num(o.memory, 'limits.memory', true),
    cpus: num(o.cpus, 'limits.cpus', true),
    pids: num(o.pids, 'limits.pids', true)
  };
}

export function parseSnapshot(raw: unknown): ISnapshot {
  const o = requireObject(raw, 'the snapshot');
  const containers = o.containers === undefined ? [] : requireArray(o.containers, 'containers');
  const images = o.images === undefined ? [] : requireArray(o.images, 'images');
  return {
    image: str(o.image, 'image'),
    image_id: str(o.image_id, 'image_id'),
    layers: o.layers === undefined || o.layers === null ? [] : parseLayers(o.layers),
    limits: parseLimits(o.limits),
    containers: containers.map((c, i) => {
      const co = requireObject(c, `containers[${i}]`);
      return {
        name: str(co.name, `containers[${i}].name`),
        image: str(co.image, `containers[${i}].image`),
        state: str(co.state, `containers[${i}].state`),
        status: str(co.status, `containers[${i}].status`)
      };
    }),
    images: images.map((m, i) => {
      const mo = requireObject(m, `images[${i}]`);
      const tags = Array.isArray(mo.tags) ? mo.tags.map(String) : [];
      return {
        tags,
        id: str(mo.id, `images[${i}].id`),
        size: num(mo.size, `images[${i}].size`, true)
      };
    })
  };
}

/**
 * A usage message: {"type": "usage", "cell", "container", "t", "memory",
 * "cpu", "pids", "memory_peak", "cpu_peak", "pids_peak", "limits"}. The
 * sample may also come as a "sample" list [t, memory, cpu, pids] (as in
 * stats+json); "limits" is as in the snapshot.
 */
export function parseUsage(raw: unknown): IUsage {
  const o = requireObject(raw, 'the usage message');
  const pick = (...names: string[]): number | null => {
    for (const name of names) {
      const v = o[name];
      if (typeof v === 'number' && Number.isFinite(v)) {
        return v;
      }
    }
    return null;
  };
  let t = pick('t', 'time');
  let memory = pick('memory', 'mem', 'mem_bytes');
  let cpu = pick('cpu', 'cpu_percent');
  let pids = pick('pids');
  if (Array.isArray(o.sample)) {
    const s = o.sample.map(v => (typeof v === 'number' && Number.isFinite(v) ? v : null));
    [t, memory, cpu, pids] = [s[0] ?? t, s[1] ?? memory, s[2] ?? cpu, s[3] ?? pids];
  }
  if (memory === null && cpu === null && pids === null) {
    throw new PayloadError('the usage message has no memory, cpu or pids');
  }
  return {
    t,
    memory,
    cpu,
    pids,
    memory_peak: pick('memory_peak'),
    cpu_peak: pick('cpu_peak'),
    pids_peak: pick('pids_peak'),
    cell: pick('cell'),
    container: typeof o.container === 'string' ? o.container : '',
    limits: o.limits === undefined || o.limits === null ? null : parseLimits(o.limits)
  };
}

/** A peak as a marker on a bar (0..100), or null. */
function peakMarker(peak: number | null, limit: number | null): number | null {
  const p = percentOf(peak, limit);
  return p === null ? null : barWidth(p);
}

/** The live bars: memory, CPU and pids now (the fill) and their peaks (a marker), against the limits. */
export function usageBars(usage: IUsage, limits: ILimits): IBar[] {
  const mem = percentOf(usage.memory, limits.memory);
  const capacity = limits.cpus !== null && limits.cpus > 0 ? limits.cpus * 100 : null;
  const cpu = percentOf(usage.cpu, capacity ?? 100);
  const pids = percentOf(usage.pids, limits.pids);
  const warn = (p: number | null) => p !== null && p >= 90;
  const pctText = (p: number | null) => (p === null ? '' : ` (${Math.round(p)}%)`);
  return [
    {
      name: 'memory',
      percent: mem,
      fill: barWidth(mem),
      marker: peakMarker(usage.memory_peak, limits.memory),
      text:
        `memory: ${formatBytes(usage.memory)}` +
        (limits.memory !== null ? ` of ${formatBytes(limits.memory)}${pctText(mem)}` : ' (no limit)') +
        (usage.memory_peak !== null ? `, peak ${formatBytes(usage.memory_peak)}` : ''),
      danger: mem !== null && mem >= 100,
      warn: warn(mem) && !(mem !== null && mem >= 100),
      nolimit: limits.memory === null
    },
    {
      name: 'cpu',
      percent: capacity !== null ? cpu : null,
      fill: barWidth(cpu),
      marker: peakMarker(usage.cpu_peak, capacity ?? 100),
      text:
        `CPU: ${usage.cpu === null ? '?' : Math.round(usage.cpu) + '%'}` +
        (capacity !== null ? ` of ${limits.cpus} CPUs${pctText(cpu)}` : ' (100% = one CPU; no limit)') +
        (usage.cpu_peak !== null ? `, peak ${Math.round(usage.cpu_peak)}%` : ''),
      danger: false,
      warn: capacity !== null && warn(cpu),
      nolimit: capacity === null
    },
    {
      name: 'pids',
      percent: pids,
      fill: barWidth(pids),
      marker: peakMarker(usage.pids_peak, limits.pids),
      text:
        `processes: ${usage.pids ?? '?'}` +
        (limits.pids !== null ? ` of ${limits.pids}${pctText(pids)}` : ' (no limit)') +
        (usage.pids_peak !== null ? `, peak ${usage.pids_peak}` : ''),
      danger: pids !== null && pids >= 100,
      warn: warn(pids) && !(pids !== null && pids >= 100),
      nolimit: limits.pids === null
    }
  ];
}

// -- the DOM --------------------------------------------------------------------------

function section(title: string, name: string): HTMLElement {
  const box = el('section', `${PANEL_SECTION_CLASS} jp-mod-${name}`);
  box.appendChild(el('h3', 'jp-SandboxPanel-sectionTitle', title));
  return box;
}

function table(headers: string[], rows: string[][], className: string): HTMLElement {
  const t = el('table', `jp-SandboxPanel-table ${className}`);
  const head = el('tr');
  for (const h of headers) {
    head.appendChild(el('th', undefined, h));
  }
  const thead = el('thead');
  thead.appendChild(head);
  t.appendChild(thead);
  const tbody = el('tbody');
  for (const row of rows) {
    const tr = el('tr');
    for (const cell of row) {
      const td = el('td', undefined, cell);
      td.title = cell;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
  t.appendChild(tbody);
  return t;
}

export function limitsText(limits: ILimits): string[][] {
  return [
    ['memory', limits.memory === null ? 'no limit' : formatBytes(limits.memory)],
    ['CPUs', limits.cpus === null ? 'no limit' : String(limits.cpus)],
    ['processes', limits.pids === null ? 'no limit' : String(limits.pids)]
  ];
}

/** The usage section's body: bars while a cell runs, a line when idle. */
export function renderUsage(usage: IUsage | null, limits: ILimits, running: boolean): HTMLElement {
  const box = el('div', PANEL_USAGE_CLASS);
  box.classList.toggle('jp-mod-running', running);
  if (!usage) {
    box.appendChild(
      el('div', 'jp-SandboxPanel-idle', running ? 'waiting for the first sample…' : 'idle: no cell running')
    );
    return box;
  }
  box.appendChild(
    el(
      'div',
      'jp-SandboxPanel-usageTitle',
      (running ? 'running' : 'last run') +
        (usage.cell !== null ? `: cell ${usage.cell}` : '') +
        (usage.container ? ` (${usage.container})` : '')
    )
  );
  for (const bar of usageBars(usage, usage.limits ?? limits)) {
    box.appendChild(renderBar(bar));
  }
  return box;
}

/** Everything but the usage: image, limits, layers, containers, images. */
export function renderSnapshot(
  snapshot: ISnapshot,
  layersState: ILayersState = newLayersState()
): DocumentFragment {
  const frag = document.createDocumentFragment();

  const image = section('Image', 'image');
  const name = el('div', 'jp-SandboxPanel-image', snapshot.image || '(unknown image)');
  image.appendChild(name);
  if (snapshot.image_id) {
    image.appendChild(el('div', 'jp-SandboxPanel-imageId', snapshot.image_id));
  }
  frag.appendChild(image);

  const limits = section('Limits', 'limits');
  limits.appendChild(table(['', 'limit'], limitsText(snapshot.limits), 'jp-mod-limits'));
  frag.appendChild(limits);

  const layers = section(`Layers (${snapshot.layers.length})`, 'layers');
  layers.appendChild(renderStack({ layers: snapshot.layers, upper: { note: 'writable, one fresh per cell' } }, layersState));
  frag.appendChild(layers);

  const containers = section(`Your containers (${snapshot.containers.length})`, 'containers');
  if (snapshot.containers.length) {
    containers.appendChild(
      table(
        ['name', 'image', 'state'],
        snapshot.containers.map(c => [c.name, c.image, c.status || c.state]),
        'jp-mod-containers'
      )
    );
  } else {
    containers.appendChild(el('div', 'jp-SandboxPanel-none', 'none'));
  }
  frag.appendChild(containers);

  const images = section(`Your images (${snapshot.images.length})`, 'images');
  if (snapshot.images.length) {
    images.appendChild(
      table(
        ['tags', 'id', 'size'],
        snapshot.images.map(m => [m.tags.length ? m.tags.join(', ') : '<none>', m.id, formatBytes(m.size)]),
        'jp-mod-images'
      )
    );
  } else {
    images.appendChild(el('div', 'jp-SandboxPanel-none', 'none'));
  }
  frag.appendChild(images);
  return frag;
}

// -- the widget -----------------------------------------------------------------------

type SessionContext = NotebookPanel['sessionContext'];

/** What NotebookActions.executed emits (the part the panel reads). */
export interface IExecutedArgs {
  notebook: unknown;
}

export interface ISandboxPanelOptions {
  tracker: INotebookTracker;
  /** Emitted after each cell execution: NotebookActions.executed. */
  executed?: ISignal<any, IExecutedArgs>;
  /** Called by the "new notebook" button (creates a Bash (sandbox) notebook). */
  newNotebook?: () => void;
}

export type PanelState =
  | 'no-notebook'
  | 'no-kernel'
  | 'other-kernel'
  | 'connecting'
  | 'ready'
  | 'unavailable';

export class SandboxPanel extends Widget {
  constructor(options: ISandboxPanelOptions) {
    super();
    this.id = PANEL_ID;
    this.addClass(PANEL_CLASS);
    this.title.caption = 'Sandbox: image, layers, limits and usage of this notebook';
    this._tracker = options.tracker;
    this._newNotebook = options.newNotebook;

    const head = el('div', 'jp-SandboxPanel-head');
    head.appendChild(el('h2', 'jp-SandboxPanel-title', 'Sandbox'));
    this._refreshButton = el('button', 'jp-SandboxPanel-refresh jp-mod-styled', 'Refresh');
    this._refreshButton.title = 'ask the kernel again';
    this._refreshButton.addEventListener('click', () => this.refresh());
    head.appendChild(this._refreshButton);
    this.node.appendChild(head);
    this._status = el('div', PANEL_STATUS_CLASS);
    this.node.appendChild(this._status);
    this._content = el('div', PANEL_CONTENT_CLASS);
    this.node.appendChild(this._content);
    this._usageSection = section('Live usage', 'usage');
    this._snapshotBox = el('div', 'jp-SandboxPanel-snapshot');

    this._tracker.currentChanged.connect(this._onCurrentChanged, this);
    this._executed = options.executed ?? null;
    this._executed?.connect(this._onExecuted, this);
    this._onCurrentChanged();
  }

  /** The panel's state, for tests and for the DOM (data-state). */
  get state(): PanelState {
    return this._state;
  }

  /** Ask the kernel for a snapshot now (or as soon as the last answer is in). */
  refresh(): void {
    if (!this._comm || this._comm.isDisposed) {
      this._connect();
      return;
    }
    if (this._pending) {
      this._dirty = true;
      return;
    }
    this._pending = true;
    this._dirty = false;
    this._comm.send({ request: 'snapshot' });
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._tracker.currentChanged.disconnect(this._onCurrentChanged, this);
    this._executed?.disconnect(this._onExecuted, this);
    this._setSession(null);
    super.dispose();
  }

  protected onAfterAttach(): void {
    if (this.isVisible) {
      this._shown = true;
      this._connect();
    }
  }

  protected onAfterShow(): void {
    this._shown = true;
    this._connect();
  }

  private _onCurrentChanged(): void {
    const panel = this._tracker.currentWidget;
    this._notebook = panel;
    this._setSession(panel ? panel.sessionContext : null);
  }

  private _setSession(session: SessionContext | null): void {
    if (this._session === session) {
      this._connect();
      return;
    }
    if (this._session) {
      this._session.kernelChanged.disconnect(this._onKernelChanged, this);
      this._session.statusChanged.disconnect(this._onStatusChanged, this);
    }
    this._session = session;
    if (session) {
      session.kernelChanged.connect(this._onKernelChanged, this);
      session.statusChanged.connect(this._onStatusChanged, this);
    }
    this._connect();
  }

  private _onKernelChanged(): void {
    this._connect();
  }

  private _onStatusChanged(_sender: SessionContext, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      this._closeComm();
      this._snapshot = null;
      this._usage = null;
      this._render();
    } else if (status === 'idle' && (!this._comm || this._comm.isDisposed)) {
      this._connect();
    }
  }

  private _onExecuted(_sender: unknown, args: IExecutedArgs): void {
    if (this._notebook && args.notebook === this._notebook.content && this._comm) {
      this.refresh();
    }
  }

  /** Open the comm to the current kernel if it is a sandbox kernel (once the panel was shown). */
  private _connect(): void {
    const kernel = this._session?.session?.kernel ?? null;
    if (this._comm && !this._comm.isDisposed && this._kernel === kernel) {
      return;
    }
    this._closeComm();
    this._kernel = kernel;
    if (!this._notebook) {
      this._setState('no-notebook');
      return;
    }
    if (!kernel) {
      this._setState('no-kernel');
      return;
    }
    if (kernel.name !== SANDBOX_KERNEL) {
      this._setState('other-kernel');
      return;
    }
    if (!this._shown) {
      this._setState('connecting');
      return;
    }
    this._setState('connecting');
    let comm: Kernel.IComm;
    try {
      comm = kernel.createComm(COMM_TARGET);
    } catch (error) {
      this._error = String(error);
      this._setState('unavailable');
      return;
    }
    this._comm = comm;
    comm.onMsg = msg => this._onMessage(comm, msg);
    comm.onClose = () => {
      if (this._comm === comm) {
        this._comm = null;
        this._pending = false;
        this._error = 'the kernel closed the panel channel (does it offer jupyter_sandbox.panel?)';
        this._setState('unavailable');
      }
    };
    try {
      comm.open({});
      this._pending = false;
      this.refresh();
    } catch (error) {
      this._error = String(error);
      this._comm = null;
      this._setState('unavailable');
    }
  }

  private _closeComm(): void {
    const comm = this._comm;
    this._comm = null;
    this._pending = false;
    this._dirty = false;
    if (comm && !comm.isDisposed) {
      try {
        comm.close();
      } catch {
        // The kernel is gone: nothing to tell it.
      }
    }
  }

  private _onMessage(comm: Kernel.IComm, msg: KernelMessage.ICommMsgMsg): void {
    if (comm !== this._comm) {
      return;
    }
    const data = msg.content.data as unknown;
    const type = isObject(data) ? data.type : undefined;
    try {
      if (type === 'snapshot') {
        this._pending = false;
        this._snapshot = parseSnapshot(data);
        this._error = '';
        this._setState('ready');
        if (this._dirty) {
          this.refresh();
        }
      } else if (type === 'usage') {
        this._usage = parseUsage(data);
        this._running = true;
        this._renderUsage();
      } else if (type === 'idle') {
        this._running = false;
        this._renderUsage();
        this.refresh();
      } else if (type === 'error') {
        this._pending = false;
        this._error = isObject(data) ? String(data.message ?? data.error ?? 'error') : 'error';
        this._render();
      }
    } catch (error) {
      this._pending = false;
      this._error = error instanceof Error ? error.message : String(error);
      this._render();
    }
  }

  private _setState(state: PanelState): void {
    this._state = state;
    this.node.dataset.state = state;
    this._render();
  }

  private _render(): void {
    const content = this._content;
    content.textContent = '';
    this._status.textContent = '';
    this._refreshButton.disabled = this._state !== 'ready' && this._state !== 'unavailable';
    const notebookName = this._notebook?.title.label ?? '';
    switch (this._state) {
      case 'no-notebook':
      case 'no-kernel':
      case 'other-kernel': {
        const box = el('div', PANEL_MESSAGE_CLASS);
        let what = 'No notebook is open.';
        if (this._state === 'no-kernel') {
          what = `${notebookName} has no kernel.`;
        } else if (this._state === 'other-kernel') {
          const display = this._session?.kernelDisplayName || this._kernel?.name || 'another kernel';
          what = `${notebookName} runs ${display}.`;
        }
        box.appendChild(el('p', undefined, what));
        box.appendChild(
          el(
            'p',
            undefined,
            'Open a Bash (sandbox) notebook to see its container image, layer stack, limits and live usage here.'
          )
        );
        if (this._newNotebook) {
          const button = el('button', 'jp-SandboxPanel-new jp-mod-styled jp-mod-accept', 'New Bash (sandbox) notebook');
          const open = this._newNotebook;
          button.addEventListener('click', () => open());
          box.appendChild(button);
        }
        content.appendChild(box);
        return;
      }
      case 'connecting':
        this._status.textContent = `${notebookName}: connecting to the kernel…`;
        if (this._error) {
          content.appendChild(errorBox('kernel\u2019s answer', this._error));
        }
        return;
      case 'unavailable':
        content.appendChild(errorBox('sandbox panel', this._error || 'the kernel does not answer'));
        return;
      case 'ready':
        break;
    }
    this._status.textContent = notebookName;
    if (this._error) {
      content.appendChild(errorBox('kernel\u2019s answer', this._error));
    }
    if (this._snapshot) {
      this._renderUsage();
      content.appendChild(this._usageSection);
      this._snapshotBox.textContent = '';
      this._snapshotBox.appendChild(renderSnapshot(this._snapshot, this._layersState));
      content.appendChild(this._snapshotBox);
    }
  }

  private _renderUsage(): void {
    const sectionNode = this._usageSection;
    const old = sectionNode.querySelector(`.${PANEL_USAGE_CLASS}`);
    const limits = this._snapshot?.limits ?? { memory: null, cpus: null, pids: null };
    const fresh = renderUsage(this._usage, limits, this._running);
    if (old) {
      sectionNode.replaceChild(fresh, old);
    } else {
      sectionNode.appendChild(fresh);
    }
  }

  private _tracker: INotebookTracker;
  private _executed: ISignal<any, IExecutedArgs> | null;
  private _newNotebook?: () => void;
  private _notebook: NotebookPanel | null = null;
  private _session: SessionContext | null = null;
  private _kernel: Kernel.IKernelConnection | null = null;
  private _comm: Kernel.IComm | null = null;
  private _pending = false;
  private _dirty = false;
  private _shown = false;
  private _running = false;
  private _state: PanelState = 'no-notebook';
  private _snapshot: ISnapshot | null = null;
  private _usage: IUsage | null = null;
  private _error = '';
  private _layersState = newLayersState();
  private _status: HTMLElement;
  private _content: HTMLElement;
  private _usageSection: HTMLElement;
  private _snapshotBox: HTMLElement;
  private _refreshButton: HTMLButtonElement;
}
