"""Transport parity: a seeded call sequence served over legacy /dev/fuse (the reference) and
over a ring transport must give the same results (the scenario: guest/edge/parity.py)."""
