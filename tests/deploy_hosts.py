"""Parties on their own hosts, for tests: one network namespace and one uid per party.

:class:`Federation` builds a private network of its own (``10.231.16.0/24`` on a bridge inside
a switch namespace of its own; nothing in the machine's own namespace gets an address or a
route, so no traffic leaves it), one namespace per party with a veth into that bridge, and
one home per party under a root folder owned by that party's uid with mode 0700. Every
command of a party runs in its namespace as its uid (``ip netns exec`` + ``setpriv``), so the
kernel, not the lab, keeps each party out of the others' files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.deploy import processes

SUBNET = "10.231.16"
#: First uid of the test's parties (no account needed: setpriv takes numbers).
FIRST_UID = 23160
QUIET = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _blocked() -> list[tuple[Path, Path]]:
    """``(folder, child)`` pairs: a folder others cannot traverse above what parties run."""
    needed = {Path(os.path.realpath(sys.executable)), Path(sys.prefix), Path(sys.base_prefix)}
    needed.add(Path(__file__).resolve().parents[1])
    out: dict[Path, Path] = {}
    for path in needed:
        parts = path.parts
        for depth in range(2, len(parts)):
            folder, child = Path(*parts[:depth]), Path(*parts[: depth + 1])
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                out.setdefault(folder, child)
                break
    return sorted(out.items())


def _expose_script(stage: Path) -> str:
    """Shell lines that cover each blocked folder and bind back what parties need to run."""
    lines = ["set -e"]
    for i, (folder, child) in enumerate(_blocked()):
        lines += [
            f"mkdir -p {stage}/{i}",
            f"mount --bind {child} {stage}/{i}",
            f"mount -t tmpfs -o mode=0755 tmpfs {folder}",
            f"mkdir -p {child}",
            f"mount --bind {stage}/{i} {child}",
        ]
    lines.append('exec "$@"')
    return "; ".join(lines)


def namespaces_unavailable() -> str | None:
    """Why this machine cannot host the test's namespaces (``None``: it can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces and switching uids needs root"
    if shutil.which("ip") is None or shutil.which("setpriv") is None:
        return "needs iproute2 ('ip') and util-linux ('setpriv')"
    probe = f"lab16probe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"'ip netns add' fails here ({getattr(exc, 'stderr', exc)!s})"
    _ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Party:
    """One party: its role, namespace, address, uid and root folder."""

    name: str
    role: str
    netns: str
    address: str
    uid: int
    root: Path

    @property
    def home(self) -> Path:
        """The party's node home (its ``$LAB_HOME``)."""
        return self.root / "home"

    def command(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        """``args`` run in this party's namespace as its uid, with its own home.

        ``ip netns exec`` gives the command a mount namespace of its own; in it, a folder the
        uid could not traverse on the way to the Python installation (``/root`` of a pyenv
        install) is covered by an empty tmpfs with only that installation bound back in.
        """
        values = {
            **QUIET,
            "HOME": str(self.root),
            "LAB_HOME": str(self.home),
            "LAB_KEYS": str(self.root / "keys"),
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            **(env or {}),
        }
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            "sh",
            "-c",
            _expose_script(self.root.parent / ".exposed"),
            "sh",
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.uid}",
            "--clear-groups",
            "env",
            "-i",
            *[f"{k}={v}" for k, v in values.items()],
            *args,
        ]

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as this party and wait for it."""
        done = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{self.name}: {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n"
                f"{done.stderr}"
            )
        return done

    def lab(self, *args: str, check: bool = True, timeout: float = 300) -> Any:
        """Run the installed ``lab`` as this party."""
        return self.run(
            str(Path(sys.executable).parent / "lab"), *args, check=check, timeout=timeout
        )

    def give(self, source: Path, name: str) -> Path:
        """An operator copies ``source`` to this party's inbox (owned by the party)."""
        inbox = self.root / "inbox"
        inbox.mkdir(exist_ok=True)
        os.chown(inbox, self.uid, self.uid)
        target = inbox / name
        shutil.copyfile(source, target)
        os.chown(target, self.uid, self.uid)
        return target

    def pids(self) -> list[int]:
        """Every running process of this party's node (from its ``run.json``) and children."""
        run = self.home / "run.json"
        if not run.is_file():
            return []
        out: list[int] = []
        for info in json.loads(run.read_text())["processes"].values():
            out += [p.pid for p in processes.family(int(info["pid"]))]
        return out


class Federation:
    """The namespaces, uids and roots of a set of parties (see the module docstring)."""

    def __init__(self, parties: Sequence[tuple[str, str]]) -> None:
        tag = f"l16{os.getpid() % 100000}"
        self.switch = f"{tag}sw"
        self.base = Path(tempfile.mkdtemp(prefix="lab16-"))
        os.chmod(self.base, 0o711)  # parties may traverse to their own root, not list it
        self.parties: dict[str, Party] = {}
        for i, (name, role) in enumerate(parties, start=1):
            root = self.base / name
            root.mkdir(mode=0o700)
            uid = FIRST_UID + i
            os.chown(root, uid, uid)
            self.parties[name] = Party(name, role, f"{tag}{i}", f"{SUBNET}.{i}", uid, root)
        self._created: list[str] = []

    def __getitem__(self, name: str) -> Party:
        return self.parties[name]

    def up(self) -> None:
        """Create the switch, one namespace per party and its veth link."""
        _ip("netns", "add", self.switch)
        self._created.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, party in enumerate(self.parties.values(), start=1):
            _ip("netns", "add", party.netns)
            self._created.append(party.netns)
            _ip(
                "link", "add", f"p{i}", "netns", self.switch, "type", "veth",
                "peer", "name", "eth0", "netns", party.netns,
            )  # fmt: skip
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", party.netns, "addr", "add", f"{party.address}/24", "dev", "eth0")
            _ip("-n", party.netns, "link", "set", "eth0", "up")
            _ip("-n", party.netns, "link", "set", "lo", "up")

    def netns_inode(self, party: Party) -> int:
        """The inode that identifies ``party``'s network namespace."""
        return os.stat(f"/run/netns/{party.netns}").st_ino

    def listening(self, party: Party) -> set[str]:
        """Local addresses with a listening TCP socket in ``party``'s namespace."""
        done = subprocess.run(
            ["ip", "netns", "exec", party.netns, "ss", "-ltnH"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return {line.split()[3].rsplit(":", 1)[0] for line in done.stdout.splitlines() if line}

    def down(self) -> None:
        """Stop every party's processes, remove the namespaces and the roots."""
        for party in self.parties.values():
            processes.stop(party.pids(), grace=3.0)
        for name in reversed(self._created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)
