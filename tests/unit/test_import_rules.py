"""The dependency rules of docs/architecture.md, checked on the code itself.

lib imports neither bench nor sim; inside lib/storage, kernel wrappers import no domain module and
caches import only kernel wrappers; sim imports nothing that touches the system, not even through
another module (checked on what importing it really loads).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib" / "skycache"


def imported(path: Path) -> set[str]:
    """Every module a file imports (absolute names; ``from skycache import x`` gives skycache.x)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("skycache")}


def violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for f in files:
        for name in sorted(imported(f)):
            if name.startswith(forbidden):
                out.append(f"{f.relative_to(ROOT) if f.is_relative_to(ROOT) else f} imports {name}")
    return out


def test_lib_imports_neither_bench_nor_sim() -> None:
    assert violations(sorted(LIB.rglob("*.py")), ("skycache.bench", "skycache.sim")) == []


def test_kernel_wrappers_import_no_domain_module_and_caches_only_kernel() -> None:
    storage = LIB / "storage"
    domain = tuple(
        f"skycache.storage.{m}"
        for m in ("repository", "image", "node", "vmdisk", "teardown", "inventory", "view", "caches")
    )
    assert violations(sorted((storage / "kernel").glob("*.py")), domain) == []
    assert (
        violations(sorted((storage / "caches").glob("*.py")), tuple(d for d in domain if "caches" not in d))
        == []
    )


def test_sim_loads_nothing_that_touches_the_system() -> None:
    script = """
import importlib, json, pkgutil, sys
import skycache.sim
for m in pkgutil.iter_modules(skycache.sim.__path__):
    importlib.import_module("skycache.sim." + m.name)
print(json.dumps(sorted(k for k in sys.modules if k.startswith("skycache"))))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    system = ("skycache.runner", "skycache.agent", "skycache.plan", "skycache.state", "skycache.storage",
              "skycache.net", "skycache.lab", "skycache.cli", "skycache.bench")  # fmt: skip
    assert [m for m in loaded if m.startswith(system)] == []
    assert "skycache.sim.model" in loaded  # the check saw the model itself


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from skycache import bench\nimport skycache.sim.model\n")
    assert len(violations([bad], ("skycache.bench", "skycache.sim"))) == 2


def _modules_for(argv: list[str]) -> set[str]:
    import subprocess
    import sys

    code = (
        "import sys; sys.argv = ['skycache'] + sys.argv[1:]; import skycache.cli.main; "
        "print('\\n'.join(sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


HEAVY = (
    "pandas",
    "pydantic",
    "matplotlib",
    "simpy",
    "numpy",
    "scipy",
    "pyarrow",
    "skycache.bench",
    "skycache.sim",
)


def test_a_cli_start_imports_only_what_its_verb_uses() -> None:
    """Storage verbs and --version start without any plugin or heavy library; a plugin's verb loads
    that plugin, not the others (a fresh import costs seconds inside the lab under TCG)."""
    for argv in (["repo", "list"], ["disk", "--help"], ["--version"], ["teardown", "--help"]):
        loaded = _modules_for(argv)
        assert not [m for m in loaded if m.startswith(HEAVY)], (
            argv,
            sorted(m for m in loaded if m.startswith(HEAVY)),
        )
    # A plugin registers its verbs without importing their implementation (schemas, tables, models).
    implementation = ("pandas", "pydantic", "matplotlib", "simpy", "numpy", "rich")
    for plugin, other in (("bench", "skycache.sim"), ("sim", "skycache.bench")):
        loaded = _modules_for([plugin, "--help-never-parsed"])
        assert f"skycache.{plugin}.cli" in loaded
        assert not [m for m in loaded if m.startswith((other, *implementation))], (
            plugin,
            sorted(m for m in loaded if m.startswith((other, *implementation))),
        )
