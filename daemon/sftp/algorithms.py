"""The server's algorithms, now chosen in daemon/ssh_algorithms.py (the push target's client uses them too).

Kept only for daemon/sftp/server.py, which imports this name; once it imports daemon.ssh_algorithms, remove.
"""

from daemon.ssh_algorithms import HOST_KEY_ALGS, connection_options

__all__ = ["HOST_KEY_ALGS", "connection_options"]
