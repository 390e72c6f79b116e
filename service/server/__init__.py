"""The server process: HTTP, admission and the compute pool. Never imports torch (tests/server checks it)."""
