"""Transports behind one small interface: ``host`` (this machine) and ``adb`` (Debian's real ``adb`` binary).

Every call has a timeout; device paths are quoted with :func:`shlex.quote` (the device shell parses the command
line, so nothing a user passes is ever interpolated raw).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mobilelwt.errors import MobileLWTError


class DeviceError(MobileLWTError):
    """A device or transport problem: adb missing, no such device, device gone, timeout."""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class Transport(Protocol):
    name: str

    def shell(self, argv: list[str], *, timeout: float) -> Result: ...

    def push(self, local: Path, remote: str, *, timeout: float) -> None: ...

    def pull(self, remote: str, local: Path, *, timeout: float) -> None: ...


def find_adb(adb: str | None = None) -> str:
    path = adb or os.environ.get("MOBILELWT_ADB") or shutil.which("adb")
    if not path or not (Path(path).is_file() or shutil.which(path)):
        raise DeviceError(
            "adb is not installed (or not on PATH).",
            "Install it (Debian/Ubuntu: `apt-get install adb`) or pass --adb /path/to/adb.",
        )
    return path


def _run(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(
            f"{what} did not finish within {timeout:g} s.", "Check the device; raise --timeout."
        ) from None
    except OSError as exc:
        raise DeviceError(f"Could not run {argv[0]}: {exc}.", "Check the adb installation.") from None


@dataclass(frozen=True)
class AdbServer:
    """An adb server: the local one (port and HOME from the environment) or another machine's (``adb -H -P``)."""

    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AdbServer:
        if text == "local":
            return cls()
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
            raise DeviceError(
                f"--adb-server {text!r} is not HOST:PORT.",
                "Pass e.g. --adb-server lab-mac.local:5037 (that machine runs `adb -a nodaemon server`), or local.",
            )
        return cls(host.strip("[]"), int(port))

    @property
    def args(self) -> list[str]:
        return [] if self.host is None else ["-H", self.host, "-P", str(self.port)]

    @property
    def label(self) -> str:
        return "local" if self.host is None else f"{self.host}:{self.port}"

    def device_id(self, serial: str) -> str:
        """How records name a phone: its serial on the local server, ``HOST:PORT/serial`` on another."""
        return serial if self.host is None else f"{self.label}/{serial}"


LOCAL = AdbServer()


_GONE = re.compile(r"device '.*' not found|device offline|no devices/emulators found|device not found|closed")


class AdbTransport:
    """One device reached through an adb server (by default the local one)."""

    def __init__(self, serial: str, *, adb: str | None = None, server: AdbServer = LOCAL) -> None:
        self.adb = find_adb(adb)
        self.serial = serial
        self.server = server
        self.name = server.device_id(serial)

    def _adb(self, args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        proc = _run([self.adb, *self.server.args, "-s", self.serial, *args], timeout, what)
        if proc.returncode != 0 and _GONE.search(proc.stderr + proc.stdout):
            raise DeviceError(
                f"Device {self.name} is not reachable ({(proc.stderr or proc.stdout).strip().splitlines()[-1]}).",
                "Reconnect it and check `adb devices`.",
            )
        return proc

    def reachable(self, timeout: float = 15) -> bool:
        """Whether adb still sees the device online (``adb get-state``)."""
        try:
            proc = _run([self.adb, *self.server.args, "-s", self.serial, "get-state"], timeout, "adb get-state")
        except DeviceError:
            return False
        return proc.returncode == 0 and proc.stdout.strip() == "device"

    def shell(self, argv: list[str], *, timeout: float) -> Result:
        """Run ``argv`` on the device; the exit status is the remote command's (shell protocol v2)."""
        command = shlex.join(argv)
        proc = self._adb(["shell", command], timeout, f"`adb shell {command[:60]}` on {self.serial}")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def shell_script(self, script: str, *, timeout: float) -> Result:
        """A command line built here from quoted parts (pipes, &&); never from raw user text."""
        proc = self._adb(["shell", script], timeout, f"`adb shell` on {self.serial}")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def push(self, local: Path, remote: str, *, timeout: float) -> None:
        proc = self._adb(["push", str(local), remote], timeout, f"pushing {Path(local).name} to {self.serial}")
        if proc.returncode != 0:
            if not self.reachable():
                raise DeviceError(
                    f"Device {self.serial} went away while receiving {Path(local).name}.", "Reconnect it."
                )
            raise DeviceError(f"adb push of {local} failed: {proc.stderr.strip()}", "Check free space on the device.")

    def pull(self, remote: str, local: Path, *, timeout: float) -> None:
        proc = self._adb(["pull", remote, str(local)], timeout, f"pulling {remote} from {self.serial}")
        if proc.returncode != 0:
            raise DeviceError(f"adb pull of {remote} failed: {proc.stderr.strip()}", "Check the path on the device.")


class HostTransport:
    """This machine, through the same interface (for the Python runner and tests)."""

    name = "host"
    serial = "host"

    def reachable(self, timeout: float = 15) -> bool:
        return True

    def shell(self, argv: list[str], *, timeout: float) -> Result:
        proc = _run(argv, timeout, f"`{shlex.join(argv)[:60]}`")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def push(self, local: Path, remote: str, *, timeout: float) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)

    def pull(self, remote: str, local: Path, *, timeout: float) -> None:
        shutil.copyfile(remote, local)


def list_devices(adb: str | None = None, *, server: AdbServer = LOCAL, timeout: float = 30) -> list[dict[str, str]]:
    """``adb devices -l`` of one server as records: serial, state and the key:value details."""
    proc = _run([find_adb(adb), *server.args, "devices", "-l"], timeout, f"`adb devices -l` on {server.label}")
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        if server.host is not None:
            raise DeviceError(
                f"The adb server {server.label} is not reachable ({detail[0]}).",
                "Check that it runs there as `adb -a nodaemon server` and that the port is open.",
            )
        raise DeviceError(f"`adb devices` failed: {detail[0]}", "Restart the server: `adb kill-server`.")
    devices = []
    for line in proc.stdout.splitlines():
        if not line.strip() or line.startswith("List of devices") or line.startswith("*"):
            continue
        serial, state, *details = line.split()
        devices.append({"serial": serial, "state": state, **dict(d.split(":", 1) for d in details if ":" in d)})
    return devices


def resolve_devices(
    requested: list[str], adb: str | None = None, servers: tuple[AdbServer, ...] = (LOCAL,)
) -> tuple[list[tuple[AdbServer, str]], dict[AdbServer, str]]:
    """The (server, serial) pairs to bench, and the servers that could not be reached (with why).

    ``all`` spans every online device of every server; a serial is looked up on every server (it must be on
    exactly one), ``HOST:PORT/serial`` on that server. An unreachable server fails only its own devices.
    """
    present: dict[AdbServer, list[dict[str, str]]] = {}
    unreachable: dict[AdbServer, str] = {}
    for server in servers:
        try:
            present[server] = list_devices(adb, server=server)
        except DeviceError as exc:
            if len(servers) == 1:
                raise
            unreachable[server] = str(exc)
    online = [(server, d["serial"]) for server, found in present.items() for d in found if d["state"] == "device"]
    if requested == ["all"]:
        if not online and not unreachable:
            raise DeviceError(
                "No Android device is connected.", "Connect one (USB debugging on) and check `adb devices`."
            )
        return online, unreachable
    chosen, missing = [], []
    for name in requested:
        matches = [(server, serial) for server, serial in online if name in (serial, server.device_id(serial))]
        if len(matches) > 1:
            raise DeviceError(
                f"Device {name} is on several adb servers ({', '.join(s.label for s, _ in matches)}).",
                f"Name it as HOST:PORT/{name}.",
            )
        (chosen if matches else missing).append(matches[0] if matches else name)
    if missing:
        known = ", ".join(f"{server.device_id(d['serial'])} ({d['state']})" for server, found in present.items()
                          for d in found) or "none"  # fmt: skip
        down = "".join(f"; {exc}" for exc in unreachable.values())
        raise DeviceError(
            f"Device {', '.join(missing)} is not connected (adb sees: {known}{down}).", "Check the serial."
        )
    return chosen, unreachable


def resolve_serials(requested: list[str], adb: str | None = None) -> list[str]:
    """``all`` -> every device of the local server in state ``device``; named serials must be present and online."""
    return [serial for _, serial in resolve_devices(requested, adb)[0]]
