#!/usr/bin/env bash
# The Redis tests (tests/test_serve_redis.py) start their own throw-away redis-server on a loopback port; this puts
# the binary on PATH when it is missing: Debian's redis-server package, installed with apt-get (as root, or with
# passwordless sudo). Without either it says why and the Redis tests skip with that reason.
set -u
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "ensure-redis: redis-server is not installed and this user cannot install it (not root, no sudo)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-redis: redis-server is not installed and apt-get is not available; install it by hand" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1 &&
  $SUDO apt-get install -y -q redis-server >/dev/null 2>&1; } ||
  echo "ensure-redis: apt-get install redis-server failed; the Redis tests will skip" >&2
# the package's own service is not needed (the tests start theirs); stop it where it was started
$SUDO service redis-server stop >/dev/null 2>&1 || true
command -v redis-server >/dev/null 2>&1 && echo "ensure-redis: $(redis-server --version | cut -d' ' -f1-3)"
exit 0
