"""The nodes of a multi-node lab: names, addresses, the segment that joins them, and their SSH keys.

A lab of N nodes is N VMs, each with its own scratch disks, joined by one virtual Ethernet segment:
a second NIC in every VM on a qemu ``socket`` netdev that exchanges Ethernet frames over a UDP
multicast group on the host's loopback (TTL 0: the frames never leave the host, and no network
privilege is needed). The first node is the repository, the others are workers. Every node runs
sshd on the segment with a host key and one client key made for this lab, so that the library's
SSH target reaches each node from the others.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from skycache.runner import Runner

SUBNET_PREFIX = "10.77.0."
PREFIX_LEN = 24
REPOSITORY = "repo"
MULTICAST_GROUP = "230.77.0.1"
KEY_NAME = "lab_ed25519"
HOST_KEY_NAME = "ssh_host_ed25519_key"
SSH_CONFIG = "ssh_config"
KNOWN_HOSTS = "known_hosts"
Role = Literal["repository", "worker"]


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    mac: str
    role: Role

    @property
    def initiator(self) -> str:
        """The node's iSCSI initiator name (the repository's ACLs name the workers by it)."""
        return f"iqn.2026-11.org.skycache.lab:{self.name}"


@dataclass(frozen=True)
class Segment:
    """The virtual Ethernet segment: a multicast group and port on the host's loopback."""

    group: str
    port: int

    def netdev(self) -> str:
        return f"socket,id=skycache-segment,mcast={self.group}:{self.port},localaddr=127.0.0.1"


def plan(count: int) -> list[Node]:
    """``repo`` (10.77.0.1), then workers ``w1``, ``w2``... (10.77.0.2, ...)."""
    nodes = []
    for i in range(count):
        name = REPOSITORY if i == 0 else f"w{i}"
        role: Role = "repository" if i == 0 else "worker"
        nodes.append(Node(name, f"{SUBNET_PREFIX}{i + 1}", f"52:54:00:77:00:{i + 1:02x}", role))
    return nodes


def new_segment() -> Segment:
    """A segment of its own: a random port, so two labs on one host never share frames."""
    return Segment(MULTICAST_GROUP, 20000 + secrets.randbelow(20000))


def first_worker(nodes: list[Node]) -> Node:
    return next((n for n in nodes if n.role == "worker"), nodes[0])


def nodes_env(nodes: list[Node]) -> str:
    """``repo=10.77.0.1 w1=10.77.0.2``: the value of ``$SKYCACHE_LAB_NODES`` in every node."""
    return " ".join(f"{n.name}={n.address}" for n in nodes)


def make_keys(runner: Runner, directory: Path) -> None:
    """The lab's client key and the nodes' host key (one for all: the nodes are one lab)."""
    for name in (KEY_NAME, HOST_KEY_NAME):
        key = str(directory / name)
        runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "skycache-lab", "-f", key])


def ssh_files(directory: Path, nodes: list[Node], guest_key_path: str) -> None:
    control_dir = str(Path(guest_key_path).parent)  # private to root in each node (0700)
    """The nodes' ssh client config and known_hosts, for ``ssh -F`` and the library's SshTarget."""
    host_key = (directory / f"{HOST_KEY_NAME}.pub").read_text().split()
    known = "".join(f"{n.name},{n.address} {host_key[0]} {host_key[1]}\n" for n in nodes)
    (directory / KNOWN_HOSTS).write_text(known)
    blocks = []
    for n in nodes:
        blocks.append(
            f"Host {n.name}\n"
            f"  HostName {n.address}\n"
            "  User root\n"
            f"  IdentityFile {guest_key_path}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {directory / KNOWN_HOSTS}\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            # One connection per pair of nodes, shared by every command: a new ssh handshake costs
            # seconds under TCG, and the library runs dozens of commands per verb on a remote host.
            f"  ControlMaster auto\n"
            f"  ControlPath {control_dir}/%r@%h:%p\n"
            "  ControlPersist 120\n"
        )
    (directory / SSH_CONFIG).write_text("\n".join(blocks))


def sshd_config(node: Node, host_key: str, authorized_keys: str) -> str:
    """sshd on the segment only, keys only, root allowed (the lab is root's), no PAM."""
    return (
        f"ListenAddress {node.address}\n"
        f"HostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PidFile /run/skycache-sshd.pid\n"
        "AcceptEnv LC_*\n"
    )
