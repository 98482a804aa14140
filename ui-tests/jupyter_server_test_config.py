"""The JupyterLab server of the browser tests (started by playwright.config.js's webServer).

Galata's helper opens the server to the test browser (no token, no XSRF
check): never use this configuration for anything but these tests. It makes
its temp dirs (workspaces, the server's root dir, a bash rcfile) with
``tempfile``; they all go into the test's own temp dir, SANDBOX_UI_TMP, which
the test removes. The kernel finds its store through SANDBOX_ROOT (a temp
store of the test's, never a user's), inherited from the environment.
"""

import os
import tempfile

from jupyterlab.galata import configure_jupyter_server

c = get_config()  # noqa: F821 (injected by traitlets when it loads this file)

ui_tmp = os.environ["SANDBOX_UI_TMP"]  # set by playwright.config.js (or the pytest wrapper)
if not os.environ.get("SANDBOX_ROOT"):
    raise SystemExit(
        "jupyter_server_test_config.py: SANDBOX_ROOT is not set: the kernel would "
        "use the user's store; run the tests through playwright.config.js"
    )

saved, tempfile.tempdir = tempfile.tempdir, ui_tmp
try:
    configure_jupyter_server(c)
finally:
    tempfile.tempdir = saved

c.ServerApp.port = int(os.environ.get("SANDBOX_UI_PORT", "8899"))  # not 8888: a user's lab
c.ServerApp.allow_root = True  # CI runs as root; without it the server refuses to start
c.ServerApp.root_dir = os.path.join(ui_tmp, "notebooks")
os.makedirs(c.ServerApp.root_dir, exist_ok=True)
# No settings of a user's own lab may leak in.
c.LabApp.user_settings_dir = os.path.join(ui_tmp, "settings")
# Warnings and errors only: the log is the tail of a failed run's report.
c.Application.log_level = "WARN"
