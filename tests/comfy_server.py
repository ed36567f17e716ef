"""A real ComfyUI server with this pack installed, for the tests in test_comfy_server.py.

The ComfyUI source tree and its venv recipe come from the shared folder (``../shared/comfyui`` next to the
repository, or ``$OVI_COMFYUI_DIR``): ``make_venv.sh DIR`` builds a CPU venv once (about 8 minutes; DIR is
``$OVI_COMFY_VENV`` or ``~/.cache/comfyui-ovi/comfy-venv``), the pack's requirements.txt is installed into it as
ComfyUI-Manager would, the tree is copied to a temporary folder with the repository linked as
``custom_nodes/ComfyUI-Ovi``, and ``main.py --cpu`` listens on 127.0.0.1 only, with every folder it writes in the
temporary folder. Only the standard library talks to it (urllib).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "ComfyUI-Ovi"


def shared_dir() -> Path:
    """The shared ComfyUI folder (holds make_venv.sh, constraints.txt and ComfyUI/)."""
    return Path(os.environ.get("OVI_COMFYUI_DIR") or ROOT.parent / "shared" / "comfyui")


def venv_dir() -> Path:
    return Path(os.environ.get("OVI_COMFY_VENV") or Path.home() / ".cache" / "comfyui-ovi" / "comfy-venv")


def _run(cmd: list[str], what: str, timeout: float) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stdout[-3000:]}\n"
                           f"{r.stderr[-3000:]}")


def prepare_venv(shared: Path, venv: Path) -> Path:
    """ComfyUI's venv (built once by make_venv.sh) with the pack's requirements (and pytest, for the tests that run
    inside it: tests/test_in_comfy_venv.py) installed; returns its python."""
    _run(["bash", str(shared / "make_venv.sh"), str(venv)], "building the ComfyUI venv", timeout=3600)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "-c", str(shared / "constraints.txt"), "-r",
          str(ROOT / "requirements.txt"), "-r", str(ROOT / "requirements-dev.txt")],
         "installing the pack's requirements.txt", timeout=1800)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    base: str
    proc: subprocess.Popen
    root: Path  # the temporary folder: ComfyUI/, output/, input/, temp/, user/, server.log
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # ---- HTTP ------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, timeout: float = 30) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 30):
        return self.request("GET", path, timeout=timeout)

    def queue(self, prompt: dict) -> tuple[int, dict]:
        """POST /prompt: (HTTP status, answer) — 200 {"prompt_id", "node_errors"} or 400 {"error", "node_errors"}."""
        return self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})

    def history(self, prompt_id: str) -> dict | None:
        _, h = self.get(f"/history/{prompt_id}")
        return h.get(prompt_id) if isinstance(h, dict) else None

    def wait(self, prompt_id: str, timeout: float = 120, poll: float = 0.02) -> dict:
        """The history entry of a finished (completed, failed or interrupted) prompt."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"the ComfyUI server exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log()}")

    def running(self) -> list:
        _, q = self.get("/queue")
        return q.get("queue_running", []) if isinstance(q, dict) else []

    def websocket(self) -> WebSocket:
        """ComfyUI's /ws for this client: 'executing', 'progress', 'execution_interrupted', ... messages."""
        return WebSocket(self.base, self.client_id)

    def interrupt(self) -> None:
        self.request("POST", "/interrupt", {})

    def queue_and_interrupt(self, prompt: dict, node_id: str, after_steps: int = 3) -> tuple[str, dict, float]:
        """Queue ``prompt``, POST /interrupt once node ``node_id`` has reported ``after_steps`` progress steps, and
        return the prompt id, the run's closing websocket message (execution_interrupted, _success or _error) and
        the seconds from /interrupt to that message."""
        ws = self.websocket()
        try:
            status, answer = self.queue(prompt)
            assert status == 200, answer
            pid = answer["prompt_id"]
            ws.wait_for(lambda m: m["type"] == "progress" and m["data"].get("prompt_id") == pid
                        and m["data"]["node"] == node_id and m["data"]["value"] >= after_steps, timeout=120)
            t0 = time.monotonic()
            self.interrupt()
            stopped = ws.wait_for(lambda m: m["type"] in ("execution_interrupted", "execution_success",
                                                          "execution_error") and m["data"].get("prompt_id") == pid,
                                  timeout=30)
            return pid, stopped, time.monotonic() - t0
        finally:
            ws.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


class WebSocket:
    """A minimal client of ComfyUI's /ws (RFC 6455 text frames from the server; binary preview frames skipped)."""

    def __init__(self, base: str, client_id: str, timeout: float = 30):
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("the server closed /ws during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"/ws handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("/ws closed")
            data += chunk
        return data

    def receive(self, timeout: float) -> dict:
        """The next JSON message (waits at most ``timeout`` seconds)."""
        self.sock.settimeout(timeout)
        while True:
            b0, b1 = self._read(2)
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            if opcode == 1:
                return json.loads(payload)
            if opcode == 8:
                raise ConnectionError("/ws closed by the server")

    def wait_for(self, predicate, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching /ws message")
            message = self.receive(left)
            if predicate(message):
                return message

    def close(self) -> None:
        self.sock.close()


def _die_with_parent() -> None:
    """In the server's process before exec: Linux sends it SIGTERM when the test process dies, even by SIGKILL, so
    an aborted test run never leaves a server behind."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_server(python: Path, comfy_tree: Path, root: Path, startup_timeout: float = 240) -> ComfyServer:
    """Copy ComfyUI into ``root``, link this repository as a custom node, start main.py and wait for /object_info."""
    comfy = root / "ComfyUI"
    shutil.copytree(comfy_tree, comfy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=True)
    (comfy / "custom_nodes").mkdir(exist_ok=True)
    (comfy / "custom_nodes" / PACK_DIR_NAME).symlink_to(ROOT, target_is_directory=True)
    dirs = {name: root / name for name in ("output", "input", "temp", "user")}
    for d in dirs.values():
        d.mkdir(exist_ok=True)
    port = free_port()
    cmd = [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--output-directory", str(dirs["output"]), "--input-directory", str(dirs["input"]),
           "--temp-directory", str(dirs["temp"]), "--user-directory", str(dirs["user"]),
           "--database-url", f"sqlite:///{root / 'comfyui.db'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
    log = open(root / "server.log", "wb")  # noqa: SIM115 - kept open for the server's lifetime
    proc = subprocess.Popen(cmd, cwd=comfy, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    log.close()
    server = ComfyServer(f"http://127.0.0.1:{port}", proc, root)
    end = time.monotonic() + startup_timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited during start-up ({proc.returncode}):\n{server.log()}")
        try:
            status, info = server.get("/object_info", timeout=10)
            if status == 200 and isinstance(info, dict):
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"ComfyUI did not answer /object_info within {startup_timeout} s:\n{server.log()}")


# ---- workflows in API format -------------------------------------------------------------------------------------
def api_prompt(ui_workflow: dict) -> dict:
    """A UI-format workflow as POST /prompt wants it (what the frontend's graphToPrompt makes)."""
    from tests.test_workflows import to_prompt

    prompt = {}
    for node_id, node in to_prompt(ui_workflow).items():
        inputs = {name: ([str(v[1]), v[2]] if isinstance(v, tuple) and v and v[0] == "link" else v)
                  for name, v in node["inputs"].items()}
        prompt[str(node_id)] = {"class_type": node["class_type"], "inputs": inputs}
    return prompt


def files_under(folder: Path) -> set[str]:
    """Every file (hidden ones included) below ``folder``, as relative paths."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
