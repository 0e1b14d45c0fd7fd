"""The pytest plugin of fuse-harness, loaded through its entry point (pytest11: fuse_harness).

Four parts: the session (options, markers, input checks, the session's kernel and guest, the
requirements of each test), the parallel half (`-n N`: a guest per worker, one run folder),
the results half (verdicts, reproducers, outputs, terminal summary) and the per-test half
(dmesg slices, guest health); harness.plugin.state holds what they share (stash keys, the
options as resolved).
"""

pytest_plugins = ["harness.plugin.session", "harness.plugin.xdist", "harness.plugin.results",
                  "harness.plugin.health"]
