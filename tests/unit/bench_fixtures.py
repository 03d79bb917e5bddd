"""Synthetic run directories made from recorded real fio JSON with chosen IOPS (for unit tests)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from skycache.bench import store, tidy

DATA = Path(__file__).parent / "data" / "bench"

# One local file image and two 1-second buffered fio jobs: the smallest real run on the host,
# shared by the host-mode and hosts-mode (fio client/server) scenario tests.
TINY_FILE_STACK_AND_JOBS = """
[[stacks]]
name = "file-local"
backend = "file"
[[workloads]]
name = "randread"
rw = "randread"
size = "8M"
runtime_s = 1
ioengine = "psync"
direct = false
[[workloads]]
name = "randwrite"
rw = "randwrite"
size = "8M"
runtime_s = 1
ioengine = "psync"
direct = false
"""


def fio_json(iops: float, lat_ns: float) -> str:
    doc = json.loads((DATA / "randrw.json").read_text())
    job = doc["jobs"][0]
    for d in ("read", "write"):
        job[d]["iops"] = iops
        job[d]["bw_bytes"] = iops * 4096
        job[d]["lat_ns"]["mean"] = lat_ns
    return json.dumps(doc)


def manifest(
    scenario: str, run_id: str, *, stacks: Sequence[str] = ("c",), **environment: object
) -> dict[str, object]:
    """A manifest with every fact bench compare checks (``environment`` overrides some)."""
    return {
        "scenario": scenario,
        "run_id": run_id,
        "environment": {
            "where": "test",
            "accel": "tcg",
            "kernel": "6.1.0-56-amd64",
            "lab_kernel": "6.1.0-56-amd64",
            "fio_version": "fio-3.33",
            **environment,
        },
        "stacks": {s: "lvm image, over iSCSI" for s in stacks},
        "workloads": {"randrw": {"name": "randrw", "rw": "randrw", "bs": "4k", "iodepth": 1}},
        "image_size": "32M",
        "shaping": {"name": "none", "detail": "(no tc shaping)"},
    }


def make_run(
    root: Path,
    conditions: Mapping[str, Sequence[float]],
    *,
    scenario: str = "synthetic",
    run_id: str | None = None,
    failed: Sequence[str] = (),
    stack_of: Mapping[str, str] | None = None,
) -> Path:
    """A run with one condition per key; each value lists the IOPS of its repetitions."""
    run = store.RunDir.create(root, scenario, run_id)
    run.write_manifest(
        manifest(scenario, run.run_id, stacks=sorted({(stack_of or {}).get(c, c) for c in conditions}))
    )
    for label, reps in conditions.items():
        stack = (stack_of or {}).get(label, label)
        for i, iops in enumerate(reps, 1):
            d = run.fio_dir(i, store.target_name(label), "4k")
            p = run.write_new(d / "randrw-1-1.json", fio_json(iops, 1e9 / iops))
            run.append_record(
                {
                    "scenario": scenario,
                    "run_id": run.run_id,
                    "condition": f"stack={stack}",
                    "label": label,
                    "rep": i,
                    "phase": "measure",
                    "status": "ok",
                    "json": run.rel(p),
                    "factors": {"stack": stack, "workload": "randrw", "cache_state": "cold"},
                    "stack_attrs": {"backend": "lvm"},
                    "cache": [
                        {
                            "t": float(i),
                            "label": label,
                            "role": "read",
                            "hits": i * 10,
                            "misses": 1,
                            "dirty": 0,
                        }
                    ],
                }
            )
    for label in failed:
        run.append_record(
            {"scenario": scenario, "run_id": run.run_id, "condition": f"stack={label}", "label": label,
             "rep": 1, "phase": "measure", "status": "failed", "error": "boom: iSCSI login refused",
             "factors": {"stack": label, "workload": "randrw", "cache_state": "cold"}}
        )  # fmt: skip
    tidy.write(run, tidy.build(run))
    return run.path


JSONPLUS = DATA / "jsonplus"


def make_jsonplus_run(root: Path, *, run_id: str = "jsonplus") -> Path:
    """A run directory around the recorded json+ output of jsonplus/run (three repetitions of one
    condition, fio 3.33 on the host, with bins and logs): what `bench run` writes since json+."""
    import shutil

    run = store.RunDir.create(root, "recorded", run_id)
    run.write_manifest({"scenario": "recorded", "run_id": run.run_id, "environment": {"where": "host"}})
    shutil.copytree(JSONPLUS / "run" / "fio", run.path / "fio")
    label = "file-local/randread/cold"
    for rep in (1, 2, 3):
        json_path = run.path / f"fio/rep-{rep}/file-local/4k/randread-4-1.json"
        run.append_record(
            {"scenario": "recorded", "run_id": run.run_id, "condition": "stack=file-local", "label": label,
             "rep": rep, "phase": "measure", "status": "ok", "json": run.rel(json_path),
             "factors": {"stack": "file-local", "workload": "randread", "cache_state": "cold"},
             "stack_attrs": {"backend": "file"},
             "cache": [{"t": 10.0 * rep + dt, "label": label, "role": "read", "rep": rep, "hits": h,
                        "misses": 1, "dirty": 0} for dt, h in ((0.0, 0), (2.0, 50 * rep))]}
        )  # fmt: skip
    tidy.write(run, tidy.build(run))
    return run.path
