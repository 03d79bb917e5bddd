"""What a failing lab test prints besides its assertion: the state of every stack skycache owns.

A lab failure in CI should be understood without running it again, so the tier records the dm
devices (status and table: cache counters, dirty blocks, snapshot fill), the LVs with their tags, the
loop devices, the iSCSI sessions and the LIO backstores and targets, each command's output as it was
when the test failed. Commands run with a short time limit and never raise: a half-broken stack is
exactly when this is needed.
"""

from __future__ import annotations

from skycache.runner import CommandError, MissingProgram, Runner

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("dmsetup", "status"),
    ("dmsetup", "table"),
    ("lvs", "-a", "--noheadings", "-o", "vg_name,lv_name,lv_attr,lv_size,lv_tags,devices"),
    ("losetup", "-a"),
    ("iscsiadm", "-m", "session", "-P", "1"),
    ("ls", "-R", "/sys/kernel/config/target/iscsi", "/sys/kernel/config/target/core"),
)


def stack_state(runner: Runner) -> str:
    parts: list[str] = []
    for argv in COMMANDS:
        try:
            done = runner.query(list(argv), check=False, timeout_s=30)
            text = (done.stdout + done.stderr).strip() or "(nothing)"
        except (CommandError, MissingProgram) as exc:
            text = f"(could not run: {exc})"
        lines = text.splitlines()
        if len(lines) > 80:  # configfs listings get long: the head says what exists
            lines = [*lines[:80], f"... ({len(lines) - 80} more lines)"]
        parts.append("$ " + " ".join(argv) + "\n" + "\n".join(lines))
    return "\n".join(parts)
