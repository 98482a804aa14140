// @ts-check
/**
 * Before the tests: build the default image `base` into the tests' temp store
 * (SANDBOX_ROOT), as tests/conftest.py's session store does, so that the
 * kernel's first cell has no "building the default image" notice on stderr.
 * It uses the engine directly: no daemon is started here (the kernel's client
 * starts the store's daemon on its first cell).
 */
const { execFileSync } = require('child_process');
const path = require('path');

module.exports = async function globalSetup() {
  const python = path.resolve(__dirname, '..', '.venv', 'bin', 'python');
  execFileSync(
    python,
    ['-c', 'import os, pathlib; from sandbox.engine import Engine; ' +
      'Engine(pathlib.Path(os.environ["SANDBOX_ROOT"])).ensure_base()'],
    { stdio: 'inherit', timeout: 120_000 }
  );
};
