"""A loopback Android device for the tests: a device-side ADB daemon speaking the transport protocol over TCP.

It answers the real ``adb`` server (``adb connect 127.0.0.1:PORT``) with CNXN/OPEN/OKAY/WRTE/CLSE, serves the
``shell`` (v1 and ``shell,v2``: stdout, stderr, exit code) and ``sync:`` (STAT/SEND/RECV/QUIT) services, and runs
commands with ``/bin/sh`` in a sandbox directory that stands for the device's filesystem (``/data/local/tmp`` is
mapped into it). ``getprop`` and ``dumpsys`` come from a table the test controls. ``kill()`` drops every
connection, as a phone that is unplugged mid-run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import subprocess
import threading
from pathlib import Path

A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE = (
    int.from_bytes(name, "little") for name in (b"CNXN", b"OPEN", b"OKAY", b"CLSE", b"WRTE")
)
VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
DEVICE_TMP = "/data/local/tmp"

DEFAULT_PROPS = {
    "ro.product.model": "Loopback 1",
    "ro.product.manufacturer": "mobilelwt",
    "ro.soc.model": "LOOP8000",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
}


def _message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return struct.pack("<6I", command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF) + data


class LoopbackDevice:
    def __init__(self, sandbox: Path, *, props: dict[str, str] | None = None, env: dict[str, str] | None = None):
        self.sandbox = Path(sandbox)
        (self.sandbox / DEVICE_TMP.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self.props = {**DEFAULT_PROPS, **(props or {})}
        self.thermal_status = 0
        self.battery_tenths_c = 300
        self.env = env or {}
        self.commands: list[str] = []
        self.on_command = None  # callable(command) run before each shell command (e.g. to kill the device)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        if 5554 <= self.port <= 5585:  # the adb server would adopt it as an emulator
            raise RuntimeError("drew an emulator port; create the device again")
        self._server.listen(4)
        self._connections: list[socket.socket] = []
        self._alive = True
        self._write_tools()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def device_path(self, path: str) -> Path:
        return self.sandbox / path.lstrip("/")

    def kill(self) -> None:
        """The device disappears: listening stops and every connection is dropped."""
        self._alive = False
        for conn in [self._server, *self._connections]:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _write_tools(self) -> None:
        bin_dir = self.sandbox / "system" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        getprop = bin_dir / "getprop"
        getprop.write_text(
            "#!/bin/sh\n"
            'if [ $# -eq 0 ]; then cat "$LOOPBACK_PROPS"; else '
            'sed -n "s/^\\[$1\\]: \\[\\(.*\\)\\]$/\\1/p" "$LOOPBACK_PROPS"; fi\n'
        )
        dumpsys = bin_dir / "dumpsys"
        dumpsys.write_text(
            '#!/bin/sh\ncat "$LOOPBACK_STATE/dumpsys-$1.txt" 2>/dev/null || echo "Can\'t find service: $1"\n'
        )
        for tool in (getprop, dumpsys):
            tool.chmod(0o755)

    def _refresh_tables(self) -> None:
        state = self.sandbox / "loopback"
        state.mkdir(exist_ok=True)
        (state / "props.txt").write_text("".join(f"[{k}]: [{v}]\n" for k, v in self.props.items()))
        (state / "dumpsys-thermalservice.txt").write_text(
            f"IsStatusOverride: false\nThermalEventListeners:\n\tcallbacks: 1\nThermal Status: {self.thermal_status}\n"
        )
        (state / "dumpsys-battery.txt").write_text(
            f"Current Battery Service state:\n  AC powered: false\n  USB powered: true\n  level: 80\n"
            f"  temperature: {self.battery_tenths_c}\n  technology: Li-ion\n"
        )

    # --- transport -------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while self._alive:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        streams: dict[int, _Stream] = {}
        send_lock = threading.Lock()
        next_id = [1]

        def send(command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
            with send_lock:
                conn.sendall(_message(command, arg0, arg1, data))

        try:
            while self._alive:
                header = _read_exact(conn, 24)
                command, arg0, arg1, length, _check, _magic = struct.unpack("<6I", header)
                data = _read_exact(conn, length) if length else b""
                if command == A_CNXN:
                    features = "shell_v2,cmd"
                    props = ";".join(f"{k}={self.props[k]}" for k in ("ro.product.model",))
                    banner = f"device::ro.product.name=loop;{props};ro.product.device=loop;features={features}"
                    send(A_CNXN, VERSION, MAX_PAYLOAD, banner.encode())
                elif command == A_OPEN:
                    local_id, next_id[0] = next_id[0], next_id[0] + 1
                    stream = _Stream(self, send, local_id, arg0, data.rstrip(b"\0").decode())
                    streams[local_id] = stream
                    send(A_OKAY, local_id, arg0)
                    threading.Thread(target=stream.run, daemon=True).start()
                elif command == A_OKAY and arg1 in streams:
                    streams[arg1].acked.set()
                elif command == A_WRTE and arg1 in streams:
                    send(A_OKAY, arg1, arg0)
                    streams[arg1].feed(data)
                elif command == A_CLSE and arg1 in streams:
                    streams.pop(arg1).close_from_host()
        except (OSError, ConnectionError):
            pass
        finally:
            for stream in streams.values():
                stream.close_from_host()
            conn.close()


def _read_exact(conn: socket.socket, n: int) -> bytes:
    chunks = b""
    while len(chunks) < n:
        chunk = conn.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("host closed the connection")
        chunks += chunk
    return chunks


class _Stream:
    """One opened service: a byte stream in each direction with ADB's one-WRTE-in-flight flow control."""

    def __init__(self, device: LoopbackDevice, send, local_id: int, remote_id: int, service: str) -> None:
        self.device, self.send, self.local_id, self.remote_id, self.service = device, send, local_id, remote_id, service
        self.acked = threading.Event()
        self.acked.set()
        self.inbox = b""
        self.data_ready = threading.Condition()
        self.closed = False

    def feed(self, data: bytes) -> None:
        with self.data_ready:
            self.inbox += data
            self.data_ready.notify_all()

    def close_from_host(self) -> None:
        with self.data_ready:
            self.closed = True
            self.data_ready.notify_all()
        self.acked.set()

    def read(self, n: int) -> bytes:
        with self.data_ready:
            while len(self.inbox) < n and not self.closed:
                self.data_ready.wait(timeout=30)
            if len(self.inbox) < n:
                raise ConnectionError("stream closed")
            out, self.inbox = self.inbox[:n], self.inbox[n:]
            return out

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_PAYLOAD):
            if not self.acked.wait(timeout=30) or self.closed:
                raise ConnectionError("host stopped acknowledging")
            self.acked.clear()
            self.send(A_WRTE, self.local_id, self.remote_id, data[start : start + MAX_PAYLOAD])

    def finish(self) -> None:
        self.acked.wait(timeout=30)
        self.send(A_CLSE, self.local_id, self.remote_id)

    def run(self) -> None:
        try:
            if self.service.startswith("shell"):
                self._shell()
            elif self.service.startswith("sync:"):
                self._sync()
            self.finish()
        except (OSError, ConnectionError):
            pass

    # --- shell -----------------------------------------------------------------------------------------------
    def _shell(self) -> None:
        options, _, command = self.service.partition(":")
        v2 = "v2" in options.split(",")
        self.device.commands.append(command)
        if self.device.on_command is not None:
            self.device.on_command(command)
        self.device._refresh_tables()
        root = str(self.device.sandbox)
        mapped = command.replace(DEVICE_TMP, root + DEVICE_TMP)
        env = {
            **os.environ,
            **self.device.env,
            "PATH": f"{root}/system/bin:{os.environ.get('PATH', '')}",
            "LOOPBACK_PROPS": f"{root}/loopback/props.txt",
            "LOOPBACK_STATE": f"{root}/loopback",
        }
        proc = subprocess.Popen(["/bin/sh", "-c", mapped or "true"], cwd=root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
        out, err = proc.communicate()
        if v2:
            packets = b""
            if out:
                packets += bytes([1]) + struct.pack("<I", len(out)) + out
            if err:
                packets += bytes([2]) + struct.pack("<I", len(err)) + err
            packets += bytes([3]) + struct.pack("<I", 1) + bytes([proc.returncode & 0xFF])
            self.write(packets)
        else:
            self.write(out + err)

    # --- sync ------------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        while True:
            request, length = self.read(4), struct.unpack("<I", self.read(4))[0]
            if request == b"QUIT":
                return
            argument = self.read(length).decode()
            if request in (b"STAT", b"LSTA"):
                path = self.device.device_path(argument)
                if path.exists():
                    st = path.stat()
                    self.write(b"STAT" + struct.pack("<3I", st.st_mode, st.st_size, int(st.st_mtime)))
                else:
                    self.write(b"STAT" + struct.pack("<3I", 0, 0, 0))
            elif request == b"SEND":
                remote, _, mode = argument.rpartition(",")
                target = self.device.device_path(remote)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as handle:
                    while True:
                        kind, size = self.read(4), struct.unpack("<I", self.read(4))[0]
                        if kind == b"DONE":
                            break
                        handle.write(self.read(size))
                target.chmod(stat.S_IMODE(int(mode)) or 0o644)
                self.write(b"OKAY" + struct.pack("<I", 0))
            elif request == b"RECV":
                path = self.device.device_path(argument)
                if not path.is_file():
                    message = f"remote object '{argument}' does not exist".encode()
                    self.write(b"FAIL" + struct.pack("<I", len(message)) + message)
                    continue
                data = path.read_bytes()
                for start in range(0, len(data), 64 * 1024):
                    chunk = data[start : start + 64 * 1024]
                    self.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                self.write(b"DONE" + struct.pack("<I", 0))
            else:
                message = f"unsupported sync request {request!r}".encode()
                self.write(b"FAIL" + struct.pack("<I", len(message)) + message)
                return
