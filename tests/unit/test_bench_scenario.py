"""Scenario files: validation (one-line errors naming file, key, problem) and factor expansion."""

from __future__ import annotations

from pathlib import Path

import pytest

from skycache.bench import scenario
from skycache.errors import InvalidInput

PROFILES = ("none", "gbe-2009", "10gbe")

BASE = """
name = "t"
repetitions = 2
[[stacks]]
name = "lvm-iscsi"
backend = "lvm"
transport = "iscsi"
[[stacks]]
name = "lvm-iscsi-rc"
backend = "lvm"
transport = "iscsi"
read_cache = "64M"
[[workloads]]
name = "randread"
rw = "randread"
[[workloads]]
name = "randwrite"
rw = "randwrite"
"""


def load(tmp_path: Path, text: str) -> scenario.Scenario:
    f = tmp_path / "s.toml"
    f.write_text(text)
    return scenario.load(f, profiles=PROFILES)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(InvalidInput) as exc:
        load(tmp_path, text)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(str(tmp_path / "s.toml"))
    return msg


def test_product_of_factors(tmp_path: Path) -> None:
    sc = load(tmp_path, BASE + '[factors]\ncache_state = ["cold", "warm"]\n')
    assert len(sc.conditions) == 2 * 2 * 2
    assert sc.runs == 16
    labels = [c.label for c in sc.conditions]
    assert labels[0] == "lvm-iscsi/randread/cold"
    assert len(set(labels)) == len(labels)
    warm = [c for c in sc.conditions if c.cache_state == "warm"]
    assert len(warm) == 4


def test_excludes_remove_matching_conditions(tmp_path: Path) -> None:
    text = (
        BASE
        + """
[factors]
cache_state = ["cold", "warm"]
[[exclude]]
stack = "lvm-iscsi"
cache_state = "warm"
[[exclude]]
workload = "randwrite"
cache_state = ["warm"]
"""
    )
    sc = load(tmp_path, text)
    ids = {c.id for c in sc.conditions}
    assert "stack=lvm-iscsi,workload=randread,cache_state=warm" not in ids
    assert "stack=lvm-iscsi-rc,workload=randread,cache_state=warm" in ids
    assert len(sc.conditions) == 8 - 2 - 1


def test_fio_factor_overrides_workload(tmp_path: Path) -> None:
    sc = load(
        tmp_path, BASE + '[factors]\nstack = ["lvm-iscsi"]\nworkload = ["randread"]\niodepth = [1, 16]\n'
    )
    assert [c.workload.iodepth for c in sc.conditions] == [1, 16]
    assert [c.label for c in sc.conditions] == ["iodepth=1", "iodepth=16"]
    # every factor is kept for the tidy table, also the constant ones
    assert dict(sc.conditions[0].factors) == {"stack": "lvm-iscsi", "workload": "randread", "iodepth": 1}


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    msg = error(
        tmp_path,
        BASE.replace(
            'backend = "lvm"\ntransport = "iscsi"\n[[stacks]]',
            'backend = "lvm"\ncolour = 1\ntransport = "iscsi"\n[[stacks]]',
            1,
        ),
    )
    assert "stacks[0].colour" in msg and "unknown key" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = error(tmp_path, BASE + "repetition = 3\n")
    assert "repetition: unknown key" in msg


def test_wrong_type(tmp_path: Path) -> None:
    msg = error(tmp_path, BASE.replace("repetitions = 2", 'repetitions = "many"'))
    assert "repetitions" in msg and "integer" in msg


def test_wrong_enum(tmp_path: Path) -> None:
    msg = error(tmp_path, BASE.replace('backend = "lvm"', 'backend = "zfs"', 1))
    assert "stacks[0].backend" in msg and "'file' or 'lvm'" in msg


def test_bad_size(tmp_path: Path) -> None:
    msg = error(tmp_path, BASE.replace('read_cache = "64M"', 'read_cache = "lots"'))
    assert "stacks[1].read_cache" in msg and "'lots'" in msg


def test_impossible_combination_cache_on_local(tmp_path: Path) -> None:
    msg = error(tmp_path, BASE.replace('transport = "iscsi"\nread_cache', 'transport = "local"\nread_cache'))
    assert "stacks[1]" in msg and "transport = 'iscsi'" in msg


def test_impossible_combination_file_thin(tmp_path: Path) -> None:
    msg = error(
        tmp_path,
        BASE.replace(
            'backend = "lvm"\ntransport = "iscsi"\n[[stacks]]',
            'backend = "file"\ncow = "thin"\ntransport = "iscsi"\n[[stacks]]',
            1,
        ),
    )
    assert "cow = 'thin' needs backend = 'lvm'" in msg


def test_engine_without_cache(tmp_path: Path) -> None:
    msg = error(tmp_path, BASE.replace('read_cache = "64M"', 'write_engine = "dmcache"'))
    assert "write_engine is set but write_cache is not" in msg


def test_missing_job_file(tmp_path: Path) -> None:
    text = BASE + '[[workloads]]\nname = "custom"\njob_file = "nothere.fio"\n'
    msg = error(tmp_path, text)
    assert "workloads[2].job_file" in msg and "nothere.fio" in msg


def test_job_file_found_relative_to_scenario(tmp_path: Path) -> None:
    (tmp_path / "my.fio").write_text("[j]\nrw=randread\n")
    sc = load(
        tmp_path,
        BASE + '[[workloads]]\nname = "custom"\njob_file = "my.fio"\n[factors]\nworkload = ["custom"]\n',
    )
    assert sc.conditions[0].workload.job_file == "my.fio"


def test_rw_and_job_file_exclusive(tmp_path: Path) -> None:
    (tmp_path / "my.fio").write_text("[j]\nrw=randread\n")
    msg = error(tmp_path, BASE + '[[workloads]]\nname = "c"\nrw = "read"\njob_file = "my.fio"\n')
    assert "not both" in msg


def test_unknown_factor_and_level(tmp_path: Path) -> None:
    assert "factors.colour: unknown factor" in error(tmp_path, BASE + '[factors]\ncolour = ["red"]\n')
    assert "'nope' is not a stack" in error(tmp_path, BASE + '[factors]\nstack = ["nope"]\n')
    assert "must be 'cold' or 'warm'" in error(tmp_path, BASE + '[factors]\ncache_state = ["hot"]\n')
    assert "positive integer" in error(tmp_path, BASE + "[factors]\niodepth = [0]\n")


def test_exclude_errors(tmp_path: Path) -> None:
    assert "exclude[0].colour: not a factor" in error(tmp_path, BASE + '[[exclude]]\ncolour = "x"\n')
    assert "'zzz' is not a level" in error(tmp_path, BASE + '[[exclude]]\nstack = "zzz"\n')
    text = BASE + '[factors]\nstack = ["lvm-iscsi"]\n[[exclude]]\nstack = "lvm-iscsi"\n'
    assert "remove every condition" in error(tmp_path, text)


def test_unknown_shaping_profile(tmp_path: Path) -> None:
    msg = error(tmp_path, 'shaping = "dialup"\n' + BASE)
    assert "shaping: unknown profile 'dialup'" in msg


def test_duplicate_names_and_missing_sections(tmp_path: Path) -> None:
    assert "duplicate name 'randread'" in error(
        tmp_path, BASE + '[[workloads]]\nname = "randread"\nrw = "read"\n'
    )
    assert "stacks: required key is missing" in error(
        tmp_path, 'name = "x"\n[[workloads]]\nname = "w"\nrw = "read"\n'
    )


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in error(tmp_path, "name = \n")
    with pytest.raises(InvalidInput, match="scenario file not found"):
        scenario.load(tmp_path / "absent.toml", profiles=PROFILES)


def test_hosts_needs_host_list(tmp_path: Path) -> None:
    assert "needs a list of fio server hosts" in error(tmp_path, 'where = "hosts"\n' + BASE)


def test_baseline_must_name_a_level(tmp_path: Path) -> None:
    assert "baseline" in error(tmp_path, 'baseline = "stack=nope"\n' + BASE)
    sc = load(tmp_path, 'baseline = "stack=lvm-iscsi"\n' + BASE)
    assert sc.model.baseline == "stack=lvm-iscsi"


@pytest.mark.parametrize("name", ["quickstart", "testbed-2009", "cow-engines", "regression"])
def test_shipped_scenarios_are_valid(name: str) -> None:
    path = Path(__file__).resolve().parents[2] / "scenarios" / f"{name}.toml"
    sc = scenario.load(path, profiles=PROFILES)
    assert sc.conditions
