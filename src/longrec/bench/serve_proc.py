"""`longrec serve` in a subprocess for the load test (issue 7, 20): started once it answers /healthz."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from longrec.errors import LongrecError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`longrec serve` in a subprocess, started once it answers /healthz; its output goes to `log`."""

    def __init__(self, run_dir: Path, store: str, log: Path, opts: Any) -> None:  # opts: loadtest.LoadOptions
        import httpx

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "longrec", "serve", str(run_dir), "--store", store, "--port", str(port)]
        cmd += ["--threads", str(opts.server_threads), "--log-level", "warning"]
        cmd += [*(["--prefill"] if opts.prefill else []), *shlex.split(opts.server_args)]
        with open(log, "ab") as out:
            env = {**os.environ, "OMP_NUM_THREADS": str(opts.server_threads)}
            # its own process group: a kill reaches the workers of `--workers K` too, as a crash of the machine would
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + opts.start_timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        rc = self.proc.poll()
        self.kill()
        why = f"did not answer /healthz in {opts.start_timeout_s:.0f} s" if rc is None else f"exited with status {rc}"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise LongrecError(f"longrec serve {why}:\n{tail}")

    def kill(self) -> None:
        """SIGKILL to the whole process group (no shutdown handler runs, as in a crash)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the supervisor of --workers stops its workers
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


class Http:
    """A keep-alive HTTP/1.1 connection (http.client): about a tenth of httpx's client CPU per request, so one
    client core can load a server core; raises OSError or http.client.HTTPException when the server is gone."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
        r = self.conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        self.conn.close()


TRANSPORT_ERRORS = (OSError, http.client.HTTPException)  # no answer: the server was killed
