"""Generated OneRoster districts for samples, tests and benchmarks (not used by the daemon)."""
