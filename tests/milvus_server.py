"""A real Milvus standalone server for the tests, from PyPI's `milvus` wheel.

`scripts/install.sh --test` puts the server in ./.venv-milvus (it wants old pins the project
must not take). Each start gets a fresh data folder and free ports on loopback, its embedded
etcd's included (by default that one always takes port 2380, so a second server on the machine,
a benchmark's or another checkout's test run, would fail to start); stop() ends the process
group the server was started in, by its id. Nothing here is skipped: a machine set up by the
project's install has the server, and a missing one is a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / ".venv-milvus" / "bin" / "milvus-server"
START_TIMEOUT_S = 180  # 7-10 s on an idle machine; much longer on 2 busy cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MilvusServer:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, name: str) -> str:
        return f"milvus://{self.address}/{name}"

    def start(self, *, port: int | None = None) -> MilvusServer:
        if not SERVER.exists():
            raise RuntimeError(
                f"{SERVER} is missing: run `bash scripts/install.sh --test` (it installs the "
                "Milvus server the scale-out tests start)"
            )
        self.port = port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        client, peer = free_port(), free_port()
        etcd = self.data_dir.parent / f"{self.data_dir.name}-etcd.yaml"
        etcd.write_text(  # the embedded etcd's own settings (Milvus reads ETCD_CONFIG_PATH)
            f"listen-client-urls: http://127.0.0.1:{client}\n"
            f"advertise-client-urls: http://127.0.0.1:{client}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer}\n"
        )
        command = [str(SERVER), "--data", str(self.data_dir), "--proxy-port", str(self.port),
                   "--etcd-port", str(client)]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "ETCD_CONFIG_PATH": str(etcd)},
                start_new_session=True,  # its own process group: stop() ends the server's child
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Milvus exited at start: {self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Milvus did not start in {START_TIMEOUT_S} s: {self.log_tail()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(uri=f"http://{self.address}", timeout=5)
            client.list_collections()
            client.close()
            return True
        except Exception:
            return False

    def stop(self) -> None:
        """SIGINT to the server's process group (the wrapper stops Milvus), then SIGKILL."""
        self._signal(signal.SIGINT, wait=20)
        self._signal(signal.SIGKILL, wait=10)
        self.process = None

    def kill(self) -> None:
        """An outage: the whole server process group killed at once."""
        self._signal(signal.SIGKILL, wait=10)
        self.process = None

    def pause(self) -> None:
        """An outage that ends: the server's processes stop answering (SIGSTOP) ..."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """... and carry on where they were (SIGCONT). (This wheel cannot be restarted on the
        data folder of a killed server: its old sessions in the embedded etcd block it.)"""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def _signal(self, sig: int, wait: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)  # the group started for this server alone
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return
        deadline = time.monotonic() + wait  # its child (the milvus binary) may outlive it
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"
