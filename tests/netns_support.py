"""Hosts of their own on this machine for tests: Linux network namespaces joined to this one by
veth pairs (root only). A test cuts and heals a namespace's link as a network partition would;
processes run inside with :attr:`NetNs.prefix`. Used by the transport's partition tests and the
multi-node ones."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["NetNs", "netns", "netns_unavailable"]


@dataclass(frozen=True)
class NetNs:
    """A network namespace joined to this one by a veth pair: a host of its own, whose link
    the test cuts (:meth:`cut`) and heals (:meth:`heal`) as a partition would."""

    name: str
    here_dev: str  # the veth end in this namespace
    there_dev: str  # the end inside the namespace
    here_ip: str
    there_ip: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Silence, not a close: the namespace's end goes down, so what is sent there is
        dropped and nothing comes back (both kernels keep their connections)."""
        _ip("netns", "exec", self.name, "ip", "link", "set", self.there_dev, "down")

    def heal(self) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.there_dev, "up")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return None


@contextmanager
def netns() -> Iterator[NetNs]:
    """A fresh namespace with a /30 of 10.213.x.0 on a veth pair; removed at the end."""
    tag = uuid.uuid4().hex[:8]
    name, here, there = f"af{tag}", f"af{tag}h", f"af{tag}n"
    third = random.randrange(1, 255)
    here_ip, there_ip = f"10.213.{third}.1", f"10.213.{third}.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", name)
        _ip("addr", "add", f"{here_ip}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{there_ip}/30", "dev", there)
        _ip("netns", "exec", name, "ip", "link", "set", there, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield NetNs(name, here, there, here_ip, there_ip)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=10)
