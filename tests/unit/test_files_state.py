"""The state directory (issue 18, "State and result directories" and "Secrets and modes"): a state
directory that is a file or writable by others, a registry that is corrupt JSON, a JSON list,
binary, nested too deeply or a directory: one ``skycache: error:`` line naming it, a non-zero exit,
nothing changed. The directory is made 0700 whatever the umask, on this host and through the agent
on any other."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from boundary import assert_one_error, skycache, snapshot, touched

from skycache import agent, state
from skycache.storage import repository


@pytest.fixture
def state_path(private_state: Path) -> Path:
    return Path(os.environ["SKYCACHE_STATE_DIR"])


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


REGISTRIES = {
    "corrupt JSON": (b'{"r1": "/srv/r1", ', "is not valid JSON"),
    "a JSON list": (b'["r1", "/srv/r1"]\n', "is not a JSON object"),
    "binary": (bytes(range(256)), "is not valid JSON (binary content)"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("verb", [("repo", "list"), ("repo", "init", "--backend", "file", "--dry-run")])
@pytest.mark.parametrize("case", [*REGISTRIES, "a directory"])
def test_a_bad_registry_is_one_line(
    capsys: pytest.CaptureFixture[str], state_path: Path, tmp_path: Path, case: str, verb: tuple[str, ...]
) -> None:
    state_path.mkdir(mode=0o700)
    registry = state_path / repository.REGISTRY
    if case == "a directory":
        registry.mkdir()
        problem = "cannot be read (Is a directory)"
    else:
        data, problem = REGISTRIES[case]
        registry.write_bytes(data)
    args = [*verb, *(["--dir", str(tmp_path / "repo"), "r1"] if "init" in verb else [])]
    before = snapshot(tmp_path)
    assert_one_error(skycache(capsys, *args), f"state file {registry}", problem, code=2)
    assert touched(before, [tmp_path]) == []


def test_a_state_directory_that_is_a_file_is_one_line(
    capsys: pytest.CaptureFixture[str], state_path: Path, tmp_path: Path
) -> None:
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text("not a directory\n")
    before = snapshot(tmp_path, state_path.parent)
    for args in (("repo", "list"), ("repo", "init", "--backend", "file", "--dir", str(tmp_path / "r"), "r1")):
        result = skycache(capsys, *args)
        assert_one_error(result, f"state directory {state_path} is not a directory", code=2)
    assert touched(before, [tmp_path, state_path.parent]) == []


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_state_directory_others_may_write_is_refused(
    capsys: pytest.CaptureFixture[str], state_path: Path, tmp_path: Path, mode: int
) -> None:
    state_path.mkdir()
    state_path.chmod(mode)
    before = snapshot(tmp_path, state_path)
    result = skycache(capsys, "repo", "init", "--backend", "file", "--dir", tmp_path / "r", "r1")
    assert_one_error(result, f"state directory {state_path} is writable by others (mode {mode:04o})", code=2)
    assert touched(before, [tmp_path, state_path]) == []
    assert not (tmp_path / "r").exists()


def test_the_state_directory_is_made_0700_under_umask_000(
    capsys: pytest.CaptureFixture[str], state_path: Path, tmp_path: Path, umask_000: None
) -> None:
    result = skycache(capsys, "repo", "init", "--backend", "file", "--dir", tmp_path / "repo", "r1")
    assert result.code == 0, result
    registry = state_path / repository.REGISTRY
    assert registry.is_file()
    assert oct(state_path.stat().st_mode & 0o777) == oct(0o700)
    assert oct(registry.stat().st_mode & 0o777) == oct(0o600)
    assert skycache(capsys, "repo", "list").code == 0


def test_the_agent_makes_every_missing_state_directory_0700(tmp_path: Path, umask_000: None) -> None:
    root = tmp_path / "etc" / "skycache"
    secret = root / "secrets" / "x.chap"
    agent.write_file(secret, "s", 0o600, private_root=root)
    assert [oct(p.stat().st_mode & 0o777) for p in (root, secret.parent, secret)] == [
        "0o700",
        "0o700",
        "0o600",
    ]


@pytest.mark.parametrize("where", ["root", "below"])
def test_the_agent_refuses_a_state_directory_others_may_write(tmp_path: Path, where: str) -> None:
    root = tmp_path / "state"
    (root / "secrets").mkdir(parents=True, mode=0o700)
    (root if where == "root" else root / "secrets").chmod(0o777)
    out, err = _Buf(), _Buf()
    code = agent.main(["write-file", str(root / "secrets" / "x"), "--private-dir", str(root)], "s", out, err)
    assert code == 1 and "is writable by others (mode 0777)" in err.text
    assert not (root / "secrets" / "x").exists()


class _Buf:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)


def test_state_writes_ask_the_agent_to_keep_the_directory_private(state_path: Path) -> None:
    inside = state.write_command(state.secrets_dir() / "x.chap", "s")
    assert list(inside.argv)[-2:] == ["--private-dir", str(state_path)]
    outside = state.write_command(PurePosixPath("/srv/repo/.skycache-repo"), "{}")
    assert "--private-dir" not in outside.argv


@pytest.mark.parametrize("content", [b"{", b"[1]", bytes(range(256)), b'{"accel": 1}', b"[" * 100_000])
def test_damaged_lab_records_are_forgotten_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    from skycache.lab import accel, kernel

    monkeypatch.setenv("SKYCACHE_CACHE_DIR", str(tmp_path))
    record = Path(accel._record_path())
    record.parent.mkdir(parents=True)
    record.write_bytes(content)
    some = kernel.LabKernel("6.1.0-1-amd64", "p", "v", tmp_path)
    assert accel.remembered(some) is None
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / kernel._RECORD).write_bytes(content)
    assert kernel.load(kernels) is None
