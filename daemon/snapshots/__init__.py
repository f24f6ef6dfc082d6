"""Snapshots: merge a package onto the last roster, diff, hold, store (the worker's job)."""
