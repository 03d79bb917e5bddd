"""Fuzz the CLI with hostile input (issue 18, item 3): every refusal is one line, exit 2, no change.

Hypothesis generates hostile values for the arguments and options of every verb that can be run
safely (``--dry-run`` or a validation verb: ``suite validate``, ``suite show``, ``sim check``; ``sim run``
only for seeds, which must be refused before anything is simulated) and hostile TOML derived from the
valid files in scenarios/. Each example runs in-process against a fresh fake system (tests/unit/
_hostile.py) and must end in exactly one ``skycache: error:`` line on stderr, exit code 2, no
traceback, nothing changed on disk and no changing command started.

Every generated value is one that any correct validator must refuse: a valid value that merely looks
odd is never drawn, so a failure here is a finding, not noise.

Profiles (``SKYCACHE_FUZZ_PROFILE``): ``unit`` (default; a handful of examples per family so the unit
tier stays fast, derandomized when ``CI`` is set), ``long`` (``make fuzz``: ``SKYCACHE_FUZZ_EXAMPLES``
examples per family, 10,000 by default). Each family prints how many cases it ran (see with ``-s``).
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _hostile import SCENARIOS, World, invoke, toml_document, world
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

LONG_EXAMPLES = int(os.environ.get("SKYCACHE_FUZZ_EXAMPLES", "10000"))
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,  # no .hypothesis/ directory in the work tree
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    "print_blob": False,
}
settings.register_profile(
    "unit",
    max_examples=6,
    derandomize=bool(os.environ.get("CI")),
    phases=[Phase.explicit, Phase.generate],  # no shrinking in the unit tier: the first failure is shown
    **_COMMON,
)
settings.register_profile("long", max_examples=LONG_EXAMPLES, **_COMMON)
PROFILE = os.environ.get("SKYCACHE_FUZZ_PROFILE", "unit")
FUZZ = settings.get_profile(PROFILE)

COUNTS: dict[str, int] = {}


def _check(family: str, w: World, args: list[str]) -> None:
    COUNTS[family] = COUNTS.get(family, 0) + 1
    result = invoke(w, args)
    bad = result.problems()
    assert not bad, result.explain(bad)


def _report(family: str, body: Callable[[], None]) -> None:
    """Run a family's property and print its number of cases (``make fuzz`` shows the counts)."""
    COUNTS[family] = 0
    passed = False
    try:
        body()
        passed = True
    finally:
        verdict = "passed" if passed else "FAILED (the count includes the shrinking of the failure)"
        print(f"\nfuzz: {family}: {COUNTS[family]} cases ({PROFILE}), {verdict}")
    if PROFILE == "long":
        assert COUNTS[family] >= LONG_EXAMPLES, f"{family}: only {COUNTS[family]} cases"


# -- hostile values ----------------------------------------------------------------------------------

# Unicode digits that are not ASCII: str.isdigit() (and for some int()) accepts them, the system does not.
UNICODE_DIGITS = "\u00b2\u00b3\u00b9\u0660\u0661\u0669\u06f1\u0966\u0967\u09e7\u0e51\uff11\u2460"
SAFE = "abcdefghijklmnopqrstuvwxyz0123456789"

valid_names = st.text(alphabet=SAFE, min_size=1, max_size=12).map(lambda s: "n" + s)

hostile_names = st.one_of(
    valid_names.map(lambda n: n + "\n"),  # passes re.match(r"^...$")
    valid_names.map(lambda n: n + "\r\n"),
    st.tuples(valid_names, valid_names).map(lambda t: f"{t[0]}\x00{t[1]}"),
    st.tuples(valid_names, st.text(alphabet=UNICODE_DIGITS, min_size=1, max_size=3)).map("".join),
    st.text(alphabet=UNICODE_DIGITS, min_size=1, max_size=5),
    st.text(alphabet=SAFE, min_size=65, max_size=5000).map(lambda s: "n" + s),  # very long
    st.tuples(valid_names, st.sampled_from(["/", " ", "..", ";", "$(", "`", "\t", "'"]), valid_names).map(
        "".join
    ),
    valid_names.map(lambda n: n.upper() + "\u212a"),  # KELVIN SIGN: lower() is "k"
    st.just(""),
)

digits50 = st.integers(10**49, 10**50 - 1).map(str)
size_units = st.sampled_from(["", "B", "K", "M", "G", "T", "P", "GiB", "MB"])
hostile_sizes = st.one_of(
    st.tuples(digits50, size_units).map("".join),  # 50-digit numbers
    st.tuples(st.integers(10**4, 10**30), st.sampled_from(["P", "PiB", "PB"])).map(lambda t: f"{t[0]}{t[1]}"),
    st.sampled_from(["inf", "-inf", "nan", "NaN", "infinity", "1e400", "inf G", "nan M", "1e999K"]),
    st.tuples(st.integers(1, 10**6), size_units).map(lambda t: f"-{t[0]}{t[1]}"),  # negative
    # float bytes: a fraction of a byte can never be a whole number of bytes
    st.tuples(st.integers(0, 10**6), st.integers(1, 9), st.sampled_from(["", "B"])).map(
        lambda t: f"{t[0]}.{t[1]}{t[2]}"
    ),
    st.tuples(st.text(alphabet=UNICODE_DIGITS, min_size=1, max_size=3), size_units).map("".join),
    st.sampled_from(["", " ", "0", "0G", "G", "1Q", "1 2G", "0x10G", "1_000G", "1e3G"]),
)

hostile_ports = st.one_of(
    st.text(alphabet=UNICODE_DIGITS, min_size=1, max_size=4),
    st.integers(10**4, 10**5).map(lambda n: "1" * n),  # thousands of digits: int()'s digit limit
    st.integers(65536, 10**40).map(str),
    st.integers(-(10**9), 0).map(str),
    st.sampled_from(["", "0", "nan", "inf", "3260.5", "0x10", " 3260", "3260\n", "3 260"]),
)
# For options typed int (click parses them): no whitespace or non-ASCII decimal digits, which int()
# reads as numbers; superscripts it does not.
hostile_int_options = st.one_of(
    st.text(alphabet="\u00b2\u00b3\u00b9\u2460", min_size=1, max_size=4),
    st.integers(10**4, 10**5).map(lambda n: "1" * n),
    st.integers(65536, 10**40).map(str),
    st.integers(-(10**9), -1).map(str),
    st.sampled_from(["nan", "inf", "3260.5", "0x10", "3 260", ""]),
)
portal_hosts = st.sampled_from(["127.0.0.1", "localhost", "repo.example"])
hostile_portals = st.one_of(
    st.tuples(portal_hosts, hostile_ports).map(lambda t: f"{t[0]}:{t[1]}"),
    st.sampled_from(
        [
            "",
            ":3260",
            "127.0.0.1\n",
            "127.0.0.1:3260\n",
            "127.0.0.1\x00:3260",
            "a b:3260",
            "127.0.0.1:3260:1",
            "-o:3260",
            "$(id):3260",
        ]
    ),
)

hostile_floats = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e400", "-1", "-0.5", "-1e-9"])
hostile_seeds = st.one_of(
    st.integers(-(10**30), -1).map(str),
    st.integers(10**27, 10**60).map(str),  # 28 digits and more
    st.text(alphabet=UNICODE_DIGITS, min_size=1, max_size=3),
    st.sampled_from(["nan", "inf", "1.5", "1e3", ""]),
    st.integers(4400, 6000).map(lambda n: "7" * n),
)


def _storage(args: Callable[[str], list[str]]) -> Callable[[World, str], list[str]]:
    return lambda _w, v: args(v)


# Verbs whose refusal can only come after a lookup of the system (``disk mv`` first needs the VM's
# disk) are left out: their answer to a hostile value is rightly "not found" (exit 1).
NAME_VERBS: dict[str, Callable[[World, str], list[str]]] = {
    "repo init": _storage(lambda n: ["repo", "init", n, "--loop", "1G", "--dry-run"]),
    "repo init file": lambda w, n: [
        "repo",
        "init",
        n,
        "--backend",
        "file",
        "--dir",
        str(w.files / "r"),
        "--dry-run",
    ],
    "repo delete": _storage(lambda n: ["repo", "delete", n, "--dry-run"]),
    "image create": _storage(lambda n: ["image", "create", f"r1/{n}", "--size", "1M", "--dry-run"]),
    "image create repo": _storage(lambda n: ["image", "create", f"{n}/img", "--size", "1M", "--dry-run"]),
    "image delete": _storage(lambda n: ["image", "delete", f"r1/{n}", "--dry-run"]),
    "image clone": _storage(lambda n: ["image", "clone", "r1/base", f"r1/{n}", "--cow", "copy", "--dry-run"]),
    "export add": _storage(lambda n: ["export", "add", f"r1/{n}", "--dry-run"]),
    "export add initiator": _storage(lambda n: ["export", "add", "r1/img", "--initiator", n, "--dry-run"]),
    "export remove": _storage(lambda n: ["export", "remove", f"r1/{n}", "--dry-run"]),
    "attach": _storage(lambda n: ["attach", f"r1/{n}", "--portal", "127.0.0.1", "--dry-run"]),
    "detach": _storage(lambda n: ["detach", f"r1/{n}", "--dry-run"]),
    "node init": _storage(lambda n: ["node", "init", "--cache-vg", n, "--loop", "1G", "--dry-run"]),
    "node delete": _storage(lambda n: ["node", "delete", "--cache-vg", n, "--dry-run"]),
    "disk clone": _storage(lambda n: ["disk", "clone", n, "r1/base", "--portal", "127.0.0.1", "--dry-run"]),
    "disk ln": _storage(lambda n: ["disk", "ln", n, "r1/img", "--portal", "127.0.0.1", "--dry-run"]),
    "disk mkimage": _storage(lambda n: ["disk", "mkimage", n, "1G", "--dry-run"]),
    "disk delete": _storage(lambda n: ["disk", "delete", n, "--dry-run"]),
    "disk purge": _storage(lambda n: ["disk", "purge", n, "--dry-run"]),
    "disk save": _storage(lambda n: ["disk", "save", n, "r1/new", "--dry-run"]),
    "cache drop": _storage(lambda n: ["cache", "drop", f"r1/{n}", "--dry-run"]),
    "net isolate": _storage(lambda n: ["net", "isolate", n, "--deny", "198.18.3.0/24", "--dry-run"]),
    "net shape netns": _storage(
        lambda n: ["net", "shape", "gbe-2009", "--netns", f"skycache-{n}", "--dry-run"]
    ),
    "net shape dev": _storage(lambda n: ["net", "shape", "gbe-2009", "--dev", n, "--dry-run"]),
    "net unshape": _storage(lambda n: ["net", "unshape", "--dev", n, "--dry-run"]),
    "net unisolate": _storage(lambda n: ["net", "unisolate", n, "--dry-run"]),
}

SIZE_VERBS: dict[str, Callable[[World, str], list[str]]] = {
    "repo init --loop": _storage(lambda s: ["repo", "init", "r2", "--loop", s, "--dry-run"]),
    "image create --size": _storage(lambda s: ["image", "create", "r1/new", "--size", s, "--dry-run"]),
    "image clone --cow-size": _storage(
        lambda s: ["image", "clone", "r1/base", "r1/new", "--cow", "snapshot", "--cow-size", s, "--dry-run"]
    ),
    "node init --loop": _storage(lambda s: ["node", "init", "--cache-vg", "c1", "--loop", s, "--dry-run"]),
    "disk mkimage": _storage(lambda s: ["disk", "mkimage", "vm1", s, "--dry-run"]),
    "disk mkswap": _storage(lambda s: ["disk", "mkswap", "vm1", s, "--dry-run"]),
    "disk clone --read-cache": _storage(
        lambda s: ["disk", "clone", "vm1", "r1/base", "--portal", "127.0.0.1", "--read-cache", s, "--dry-run"]
    ),
    "disk clone --write-cache": _storage(
        lambda s: [
            "disk",
            "clone",
            "vm1",
            "r1/base",
            "--portal",
            "127.0.0.1",
            "--write-cache",
            s,
            "--dry-run",
        ]
    ),
    "disk ln --read-cache": _storage(
        lambda s: ["disk", "ln", "vm1", "r1/img", "--portal", "127.0.0.1", "--read-cache", s, "--dry-run"]
    ),
}

PORTAL_VERBS: dict[str, Callable[[World, str], list[str]]] = {
    "attach --portal": _storage(lambda p: ["attach", "r1/img", "--portal", p, "--dry-run"]),
    "export add --listen": _storage(lambda p: ["export", "add", "r1/img", "--listen", p, "--dry-run"]),
    "disk clone --portal": _storage(
        lambda p: ["disk", "clone", "vm1", "r1/base", "--portal", p, "--dry-run"]
    ),
    "disk ln --portal": _storage(lambda p: ["disk", "ln", "vm1", "r1/img", "--portal", p, "--dry-run"]),
}


def _sim_run_seed(w: World, seed: str) -> list[str]:
    scenario = SCENARIOS / "sim-boot-storm.toml"
    return ["sim", "run", str(scenario), "--seed", seed, "--out", str(w.sys / "out"), "--no-plots"]


NUMBER_VERBS: dict[str, tuple[st.SearchStrategy[str], Callable[[World, str], list[str]]]] = {
    "net shape --port": (
        hostile_int_options,
        _storage(lambda v: ["net", "shape", "gbe-2009", "--port", v, "--dry-run"]),
    ),
    "net shape --delay": (hostile_floats, _storage(lambda v: ["net", "shape", "--delay", v, "--dry-run"])),
    "net shape --loss": (
        st.one_of(hostile_floats, st.sampled_from(["100.5", "101", "1e9"])),
        _storage(lambda v: ["net", "shape", "--rate", "10mbit", "--loss", v, "--dry-run"]),
    ),
    "net shape --rate": (
        st.one_of(hostile_floats, digits50).map(lambda v: v + "mbit"),
        _storage(lambda v: ["net", "shape", "--rate", v, "--dry-run"]),
    ),
    "attach --timeout": (
        hostile_floats,
        _storage(lambda v: ["attach", "r1/img", "--portal", "127.0.0.1", "--timeout", v, "--dry-run"]),
    ),
    "export add --delay-ms": (
        st.one_of(hostile_int_options, hostile_floats),
        _storage(lambda v: ["export", "add", "r1/img", "--delay-ms", v, "--dry-run"]),
    ),
    "sim run --seed": (hostile_seeds, _sim_run_seed),
    "bench compare --fail-on-regression": (
        hostile_floats,
        lambda w, v: ["bench", "compare", str(w.files), "--fail-on-regression", v],
    ),
}


@pytest.mark.parametrize(
    ("family", "values", "verbs"),
    [
        ("names", hostile_names, NAME_VERBS),
        ("sizes", hostile_sizes, SIZE_VERBS),
        ("portals", hostile_portals, PORTAL_VERBS),
    ],
)
def test_fuzz_values(
    family: str, values: st.SearchStrategy[str], verbs: dict[str, Callable[[World, str], list[str]]]
) -> None:
    @FUZZ
    @given(verb=st.sampled_from(sorted(verbs)), value=values)
    def prop(verb: str, value: str) -> None:
        with world(repo=True) as w:
            _check(family, w, verbs[verb](w, value))

    _report(family, prop)


def test_fuzz_numbers() -> None:
    @FUZZ
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        verb = data.draw(st.sampled_from(sorted(NUMBER_VERBS)), label="verb")
        strategy, build = NUMBER_VERBS[verb]
        value = data.draw(strategy, label="value")
        with world(repo=True) as w:
            _check("numbers", w, build(w, value))

    _report("numbers", prop)


# -- hostile paths -----------------------------------------------------------------------------------

PATH_KINDS = (
    "directory",
    "fifo",
    "proc-mem",
    "symlink-loop",
    "binary",
    "latin1",
    "under-a-file",
    "nul-in-name",
    "deep-nesting",
    "embedded-nul",
    "dev-null",
    "missing",
)


def _hostile_path(w: World, kind: str, name: str) -> str:
    """Make one hostile file system object named after ``name``; return the path to hand in."""
    makers: dict[str, Callable[[str], Path | str]] = {
        "directory": w.directory,
        "fifo": w.fifo,
        "proc-mem": lambda _n: "/proc/self/mem",
        "symlink-loop": w.symlink_loop,
        "binary": w.binary,
        "latin1": w.latin1,
        "under-a-file": w.under_a_file,
        "nul-in-name": lambda n: str(w.files / n) + "\x00.toml",
        "deep-nesting": w.deep_nesting,
        "embedded-nul": w.embedded_nul,
        "dev-null": lambda _n: "/dev/null",
        "missing": lambda n: w.files / "no-such-dir" / n,
    }
    return str(makers[kind](name))


PATH_VERBS: dict[str, Callable[[World, str], list[str]]] = {
    "suite validate": lambda _w, p: ["suite", "validate", p],
    "suite show": lambda _w, p: ["suite", "show", p],
    "sim check scenario": lambda _w, p: ["sim", "check", p],
    "sim check calibration": lambda _w, p: ["sim", "check", str(SCENARIOS / "sim-boot-storm.toml"), "-c", p],
    "sim calibrate": lambda w, p: ["sim", "calibrate", p, "-o", str(w.sys / "cwd" / "cal.toml")],
    "sim calibrate --base": lambda w, p: [
        "sim",
        "calibrate",
        str(Path(__file__).parent / "data" / "sim" / "fio-run"),
        "--base",
        p,
        "-o",
        str(w.sys / "cwd" / "cal.toml"),
    ],
    "bench show": lambda _w, p: ["bench", "show", p],
    "bench plots": lambda _w, p: ["bench", "plots", p],
    "bench report": lambda _w, p: ["bench", "report", p],
    "validate": lambda _w, p: ["validate", p],
    "bench compare": lambda _w, p: ["bench", "compare", p],
    "image create --from": lambda _w, p: ["image", "create", "r1/new", "--from", p, "--dry-run"],
    "repo init --dir": lambda _w, p: ["repo", "init", "r2", "--backend", "file", "--dir", p, "--dry-run"],
    "repo init --loop-dir": lambda _w, p: [
        "repo",
        "init",
        "r2",
        "--loop",
        "1G",
        "--loop-dir",
        p,
        "--dry-run",
    ],
}
# A directory is a fine --dir (file repository) or --loop-dir; any regular file is a raw image for --from.
_DIR_OK = {"repo init --dir", "repo init --loop-dir"}
_NOT_A_FILE = (
    "directory",
    "fifo",
    "proc-mem",
    "symlink-loop",
    "under-a-file",
    "nul-in-name",
    "dev-null",
    "missing",
)
_FILE_NAMES = st.text(alphabet=SAFE + "-_.", min_size=1, max_size=30).filter(lambda s: s not in (".", ".."))


def test_fuzz_paths() -> None:
    @FUZZ
    @given(
        verb=st.sampled_from(sorted(PATH_VERBS)),
        kind=st.sampled_from(PATH_KINDS),
        name=_FILE_NAMES,
        spelling=st.sampled_from(["", "/.", "/"]),
    )
    def prop(verb: str, kind: str, name: str, spelling: str) -> None:
        if verb in _DIR_OK and kind in ("directory", "missing"):
            kind = "fifo"
        if verb == "image create --from" and kind not in _NOT_A_FILE:
            kind = "symlink-loop"
        with world(repo=True) as w:
            # the same object spelt differently: a check on the text of the path must not miss it
            path = spelling + _hostile_path(w, kind, name + ".toml")
            _check("paths", w, PATH_VERBS[verb](w, path))

    _report("paths", prop)


# -- hostile TOML ------------------------------------------------------------------------------------

BENCH_FILES = ("quickstart.toml", "regression.toml", "cow-engines.toml", "testbed-2009.toml")
SIM_FILES = tuple(
    p.name for p in sorted(SCENARIOS.glob("sim-*.toml")) if p.name != "sim-calibration-example.toml"
)
CALIBRATION = "sim-calibration-example.toml"
FREE_TEXT = {"description", "note"}  # any string (newlines included) is fine there, only the type matters
UNREAD = {"calibration"}
NUMBER_IN_TEXT = re.compile(r"^\s*-?\d+(?:\.\d+)?")


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(data, list) and data:
        return [p for i, v in enumerate(data) for p in _leaves(v, (*path, i))]
    return [path]


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        data = data[k]
    return data


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for k in path[:-1]:
        data = data[k]
    data[path[-1]] = value


def _hostile_for(original: Any, key: Any, *, listable: bool = False) -> st.SearchStrategy[Any]:
    """Values that no validator may accept in place of ``original`` (a leaf named ``key``);
    ``listable``: a list of such values is valid there too (the factor values of an exclude)."""
    deep: Any = []
    for _ in range(60):
        deep = [deep]
    nested = st.just(deep)
    if isinstance(original, bool):
        return st.one_of(st.sampled_from(["maybe", float("nan"), [True], {"x": True}]), nested)
    if isinstance(original, int):
        return st.one_of(
            st.sampled_from([float("nan"), float("inf"), float("-inf"), [1], {"x": 1}, "abc"]),
            st.integers(10**30, 10**40),
            st.integers(-(10**12), -1),
        )
    if isinstance(original, float):
        return st.sampled_from([float("nan"), float("inf"), float("-inf"), -1.0, -1e-300, [1.0], "abc"])
    if isinstance(original, str):
        if key in FREE_TEXT:
            return st.one_of(st.sampled_from([1, 1.5, [original], {"x": original}, True]), nested)
        options = [
            st.just(original + "\x00"),
            st.just(original + "\nexec_prerun=touch /tmp/skycache-pwned"),
            st.sampled_from(
                [1.5, {"x": original}, True] if listable else [1.5, [original], {"x": original}, True]
            ),
        ]
        if NUMBER_IN_TEXT.match(original):
            # A quantity ("10 GiB", "2 ms"): trailing whitespace is harmless there, a bad number is not.
            number = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e400", "-1", "-0.5"])
            options.append(number.map(lambda n: NUMBER_IN_TEXT.sub(n, original, count=1)))
        else:
            options.append(st.just(original + "\n"))  # a name or a keyword: matched whole
        return st.one_of(options)
    if isinstance(original, list):
        return st.one_of(st.sampled_from([float("nan"), "abc", {"x": 1}]), nested)
    return st.sampled_from([float("nan"), "abc", 1, [1]])


def _mutated(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    # scenario.calibration is not read when -c is given (sim check below); paths are fuzzed apart.
    leaves = [p for p in _leaves(data) if p and p[-1] not in UNREAD]
    # Distinct leaves: a second mutation of the same leaf would start from the first one's hostile
    # value and could turn it back into a valid one (a note of 1, then "abc").
    for path in draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=2, unique=True), label="leaves"):
        original = _get(data, path)
        key = next((k for k in reversed(path) if isinstance(k, str)), "")
        _set(
            data,
            path,
            draw(
                _hostile_for(original, key, listable=path[0] == "exclude"),
                label=f"value at {'.'.join(map(str, path))}",
            ),
        )
    return data


FIO_HOSTILE: list[tuple[str, Any]] = [
    ("options", {"exec_prerun": "touch /tmp/skycache-pwned"}),
    ("options", {"exec_postrun": "touch /tmp/skycache-pwned"}),
    ("options", {"filename": "/dev/vda"}),
    ("options", {"directory": "/etc"}),
    ("options", {"filename_format": "/dev/vda"}),
    ("options", {"ioengine": "exec"}),
    ("options", {"write_iolog": "/etc/passwd"}),
    ("ioengine", "libaio\nexec_prerun=touch /tmp/skycache-pwned"),
    ("ioengine", "libaio\x00"),
    ("job_file", "/etc/shadow"),
]


@st.composite
def bench_scenarios(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(BENCH_FILES), label="base")
    data = tomllib.loads((SCENARIOS / name).read_text())
    if draw(st.booleans(), label="fio option"):
        key, value = draw(st.sampled_from(FIO_HOSTILE), label="fio")
        i = draw(st.integers(0, len(data["workloads"]) - 1), label="workload")
        w = data["workloads"][i]
        if key == "job_file":
            w.pop("rw", None)
        w[key] = value
        return name, toml_document(data)
    return name, toml_document(_mutated(draw, data))


@st.composite
def sim_scenarios(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(SIM_FILES), label="base")
    return name, toml_document(_mutated(draw, tomllib.loads((SCENARIOS / name).read_text())))


@st.composite
def calibrations(draw: st.DrawFn) -> str:
    return toml_document(_mutated(draw, tomllib.loads((SCENARIOS / CALIBRATION).read_text())))


def _sim_world(w: World) -> Path:
    """The files sim scenarios refer to, next to where the hostile scenario goes."""
    for f in (CALIBRATION, "sim-sample.swf"):
        (w.files / f).write_bytes((SCENARIOS / f).read_bytes())
    return w.files


def test_fuzz_bench_scenarios() -> None:
    @FUZZ
    @given(case=bench_scenarios())
    def prop(case: tuple[str, str]) -> None:
        name, text = case
        with world() as w:
            path = w.text(name, text)
            _check("bench-toml", w, ["suite", "validate", str(path)])

    _report("bench-toml", prop)


def test_fuzz_suite_files() -> None:
    @FUZZ
    @given(case=bench_scenarios(), verb=st.sampled_from(["show", "validate-dir"]))
    def prop(case: tuple[str, str], verb: str) -> None:
        name, text = case
        with world() as w:
            path = w.text(name, text)
            args = ["suite", "show", str(path)] if verb == "show" else ["suite", "validate", str(w.files)]
            _check("suite", w, args)

    _report("suite", prop)


def test_fuzz_sim_scenarios() -> None:
    @FUZZ
    @given(case=sim_scenarios())
    def prop(case: tuple[str, str]) -> None:
        name, text = case
        with world() as w:
            d = _sim_world(w)
            path = w.text("hostile-" + name, text)
            _check("sim-toml", w, ["sim", "check", str(path), "-c", str(d / CALIBRATION)])

    _report("sim-toml", prop)


def test_fuzz_calibrations() -> None:
    @FUZZ
    @given(text=calibrations(), scenario=st.sampled_from(SIM_FILES))
    def prop(text: str, scenario: str) -> None:
        with world() as w:
            d = _sim_world(w)
            (d / scenario).write_bytes((SCENARIOS / scenario).read_bytes())
            cal = w.text("hostile-calibration.toml", text)
            _check("calibration-toml", w, ["sim", "check", str(d / scenario), "-c", str(cal)])

    _report("calibration-toml", prop)


# -- the harness itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BENCH_FILES)
def test_unmutated_bench_scenarios_are_accepted(name: str) -> None:
    # The TOML writer and the fake system do not by themselves make a file fail: the valid file,
    # rewritten by toml_document, still validates (exit 0, nothing changed).
    with world() as w:
        path = w.text(name, toml_document(tomllib.loads((SCENARIOS / name).read_text())))
        result = invoke(w, ["suite", "validate", str(path)])
    assert result.code == 0 and not result.changed_files and not result.change_commands, result.stderr


@pytest.mark.parametrize("name", SIM_FILES)
def test_unmutated_sim_scenarios_are_accepted(name: str) -> None:
    with world() as w:
        d = _sim_world(w)
        path = w.text(name, toml_document(tomllib.loads((SCENARIOS / name).read_text())))
        # A whole committed scenario (sim-san-vs-distributed: 8 variants x 5 sweep points) takes about
        # 0.6 s to check; on a loaded 2-core machine that came near the default deadline once.
        result = invoke(w, ["sim", "check", str(path), "-c", str(d / CALIBRATION)], timeout_s=30)
    assert result.code == 0 and not result.changed_files and not result.change_commands, result.stderr


def test_a_valid_dry_run_passes_the_harness_and_a_fifo_read_times_out() -> None:
    # A dry run of a valid request is accepted and changes nothing; a FIFO opened for reading
    # blocks until the deadline, which the harness reports instead of hanging.
    with world(repo=True) as w:
        ok = invoke(w, ["image", "create", "r1/new", "--size", "1M", "--dry-run"])
        assert ok.code == 0 and "plan:" in ok.stdout and not ok.changed_files and not ok.change_commands
        fifo = w.fifo()
        import _hostile

        slow = _hostile.Outcome([], None, "", "", [], [])
        try:
            with _hostile._deadline(0.2):
                fifo.read_text()
        except _hostile.Hung:
            slow.hung = True
    assert slow.hung and "hung (deadline passed)" in slow.problems()
