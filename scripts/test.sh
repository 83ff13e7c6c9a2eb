#!/usr/bin/env bash
# zentrale's one test command: installs what the tests need, then runs the whole suite.
#
#   sudo scripts/test.sh          (as root it installs the Debian packages it needs)
#
# Steps: install SIPp (Debian package sip-tester) and baresip when missing; make sure PostgreSQL is
# reachable (start the local cluster if it is installed but stopped); then cargo fmt --check,
# cargo clippy -D warnings, and every test of the workspace (cargo-nextest when present).
# The PostgreSQL tests use ZENTRALE_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
# Without a reachable server they print "SKIPPED: PostgreSQL …" — except under CI=true, where
# an unreachable PostgreSQL is a failure, never a silent pass.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# --- 1. Debian packages the end-to-end tests drive -------------------------------------------
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "missing ${need[*]}: run this script as root (or apt-get install them) — the tests that need them will fail" >&2
  fi
fi

# --- 2. PostgreSQL ------------------------------------------------------------------------------
export ZENTRALE_TEST_PG_URL="${ZENTRALE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
pg_up() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_up && [ "$(id -u)" -eq 0 ] && command -v pg_ctlcluster >/dev/null 2>&1; then
  say "starting the local PostgreSQL cluster"
  for v in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  done
  for _ in $(seq 1 20); do pg_up && break; sleep 0.5; done
fi
if pg_up; then
  say "PostgreSQL reachable at $ZENTRALE_TEST_PG_URL"
else
  say "PostgreSQL NOT reachable: the PostgreSQL half of the storage tests will print SKIPPED${CI:+ and FAIL because CI is set}"
fi

# --- 3. Static checks ---------------------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- 4. Tests -------------------------------------------------------------------------------------
# Doc tests first: the last line printed must be the test runner's summary of the whole suite.
say "doc tests"
cargo test --workspace --locked --doc
if cargo nextest --version >/dev/null 2>&1; then
  say "cargo nextest run --workspace"
  cargo nextest run --workspace --locked --no-fail-fast
else
  say "cargo test --workspace"
  cargo test --workspace --locked --no-fail-fast
fi
