import {
  COLLAPSED_CLASS,
  DIFF_MIME,
  DiffRenderer,
  IDiffEntry,
  buildTree,
  countChanges,
  diffRendererFactory,
  noteFor,
  parseDiff,
  renderDiff,
  renderDiffTree,
  splitPath
} from '../diff';
import { ERROR_CLASS } from '../util';
import { clone, diffPayload, mimeModel } from './samples';

function entry(path: string, kind: 'A' | 'C' | 'D', more: Partial<IDiffEntry> = {}): IDiffEntry {
  return { path, kind, type: 'file', size: 0, layer: null, opaque: false, note: null, ...more };
}

describe('buildTree', () => {
  it('nests paths into directories, creating parents the diff does not list', () => {
    const root = buildTree([entry('/a/b/c.txt', 'A'), entry('/a/d', 'C'), entry('/z', 'D')]);
    expect(root.path).toBe('/');
    expect(root.children.map(c => c.name)).toEqual(['a', 'z']);
    const a = root.children[0];
    expect(a.entry).toBeNull();
    expect(a.path).toBe('/a');
    // the directory b sorts before the file d
    expect(a.children.map(c => c.name)).toEqual(['b', 'd']);
    const b = a.children[0];
    expect(b.path).toBe('/a/b');
    expect(b.children[0].path).toBe('/a/b/c.txt');
    expect(b.children[0].entry?.kind).toBe('A');
    expect(countChanges(root)).toBe(3);
    expect(countChanges(a)).toBe(2);
  });

  it('puts a listed directory entry on its node, and keeps the last of duplicates', () => {
    const root = buildTree([
      entry('/etc', 'C', { type: 'dir' }),
      entry('/etc/x', 'A'),
      entry('/etc/x', 'C', { size: 7 })
    ]);
    const etc = root.children[0];
    expect(etc.entry?.kind).toBe('C');
    expect(etc.children).toHaveLength(1);
    expect(etc.children[0].entry?.kind).toBe('C');
    expect(etc.children[0].entry?.size).toBe(7);
  });

  it('splits odd paths sensibly', () => {
    expect(splitPath('/a//b/./c/')).toEqual(['a', 'b', 'c']);
    expect(splitPath('/')).toEqual([]);
  });
});

describe('notes', () => {
  it("uses the kernel's note when there is one", () => {
    expect(noteFor(entry('/x', 'C', { layer: 0, note: 'copied up from layer 0' }))).toBe(
      'copied up from layer 0'
    );
  });

  it('spells out copy-up, whiteout and opaque when the kernel sent no note', () => {
    expect(noteFor(entry('/x', 'C', { layer: 2 }))).toBe('copied up from layer 2');
    expect(noteFor(entry('/x', 'D', { layer: 1 }))).toBe("whiteout: hides layer 1's copy");
    expect(noteFor(entry('/d', 'A', { type: 'dir', opaque: true }))).toBe(
      'opaque: hides everything below'
    );
    expect(noteFor(entry('/new', 'A'))).toBe('');
    // a changed directory is no copy-up worth naming
    expect(noteFor(entry('/etc', 'C', { type: 'dir', layer: 0 }))).toBe('');
  });

  it("keeps the kernel's empty note: it decided there is nothing to say", () => {
    expect(noteFor(entry('/x', 'C', { layer: 2, note: '' }))).toBe('');
  });
});

describe('parseDiff', () => {
  it('reads the sample and keeps its totals', () => {
    const p = parseDiff(diffPayload);
    expect(p.cell).toBe(3);
    expect(p.layer).toBe(2);
    expect(p.entries).toHaveLength(6);
    expect(p.totals).toEqual({ added: 2, changed: 3, deleted: 1, bytes: 2051 });
  });

  it("counts totals when they are missing, and maps the daemon's numeric kinds", () => {
    const raw = clone(diffPayload) as any;
    delete raw.totals;
    raw.entries[0].kind = 1; // 1 = added, as in GET /containers/{id}/changes
    const p = parseDiff(raw);
    expect(p.entries[0].kind).toBe('A');
    expect(p.totals.added).toBe(3);
    expect(p.totals.deleted).toBe(1);
  });

  it('rejects a payload without entries or with a bad kind', () => {
    expect(() => parseDiff({ version: 1 })).toThrow(/entries/);
    const bad = clone(diffPayload) as any;
    bad.entries[1].kind = 'X';
    expect(() => parseDiff(bad)).toThrow(/kind/);
    expect(() => parseDiff({ version: 2, entries: [] })).toThrow(/version/);
  });
});

describe('renderDiffTree', () => {
  it('shows badges, sizes and notes, with directories nesting', () => {
    const tree = renderDiffTree(parseDiff(diffPayload).entries);
    const motd = tree.querySelector('[data-path="/etc/motd"]')!;
    expect(motd).not.toBeNull();
    // nested under /etc
    expect(motd.parentElement!.closest('[data-path="/etc"]')).not.toBeNull();
    expect(motd.querySelector('.jp-SandboxDiff-badge')!.textContent).toBe('C');
    expect(motd.querySelector('.jp-SandboxDiff-size')!.textContent).toBe('3 B');
    expect(motd.querySelector('.jp-SandboxDiff-note')!.textContent).toBe('copied up from layer 0');
    const less = tree.querySelector('[data-path="/usr/bin/less"]')!;
    expect(less.querySelector('.jp-SandboxDiff-badge')!.textContent).toBe('D');
    expect(less.querySelector('.jp-SandboxDiff-note')!.textContent).toBe(
      "whiteout: hides layer 0's copy"
    );
    const app = tree.querySelector('[data-path="/opt/app"]')!;
    expect(app.querySelector('.jp-SandboxDiff-note')!.classList).toContain('jp-mod-opaque');
    const run = tree.querySelector('[data-path="/opt/app/run.sh"]')!;
    expect(run.querySelector('.jp-SandboxDiff-size')!.textContent).toBe('2.00 KiB');
    // /usr has no entry of its own: no letter
    const usr = tree.querySelector('[data-path="/usr"]')!;
    expect(usr.querySelector(':scope > .jp-SandboxDiff-row .jp-SandboxDiff-badge')!.textContent).toBe('');
  });

  it('collapses and expands a directory on click', () => {
    const tree = renderDiffTree(parseDiff(diffPayload).entries);
    document.body.appendChild(tree);
    const etc = tree.querySelector('[data-path="/etc"]') as HTMLElement;
    const row = etc.querySelector('.jp-SandboxDiff-row') as HTMLElement;
    expect(etc.classList).not.toContain(COLLAPSED_CLASS);
    row.click();
    expect(etc.classList).toContain(COLLAPSED_CLASS);
    expect(row.getAttribute('aria-expanded')).toBe('false');
    row.click();
    expect(etc.classList).not.toContain(COLLAPSED_CLASS);
    tree.remove();
  });

  it('starts a big tree collapsed below the first levels and builds children on opening', () => {
    const entries: IDiffEntry[] = [];
    for (let i = 0; i < 300; i++) {
      entries.push(entry(`/var/lib/pkg/f${i}`, 'A', { size: i }));
    }
    const tree = renderDiffTree(entries);
    const pkg = tree.querySelector('[data-path="/var/lib/pkg"]') as HTMLElement;
    expect(pkg.classList).toContain(COLLAPSED_CLASS);
    expect(tree.querySelector('[data-path="/var/lib/pkg/f1"]')).toBeNull();
    (pkg.querySelector('.jp-SandboxDiff-row') as HTMLElement).click();
    expect(tree.querySelector('[data-path="/var/lib/pkg/f1"]')).not.toBeNull();
    expect(pkg.querySelector('.jp-SandboxDiff-count')!.textContent).toBe('300');
  });

  it('says how many changes the kernel left out', () => {
    const raw = clone(diffPayload) as any;
    raw.omitted = 1200;
    const box = renderDiff(parseDiff(raw));
    expect(box.querySelector('.jp-SandboxDiff-omitted')!.textContent).toBe(
      '\u2026 and 1200 more changes not shown'
    );
  });

  it('says "no changes" for an empty diff', () => {
    expect(renderDiffTree([]).textContent).toBe('no changes');
  });
});

describe('DiffRenderer', () => {
  it('is a safe factory for the diff MIME type', () => {
    expect(diffRendererFactory.safe).toBe(true);
    expect(diffRendererFactory.mimeTypes).toEqual([DIFF_MIME]);
  });

  it('renders a payload into the DOM', async () => {
    const r = diffRendererFactory.createRenderer({
      mimeType: DIFF_MIME,
      sanitizer: {} as any,
      resolver: null,
      linkHandler: null,
      latexTypesetter: null
    });
    await r.renderModel(mimeModel(DIFF_MIME, diffPayload));
    expect(r.node.querySelector('.jp-SandboxDiff-title')!.textContent).toBe('cell 3');
    expect(r.node.querySelector('.jp-SandboxDiff-totals')!.textContent).toBe(
      '2 added, 3 changed, 1 deleted, 2.00 KiB written'
    );
    expect(r.node.querySelectorAll('.jp-SandboxDiff-node')).toHaveLength(8);
    expect(r.node.querySelector(`.${ERROR_CLASS}`)).toBeNull();
  });

  it('keeps the directories the user closed when the display is updated', async () => {
    const r = new DiffRenderer({ mimeType: DIFF_MIME } as any);
    await r.renderModel(mimeModel(DIFF_MIME, diffPayload));
    (r.node.querySelector('[data-path="/etc"] .jp-SandboxDiff-row') as HTMLElement).click();
    await r.renderModel(mimeModel(DIFF_MIME, diffPayload));
    expect(r.node.querySelector('[data-path="/etc"]')!.classList).toContain(COLLAPSED_CLASS);
  });

  it('says what is wrong with a bad payload instead of showing an empty box', async () => {
    const r = new DiffRenderer({ mimeType: DIFF_MIME } as any);
    await r.renderModel(mimeModel(DIFF_MIME, { version: 1, entries: 'nope' }));
    const error = r.node.querySelector(`.${ERROR_CLASS}`)!;
    expect(error).not.toBeNull();
    expect(error.textContent).toContain('Cannot show this diff');
    expect(error.textContent).toContain('entries is not a list');
    await r.renderModel(mimeModel(DIFF_MIME, undefined));
    expect(r.node.querySelector(`.${ERROR_CLASS}`)!.textContent).toContain('not an object');
  });

  it('puts text into the page as text, not HTML', async () => {
    const raw = clone(diffPayload) as any;
    raw.entries[1].path = '/etc/<img src=x onerror=alert(1)>';
    raw.command = '<b>bold</b>';
    const r = new DiffRenderer({ mimeType: DIFF_MIME } as any);
    await r.renderModel(mimeModel(DIFF_MIME, raw));
    expect(r.node.querySelector('img')).toBeNull();
    expect(r.node.querySelector('b')).toBeNull();
    expect(r.node.textContent).toContain('<b>bold</b>');
  });
});
