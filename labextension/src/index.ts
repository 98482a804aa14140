/**
 * jupyter-sandbox: the JupyterLab side of the Bash (sandbox) kernel.
 *
 * - lib/mime.js (the package's "mimeExtension"): renderers for
 *   application/vnd.jupyter-sandbox.{layers,diff,stats}+json.
 * - this module (the package's "extension"): the "Sandbox" side panel and
 *   its command.
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { PANEL_ID, SANDBOX_KERNEL, SandboxPanel } from './panel';

export * from './diff';
export * from './layers';
export * from './stats';
export * from './panel';

export const OPEN_PANEL_COMMAND = 'jupyter-sandbox:open-panel';

/** A stack of three layers, as the panel's tab icon. */
export const sandboxIcon = new LabIcon({
  name: 'jupyter-sandbox:layers',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M12 2 2 7l10 5 10-5-10-5z"/>' +
    '<path d="m2 12 10 5 10-5-2.2-1.1L12 14.8l-7.8-3.9L2 12z"/>' +
    '<path d="m2 17 10 5 10-5-2.2-1.1L12 19.8l-7.8-3.9L2 17z"/>' +
    '</g></svg>'
});

const panelPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-sandbox:panel',
  description: 'The Sandbox side panel: image, layers, limits and usage of the current notebook.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null
  ) => {
    const panel = new SandboxPanel({
      tracker,
      executed: NotebookActions.executed,
      newNotebook: () =>
        void app.commands.execute('notebook:create-new', { kernelName: SANDBOX_KERNEL })
    });
    panel.title.icon = sandboxIcon;
    app.shell.add(panel, 'right', { rank: 600 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
    app.commands.addCommand(OPEN_PANEL_COMMAND, {
      label: 'Show the Sandbox panel',
      execute: () => app.shell.activateById(PANEL_ID)
    });
  }
};

const plugins: JupyterFrontEndPlugin<any>[] = [panelPlugin];

export default plugins;
