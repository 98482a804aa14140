import {
  EXPANDED_CLASS,
  LAYERS_MIME,
  LayersRenderer,
  layersRendererFactory,
  mountCommand,
  parseLayersPayload,
  renderStack,
  stackRows
} from '../layers';
import { ERROR_CLASS } from '../util';
import { clone, layersPayload, mimeModel } from './samples';

function render(data: unknown): Promise<LayersRenderer> {
  const r = new LayersRenderer({ mimeType: LAYERS_MIME } as any);
  return r.renderModel(mimeModel(LAYERS_MIME, data)).then(() => r);
}

describe('stackRows', () => {
  it('puts the upper layer on top, then the cell layers, then the base, newest first', () => {
    const p = parseLayersPayload(layersPayload);
    const rows = stackRows(p);
    expect(rows.map(r => (r.kind === 'upper' ? 'upper' : `${r.kind}${r.layer.index}`))).toEqual([
      'upper',
      'cell2',
      'cell1',
      'base0'
    ]);
  });

  it('orders by index whatever order the layers come in, cells above base', () => {
    const raw = clone(layersPayload) as any;
    raw.layers.reverse();
    raw.layers.push({ ...raw.layers[2], index: 7, id: 'x', source: 'base', cell: null });
    const rows = stackRows(parseLayersPayload(raw));
    expect(rows.map(r => (r.kind === 'upper' ? 'upper' : `${r.kind}${r.layer.index}`))).toEqual([
      'upper',
      'cell2',
      'cell1',
      'base7',
      'base0'
    ]);
  });

  it('takes a layer without a source as a cell layer when it has a cell number', () => {
    const raw = clone(layersPayload) as any;
    delete raw.layers[1].source;
    delete raw.layers[0].source;
    const p = parseLayersPayload(raw);
    expect(p.layers[1].source).toBe('cell');
    expect(p.layers[0].source).toBe('base');
  });
});

describe('the stack in the DOM', () => {
  it('draws one row per layer with size, files and command', () => {
    const list = renderStack(parseLayersPayload(layersPayload));
    const items = Array.from(list.children) as HTMLElement[];
    expect(items).toHaveLength(4);
    expect(items[0].classList).toContain('jp-mod-upper');
    expect(items[0].textContent).toContain('writable, one fresh per cell');
    expect(items[1].dataset.cell).toBe('4');
    expect(items[1].querySelector('.jp-SandboxLayers-label')!.textContent).toBe('cell 4');
    expect(items[1].querySelector('.jp-SandboxLayers-what')!.textContent).toBe(
      'rm /hello; mkdir /data'
    );
    expect(items[1].querySelector('.jp-SandboxLayers-size')!.textContent).toBe('8.00 KiB');
    expect(items[1].querySelector('.jp-SandboxLayers-files')!.textContent).toBe('2 files');
    expect(items[3].classList).toContain('jp-mod-base');
    expect(items[3].querySelector('.jp-SandboxLayers-what')!.textContent).toBe(
      'sandbox image build-base'
    );
    expect(items[3].querySelector('.jp-SandboxLayers-size')!.textContent).toBe('50.0 MiB');
  });

  it("opens a cell layer's diff on click and closes it on a second click", () => {
    const list = renderStack(parseLayersPayload(layersPayload));
    const cell4 = list.querySelector('[data-cell="4"]') as HTMLElement;
    const row = cell4.querySelector('.jp-SandboxLayers-row') as HTMLElement;
    expect(cell4.querySelector('.jp-SandboxLayers-diff')).toBeNull();
    row.click();
    expect(cell4.classList).toContain(EXPANDED_CLASS);
    const diff = cell4.querySelector('.jp-SandboxLayers-diff') as HTMLElement;
    expect(diff.hidden).toBe(false);
    const hello = diff.querySelector('[data-path="/hello"]')!;
    expect(hello.querySelector('.jp-SandboxDiff-badge')!.textContent).toBe('D');
    expect(hello.textContent).toContain("whiteout: hides layer 1's copy");
    expect(diff.querySelector('[data-path="/data"]')).not.toBeNull();
    row.click();
    expect(cell4.classList).not.toContain(EXPANDED_CLASS);
    expect(diff.hidden).toBe(true);
  });

  it('does nothing on a click on a base layer', () => {
    const list = renderStack(parseLayersPayload(layersPayload));
    const base = list.querySelector('.jp-mod-base') as HTMLElement;
    (base.querySelector('.jp-SandboxLayers-row') as HTMLElement).click();
    expect(base.classList).not.toContain(EXPANDED_CLASS);
    expect(base.querySelector('.jp-SandboxLayers-diff')).toBeNull();
  });
});

describe('LayersRenderer', () => {
  it('is a safe factory for the layers MIME type', () => {
    expect(layersRendererFactory.safe).toBe(true);
    expect(layersRendererFactory.mimeTypes).toEqual([LAYERS_MIME]);
  });

  it('renders the header, the stack and the mount diagram as an image', async () => {
    const r = await render(layersPayload);
    expect(r.node.querySelector('.jp-SandboxLayers-image')!.textContent).toBe('base');
    expect(r.node.querySelector('.jp-SandboxLayers-summary')!.textContent).toBe(
      '3 layers (2 from cells), 50.0 MiB'
    );
    const img = r.node.querySelector('img.jp-SandboxLayers-diagram') as HTMLImageElement;
    expect(img).not.toBeNull();
    expect(img.src.startsWith('data:image/svg+xml;base64,')).toBe(true);
    // the SVG's UTF-8 survives the base64 round trip
    const b64 = img.src.slice('data:image/svg+xml;base64,'.length);
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    expect(new TextDecoder().decode(bytes)).toBe(layersPayload.svg);
    // and its <script> never became part of the page
    expect(r.node.querySelector('script')).toBeNull();
    expect(r.node.querySelector('svg')).toBeNull();
    expect(r.node.querySelector('.jp-SandboxLayers-mountCommand')!.textContent).toBe(
      'mount -t overlay overlay -o lowerdir=layer-2:layer-1:layer-0,upperdir=upper,workdir=work merged'
    );
  });

  it('keeps open layers open when the kernel updates the display', async () => {
    const r = await render(layersPayload);
    (r.node.querySelector('[data-cell="1"] .jp-SandboxLayers-row') as HTMLElement).click();
    const grown = clone(layersPayload) as any;
    grown.layers.push({
      index: 3,
      id: 'dddddddddddd',
      size: 1,
      files: 1,
      created_by: 'cell 6: touch /x',
      cell: 6,
      command: 'touch /x',
      source: 'cell',
      changes: []
    });
    await r.renderModel(mimeModel(LAYERS_MIME, grown));
    expect(r.node.querySelectorAll('.jp-SandboxLayers-layer')).toHaveLength(5);
    expect(r.node.querySelector('[data-cell="1"]')!.classList).toContain(EXPANDED_CLASS);
    expect(r.node.querySelector('[data-cell="6"]')!.classList).not.toContain(EXPANDED_CLASS);
  });

  it('says what is wrong with a bad payload', async () => {
    const r = await render({ version: 1, image: 'base' });
    expect(r.node.querySelector(`.${ERROR_CLASS}`)!.textContent).toContain(
      'Cannot show this layer stack: the layer stack has no "layers"'
    );
    const bad = clone(layersPayload) as any;
    bad.layers[1].index = 'one';
    await r.renderModel(mimeModel(LAYERS_MIME, bad));
    expect(r.node.querySelector(`.${ERROR_CLASS}`)!.textContent).toContain(
      'layers[1].index is not a number'
    );
    expect(r.node.querySelector('.jp-SandboxLayers-stack')).toBeNull();
  });

  it('accepts the payload as a JSON string too', async () => {
    const r = await render(JSON.stringify(layersPayload));
    expect(r.node.querySelectorAll('.jp-SandboxLayers-layer')).toHaveLength(4);
  });
});

describe('mountCommand', () => {
  it('joins lowerdirs top first', () => {
    expect(
      mountCommand({ lowerdir: ['b', 'a'], upperdir: 'u', workdir: 'w', merged: '/m', cell: null })
    ).toBe('mount -t overlay overlay -o lowerdir=b:a,upperdir=u,workdir=w /m');
  });
});
