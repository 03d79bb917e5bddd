from __future__ import annotations

import pytest

from skycache.errors import InvalidInput, NotOwned
from skycache.ownership import check_name, marked, require_marked_name, require_tagged
from skycache.plan import Action, Plan, PlanFailed
from skycache.runner import CommandError, Runner
from skycache.units import format_size, parse_positive_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * 2**20),
        ("8G", 8 * 2**30),
        ("1.5GiB", 3 * 2**29),
        ("4096", 4096),
        ("10MB", 10**7),
        ("1k", 1024),
        ("2 T", 2 * 2**40),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "-1G", "G", "1.2.3M", "1X", "abc", "0.3B"])
def test_parse_size_rejects_naming_the_value(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_size(bad, what="--size")
    assert repr(bad) in str(info.value) and "--size" in str(info.value)


def test_positive_size_rejects_zero_and_misalignment() -> None:
    with pytest.raises(InvalidInput, match="zero"):
        parse_positive_size("0")
    with pytest.raises(InvalidInput, match="multiple of 32K"):
        parse_positive_size("48K", multiple_of=32 * 1024)
    assert parse_positive_size("64K", multiple_of=32 * 1024) == 65536


def test_format_size_round_trips() -> None:
    for n in (1024, 3 * 2**29, 8 * 2**30, 7):
        assert parse_size(format_size(n)) == n


@pytest.mark.parametrize("bad", ["", "UPPER", "a b", "../x", "x" * 41, "-lead", "a;rm", "a/b"])
def test_check_name_refuses_unsafe(bad: str) -> None:
    with pytest.raises(InvalidInput):
        check_name(bad, what="image")


def test_ownership_marks() -> None:
    assert check_name("base-01.img") == "base-01.img"
    assert marked("vm1") == "skycache-vm1"
    assert marked("skycache-vm1") == "skycache-vm1"
    with pytest.raises(NotOwned, match="'home'"):
        require_marked_name("home", what="dm device")
    with pytest.raises(NotOwned, match="LVM tag"):
        require_tagged("vg0/root", ["other"], what="LV")
    require_tagged("vg0/img", ["skycache"], what="LV")


def test_plan_describe_lists_commands() -> None:
    plan = Plan("make thing").add(Action.command("create a", ["touch", "/tmp/a"], ["rm", "/tmp/a"]))
    assert plan.describe() == ["plan: make thing", "  1. create a", "       $ touch /tmp/a"]


def test_plan_failure_undoes_completed_steps_newest_first() -> None:
    log: list[str] = []

    def step(name: str, fail: bool = False) -> Action:
        def do(_r: Runner) -> None:
            if fail:
                raise CommandError(["x"], 1, "", "boom")
            log.append(f"do {name}")

        return Action(name, do, lambda _r: log.append(f"undo {name}"))

    plan = Plan("p").extend([step("a"), step("b"), step("c", fail=True), step("d")])
    with pytest.raises(PlanFailed) as info:
        plan.apply(Runner())
    assert log == ["do a", "do b", "undo b", "undo a"]
    assert info.value.step == "c" and "boom" in str(info.value)


def test_plan_real_commands_roll_back(tmp_path: object) -> None:
    import pathlib

    d = pathlib.Path(str(tmp_path))
    plan = Plan("files").extend(
        [
            Action.command("make a", ["touch", str(d / "a")], ["rm", str(d / "a")]),
            Action.command("fail", ["false"]),
        ]
    )
    with pytest.raises(PlanFailed):
        plan.apply(Runner())
    assert not (d / "a").exists()


def test_plan_dry_run_changes_nothing(tmp_path: object) -> None:
    import pathlib

    target = pathlib.Path(str(tmp_path)) / "x"
    runner = Runner(dry_run=True)
    Plan("p").add(Action.command("make x", ["touch", str(target)])).apply(runner)
    assert not target.exists()
    assert runner.plan[0].argv == ("touch", str(target))
