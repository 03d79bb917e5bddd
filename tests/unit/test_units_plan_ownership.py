from __future__ import annotations

from pathlib import Path

import pytest

from skycache.errors import InvalidInput, NotOwned
from skycache.ownership import check_name, marked, require_marked_name, require_tagged
from skycache.plan import Action, Command, Plan, PlanFailed, Wait, WaitTimedOut
from skycache.runner import Runner, Secret, SystemRunner
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
    assert plan.commands() == ["touch /tmp/a"]


def test_plan_commands_are_every_mutating_command_in_order_masked() -> None:
    class Ready:
        def describe(self) -> str:
            return "the device appears"

        def poll(self, runner: Runner) -> tuple[bool, str | None]:
            return True, None

    plan = Plan("p").extend(
        [
            Action(
                "two steps", (Command(("a", "1")), Wait(Ready(), timeout_s=5), Command(("b", Secret("pw"))))
            ),
            Action.command("with stdin", ["tee", "/x"], stdin="data"),
        ]
    )
    assert plan.commands() == ["a 1", "b '********'", "tee /x"]
    lines = plan.describe()
    assert "       (wait until the device appears, at most 5 s)" in lines
    assert "       $ tee /x < (stdin)" in lines
    assert "pw" not in "\n".join(lines)


def test_plan_failure_undoes_completed_steps_newest_first(tmp_path: Path) -> None:
    made = [tmp_path / n for n in "abc"]
    plan = Plan("p").extend(
        [Action.command(f"make {f.name}", ["touch", str(f)], ["rm", str(f)]) for f in made]
        + [Action.command("fail", ["false"], ["touch", str(tmp_path / "undo-of-fail")])]
    )
    with pytest.raises(PlanFailed) as info:
        plan.apply(SystemRunner())
    assert not any(f.exists() for f in made)
    assert not (tmp_path / "undo-of-fail").exists()  # its only step failed: nothing to undo
    assert info.value.step == "fail" and "exit code 1" in str(info.value)


def test_plan_undoes_an_action_that_failed_after_its_first_step(tmp_path: Path) -> None:
    a = tmp_path / "a"
    action = Action(
        "a then fail", (Command(("touch", str(a))), Command(("false",))), (Command(("rm", "-f", str(a))),)
    )
    with pytest.raises(PlanFailed):
        Plan("p").add(action).apply(SystemRunner())
    assert not a.exists()


def test_command_ok_codes_accept_a_known_exit() -> None:
    Plan("p").add(Action.command("exit 1 is fine here", ["false"], ok_codes=frozenset({0, 1}))).apply(
        SystemRunner()
    )


def test_wait_polls_until_done_and_reports_progress_then_times_out() -> None:
    seen: list[str] = []

    class Countdown:
        def __init__(self, n: int) -> None:
            self.n = n

        def describe(self) -> str:
            return "the count reaches 0"

        def poll(self, runner: Runner) -> tuple[bool, str | None]:
            self.n -= 1
            return self.n <= 0, f"{self.n} left"

    Wait(Countdown(3), poll_s=0).run(SystemRunner(), seen.append)
    assert seen == ["2 left", "1 left", "0 left"]
    clock = iter([0.0, 0.0, 5.0, 11.0])
    with pytest.raises(WaitTimedOut, match=r"until the count reaches 0 \(997 left\)"):
        Wait(Countdown(1000), timeout_s=10).run(
            SystemRunner(), clock=lambda: next(clock), sleep=lambda s: None
        )
