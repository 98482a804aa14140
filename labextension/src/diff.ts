/**
 * The copy-on-write diff of one cell (`application/vnd.jupyter-sandbox.diff+json`):
 * what the cell's container changed in its writable upper layer, as an
 * expandable tree of paths with A/C/D badges, sizes, and the overlay
 * mechanics spelled out where they happen (copied up from layer N, a whiteout
 * hiding layer N's copy, an opaque directory hiding everything below).
 *
 * The tree builder (`buildTree`) and the DOM (`renderDiffTree`) are also used
 * by the layer stack, which embeds each cell layer's changes.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import {
  PayloadError,
  checkVersion,
  el,
  errorBox,
  formatBytes,
  num,
  requireArray,
  requireObject,
  str
} from './util';

export const DIFF_MIME = 'application/vnd.jupyter-sandbox.diff+json';

/** CSS classes (see style/diff.css). */
export const DIFF_CLASS = 'jp-SandboxDiff';
export const DIFF_TREE_CLASS = 'jp-SandboxDiff-tree';
export const DIFF_NODE_CLASS = 'jp-SandboxDiff-node';
export const DIFF_ROW_CLASS = 'jp-SandboxDiff-row';
export const DIFF_CHILDREN_CLASS = 'jp-SandboxDiff-children';
export const DIFF_BADGE_CLASS = 'jp-SandboxDiff-badge';
export const DIFF_NAME_CLASS = 'jp-SandboxDiff-name';
export const DIFF_SIZE_CLASS = 'jp-SandboxDiff-size';
export const DIFF_NOTE_CLASS = 'jp-SandboxDiff-note';
export const DIFF_HEADER_CLASS = 'jp-SandboxDiff-header';
export const DIFF_TOTALS_CLASS = 'jp-SandboxDiff-totals';
export const DIFF_EMPTY_CLASS = 'jp-SandboxDiff-empty';
export const DIR_CLASS = 'jp-mod-dir';
export const COLLAPSED_CLASS = 'jp-mod-collapsed';

export type ChangeKind = 'A' | 'C' | 'D';
export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

/** One changed path, as the kernel sends it. */
export interface IDiffEntry {
  path: string;
  kind: ChangeKind;
  type: EntryType;
  size: number;
  /** The lower layer the path came from (copy-up, whiteout), or null. */
  layer: number | null;
  opaque: boolean;
  /** What overlayfs did, in words; null when the kernel sent no note at all. */
  note: string | null;
}

export interface IDiffTotals {
  added: number;
  changed: number;
  deleted: number;
  bytes: number;
}

export interface IDiffPayload {
  version: number;
  cell: number | null;
  command: string;
  layer: number | null;
  entries: IDiffEntry[];
  totals: IDiffTotals;
  /** Changes the kernel left out of "entries" (a diff has a size limit). */
  omitted: number;
}

/** A node of the path tree: a path component, with the change made to it if any. */
export interface IDiffNode {
  name: string;
  path: string;
  /** null for a directory that is only there to hold changed paths. */
  entry: IDiffEntry | null;
  children: IDiffNode[];
}

const KIND_WORDS: Record<ChangeKind, string> = {
  A: 'added',
  C: 'changed',
  D: 'deleted'
};

const KINDS = new Set<string>(['A', 'C', 'D']);
const TYPES = new Set<string>(['file', 'dir', 'symlink', 'other']);
/** The daemon's numeric kinds, should a raw Docker-style entry come through. */
const NUMERIC_KINDS: Record<number, ChangeKind> = { 0: 'C', 1: 'A', 2: 'D' };

// -- parsing --------------------------------------------------------------------------

/** Check and normalise one entry. */
export function parseEntry(raw: unknown, where: string): IDiffEntry {
  const o = requireObject(raw, where);
  const path = str(o.path, `${where}.path`);
  if (!path) {
    throw new PayloadError(`${where}.path is missing`);
  }
  let kind = o.kind;
  if (typeof kind === 'number' && kind in NUMERIC_KINDS) {
    kind = NUMERIC_KINDS[kind];
  }
  if (typeof kind !== 'string' || !KINDS.has(kind)) {
    throw new PayloadError(`${where}.kind is not one of A, C, D`);
  }
  const type = str(o.type, `${where}.type`, 'other');
  return {
    path,
    kind: kind as ChangeKind,
    type: (TYPES.has(type) ? type : 'other') as EntryType,
    size: num(o.size, `${where}.size`, true) ?? 0,
    layer: num(o.layer, `${where}.layer`, true),
    opaque: o.opaque === true,
    note: o.note === undefined || o.note === null ? null : str(o.note, `${where}.note`)
  };
}

export function parseEntries(raw: unknown, where: string): IDiffEntry[] {
  if (raw === null || raw === undefined) {
    return [];
  }
  return requireArray(raw, where).map((e, i) => parseEntry(e, `${where}[${i}]`));
}

/** Totals counted from the entries (used when the payload has none). */
export function countTotals(entries: IDiffEntry[]): IDiffTotals {
  const totals = { added: 0, changed: 0, deleted: 0, bytes: 0 };
  for (const e of entries) {
    if (e.kind === 'A') {
      totals.added++;
    } else if (e.kind === 'C') {
      totals.changed++;
    } else {
      totals.deleted++;
    }
    if (e.kind !== 'D' && e.type === 'file') {
      totals.bytes += e.size;
    }
  }
  return totals;
}

/** Check a diff+json payload (a JSON string is parsed first). */
export function parseDiff(data: unknown): IDiffPayload {
  if (typeof data === 'string') {
    data = JSON.parse(data);
  }
  const o = requireObject(data, 'the diff');
  checkVersion(o, 'the diff');
  if (!('entries' in o)) {
    throw new PayloadError('the diff has no "entries"');
  }
  const entries = parseEntries(o.entries, 'entries');
  let totals = countTotals(entries);
  if (o.totals !== undefined && o.totals !== null) {
    const t = requireObject(o.totals, 'totals');
    totals = {
      added: num(t.added, 'totals.added', true) ?? totals.added,
      changed: num(t.changed, 'totals.changed', true) ?? totals.changed,
      deleted: num(t.deleted, 'totals.deleted', true) ?? totals.deleted,
      bytes: num(t.bytes, 'totals.bytes', true) ?? totals.bytes
    };
  }
  return {
    version: 1,
    cell: num(o.cell, 'cell', true),
    command: str(o.command, 'command'),
    layer: num(o.layer, 'layer', true),
    entries,
    totals,
    omitted: num(o.omitted, 'omitted', true) ?? 0
  };
}

// -- the tree -------------------------------------------------------------------------

/** "/a//b/" -> ["a", "b"]. */
export function splitPath(path: string): string[] {
  return path.split('/').filter(part => part !== '' && part !== '.');
}

/** Whether a node shows as a directory (it has children, or it is one). */
export function isDir(node: IDiffNode): boolean {
  return node.children.length > 0 || node.entry?.type === 'dir';
}

function sortTree(node: IDiffNode): void {
  node.children.sort((a, b) => {
    const da = isDir(a) ? 0 : 1;
    const db = isDir(b) ? 0 : 1;
    if (da !== db) {
      return da - db;
    }
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
  node.children.forEach(sortTree);
}

/**
 * Nest the changed paths into a tree rooted at "/": every path's parent
 * directories become nodes (with no entry when the diff does not list them),
 * directories sort before files, then by name. A path listed twice keeps its
 * last entry.
 */
export function buildTree(entries: IDiffEntry[]): IDiffNode {
  const root: IDiffNode = { name: '/', path: '/', entry: null, children: [] };
  for (const entry of entries) {
    const parts = splitPath(entry.path);
    let node = root;
    let path = '';
    for (const part of parts) {
      path += '/' + part;
      let child = node.children.find(c => c.name === part);
      if (!child) {
        child = { name: part, path, entry: null, children: [] };
        node.children.push(child);
      }
      node = child;
    }
    node.entry = entry;
  }
  sortTree(root);
  return root;
}

/** How many changed paths are at or below a node. */
export function countChanges(node: IDiffNode): number {
  let n = node.entry ? 1 : 0;
  for (const child of node.children) {
    n += countChanges(child);
  }
  return n;
}

/** How many nodes the tree has below its root. */
export function countNodes(node: IDiffNode): number {
  let n = 0;
  for (const child of node.children) {
    n += 1 + countNodes(child);
  }
  return n;
}

/**
 * What overlayfs did for this path, in words: the kernel's note (even an
 * empty one), or one made from the entry's fields when it sent no note.
 */
export function noteFor(entry: IDiffEntry): string {
  if (entry.note) {
    return entry.note;
  }
  if (entry.opaque) {
    return 'opaque: hides everything below';
  }
  if (entry.note === '') {
    return '';
  }
  if (entry.kind === 'D') {
    return entry.layer !== null ? `whiteout: hides layer ${entry.layer}'s copy` : 'whiteout';
  }
  if (entry.kind === 'C' && entry.layer !== null && entry.type !== 'dir') {
    return `copied up from layer ${entry.layer}`;
  }
  return '';
}

/** The kind of note, for its colour: "copyup", "whiteout", "opaque" or "". */
export function noteKind(entry: IDiffEntry): string {
  const note = noteFor(entry);
  if (entry.opaque || note.startsWith('opaque')) {
    return 'opaque';
  }
  if (note.startsWith('whiteout') || (entry.kind === 'D' && note)) {
    return 'whiteout';
  }
  if (note.startsWith('copied up')) {
    return 'copyup';
  }
  return note ? 'other' : '';
}

/** The badge of an entry: its letter, with the word as a tooltip. */
export function badge(kind: ChangeKind): HTMLElement {
  const node = el('span', `${DIFF_BADGE_CLASS} ${DIFF_BADGE_CLASS}-${kind}`, kind);
  node.title = KIND_WORDS[kind];
  return node;
}

/** Which directories are open: the user's clicks, kept across re-renders. */
export type TreeState = Map<string, boolean>;

export interface ITreeOptions {
  /** Changes left out by the kernel: said below the tree. */
  omitted?: number;
  /** Directories deeper than this start collapsed, when the tree is big. */
  openDepth?: number;
  /** A tree with at most this many nodes starts fully open. */
  openAll?: number;
  /** The user's open/closed choices by path (updated on clicks). */
  state?: TreeState;
}

function setCollapsed(li: HTMLElement, row: HTMLElement, collapsed: boolean): void {
  li.classList.toggle(COLLAPSED_CLASS, collapsed);
  row.setAttribute('aria-expanded', collapsed ? 'false' : 'true');
  const caret = row.querySelector('.jp-SandboxDiff-caret');
  if (caret) {
    caret.textContent = collapsed ? '\u25b8' : '\u25be';
  }
}

function renderNode(
  node: IDiffNode,
  depth: number,
  openByDefault: (depth: number) => boolean,
  state: TreeState
): HTMLLIElement {
  const li = el('li', DIFF_NODE_CLASS);
  li.dataset.path = node.path;
  const row = el('div', DIFF_ROW_CLASS);
  row.setAttribute('role', 'treeitem');
  li.appendChild(row);
  const dir = isDir(node);
  const entry = node.entry;
  if (entry) {
    li.dataset.kind = entry.kind;
    li.classList.add(`jp-mod-kind-${entry.kind}`);
  }

  row.appendChild(el('span', 'jp-SandboxDiff-caret', dir && node.children.length ? '\u25be' : ''));
  row.appendChild(entry ? badge(entry.kind) : el('span', `${DIFF_BADGE_CLASS} jp-mod-none`));
  let name = node.name;
  if (dir) {
    name += '/';
  } else if (entry?.type === 'symlink') {
    name += ' @';
  }
  const nameNode = el('span', DIFF_NAME_CLASS, name);
  nameNode.title = node.path;
  row.appendChild(nameNode);
  if (entry && entry.kind !== 'D' && entry.type !== 'dir') {
    row.appendChild(el('span', DIFF_SIZE_CLASS, formatBytes(entry.size)));
  }
  if (entry) {
    const note = noteFor(entry);
    if (note) {
      row.appendChild(el('span', `${DIFF_NOTE_CLASS} jp-mod-${noteKind(entry)}`, note));
    }
  }

  if (dir && node.children.length) {
    li.classList.add(DIR_CLASS);
    const count = el('span', 'jp-SandboxDiff-count', `${countChanges(node) - (entry ? 1 : 0)}`);
    count.title = 'changed paths below';
    row.appendChild(count);
    // Children are made on first opening, so a huge diff costs little until explored.
    let children: HTMLUListElement | null = null;
    const ensureChildren = () => {
      if (!children) {
        children = el('ul', DIFF_CHILDREN_CLASS);
        children.setAttribute('role', 'group');
        for (const child of node.children) {
          children.appendChild(renderNode(child, depth + 1, openByDefault, state));
        }
        li.appendChild(children);
      }
    };
    const open = state.get(node.path) ?? openByDefault(depth);
    if (open) {
      ensureChildren();
    }
    setCollapsed(li, row, !open);
    row.tabIndex = 0;
    const toggle = () => {
      const collapsed = !li.classList.contains(COLLAPSED_CLASS);
      if (!collapsed) {
        ensureChildren();
      }
      setCollapsed(li, row, collapsed);
      state.set(node.path, !collapsed);
    };
    row.addEventListener('click', event => {
      event.stopPropagation();
      toggle();
    });
    row.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        event.stopPropagation();
        toggle();
      }
    });
  }
  return li;
}

/** The tree of a list of changes, as a <ul role="tree">; "no changes" when empty. */
export function renderDiffTree(entries: IDiffEntry[], options: ITreeOptions = {}): HTMLElement {
  const omitted = options.omitted ?? 0;
  if (!entries.length && !omitted) {
    return el('div', DIFF_EMPTY_CLASS, 'no changes');
  }
  const root = buildTree(entries);
  const total = countNodes(root);
  const openAll = total <= (options.openAll ?? 200);
  const openDepth = options.openDepth ?? 2;
  const openByDefault = (depth: number) => openAll || depth < openDepth;
  const state = options.state ?? new Map();
  const ul = el('ul', DIFF_TREE_CLASS);
  ul.setAttribute('role', 'tree');
  // A change to "/" itself (rare) shows as a row of its own, holding the rest.
  const top = root.entry ? [root] : root.children;
  for (const node of top) {
    ul.appendChild(renderNode(node, 0, openByDefault, state));
  }
  if (!omitted) {
    return ul;
  }
  const box = el('div', 'jp-SandboxDiff-treeBox');
  box.appendChild(ul);
  box.appendChild(
    el(
      'div',
      'jp-SandboxDiff-omitted',
      `\u2026 and ${omitted} more change${omitted === 1 ? '' : 's'} not shown`
    )
  );
  return box;
}

/** "+2 added, ~1 changed, -1 deleted, 12 KiB written". */
export function totalsText(t: IDiffTotals): string {
  return (
    `${t.added} added, ${t.changed} changed, ${t.deleted} deleted` +
    (t.bytes ? `, ${formatBytes(t.bytes)} written` : '')
  );
}

/** The whole diff view: a header (cell, command, layer), the totals and the tree. */
export function renderDiff(payload: IDiffPayload, state?: TreeState): HTMLElement {
  const box = el('div', 'jp-SandboxDiff-body');
  const header = el('div', DIFF_HEADER_CLASS);
  header.appendChild(
    el('span', 'jp-SandboxDiff-title', payload.cell !== null ? `cell ${payload.cell}` : 'changes')
  );
  if (payload.command) {
    header.appendChild(el('code', 'jp-SandboxDiff-command', payload.command));
  }
  if (payload.layer !== null) {
    header.appendChild(el('span', 'jp-SandboxDiff-layer', `\u2192 layer ${payload.layer}`));
  }
  box.appendChild(header);
  box.appendChild(el('div', DIFF_TOTALS_CLASS, totalsText(payload.totals)));
  box.appendChild(renderDiffTree(payload.entries, { state, omitted: payload.omitted }));
  return box;
}

/** The MIME renderer: a widget that renders a diff+json model. */
export class DiffRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass(DIFF_CLASS);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[this._mimeType];
    this.node.textContent = '';
    try {
      this.node.appendChild(renderDiff(parseDiff(data), this._state));
    } catch (error) {
      this.node.appendChild(errorBox('diff', error, data));
    }
    return Promise.resolve();
  }

  private _mimeType: string;
  private _state: TreeState = new Map();
}

export const diffRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [DIFF_MIME],
  defaultRank: 0,
  createRenderer: options => new DiffRenderer(options)
};
