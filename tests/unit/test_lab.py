"""The lab's pure parts: kernel package lookup, the virtme-ng command line, acceleration choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from skycache.errors import InvalidInput
from skycache.lab import accel
from skycache.lab.kernel import KernelNotFetched, LabKernel, load, parse_meta_depends
from skycache.lab.vm import LabSpec, check_spec, memory_for_qemu, vng_argv
from skycache.runner import SystemRunner

# Recorded from `apt-cache depends linux-image-amd64` on Debian 12.
APT_CACHE_DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
"""

KERNEL = LabKernel("6.1.0-56-amd64", "linux-image-6.1.0-56-amd64", "6.1.192-2", Path("/c/root"))


def test_meta_package_dependency() -> None:
    assert parse_meta_depends(APT_CACHE_DEPENDS) == "linux-image-6.1.0-56-amd64"
    with pytest.raises(KernelNotFetched, match="apt-get update"):
        parse_meta_depends("linux-image-amd64\n")


def test_kernel_not_fetched_is_none(tmp_path: Path) -> None:
    assert load(tmp_path) is None


def test_vng_argv_tcg_with_disks() -> None:
    spec = LabSpec(memory="3G", cpus=2, accel="tcg", rwdirs=(Path("/w"),), cwd=Path("/w"))
    argv = vng_argv(
        KERNEL,
        spec,
        guest_spec_path=Path("/s/guest.json"),
        share_dir=Path("/s"),
        disk_paths=[Path("/s/disk0.img")],
        python="/v/bin/python",
    )
    assert argv[:3] == ["vng", "--run", "/c/root/boot/vmlinuz-6.1.0-56-amd64"]
    assert "--disable-kvm" in argv
    assert argv[argv.index("--memory") + 1] == "3072M"
    assert "--rodir=/lib/modules=/c/root/lib/modules" in argv
    assert "--rwdir=/w" in argv and "--rwdir=/s" in argv
    assert "--qemu-opts=file=/s/disk0.img,format=raw,if=virtio,cache=unsafe" in argv
    # The user's command is not in the --exec string: it travels in the JSON spec.
    assert argv[-2:] == ["--exec", "/v/bin/python -m skycache.lab.guest /s/guest.json"]


def test_vng_argv_kvm() -> None:
    spec = LabSpec(accel="kvm")
    argv = vng_argv(KERNEL, spec, guest_spec_path=Path("/g"), share_dir=Path("/s"), disk_paths=[])
    assert "--disable-kvm" not in argv


def test_memory_and_spec_checks(tmp_path: Path) -> None:
    assert memory_for_qemu("2G") == "2048M"
    with pytest.raises(InvalidInput, match="too small"):
        check_spec(LabSpec(memory="64M"))
    with pytest.raises(InvalidInput, match="'lots'"):
        check_spec(LabSpec(memory="lots"))
    with pytest.raises(InvalidInput, match="--cpus"):
        check_spec(LabSpec(cpus=0))
    with pytest.raises(InvalidInput, match="whole filesystem"):
        check_spec(LabSpec(rwdirs=(Path("/"),)))
    check_spec(LabSpec(rwdirs=(tmp_path,)))


def test_accel_explicit_and_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCACHE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SKYCACHE_LAB_ACCEL", raising=False)
    assert accel.choose("tcg", SystemRunner(), KERNEL).accel == "tcg"
    assert accel.choose("kvm", SystemRunner(), KERNEL).accel == "kvm"
    accel.remember(KERNEL, accel.AccelChoice("tcg", "probe hung"))
    choice = accel.choose("auto", SystemRunner(), KERNEL)
    assert choice.accel == "tcg" and "remembered" in choice.reason
    # A record from another kernel is not reused.
    other = LabKernel("6.1.0-1-amd64", "p", "v", Path("/x"))
    assert accel.remembered(other) is None


def test_accel_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCACHE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SKYCACHE_LAB_ACCEL", "tcg")
    assert accel.choose("auto", SystemRunner(), KERNEL).reason == "asked for TCG"
    monkeypatch.setenv("SKYCACHE_LAB_ACCEL", "fast")
    with pytest.raises(InvalidInput, match="'fast'"):
        accel.choose("auto", SystemRunner(), KERNEL)


def test_vng_argv_with_the_channel_of_lab_up_forwards_only_a_loopback_port() -> None:
    from skycache.lab.vm import Channel

    spec = LabSpec(accel="tcg")
    argv = vng_argv(
        KERNEL,
        spec,
        guest_spec_path=Path("/g"),
        share_dir=Path("/s"),
        disk_paths=[],
        channel=Channel(host_port=40001, guest_port=7077),
    )
    netdev = argv[argv.index("--qemu-opts=-netdev") + 1]
    # restrict=on: the guest reaches nothing outside; only 127.0.0.1:40001 comes in.
    assert netdev == "--qemu-opts=user,id=skycache-channel,restrict=on,hostfwd=tcp:127.0.0.1:40001-:7077"
    assert "--qemu-opts=virtio-net-pci,netdev=skycache-channel,mac=52:54:00:5c:ec:01" in argv
    plain = vng_argv(KERNEL, spec, guest_spec_path=Path("/g"), share_dir=Path("/s"), disk_paths=[])
    assert not any("netdev" in a for a in plain)  # `lab run` has no network at all
