/**
 * The "Bash (sandbox)" kernel in a real JupyterLab, in a real (headless)
 * chromium: the launcher card, a notebook whose cells run in containers, and
 * the kernel's visuals (%layers, %diff, the %%stats meter).
 *
 * The visuals are display_data bundles of a custom MIME type with text/html
 * and text/plain fallbacks. With our extension (jupyter-sandbox) in the lab,
 * its renderers must draw them; without it, the text/html must. Plain text
 * alone fails the test: something did not render.
 *
 * Every step takes a screenshot (test-results/<test>/NN-name.png, attached to
 * the HTML report); tests/browser/test_jupyterlab.py copies them to
 * test-artifacts/browser/.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator, TestInfo } from '@playwright/test';

/** The kernelspec's display name (kernel/kernelspec/kernel.json). */
const KERNEL_DISPLAY_NAME = 'Bash (sandbox)';

/** The npm name of our JupyterLab extension (labextension/package.json). */
const EXTENSION = 'jupyter-sandbox';

/** A cell that writes a file into the container's root. */
const WRITE_CELL = 'echo hello > /greeting; ls -l /greeting';
const WRITE_COMMAND = 'echo hello > /greeting';
/** A later cell that changes the layer stack again. */
const SECOND_CELL = 'echo bye > /bye';

/**
 * A cell with the live meter that takes ~50 MiB of memory for a moment, three
 * times over four seconds: the first widget of a session takes JupyterLab a
 * moment to draw (it loads the widgets' code), and a single spike at the
 * start could be over before the meter is on the page.
 */
const STATS_CELL = [
  '%%stats',
  'sleep 1',
  'for i in 1 2 3; do',
  'head -c 60m /dev/zero | tail -c 50m > /dev/null; sleep 1',
  'done'
].join('\n');

/** How each visual shows: with the extension's renderer, or as the bundle's static HTML. */
const VISUALS = {
  layers: { extension: '.jp-SandboxLayers', html: '.jupyter-sandbox-layers' },
  diff: { extension: '.jp-SandboxDiff', html: '.jupyter-sandbox-diff' },
  stats: { extension: '.jp-SandboxStats', html: '.jupyter-sandbox-stats' }
};
/** What the extension's renderers show when a payload is bad. */
const EXTENSION_ERROR = '.jp-Sandbox-error';

test.describe('the Bash (sandbox) kernel', () => {
  test('the launcher shows its card, with its logo', async ({ page }, testInfo) => {
    const card = await launcherCard(page);
    await expect(card).toBeVisible();
    await expectLogo(card);
    await shot(page, testInfo, '01-launcher');
  });

  test('a cell runs in a container; %layers and %diff show what it changed', async ({
    page
  }, testInfo) => {
    const withExtension = await extensionLoaded(page);
    testInfo.annotations.push({
      type: 'renderers',
      description: withExtension ? `the ${EXTENSION} extension's` : 'the bundles\u2019 text/html'
    });
    await newSandboxNotebook(page, testInfo, '02-notebook');

    await test.step('a cell that writes a file', async () => {
      await runCell(page, 0, WRITE_CELL);
      const output = await cellOutput(page, 0);
      await expect(output).toContainText(/-rw-r--r-- +1 root +root +6 .*\/greeting/);
      const stderr = output.locator('[data-mime-type="application/vnd.jupyter.stderr"]');
      await expect(stderr, 'nothing on stderr').toHaveCount(0);
      await shot(page, testInfo, '03-cell-output');
    });

    await test.step('%layers shows the layer stack, with the cell\u2019s layer', async () => {
      await runCell(page, 1, '%layers');
      const layers = await visual(page, 1, 'layers', withExtension);
      if (withExtension) {
        const layer = layers.locator('li.jp-SandboxLayers-layer.jp-mod-cell[data-cell="1"]');
        await expect(layer).toContainText(WRITE_COMMAND);
        await expect(layers.locator('li.jp-SandboxLayers-layer.jp-mod-base')).not.toHaveCount(0);
        await expect(layers.locator('li.jp-SandboxLayers-layer.jp-mod-upper')).toHaveCount(1);
      } else {
        await expect(layers.locator('tr', { hasText: 'cell 1:' })).toContainText(WRITE_COMMAND);
      }
      await shot(page, testInfo, '04-layers', await page.notebook.getCellLocator(1));
    });

    await test.step('%diff shows /greeting as added (A)', async () => {
      await runCell(page, 2, '%diff');
      const diff = await visual(page, 2, 'diff', withExtension);
      if (withExtension) {
        const node = diff.locator('li.jp-SandboxDiff-node[data-path="/greeting"]');
        await expect(node).toHaveAttribute('data-kind', 'A');
        await expect(node.locator('.jp-SandboxDiff-badge').first()).toHaveText('A');
        await expect(node.locator('.jp-SandboxDiff-name').first()).toHaveText('greeting');
      } else {
        const row = diff.locator('li', { hasText: 'greeting' });
        await expect(row.locator('span[title="added"]')).toHaveText('A');
      }
      await shot(page, testInfo, '05-diff', await page.notebook.getCellLocator(2));
    });

    await test.step('the %layers display grows when a later cell makes a layer', async () => {
      await runCell(page, 3, SECOND_CELL);
      const layers = await visual(page, 1, 'layers', withExtension);
      if (withExtension) {
        const layer = layers.locator('li.jp-SandboxLayers-layer.jp-mod-cell[data-cell="4"]');
        await expect(layer).toContainText(SECOND_CELL);
      } else {
        await expect(layers.locator('tr', { hasText: 'cell 4:' })).toContainText(SECOND_CELL);
      }
      await shot(page, testInfo, '06-layers-updated', await page.notebook.getCellLocator(1));
    });
  });

  test('%%stats shows a live meter that updates, then freezes into a summary', async ({
    page
  }, testInfo) => {
    const withExtension = await extensionLoaded(page);
    await newSandboxNotebook(page, testInfo, '07-stats-notebook');
    // Every text the meter shows, recorded by the page as it changes (the
    // memory climbs in a fraction of a second: polling from here could miss it).
    const cell = await page.notebook.getCellLocator(0);
    await cell!.evaluate(node => {
      const seen: string[] = [];
      (window as any).sandboxMeterTexts = seen;
      new MutationObserver(() => {
        const meter = node.querySelector('.jp-Cell-outputArea .jupyter-widgets');
        const text = (meter as HTMLElement | null)?.innerText;
        if (text && text !== seen[seen.length - 1]) {
          seen.push(text);
        }
      }).observe(node, { subtree: true, childList: true, characterData: true, attributes: true });
    });
    await runCell(page, 0, STATS_CELL, false);
    const output = await cellOutput(page, 0);

    await test.step('a live meter (a widget) shows while the cell runs, and changes', async () => {
      const meter = output.locator('.jupyter-widgets').first();
      await expect(meter).toBeVisible();
      await expect(meter).toContainText('memory');
      await expect(meter).toContainText('running');
      await shot(page, testInfo, '08-stats-live');
      await page.notebook.waitForRun(0);
      const texts: string[] = await page.evaluate(() => (window as any).sandboxMeterTexts);
      const live = texts.filter(text => text.includes('running'));
      // Its memory row (from "memory" to the CPU row): the values, not just its clock.
      const rows = live.map(text => text.slice(text.indexOf('memory')).split(/\bCPU\b/)[0]);
      const memory = new Set(rows);
      const seen = `${new Set(live).size} texts, ${memory.size} memory rows`;
      const description = `${seen}: ${JSON.stringify([...memory])}`;
      testInfo.annotations.push({ type: 'meter', description });
      console.log(`the live meter showed ${seen}`);
      expect(new Set(live).size, 'the meter changed while the cell ran').toBeGreaterThanOrEqual(2);
      expect(memory.size, 'the memory shown changed while the cell ran').toBeGreaterThanOrEqual(2);
    });

    await test.step('the meter freezes into the usage summary', async () => {
      await expect(output.locator('.jupyter-widgets')).toHaveCount(0);
      const stats = await visual(page, 0, 'stats', withExtension);
      if (withExtension) {
        await expect(stats.locator('.jp-SandboxStats-bar.jp-mod-memory')).toBeVisible();
        await expect(stats.locator('.jp-SandboxStats-bar.jp-mod-cpu')).toBeVisible();
        await expect(stats.locator('.jp-SandboxStats-bar.jp-mod-pids')).toBeVisible();
        await expect(stats.locator('.jp-SandboxStats-alert')).toHaveCount(0);
      } else {
        await expect(stats).toContainText('peak');
        await expect(stats).not.toContainText('running');
      }
      await shot(page, testInfo, '09-stats-summary');
    });
  });
});

/**
 * Whether our extension's renderers draw the visuals: JupyterLab serves it
 * (its page config lists the prebuilt extensions) and has not disabled it.
 * SANDBOX_UI_RENDERERS=extension (the pytest wrapper sets it when
 * scripts/setup.sh built the extension) or =html says which it must be.
 */
async function extensionLoaded(page: IJupyterLabPageFixture): Promise<boolean> {
  const loaded = await page.evaluate(name => {
    const data = document.getElementById('jupyter-config-data')?.textContent;
    const config = JSON.parse(data ?? '{}');
    const federated: Array<{ name: string }> = config.federated_extensions ?? [];
    const disabled: string[] = config.disabledExtensions ?? [];
    return (
      federated.some(ext => ext.name === name) &&
      !disabled.some(id => id === name || id.startsWith(`${name}:`))
    );
  }, EXTENSION);
  const expected = process.env.SANDBOX_UI_RENDERERS;
  if (expected === 'extension' || expected === 'html') {
    const what = `the ${EXTENSION} extension is (not) loaded`;
    expect(loaded ? 'extension' : 'html', what).toBe(expected);
  }
  return loaded;
}

/** The kernel's card in the launcher on show (opened if none is). */
async function launcherCard(page: IJupyterLabPageFixture): Promise<Locator> {
  const launcher = page.locator('.jp-Launcher:visible');
  if (!(await launcher.count())) {
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('launcher:create');
    });
  }
  await expect(launcher).toHaveCount(1);
  const card = launcher
    .locator('.jp-Launcher-section')
    .filter({ hasText: 'Notebook' })
    .locator('.jp-LauncherCard', { hasText: KERNEL_DISPLAY_NAME });
  await expect(card).toHaveCount(1);
  return card;
}

/** The card's logo is the kernelspec's own image, loaded (not the default letter tile). */
async function expectLogo(card: Locator): Promise<void> {
  const logo = card.locator('.jp-LauncherCard-icon img');
  await expect(logo).toHaveAttribute('src', /kernelspecs\/sandbox\/logo-(svg\.svg|64x64\.png)/);
  await expect
    .poll(() => logo.evaluate(img => (img as HTMLImageElement).naturalWidth), {
      message: 'the logo image loads'
    })
    .toBeGreaterThan(0);
}

/** Click the launcher card; return when the notebook's kernel is idle. */
async function newSandboxNotebook(
  page: IJupyterLabPageFixture,
  testInfo: TestInfo,
  screenshot: string
): Promise<void> {
  const card = await launcherCard(page);
  await card.click();
  await expect(page.locator('.jp-NotebookPanel')).toBeVisible();
  const kernelName = page.locator('.jp-NotebookPanel .jp-Toolbar-kernelName');
  await expect(kernelName).toHaveText(KERNEL_DISPLAY_NAME);
  // The kernel is up once the status bar says Idle (it starts in a second or so).
  await expect(page.locator('#jp-main-statusbar')).toContainText(`${KERNEL_DISPLAY_NAME} | Idle`, {
    timeout: 120_000
  });
  await shot(page, testInfo, screenshot);
}

/** Type `source` into cell `index` and run it (waiting for its end unless `wait` is false). */
async function runCell(
  page: IJupyterLabPageFixture,
  index: number,
  source: string,
  wait = true
): Promise<void> {
  expect(await page.notebook.setCell(index, 'code', source), `cell ${index} typed`).toBe(true);
  expect(await page.notebook.runCell(index, { wait }), `cell ${index} run`).toBe(true);
}

/** The output area of cell `index`. */
async function cellOutput(page: IJupyterLabPageFixture, index: number): Promise<Locator> {
  const cell = await page.notebook.getCellLocator(index);
  expect(cell, `cell ${index} exists`).not.toBeNull();
  return cell!.locator('.jp-Cell-outputArea');
}

/**
 * The rendered visual in cell `index`'s output: the extension's renderer
 * when the extension is loaded (with no error box), else the static HTML.
 */
async function visual(
  page: IJupyterLabPageFixture,
  index: number,
  kind: keyof typeof VISUALS,
  withExtension: boolean
): Promise<Locator> {
  const output = await cellOutput(page, index);
  const found = output.locator(withExtension ? VISUALS[kind].extension : VISUALS[kind].html);
  await expect(found, `the ${kind} visual renders`).toHaveCount(1);
  await expect(found).toBeVisible();
  if (withExtension) {
    const error = found.locator(EXTENSION_ERROR);
    await expect(error, `the ${kind} renderer shows no error`).toHaveCount(0);
  }
  return found;
}

/** A screenshot of the page (or of one element), saved as a test artefact. */
async function shot(
  page: IJupyterLabPageFixture,
  testInfo: TestInfo,
  name: string,
  element?: Locator | null
): Promise<void> {
  const file = testInfo.outputPath(`${name}.png`);
  await (element ?? page).screenshot({ path: file });
  await testInfo.attach(name, { path: file, contentType: 'image/png' });
}
