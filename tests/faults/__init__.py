"""The fault matrix: each test produces one fault for real against the real recorder (its CLI,
its health server, its archive tools) and checks that nothing is lost silently — the data is
kept, or a loud signal (log, metric, /ready, /health, ledger, exit code) says what was lost."""
