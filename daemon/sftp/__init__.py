"""SFTP drop folders: an asyncssh server confining each tenant to `/inbox` (upload) and `/results` (read).

The layer knows nothing of config files, validation or the database. It takes plain options, writes
completed uploads atomically into the tenant's inbox and reports each one as an `UploadReceived`;
security-relevant facts go to an optional `on_event(name, fields)` subscriber.
"""

from daemon.sftp.events import UploadReceived
from daemon.sftp.options import ServerOptions, TenantAccess
from daemon.sftp.server import SftpServer, start_server

__all__ = ["ServerOptions", "SftpServer", "TenantAccess", "UploadReceived", "start_server"]
