#!/usr/bin/env bash
# The whole test suite: unit and integration tests, then the smoke test of
# the release binary with OpenSSH against the default config's real servers,
# two instances behind HAProxy (scripts/fleet.sh), a stress run of thousands of sessions, then wire compatibility with the
# Python originals (needs PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --for-tests
scripts/install-mcp-servers.sh
cargo build --release --locked
cargo test --locked
scripts/smoke.sh
scripts/fleet.sh
scripts/stress.sh
scripts/compat.sh
