"""Delivery targets: where an accepted change set goes (CERS student groups; licence targets later)."""
