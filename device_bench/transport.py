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


_GONE = re.compile(r"device '.*' not found|device offline|no devices/emulators found|device not found|closed")


class AdbTransport:
    """One device reached through the adb server (the server's port and HOME come from the environment)."""

    def __init__(self, serial: str, *, adb: str | None = None) -> None:
        self.adb = find_adb(adb)
        self.serial = serial
        self.name = serial

    def _adb(self, args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        proc = _run([self.adb, "-s", self.serial, *args], timeout, what)
        if proc.returncode != 0 and _GONE.search(proc.stderr + proc.stdout):
            raise DeviceError(
                f"Device {self.serial} is not reachable ({(proc.stderr or proc.stdout).strip().splitlines()[-1]}).",
                "Reconnect it and check `adb devices`.",
            )
        return proc

    def reachable(self, timeout: float = 15) -> bool:
        """Whether adb still sees the device online (``adb get-state``)."""
        try:
            proc = _run([self.adb, "-s", self.serial, "get-state"], timeout, "adb get-state")
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


def list_devices(adb: str | None = None, *, timeout: float = 30) -> list[dict[str, str]]:
    """``adb devices -l`` as records: serial, state and the key:value details."""
    proc = _run([find_adb(adb), "devices", "-l"], timeout, "`adb devices -l`")
    if proc.returncode != 0:
        raise DeviceError(f"`adb devices` failed: {proc.stderr.strip()}", "Restart the server: `adb kill-server`.")
    devices = []
    for line in proc.stdout.splitlines():
        if not line.strip() or line.startswith("List of devices") or line.startswith("*"):
            continue
        serial, state, *details = line.split()
        devices.append({"serial": serial, "state": state, **dict(d.split(":", 1) for d in details if ":" in d)})
    return devices


def resolve_serials(requested: list[str], adb: str | None = None) -> list[str]:
    """``all`` -> every device in state ``device``; named serials must be present and online."""
    present = list_devices(adb)
    online = [d["serial"] for d in present if d["state"] == "device"]
    if requested == ["all"]:
        if not online:
            raise DeviceError(
                "No Android device is connected.", "Connect one (USB debugging on) and check `adb devices`."
            )
        return online
    missing = [s for s in requested if s not in online]
    if missing:
        known = ", ".join(f"{d['serial']} ({d['state']})" for d in present) or "none"
        raise DeviceError(f"Device {', '.join(missing)} is not connected (adb sees: {known}).", "Check the serial.")
    return requested
