"""rosterd: OneRoster zips over SFTP, validated, kept as snapshots, their changes delivered."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# asyncssh names cryptography's DSA classes when it is imported, and cryptography has deprecated DSA: ten
# warnings at every start (and in every worker process) that no operator can act on. Only that category,
# and only when it comes from asyncssh; this runs before any module of the package imports asyncssh.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"asyncssh(\.|$)")
