"""Peak memory of the sweep stages' gathering process, for two unit counts side by side.

Usage: python benchmarks/sweep_memory.py [--units 64,256] [--tuning data/tuning.h5] [--params params.yaml]
Needs the default pipeline's data/tuning.h5 and data/segmenter.pt (`dvc repro tune_units train_segmenter`).

The stages quantify_parts and quantify_motion get their results one block of units at a
time (from Dask workers, or computed in their own process) and gather them into the
output tables. This benchmark isolates that gathering: it computes the real blocks of the
first max(--units) units once, with the params' options (`QuantifyBlocks`/`MotionBlocks`,
the workers' code), saves each block's result, then for every unit count and both
gathers starts a fresh process that reads the blocks back one at a time (as
`map_blocks` hands them over) and gathers them:

- in-memory: the previous stages' way (every block's tables kept, concatenated and
  filtered at the end, `to_parquet`, agreement from the whole table);
- streaming: what the stages run now (`write_quantified`, `write_motion`).

It prints each process's peak RSS during the gather (VmHWM, reset just before it) and its
rise over the process's RSS at that point (the imports: torch, pandas, pyarrow), and the
ratios between the two unit counts. Flat memory: a ratio near 1 for the streaming gather. Prints figures only.
"""

from __future__ import annotations

import argparse
import math
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    """Start the peak RSS afresh at the current RSS (Linux >= 4.0), so the import of torch
    and the rest does not count. getrusage's ru_maxrss would not do: it survives exec, so a
    child started by a process that once held more reports its parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then VmHWM also covers the imports


def _gather(stage: str, mode: str, units: int, blocks_dir: Path, out_dir: Path, params: Path) -> None:
    """One fresh process: gather the saved blocks of the first `units` units; print its memory."""
    import json

    from linkstyle.core import cli
    from linkstyle.measure import quantify as q
    from linkstyle.measure import quantify_motion as qm

    meta = json.loads((blocks_dir / "meta.json").read_text())
    per = meta[stage]["units_per_block"]
    files = sorted((blocks_dir / stage).glob("*.pkl"))[: math.ceil(units / per)]

    def results():
        for f in files:
            with open(f, "rb") as fh:
                yield pickle.load(fh)

    import gc

    gc.collect()
    _reset_peak()
    before = _status_mb("VmRSS")
    t = time.perf_counter()
    if stage == "quantify_parts":
        cfg = cli.section(params, "quantify_parts", q.QuantifyConfig)
        T = meta["T"]
        if mode == "in-memory":
            measures, changes = q._gather(results(), T, cfg)
            measures.to_parquet(out_dir / "m.parquet", index=False)
            changes.to_parquet(out_dir / "c.parquet", index=False)
            q.ground_truth_agreement(changes)
            rows = len(measures) + len(changes)
        else:
            s = q.write_quantified(results(), T, cfg, out_dir / "m.parquet", out_dir / "c.parquet")
            rows = s["n_measure_rows"] + s["n_change_rows"]
    else:
        cfg = cli.section(params, "quantify_motion", qm.QuantifyMotionConfig)
        names, n_pairs = tuple(meta["names"]), units * meta["S"]
        if mode == "in-memory":
            table, _ = qm._gather_motion(results(), names, cfg, n_pairs)
            table.to_parquet(out_dir / "motion.parquet", index=False)
            rows = len(table)
        else:
            rows = qm.write_motion(results(), names, cfg, n_pairs, out_dir / "motion.parquet")["n_rows"]
    print(json.dumps({"before": before, "peak": _status_mb("VmHWM"), "rows": rows, "seconds": time.perf_counter() - t}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", default="64,256", help="comma-separated unit counts (multiples of units_per_block)")
    ap.add_argument("--tuning", type=Path, default=Path("data/tuning.h5"))
    ap.add_argument("--segmenter", type=Path, default=Path("data/segmenter.pt"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--stages", default="quantify_parts,quantify_motion")
    ap.add_argument("--blocks", type=Path, default=None,
                    help="keep the computed blocks in this folder and reuse them on the next run")
    ap.add_argument("--gather", nargs=4, help=argparse.SUPPRESS)  # internal: stage mode units blocks_dir
    a = ap.parse_args()
    if a.gather:
        stage, mode, units, blocks = a.gather
        with tempfile.TemporaryDirectory() as out:
            _gather(stage, mode, int(units), Path(blocks), Path(out), a.params)
        return

    import json

    import h5py

    from linkstyle.core import cli
    from linkstyle.measure.quantify import QuantifyBlocks, QuantifyConfig
    from linkstyle.measure.quantify_motion import MotionBlocks, QuantifyMotionConfig
    from linkstyle.models.registry import GeneratorSpec

    counts = [int(x) for x in a.units.split(",")]
    stages = [s for s in a.stages.split(",") if s]
    spec = cli.section(a.params, "models.generator", GeneratorSpec)
    with h5py.File(a.tuning, "r") as f:
        U, S, T = f["renders"].shape[:3]
    if max(counts) > U:
        sys.exit(f"error: {a.tuning} has {U} units, fewer than {max(counts)}")
    tasks = {"quantify_parts": QuantifyBlocks(str(a.tuning), spec, str(a.segmenter),
                                              cli.section(a.params, "quantify_parts", QuantifyConfig)),
             "quantify_motion": MotionBlocks(str(a.tuning), spec, str(a.segmenter),
                                             cli.section(a.params, "quantify_motion", QuantifyMotionConfig))}
    with tempfile.TemporaryDirectory() as tmp:
        d = a.blocks or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").is_file() else {}
        meta.update({"S": int(S), "T": int(T)})
        for stage in stages:
            task = tasks[stage]
            per = task.cfg.units_per_block
            bad = [c for c in counts if c % per]
            if bad:
                sys.exit(f"error: --units {bad} are not multiples of {stage}.units_per_block = {per}")
            if meta.get(stage, {}).get("units", 0) >= max(counts) and meta[stage]["units_per_block"] == per:
                continue  # computed on an earlier run (--blocks)
            state = task.load()
            meta["names"] = list(state[1].label_names)
            meta[stage] = {"units_per_block": per, "units": max(counts)}
            (d / stage).mkdir(exist_ok=True)
            t = time.perf_counter()
            for i, a0 in enumerate(range(0, max(counts), per)):
                with open(d / stage / f"{i:05d}.pkl", "wb") as fh:
                    pickle.dump(task.run(state, (a0, a0 + per)), fh, protocol=pickle.HIGHEST_PROTOCOL)
            print(f"{stage}: computed the blocks of {max(counts)} units in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr)
            del state
            (d / "meta.json").write_text(json.dumps(meta))
        rows = []
        for stage in stages:
            for mode in ("in-memory", "streaming"):
                res = []
                for c in counts:
                    out = subprocess.run([sys.executable, __file__, "--params", str(a.params), "--gather", stage,
                                          mode, str(c), str(d)], capture_output=True, text=True, check=True)
                    res.append(json.loads(out.stdout.strip().splitlines()[-1]))
                rows.append((stage, mode, res))
    print(f"peak RSS of the gathering process during the gather (MiB; in brackets its rise over the RSS before it, and the rows written), "
          f"blocks of the first {' / '.join(map(str, counts))} units x {S} seeds x {T} steps of {a.tuning}:")
    head = "  ".join(f"{c:>5d} units (rows)" .rjust(26) for c in counts)
    print(f"  {'stage':16s} {'gather':10s} {head}  ratio peak (rise) {counts[-1]}/{counts[0]}")
    for stage, mode, res in rows:
        cells = "  ".join(f"{r['peak']:7.0f} (+{r['peak'] - r['before']:5.0f}) ({r['rows']:>8,d})".rjust(26) for r in res)
        first, last = res[0], res[-1]
        rise0, rise1 = first["peak"] - first["before"], last["peak"] - last["before"]
        print(f"  {stage:16s} {mode:10s} {cells}  {last['peak'] / first['peak']:5.2f} "
              f"({rise1 / max(rise0, 1e-9):5.2f})")


if __name__ == "__main__":
    from linkstyle.core.errors import UserError

    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
