/**
 * The MIME renderer extension: JupyterLab registers these factories with
 * every rendermime registry, so the kernel's three custom MIME types render
 * in notebooks (including untrusted ones: the renderers are safe, they put
 * nothing from the data into the page as HTML).
 *
 * Rank 0 puts them ahead of the bundles' text/html and text/plain fallbacks.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';

import { diffRendererFactory } from './diff';
import { layersRendererFactory } from './layers';
import { statsRendererFactory } from './stats';

export const RENDERER_RANK = 0;

const extensions: IRenderMime.IExtension[] = [
  {
    id: 'jupyter-sandbox:layers',
    description: 'Renders the sandbox kernel\u2019s layer stack (%layers).',
    rendererFactory: layersRendererFactory,
    rank: RENDERER_RANK,
    dataType: 'json'
  },
  {
    id: 'jupyter-sandbox:diff',
    description: 'Renders the sandbox kernel\u2019s copy-on-write diff of a cell (%diff).',
    rendererFactory: diffRendererFactory,
    rank: RENDERER_RANK,
    dataType: 'json'
  },
  {
    id: 'jupyter-sandbox:stats',
    description: 'Renders the sandbox kernel\u2019s cgroup usage summary of a cell (%stats).',
    rendererFactory: statsRendererFactory,
    rank: RENDERER_RANK,
    dataType: 'json'
  }
];

export default extensions;
