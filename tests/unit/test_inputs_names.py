"""Names are matched whole: a trailing newline (which ``re.match("^...$")`` lets through) is refused
by every name check, so no plan creates a VG named 'abc\\n' or a rule on a chain named so."""

from __future__ import annotations

import pytest

from skycache import ownership
from skycache.bench import remote
from skycache.bench.scenario import SshOptions
from skycache.errors import InvalidInput, NotOwned
from skycache.net import iptables, isolation, netns
from skycache.storage import image, repository
from skycache.storage.vmdisk import records


@pytest.mark.parametrize(
    ("check", "good"),
    [
        (ownership.check_name, "abc"),
        (repository.check_repo_name, "abc"),
        (image.check_image_name, "abc"),
        (records.check_vm_id, "vm1"),
        (iptables.check_chain, "SKYCACHE-FWD-vm1"),
        (netns.check_ns, "skycache-vm1"),
        (netns.check_dev, "tap0"),
        (isolation.check_key, "vm1"),
    ],
)
def test_trailing_newline_refused(check: object, good: str) -> None:
    assert check(good) == good  # type: ignore[operator]
    for bad in (good + "\n", good + "\r\n", "\n" + good):
        with pytest.raises((InvalidInput, NotOwned)) as exc:
            check(bad)  # type: ignore[operator]
        assert "\n" not in str(exc.value)
        assert repr(bad)[1:-1] in str(exc.value)  # named, escaped


def test_iqn_prefix_env_with_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCACHE_IQN_PREFIX", "iqn.2026-01.org.example\n")
    with pytest.raises(InvalidInput, match="is not an IQN prefix"):
        ownership.iqn_prefix()
    monkeypatch.setenv("SKYCACHE_IQN_PREFIX", "iqn.2026-01.org.example")
    assert ownership.iqn_prefix() == "iqn.2026-01.org.example"


def test_host_label_and_ssh_user_with_newline() -> None:
    problems = remote.check_hosts(["node1\n", "node2:²", "node3:" + "9" * 5000])
    assert [i for i, _, _ in problems] == [0, 1, 2]
    assert "is not a whole number" in problems[1][2]
    assert "out of range [1, 65535]" in problems[2][2]
    with pytest.raises(ValueError, match="is not a user name"):
        SshOptions(user="root\n")
    assert SshOptions(user="root").user == "root"
