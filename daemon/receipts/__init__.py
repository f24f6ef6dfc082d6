"""Receipts: what an uploader reads back in results/ about each upload, as JSON and as text.

The last stage of the flow, and the one writer of results/. receipt.py builds a receipt as data from the
store, text.py renders its text twin, layout.py names every file and folder of results/, and writer.py writes
them: `Receipts` for the running daemon (called by whoever changes an upload's state), `write` for the
command line. The stages before this one never import it: they are given its callables by daemon/app.py.
"""

from daemon.receipts.layout import DRY_RUN_FOLDER, RESULT_FOLDERS
from daemon.receipts.receipt import MAX_FINDINGS, NEXT_STEP, PER_CODE, build, from_store, trim
from daemon.receipts.text import render_text
from daemon.receipts.writer import Receipts, write, write_dry_run_files

__all__ = ["DRY_RUN_FOLDER", "MAX_FINDINGS", "NEXT_STEP", "PER_CODE", "RESULT_FOLDERS", "Receipts", "build",
           "from_store", "render_text", "trim", "write", "write_dry_run_files"]  # fmt: skip
