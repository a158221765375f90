"""Streaming gather of the sweep stages (linkstyle.core.stream, write_quantified, write_motion):
the same tables and statistics as the in-memory gather, and memory bounded by construction
(one block held at a time, the parquet buffer under one row group, map_blocks' window)."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from linkstyle.core import distribute
from linkstyle.core.distribute import BlockTask, ClusterConfig, map_blocks
from linkstyle.core.stream import Moments, Spool, TableWriter, read_row_groups
from linkstyle.measure.quantify import (
    QuantifyConfig,
    _block_keys,
    _block_tables,
    _gather,
    ground_truth_agreement,
    write_quantified,
)

NAMES = ("background", "body", "head", "tail")
S, T, H = 3, 3, 24


def _frame(rng, n, start=0):
    return pd.DataFrame({"source": np.where(rng.random(n) < 0.5, "segmenter", "ground_truth").astype(object),
                         "unit": np.arange(start, start + n), "part": np.array(["a", "bb", "c"], object)[np.arange(n) % 3],
                         "value": rng.normal(size=n)})


@pytest.mark.parametrize("sizes", [[5, 17, 1, 40, 3], [30], [12, 0, 5], [0, 0]])
def test_table_writer_is_to_parquet_in_fixed_row_groups(tmp_path, sizes):
    rng = np.random.default_rng(0)
    frames, start = [], 0
    for n in sizes:  # empty frames typed as a filter leaves them (pandas' concat makes untyped ones object)
        frames.append(_frame(rng, max(n, 1), start).iloc[:n])
        start += n
    whole = pd.concat(frames, ignore_index=True)
    with TableWriter(tmp_path / "t.parquet", row_group_rows=16) as w:
        for f in frames:
            w.write(f)
            assert w.buffered < 16  # never more than one row group in memory
    assert w.rows == len(whole)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), whole)
    if len(whole) > 16:
        whole.to_parquet(tmp_path / "ref.parquet", index=False, row_group_size=16)
        assert [pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(i).num_rows
                for i in range(w.row_groups)][:-1] == [16] * (w.row_groups - 1)
    else:
        whole.to_parquet(tmp_path / "ref.parquet", index=False)  # one row group: plain to_parquet
    assert (tmp_path / "t.parquet").read_bytes() == (tmp_path / "ref.parquet").read_bytes()
    back = pd.concat(list(read_row_groups(tmp_path / "t.parquet", columns=["unit"])), ignore_index=True)
    assert back["unit"].tolist() == whole["unit"].tolist()


def test_moments_merge_chunks_to_corrcoef_and_spool_keeps_order(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=1000) * 1e3 + 5e6  # a large mean: naive sums of squares would cancel
    y = 0.3 * x + rng.normal(size=1000) * 300
    mom = Moments()
    with Spool(tmp_path / "out.parquet") as spool:
        for a in np.array_split(np.arange(1000), [3, 4, 500, 777]):
            mom.add(x[a], y[a])
            spool.append("x", x[a])
        assert np.array_equal(spool.read("x"), x) and spool.read("absent").size == 0
        assert len(list(tmp_path.iterdir())) == 1
    assert list(tmp_path.iterdir()) == []  # scratch files removed
    assert mom.n == 1000 and mom.pearson() == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)


def _parts_blocks(units_per_block: int, n_units: int = 5, seed: int = 0):
    """quantify_parts blocks on random renders: segmenter masks and ground-truth masks that
    share the big parts (so their changes correlate); 'tail' is tiny in the segmenter's masks
    (dropped there by min_part_area only), NaN area changes where a part is absent at step 0."""
    rng = np.random.default_rng(seed)
    units, seeds, classes = np.arange(n_units) * 3, 100 + np.arange(S), np.arange(S) % 2
    n = n_units * S * T
    images = rng.integers(0, 256, (n, H, H, 3), dtype=np.uint8)
    gt = np.zeros((n, H, H), np.uint8)
    yy, xx = np.mgrid[0:H, 0:H]
    for i in range(n):
        r = 4 + rng.integers(0, 5)
        gt[i][(yy - 12) ** 2 + (xx - 12) ** 2 < r * r] = 1
        gt[i, 2:2 + rng.integers(0, 6), 2:9] = 2
        gt[i, 18:22, 14:14 + rng.integers(1, 9)] = 3
    seg = gt.copy()
    flip = rng.random(seg.shape) < 0.05
    seg[flip] = rng.integers(0, 3, flip.sum())
    seg[seg == 3] = 0
    seg[np.arange(0, n, 2), 20, 20] = 3  # a one-pixel tail in half the images
    cfg = QuantifyConfig(min_part_area=6.0, units_per_block=units_per_block, min_region_px=2)
    blocks = []
    for a in range(0, n_units, units_per_block):
        b = min(n_units, a + units_per_block)
        sl = slice(a * S * T, b * S * T)
        keys = _block_keys(units, seeds, classes, a, b, T)
        blocks.append([tuple(df.assign(source=src) for df in _block_tables(images[sl], m[sl], keys, NAMES, cfg, T))
                       for src, m in (("segmenter", seg), ("ground_truth", gt))])
    return blocks, cfg


@pytest.mark.parametrize("units_per_block", [1, 2, 5])
def test_streamed_quantify_tables_and_agreement_equal_the_in_memory_ones(tmp_path, units_per_block):
    blocks, cfg = _parts_blocks(units_per_block)
    measures, changes = _gather(iter(blocks), T, cfg)
    agree = ground_truth_agreement(changes)
    assert "tail" in set(changes.loc[changes["source"] == "ground_truth", "part"])
    assert "tail" not in set(changes.loc[changes["source"] == "segmenter", "part"])  # the filter differs by source
    assert changes["change"].isna().any() and agree["n_rows"] > 0

    summary = write_quantified(iter(blocks), T, cfg, tmp_path / "m.parquet", tmp_path / "c.parquet", row_group_rows=50)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "m.parquet"), measures)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "c.parquet"), changes)
    # The bytes pandas writes for the in-memory tables in the same row groups.
    measures.to_parquet(tmp_path / "m_ref.parquet", index=False, row_group_size=50)
    changes.to_parquet(tmp_path / "c_ref.parquet", index=False, row_group_size=50)
    assert (tmp_path / "m.parquet").read_bytes() == (tmp_path / "m_ref.parquet").read_bytes()
    assert (tmp_path / "c.parquet").read_bytes() == (tmp_path / "c_ref.parquet").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet", "c_ref.parquet", "m.parquet", "m_ref.parquet"]

    assert summary["n_measure_rows"] == len(measures) and summary["n_change_rows"] == len(changes)
    assert summary["parts_kept"] == sorted(changes["part"].unique().tolist())
    got = summary["segmenter_vs_ground_truth"]
    # Per metric: the same values in the same order, so the same bits; pooled: merged moments.
    assert got["per_metric"] == agree["per_metric"] and got["per_metric_spearman"] == agree["per_metric_spearman"]
    assert got["n_rows"] == agree["n_rows"] and got["pooled_metrics"] == agree["pooled_metrics"]
    for k in ("pooled", "pooled_all"):
        assert got[k] == pytest.approx(agree[k], rel=1e-12, abs=1e-12)


def test_streamed_agreement_does_not_depend_on_the_block_size(tmp_path):
    out = [write_quantified(iter(_parts_blocks(k)[0]), T, _parts_blocks(k)[1], tmp_path / f"m{k}.parquet",
                            tmp_path / f"c{k}.parquet")["segmenter_vs_ground_truth"] for k in (1, 5)]
    assert out[0]["per_metric"] == out[1]["per_metric"] and out[0]["n_rows"] == out[1]["n_rows"]
    a, b = (pd.read_parquet(tmp_path / f"c{k}.parquet") for k in (1, 5))
    key = ["source", "unit", "seed", "part", "metric"]
    pd.testing.assert_frame_equal(a.sort_values(key, ignore_index=True), b.sort_values(key, ignore_index=True))


def test_one_source_only_gives_no_agreement(tmp_path):
    blocks, cfg = _parts_blocks(2)
    blocks = [[pair for pair in b if pair[0]["source"].iloc[0] == "segmenter"] for b in blocks]
    summary = write_quantified(iter(blocks), T, cfg, tmp_path / "m.parquet", tmp_path / "c.parquet")
    assert summary["segmenter_vs_ground_truth"] == {} == ground_truth_agreement(_gather(iter(blocks), T, cfg)[1])


def test_a_failing_block_leaves_no_output_and_no_scratch(tmp_path):
    blocks, cfg = _parts_blocks(1)

    def results():
        yield from blocks[:2]
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        write_quantified(results(), T, cfg, tmp_path / "m.parquet", tmp_path / "c.parquet", row_group_rows=50)
    assert list(tmp_path.iterdir()) == []


class _Tracked(list):
    """A block (list) that can be weakly referenced, to see when the writer lets go of it."""


def test_the_writer_holds_one_block_at_a_time(tmp_path):
    blocks, cfg = _parts_blocks(1)
    refs, alive_at_request = [], []

    def results():
        for b in blocks:
            gc.collect()
            alive_at_request.append(sum(r() is not None for r in refs))
            block = _Tracked(tuple(df.copy() for df in pair) for pair in b)
            refs.append(weakref.ref(block))
            for pair in block:
                refs.extend(weakref.ref(df) for df in pair)
            yield block
            del block

    write_quantified(results(), T, cfg, tmp_path / "m.parquet", tmp_path / "c.parquet", row_group_rows=50)
    per_block = 1 + 2 * len(blocks[0])  # the block and its frames
    # When block k is asked for, nothing of blocks < k-1 is alive, and at most the last
    # pair of frames of block k-1 (the loop's variables until they are rebound).
    assert alive_at_request[0] == 0
    assert max(alive_at_request) <= 2 < per_block


def test_motion_streamed_equals_in_memory_on_synthetic_blocks(tmp_path):
    from linkstyle.measure.motion import IMAGE_METRICS, IMAGE_PART, PART_METRICS
    from linkstyle.measure.quantify_motion import (
        AGREEMENT_KEYS,
        QuantifyMotionConfig,
        _gather_motion,
        write_motion,
    )

    rng = np.random.default_rng(3)
    names = ("background", "body", "head")
    cfg = QuantifyMotionConfig(min_part_area=30.0)

    def block(u0, n_units):
        n = n_units * S
        keys = pd.DataFrame({"unit": np.repeat(np.arange(u0, u0 + n_units), S), "seed": np.tile(np.arange(S), n_units),
                             "class": np.tile(np.arange(S) % 2, n_units)})
        out = {"n": n, "tables": {}, "areas": {}, "agree": {k: [] for k in AGREEMENT_KEYS}}
        base = rng.normal(size=(n, len(names), len(PART_METRICS)))
        image = rng.normal(size=(n, len(IMAGE_METRICS)))
        image[0, 0] = np.nan
        from linkstyle.measure.motion import tidy

        for source, noise, head in (("segmenter", 0.3, 10), ("ground_truth", 0.0, 50)):
            per_part = base + noise * rng.normal(size=base.shape)
            per_part[1, 2, 0] = np.nan
            out["tables"][source] = tidy(image, per_part, names, keys, source)
            out["areas"][source] = np.array([600, 200, head]) * n
        for k, shape in (("shift", (len(names), 2)), ("c_shift", (len(names), 2)), ("resid", (len(names), 2)),
                         ("c_resid", (len(names), 2)), ("flow_affine", (3,)), ("flow_affine_t", (2,)),
                         ("part_affine", (3,)), ("part_affine_t", (2,))):
            out["agree"][k].append(rng.normal(size=(n, *shape)))
        return out

    blocks = [block(0, 2), block(2, 3), block(5, 1)]
    table, summary = _gather_motion(iter(blocks), names, cfg, 6 * S)
    assert "head" not in set(table.loc[table["source"] == "segmenter", "part"])
    assert "head" in set(table.loc[table["source"] == "ground_truth", "part"])
    got = write_motion(iter(blocks), names, cfg, 6 * S, tmp_path / "motion.parquet", row_group_rows=40)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "motion.parquet"), table)
    table.to_parquet(tmp_path / "ref.parquet", index=False, row_group_size=40)
    assert (tmp_path / "motion.parquet").read_bytes() == (tmp_path / "ref.parquet").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motion.parquet", "ref.parquet"]
    a, b = summary.pop("segmenter_vs_ground_truth"), got.pop("segmenter_vs_ground_truth")
    assert got == summary  # image medians, centroid and affine agreement: the same bits
    assert a["per_metric"] == b["per_metric"] and a["per_metric_spearman"] == b["per_metric_spearman"]
    assert a["pooled"] == pytest.approx(b["pooled"], rel=1e-12) and a["n_rows"] == b["n_rows"]
    assert IMAGE_PART not in summary["parts_kept"]["segmenter"]


@dataclasses.dataclass(frozen=True)
class _Echo(BlockTask):
    def run(self, state, block):
        return block


class _Future:
    def __init__(self, client, value):
        self.client, self.value = client, value

    def result(self):
        return self.value

    def release(self):
        self.client.outstanding -= 1


class _Client:
    """A Dask client stand-in: counts the futures submitted and not yet released."""

    def __init__(self):
        self.outstanding = self.most = 0

    def scheduler_info(self):
        return {"workers": {"a": {}, "b": {}}}

    def submit(self, fn, task, block, threads, pure):
        self.outstanding += 1
        self.most = max(self.most, self.outstanding)
        return _Future(self, task.run(None, block))

    def close(self):
        pass


def test_map_blocks_keeps_at_most_its_window_in_flight(monkeypatch):
    client = _Client()
    monkeypatch.setattr(distribute, "_client", lambda cfg, n: (client, None))
    seen = []
    for i, res in enumerate(map_blocks(_Echo(), list(range(20)), ClusterConfig(n_workers=2), progress=False)):
        seen.append(res)
        assert client.outstanding <= 2 * 2  # 2 x workers, whatever the number of blocks
    assert seen == list(range(20)) and client.most == 4 and client.outstanding == 0
