"""Hand-written OneRoster CSV packages for the API tests, zipped with a manifest as an SIS exports them."""

from __future__ import annotations

import io
import zipfile

from daemon.oneroster import schema


def package(version: str, files: dict[str, str]) -> bytes:
    """A zip of `files` (name -> CSV text) with a manifest naming them bulk and every other file absent."""
    manifest = ["propertyName,value", "manifest.version,1.0", f"oneroster.version,{version}"]
    manifest += [f"file.{e},{'bulk' if f'{e}.csv' in files else 'absent'}" for e in schema.VERSIONS[version].tables]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.csv", "\n".join(manifest) + "\n")
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()
