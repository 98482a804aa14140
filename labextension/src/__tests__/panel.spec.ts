import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import {
  COMM_TARGET,
  SandboxPanel,
  parseSnapshot,
  parseUsage,
  renderSnapshot,
  renderUsage,
  usageBars
} from '../panel';
import { ERROR_CLASS } from '../util';
import { layersPayload } from './samples';

const MiB = 1024 * 1024;

const snapshot = {
  type: 'snapshot',
  image: 'base',
  image_id: '0123456789ab',
  layers: layersPayload.layers,
  limits: { memory: 512 * MiB, cpus: 0.5, pids: 64 },
  containers: [{ name: 'web', image: 'base', state: 'running', status: 'Up 3 minutes' }],
  images: [
    { tags: ['base:latest'], id: 'sha256:0123456789ab', size: 50 * MiB },
    { tags: [], id: 'sha256:ffff', size: null }
  ]
};

describe('panel messages', () => {
  it('reads a snapshot', () => {
    const s = parseSnapshot(snapshot);
    expect(s.image).toBe('base');
    expect(s.layers).toHaveLength(3);
    expect(s.limits).toEqual({ memory: 512 * MiB, cpus: 0.5, pids: 64 });
    expect(s.containers[0].status).toBe('Up 3 minutes');
    expect(s.images[1].tags).toEqual([]);
  });

  it('reads usage from named fields or from a stats sample list', () => {
    // as the kernel's meter sends it (kernel/sandbox_kernel/visuals/models.py, usage())
    expect(
      parseUsage({
        type: 'usage',
        cell: 4,
        container: 'nbs1-4',
        t: 1,
        memory: 10,
        cpu: 20,
        pids: 3,
        memory_peak: 12,
        cpu_peak: 30,
        pids_peak: 5,
        limits: { memory: 100, cpus: null, pids: 64 }
      })
    ).toEqual({
      t: 1,
      memory: 10,
      cpu: 20,
      pids: 3,
      memory_peak: 12,
      cpu_peak: 30,
      pids_peak: 5,
      cell: 4,
      container: 'nbs1-4',
      limits: { memory: 100, cpus: null, pids: 64 }
    });
    expect(parseUsage({ type: 'usage', cpu_percent: 20 }).cpu).toBe(20);
    const u = parseUsage({ type: 'usage', sample: [2, 30, 40, 5], cell: 7, limits: { pids: 9 } });
    expect([u.t, u.memory, u.cpu, u.pids, u.cell]).toEqual([2, 30, 40, 5, 7]);
    expect(u.limits).toEqual({ memory: null, cpus: null, pids: 9 });
    expect(() => parseUsage({ type: 'usage' })).toThrow(/no memory/);
  });

  it('computes the live bars against the limits', () => {
    const none = { memory_peak: null, cpu_peak: null, pids_peak: null, container: '' };
    const bars = usageBars(
      { ...none, t: 0, memory: 256 * MiB, cpu: 25, pids: 64, cell: 1, limits: null, memory_peak: 384 * MiB },
      { memory: 512 * MiB, cpus: 0.5, pids: 64 }
    );
    expect(bars.map(b => b.fill)).toEqual([50, 50, 100]);
    expect(bars[0].marker).toBe(75);
    expect(bars[0].text).toBe('memory: 256 MiB of 512 MiB (50%), peak 384 MiB');
    expect(bars[2].danger).toBe(true);
    const free = usageBars(
      { ...none, t: 0, memory: 1, cpu: 300, pids: 1, cell: null, limits: null },
      { memory: null, cpus: null, pids: null }
    );
    expect(free.map(b => b.nolimit)).toEqual([true, true, true]);
    expect(free[1].fill).toBe(100);
  });

  it('renders the snapshot sections', () => {
    const host = document.createElement('div');
    host.appendChild(renderSnapshot(parseSnapshot(snapshot)));
    expect(host.querySelector('.jp-SandboxPanel-image')!.textContent).toBe('base');
    expect(host.querySelectorAll('.jp-SandboxLayers-layer')).toHaveLength(4);
    expect(host.querySelector('.jp-mod-limits')!.textContent).toContain('512 MiB');
    expect(host.querySelector('.jp-mod-containers')!.textContent).toContain('web');
    expect(host.querySelector('.jp-mod-images')!.textContent).toContain('<none>');
    const idle = renderUsage(null, parseSnapshot(snapshot).limits, false);
    expect(idle.textContent).toContain('idle');
  });
});

// -- the widget, against a fake notebook tracker and kernel ------------------------------

class FakeComm {
  constructor(readonly target: string) {}
  isDisposed = false;
  opened = false;
  sent: any[] = [];
  onMsg: (msg: any) => void = () => undefined;
  onClose: (msg: any) => void = () => undefined;
  open(): void {
    this.opened = true;
  }
  send(data: any): void {
    this.sent.push(data);
  }
  close(): void {
    this.isDisposed = true;
  }
  reply(data: any): void {
    this.onMsg({ content: { comm_id: 'x', data } });
  }
}

class FakeKernel {
  constructor(readonly name: string) {}
  comms: FakeComm[] = [];
  createComm(target: string): FakeComm {
    const comm = new FakeComm(target);
    this.comms.push(comm);
    return comm;
  }
}

function fakeNotebook(kernel: FakeKernel | null, label = 'lesson.ipynb'): any {
  const sessionContext: any = {
    session: kernel ? { kernel } : null,
    kernelDisplayName: kernel?.name === 'sandbox' ? 'Bash (sandbox)' : 'Python 3 (ipykernel)'
  };
  sessionContext.kernelChanged = new Signal<any, any>(sessionContext);
  sessionContext.statusChanged = new Signal<any, any>(sessionContext);
  return { sessionContext, content: {}, title: { label } };
}

function fakeTracker(current: any): any {
  const tracker: any = { currentWidget: current };
  tracker.currentChanged = new Signal<any, any>(tracker);
  return tracker;
}

function shownPanel(tracker: any, newNotebook?: () => void): SandboxPanel {
  const panel = new SandboxPanel({ tracker, newNotebook });
  Widget.attach(panel, document.body);
  return panel;
}

describe('SandboxPanel', () => {
  afterEach(() => {
    document.body.textContent = '';
  });

  it('asks a sandbox kernel for a snapshot over the panel comm and shows it', () => {
    const kernel = new FakeKernel('sandbox');
    const panel = shownPanel(fakeTracker(fakeNotebook(kernel)));
    expect(kernel.comms).toHaveLength(1);
    const comm = kernel.comms[0];
    expect(comm.target).toBe(COMM_TARGET);
    expect(comm.opened).toBe(true);
    expect(comm.sent).toEqual([{ request: 'snapshot' }]);
    expect(panel.state).toBe('connecting');
    comm.reply(snapshot);
    expect(panel.state).toBe('ready');
    expect(panel.node.dataset.state).toBe('ready');
    expect(panel.node.querySelector('.jp-SandboxPanel-image')!.textContent).toBe('base');
    expect(panel.node.querySelectorAll('.jp-SandboxLayers-layer')).toHaveLength(4);
    panel.dispose();
  });

  it('shows live usage, then asks again when the kernel says idle', () => {
    const kernel = new FakeKernel('sandbox');
    const panel = shownPanel(fakeTracker(fakeNotebook(kernel)));
    const comm = kernel.comms[0];
    comm.reply(snapshot);
    comm.reply({ type: 'usage', t: 0.5, memory: 128 * MiB, cpu: 10, pids: 2, cell: 3 });
    const usage = panel.node.querySelector('.jp-SandboxPanel-usage')!;
    expect(usage.classList).toContain('jp-mod-running');
    expect(usage.textContent).toContain('running: cell 3');
    const fill = usage.querySelector('.jp-mod-memory .jp-SandboxStats-fill') as HTMLElement;
    expect(fill.style.width).toBe('25%');
    comm.reply({ type: 'idle' });
    expect(comm.sent).toEqual([{ request: 'snapshot' }, { request: 'snapshot' }]);
    expect(panel.node.querySelector('.jp-SandboxPanel-usage')!.classList).not.toContain(
      'jp-mod-running'
    );
    panel.dispose();
  });

  it('sends one request at a time, and one more for any asked meanwhile', () => {
    const kernel = new FakeKernel('sandbox');
    const panel = shownPanel(fakeTracker(fakeNotebook(kernel)));
    const comm = kernel.comms[0];
    panel.refresh();
    panel.refresh();
    expect(comm.sent).toHaveLength(1);
    comm.reply(snapshot);
    expect(comm.sent).toHaveLength(2);
    comm.reply(snapshot);
    expect(comm.sent).toHaveLength(2);
    panel.dispose();
  });

  it('asks again after each execution in its notebook, not in others', () => {
    const kernel = new FakeKernel('sandbox');
    const notebook = fakeNotebook(kernel);
    const executed = new Signal<any, any>({});
    const panel = new SandboxPanel({ tracker: fakeTracker(notebook), executed });
    Widget.attach(panel, document.body);
    const comm = kernel.comms[0];
    comm.reply(snapshot);
    executed.emit({ notebook: {}, cell: {}, success: true });
    expect(comm.sent).toHaveLength(1);
    executed.emit({ notebook: notebook.content, cell: {}, success: true });
    expect(comm.sent).toHaveLength(2);
    panel.dispose();
    executed.emit({ notebook: notebook.content, cell: {}, success: true });
    expect(comm.sent).toHaveLength(2);
  });

  it('opens no comm to another kernel and says to open a sandbox notebook', () => {
    const kernel = new FakeKernel('python3');
    let asked = 0;
    const panel = shownPanel(fakeTracker(fakeNotebook(kernel)), () => asked++);
    expect(kernel.comms).toHaveLength(0);
    expect(panel.state).toBe('other-kernel');
    const message = panel.node.querySelector('.jp-SandboxPanel-message')!;
    expect(message.textContent).toContain('runs Python 3 (ipykernel)');
    expect(message.textContent).toContain('Open a Bash (sandbox) notebook');
    (message.querySelector('button') as HTMLButtonElement).click();
    expect(asked).toBe(1);
    panel.dispose();
  });

  it('follows the current notebook and its kernel changes', () => {
    const other = fakeNotebook(new FakeKernel('python3'));
    const tracker = fakeTracker(null);
    const panel = shownPanel(tracker);
    expect(panel.state).toBe('no-notebook');
    tracker.currentWidget = other;
    tracker.currentChanged.emit(other);
    expect(panel.state).toBe('other-kernel');
    // the user switches this notebook's kernel to the sandbox kernel
    const kernel = new FakeKernel('sandbox');
    other.sessionContext.session = { kernel };
    other.sessionContext.kernelChanged.emit({});
    expect(kernel.comms).toHaveLength(1);
    expect(panel.state).toBe('connecting');
    // a restart drops the comm; the next idle opens a new one
    other.sessionContext.statusChanged.emit('restarting');
    expect(kernel.comms[0].isDisposed).toBe(true);
    other.sessionContext.statusChanged.emit('idle');
    expect(kernel.comms).toHaveLength(2);
    panel.dispose();
  });

  it('waits until it is shown before opening the comm', () => {
    const kernel = new FakeKernel('sandbox');
    const panel = new SandboxPanel({ tracker: fakeTracker(fakeNotebook(kernel)) });
    panel.hide();
    Widget.attach(panel, document.body);
    expect(kernel.comms).toHaveLength(0);
    panel.show();
    expect(kernel.comms).toHaveLength(1);
    panel.dispose();
  });

  it('says so when the kernel closes the comm or answers nonsense', () => {
    const kernel = new FakeKernel('sandbox');
    const panel = shownPanel(fakeTracker(fakeNotebook(kernel)));
    const comm = kernel.comms[0];
    comm.reply({ type: 'snapshot', containers: 'nope' });
    expect(panel.node.querySelector(`.${ERROR_CLASS}`)!.textContent).toContain(
      'containers is not a list'
    );
    comm.onClose({});
    expect(panel.state).toBe('unavailable');
    expect(panel.node.querySelector(`.${ERROR_CLASS}`)!.textContent).toContain(
      'jupyter_sandbox.panel'
    );
    panel.dispose();
  });
});
