"""sandboxd: the daemon and its Docker-compatible REST API.

``app`` builds the aiohttp application and serves it on a unix socket,
``supervisor`` keeps track of who watches and waits for which container,
``streams`` speaks Docker's stream framing and hijacked connections,
``errors`` maps every failure to an HTTP status, and ``routes/`` holds one
module per API resource.
"""

from sandbox.config import default_socket, socket_path
from sandbox.daemon.app import create_app, main, serve

__all__ = ["create_app", "default_socket", "main", "serve", "socket_path"]
