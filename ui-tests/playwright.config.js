// @ts-check
/**
 * The browser tests: Galata's Playwright defaults, Debian's chromium
 * (/usr/bin/chromium: no browser is downloaded) and a JupyterLab server of the
 * tests' own, on a port of its own (not a user's 8888).
 *
 * The kernel must never touch a user's store. The pytest wrapper
 * (tests/browser/test_jupyterlab.py) passes SANDBOX_ROOT (a temp store) and
 * SANDBOX_UI_TMP (a temp dir for the server's root dir, workspaces and
 * settings), stops the store's daemon and removes both. Run by hand
 * (`jlpm playwright test`), this file makes that temp dir itself (an inherited
 * SANDBOX_ROOT is ignored then: it may be the user's) and cleans it up at exit.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const venvBin = path.resolve(__dirname, '..', '.venv', 'bin');
const port = process.env.SANDBOX_UI_PORT || '8899';
process.env.SANDBOX_UI_PORT = port;

// Playwright loads this file in its runner and in each worker; the workers
// inherit the runner's environment, so only the runner makes the temp dir.
if (!process.env.SANDBOX_UI_TMP) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sandbox-test-ui-'));
  process.env.SANDBOX_ROOT = path.join(dir, 'store');
  process.env.SANDBOX_UI_TMP = path.join(dir, 'lab');
  fs.mkdirSync(process.env.SANDBOX_UI_TMP);
  // 'exit' runs after the webServer (JupyterLab and its kernels) is stopped,
  // which a globalTeardown would not: it runs before.
  process.on('exit', () => Private.cleanUp(dir));
} else if (!process.env.SANDBOX_ROOT) {
  throw new Error('SANDBOX_UI_TMP is set but SANDBOX_ROOT is not: pass both, or neither');
}
// The kernel's client talks to the temp store's own daemon (which it starts),
// never to one that SANDBOX_HOST names.
delete process.env.SANDBOX_HOST;
// Nothing of the user's own Jupyter (config, kernelspecs and extensions in the
// user data dir, runtime files) may change or be changed by the tests: the
// server sees the .venv's kernelspec and extensions only.
for (const [name, sub] of [
  ['JUPYTER_CONFIG_DIR', 'config'],
  ['JUPYTER_DATA_DIR', 'data'],
  ['JUPYTER_RUNTIME_DIR', 'runtime']
]) {
  process.env[name] = path.join(process.env.SANDBOX_UI_TMP, 'jupyter', sub);
}

module.exports = {
  ...baseConfig,
  testDir: './tests',
  globalSetup: require.resolve('./global-setup.js'),
  outputDir: './test-results',
  // A list on the console (also under CI, where Galata would pick `github`)
  // and an HTML report with the screenshots, never opened.
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'playwright-report' }]],
  // One worker: the tests share one server and one store; kernels are slow to start.
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 240_000,
  expect: { timeout: 60_000 },
  use: {
    ...baseConfig.use,
    baseURL: `http://localhost:${port}`,
    headless: true,
    launchOptions: { executablePath: '/usr/bin/chromium' },
    // Videos need Playwright's own ffmpeg download: off. Traces need nothing.
    video: 'off',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure'
  },
  webServer: {
    command: `"${venvBin}/jupyter" lab --config jupyter_server_test_config.py`,
    cwd: __dirname,
    url: `http://localhost:${port}/lab`,
    timeout: 120_000,
    // Never test a server that someone else started (it would use another store).
    reuseExistingServer: false,
    // SIGTERM lets JupyterLab shut its kernels down (each removes its containers).
    gracefulShutdown: { signal: 'SIGTERM', timeout: 30_000 },
    stdout: 'pipe',
    stderr: 'pipe'
  }
};

const Private = {
  /**
   * Stop the daemon that the kernel started for the temp store, then remove
   * the temp dir. Synchronous: it runs in a process 'exit' handler.
   *
   * @param {string} dir - the temp dir this file made
   */
  cleanUp(dir) {
    const root = path.join(dir, 'store');
    let pid = NaN;
    try {
      pid = parseInt(fs.readFileSync(path.join(root, 'sandboxd.pid'), 'utf8'), 10);
    } catch {
      // no daemon was started
    }
    if (pid > 0 && Private.alive(pid)) {
      process.kill(pid, 'SIGTERM'); // it stops its containers, then exits
      const deadline = Date.now() + 30_000;
      while (Private.alive(pid) && Date.now() < deadline) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
      }
      if (Private.alive(pid)) {
        console.error(`sandboxd (${pid}) of ${root} ignored SIGTERM; left ${dir}`);
        return;
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  },

  /** @param {number} pid */
  alive(pid) {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }
};
