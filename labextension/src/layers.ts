/**
 * The layer stack of a session (`application/vnd.jupyter-sandbox.layers+json`):
 * the union mount a cell runs in, drawn top down as overlayfs stacks it: the
 * writable upper layer (one fresh per cell), then one layer per cell that
 * changed the filesystem (newest first), then the base image's layers.
 * Clicking a cell layer opens what that cell changed (the layer's embedded
 * "changes", drawn by the diff tree). Below the stack: the kernel's graphviz
 * diagram of the overlay mount, shown as an image (so it cannot run scripts),
 * and the mount command it stands for.
 *
 * The kernel updates the display (update_display_data) after every cell that
 * changed the stack; the widget keeps which layers are open across updates.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { IDiffEntry, TreeState, parseEntries, renderDiffTree } from './diff';
import {
  PayloadError,
  checkVersion,
  el,
  errorBox,
  formatBytes,
  isObject,
  num,
  requireArray,
  requireObject,
  str,
  svgImage
} from './util';

export const LAYERS_MIME = 'application/vnd.jupyter-sandbox.layers+json';

/** CSS classes (see style/layers.css). */
export const LAYERS_CLASS = 'jp-SandboxLayers';
export const LAYERS_HEADER_CLASS = 'jp-SandboxLayers-header';
export const LAYERS_STACK_CLASS = 'jp-SandboxLayers-stack';
export const LAYER_CLASS = 'jp-SandboxLayers-layer';
export const LAYER_ROW_CLASS = 'jp-SandboxLayers-row';
export const LAYER_DIFF_CLASS = 'jp-SandboxLayers-diff';
export const LAYERS_MOUNT_CLASS = 'jp-SandboxLayers-mount';
export const LAYERS_DIAGRAM_CLASS = 'jp-SandboxLayers-diagram';
export const UPPER_CLASS = 'jp-mod-upper';
export const CELL_CLASS = 'jp-mod-cell';
export const BASE_CLASS = 'jp-mod-base';
export const EXPANDED_CLASS = 'jp-mod-expanded';

export type LayerSource = 'base' | 'cell';

export interface ILayer {
  index: number;
  id: string;
  size: number | null;
  files: number | null;
  created_by: string;
  cell: number | null;
  command: string;
  source: LayerSource;
  /** What the cell changed (cell layers only). */
  changes: IDiffEntry[];
  /** Changes left out of "changes" (a size limit). */
  changes_omitted: number;
}

export interface IMount {
  /** Layer names, top first. */
  lowerdir: string[];
  upperdir: string;
  workdir: string;
  merged: string;
  /** The cell whose mount this is (`%layers CELL`), if any. */
  cell: number | null;
}

export interface ILayersPayload {
  version: number;
  image: string;
  image_id: string;
  session: string;
  /** Bottom first, as the kernel sends them. */
  layers: ILayer[];
  upper: { note: string };
  mount: IMount | null;
  svg: string;
}

/** One row of the stack as drawn, top first. */
export type StackRow = { kind: 'upper'; note: string } | { kind: LayerSource; layer: ILayer };

// -- parsing --------------------------------------------------------------------------

export function parseLayer(raw: unknown, where: string): ILayer {
  const o = requireObject(raw, where);
  const cell = num(o.cell, `${where}.cell`, true);
  let source = str(o.source, `${where}.source`);
  if (source !== 'base' && source !== 'cell') {
    source = cell !== null ? 'cell' : 'base';
  }
  return {
    index: num(o.index, `${where}.index`),
    id: str(o.id, `${where}.id`),
    size: num(o.size, `${where}.size`, true),
    files: num(o.files, `${where}.files`, true),
    created_by: str(o.created_by, `${where}.created_by`),
    cell,
    command: str(o.command, `${where}.command`),
    source: source as LayerSource,
    changes: parseEntries(o.changes, `${where}.changes`),
    changes_omitted: num(o.changes_omitted, `${where}.changes_omitted`, true) ?? 0
  };
}

export function parseLayers(raw: unknown, where = 'layers'): ILayer[] {
  return requireArray(raw, where).map((l, i) => parseLayer(l, `${where}[${i}]`));
}

function parseMount(raw: unknown): IMount | null {
  if (!isObject(raw)) {
    return null;
  }
  const lower = Array.isArray(raw.lowerdir)
    ? raw.lowerdir.map(String)
    : typeof raw.lowerdir === 'string'
      ? raw.lowerdir.split(':')
      : [];
  return {
    lowerdir: lower,
    upperdir: str(raw.upperdir, 'mount.upperdir', 'upper'),
    workdir: str(raw.workdir, 'mount.workdir', 'work'),
    merged: str(raw.merged, 'mount.merged', 'merged'),
    cell: num(raw.cell, 'mount.cell', true)
  };
}

/** Check a layers+json payload (a JSON string is parsed first). */
export function parseLayersPayload(data: unknown): ILayersPayload {
  if (typeof data === 'string') {
    data = JSON.parse(data);
  }
  const o = requireObject(data, 'the layer stack');
  checkVersion(o, 'the layer stack');
  if (!('layers' in o)) {
    throw new PayloadError('the layer stack has no "layers"');
  }
  const upper = isObject(o.upper) ? o.upper : {};
  return {
    version: 1,
    image: str(o.image, 'image'),
    image_id: str(o.image_id, 'image_id'),
    session: str(o.session, 'session'),
    layers: parseLayers(o.layers),
    upper: { note: str(upper.note, 'upper.note', 'writable, one fresh per cell') },
    mount: parseMount(o.mount),
    svg: str(o.svg, 'svg')
  };
}

// -- the stack ------------------------------------------------------------------------

/**
 * The rows top down: the upper layer, then the cell layers, then the base
 * layers, each group newest (highest index) first.
 */
export function stackRows(payload: Pick<ILayersPayload, 'layers' | 'upper'>): StackRow[] {
  const byIndex = (a: ILayer, b: ILayer) => b.index - a.index;
  const cells = payload.layers.filter(l => l.source === 'cell').sort(byIndex);
  const base = payload.layers.filter(l => l.source === 'base').sort(byIndex);
  return [
    { kind: 'upper', note: payload.upper.note },
    ...cells.map(layer => ({ kind: 'cell' as const, layer })),
    ...base.map(layer => ({ kind: 'base' as const, layer }))
  ];
}

/** The key a layer keeps its open/closed state under across updates. */
export function layerKey(layer: ILayer): string {
  return `${layer.index}:${layer.id}`;
}

/** "mount -t overlay overlay -o lowerdir=L2:L1,upperdir=upper,workdir=work merged". */
export function mountCommand(mount: IMount): string {
  const lower = mount.lowerdir.length ? mount.lowerdir.join(':') : '(none)';
  return (
    `mount -t overlay overlay -o lowerdir=${lower},upperdir=${mount.upperdir},` +
    `workdir=${mount.workdir} ${mount.merged}`
  );
}

/** State kept by a layers widget across re-renders. */
export interface ILayersState {
  /** Open cell layers, by `layerKey`. */
  expanded: Set<string>;
  /** The open directories of each layer's diff tree. */
  trees: Map<string, TreeState>;
}

export function newLayersState(): ILayersState {
  return { expanded: new Set(), trees: new Map() };
}

function layerLabel(row: StackRow): string {
  if (row.kind === 'upper') {
    return 'upper';
  }
  if (row.kind === 'cell') {
    return row.layer.cell !== null ? `cell ${row.layer.cell}` : 'cell';
  }
  return `base ${row.layer.index}`;
}

function renderRow(row: StackRow, state: ILayersState): HTMLElement {
  const item = el('li', `${LAYER_CLASS} jp-mod-${row.kind}`);
  const line = el('div', LAYER_ROW_CLASS);
  item.appendChild(line);
  line.appendChild(el('span', 'jp-SandboxLayers-label', layerLabel(row)));

  if (row.kind === 'upper') {
    line.appendChild(el('span', 'jp-SandboxLayers-what', row.note));
    line.appendChild(el('span', 'jp-SandboxLayers-size', ''));
    line.appendChild(el('span', 'jp-SandboxLayers-files', ''));
    item.title = 'upperdir: the cell writes here; it becomes a new layer if anything changed';
    return item;
  }

  const layer = row.layer;
  item.dataset.index = String(layer.index);
  if (layer.cell !== null) {
    item.dataset.cell = String(layer.cell);
  }
  const what = row.kind === 'cell' ? layer.command || layer.created_by : layer.created_by;
  const whatNode = el('span', 'jp-SandboxLayers-what', what);
  whatNode.title = layer.created_by || what;
  line.appendChild(whatNode);
  line.appendChild(el('span', 'jp-SandboxLayers-size', formatBytes(layer.size)));
  line.appendChild(
    el(
      'span',
      'jp-SandboxLayers-files',
      layer.files === null ? '' : `${layer.files} file${layer.files === 1 ? '' : 's'}`
    )
  );
  if (layer.id) {
    line.appendChild(el('span', 'jp-SandboxLayers-id', layer.id));
  }

  if (row.kind === 'cell') {
    const key = layerKey(layer);
    line.tabIndex = 0;
    line.setAttribute('role', 'button');
    line.title = 'show what this cell changed';
    let diff: HTMLElement | null = null;
    const show = (open: boolean) => {
      item.classList.toggle(EXPANDED_CLASS, open);
      line.setAttribute('aria-expanded', open ? 'true' : 'false');
      if (open && !diff) {
        diff = el('div', LAYER_DIFF_CLASS);
        let tree = state.trees.get(key);
        if (!tree) {
          tree = new Map();
          state.trees.set(key, tree);
        }
        diff.appendChild(
          renderDiffTree(layer.changes, { state: tree, omitted: layer.changes_omitted })
        );
        item.appendChild(diff);
      }
      if (diff) {
        diff.hidden = !open;
      }
    };
    show(state.expanded.has(key));
    const toggle = () => {
      const open = !state.expanded.has(key);
      if (open) {
        state.expanded.add(key);
      } else {
        state.expanded.delete(key);
      }
      show(open);
    };
    line.addEventListener('click', toggle);
    line.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        toggle();
      }
    });
  }
  return item;
}

/** The stack alone (also used by the side panel): a <ol> of layers, top first. */
export function renderStack(
  payload: Pick<ILayersPayload, 'layers' | 'upper'>,
  state: ILayersState = newLayersState()
): HTMLElement {
  const list = el('ol', LAYERS_STACK_CLASS);
  for (const row of stackRows(payload)) {
    list.appendChild(renderRow(row, state));
  }
  return list;
}

/** The mount diagram and the mount command it stands for. */
export function renderMount(payload: ILayersPayload): HTMLElement | null {
  if (!payload.svg && !payload.mount) {
    return null;
  }
  const box = el('div', LAYERS_MOUNT_CLASS);
  box.appendChild(
    el(
      'div',
      'jp-SandboxLayers-mountTitle',
      payload.mount?.cell !== null && payload.mount?.cell !== undefined
        ? `the overlay mount of cell ${payload.mount.cell}`
        : 'the overlay mount of the next cell'
    )
  );
  if (payload.svg) {
    if (payload.svg.includes('<svg')) {
      box.appendChild(
        svgImage(payload.svg, 'overlay mount: lowerdirs, upperdir, workdir, merged', LAYERS_DIAGRAM_CLASS)
      );
    } else {
      box.appendChild(el('div', 'jp-SandboxLayers-noDiagram', 'the mount diagram is not an SVG image'));
    }
  }
  if (payload.mount) {
    box.appendChild(el('code', 'jp-SandboxLayers-mountCommand', mountCommand(payload.mount)));
  }
  return box;
}

export function renderLayers(payload: ILayersPayload, state?: ILayersState): HTMLElement {
  const box = el('div', 'jp-SandboxLayers-body');
  const header = el('div', LAYERS_HEADER_CLASS);
  header.appendChild(el('span', 'jp-SandboxLayers-image', payload.image || 'image'));
  if (payload.image_id) {
    header.appendChild(el('span', 'jp-SandboxLayers-imageId', payload.image_id));
  }
  const cells = payload.layers.filter(l => l.source === 'cell').length;
  const total = payload.layers.reduce((sum, l) => sum + (l.size ?? 0), 0);
  header.appendChild(
    el(
      'span',
      'jp-SandboxLayers-summary',
      `${payload.layers.length} layer${payload.layers.length === 1 ? '' : 's'} ` +
        `(${cells} from cells), ${formatBytes(total)}`
    )
  );
  box.appendChild(header);
  box.appendChild(renderStack(payload, state));
  const mount = renderMount(payload);
  if (mount) {
    box.appendChild(mount);
  }
  return box;
}

/** The MIME renderer: a widget that renders a layers+json model. */
export class LayersRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass(LAYERS_CLASS);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[this._mimeType];
    this.node.textContent = '';
    try {
      this.node.appendChild(renderLayers(parseLayersPayload(data), this._state));
    } catch (error) {
      this.node.appendChild(errorBox('layer stack', error, data));
    }
    return Promise.resolve();
  }

  private _mimeType: string;
  private _state = newLayersState();
}

export const layersRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [LAYERS_MIME],
  defaultRank: 0,
  createRenderer: options => new LayersRenderer(options)
};
