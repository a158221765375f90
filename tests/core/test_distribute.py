"""Blocks on Dask: same results in process, on 1 and on 2 workers; a killed worker's block reruns."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from linkstyle.core.config import from_params
from linkstyle.core.distribute import BlockTask, ClusterConfig, local_workers, map_blocks
from linkstyle.core.errors import UserError

cloudpickle = pytest.importorskip("cloudpickle")
pytest.importorskip("distributed")
# Worker processes cannot import this test module: ship its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class Noise(BlockTask):
    """Each block: a seeded random matrix through a torch matmul (threads matter for floats)."""
    log_dir: str
    kill_block: int = -1

    def load(self):
        import torch

        Path(self.log_dir, f"load-{os.getpid()}").write_text("")
        torch.manual_seed(0)
        return torch.randn(64, 64, dtype=torch.float64)

    def run(self, state, block):
        import torch

        marker = Path(self.log_dir, "killed")
        if block == self.kill_block and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-block
        g = torch.Generator().manual_seed(1000 + block)
        x = torch.randn(32, 64, generator=g, dtype=torch.float64)
        return block, (x @ state).numpy()


def _all(task, cfg, n=8):
    return list(map_blocks(task, list(range(n)), cfg, progress=False))


def _same(a, b):
    assert [k for k, _ in a] == [k for k, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert np.array_equal(x, y)


def test_in_process_one_and_two_workers_give_identical_results_in_order(tmp_path):
    task = Noise(str(tmp_path))
    here = _all(task, ClusterConfig(n_workers=0))
    assert [k for k, _ in here] == list(range(8))
    _same(here, _all(task, ClusterConfig(n_workers=1)))
    _same(here, _all(task, ClusterConfig(n_workers=2)))


def test_models_load_once_per_worker(tmp_path):
    task = Noise(str(tmp_path))
    _all(task, ClusterConfig(n_workers=2), n=12)
    assert 1 <= len(list(tmp_path.glob("load-*"))) <= 2


def test_a_killed_worker_has_its_block_rerun(tmp_path):
    want = _all(Noise(str(tmp_path / "a")), ClusterConfig(n_workers=0)) if (tmp_path / "a").mkdir() is None else None
    (tmp_path / "b").mkdir()
    got = _all(Noise(str(tmp_path / "b"), kill_block=3), ClusterConfig(n_workers=2))
    assert (tmp_path / "b" / "killed").exists()  # it did die
    _same(want, got)


def test_errors_of_a_block_reach_the_caller(tmp_path):
    @dataclass(frozen=True)
    class Bad(BlockTask):
        def run(self, state, block):
            raise UserError("data/x.h5: broken block; rerun stage y")

    with pytest.raises(UserError, match="broken block"):
        _all(Bad(), ClusterConfig(n_workers=1), n=2)


def test_config_errors_are_one_line():
    for bad, msg in (({"n_workers": -2}, "cluster.n_workers must be >= 0"),
                     ({"threads_per_worker": 0}, "threads_per_worker must be >= 1"),
                     ({"scheduler": "node01:8786"}, "cluster.scheduler must be an address")):
        with pytest.raises(UserError, match=msg):
            from_params(ClusterConfig, bad, "cluster", source="params.yaml")


def test_unreachable_scheduler_is_one_line_error():
    cfg = ClusterConfig(scheduler="tcp://127.0.0.1:9", connect_timeout_s=2)
    with pytest.raises(UserError, match="cluster.scheduler: cannot reach tcp://127.0.0.1:9"):
        _all(Noise("/nonexistent"), cfg, n=1)


def test_local_workers_fill_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert local_workers(ClusterConfig(n_workers=-1, threads_per_worker=1)) == cores
    assert local_workers(ClusterConfig(n_workers=-1, threads_per_worker=cores)) == 1
    assert local_workers(ClusterConfig(n_workers=min(3, cores))) == min(3, cores)


def test_local_workers_beyond_the_cores_are_capped_with_a_warning(capsys):
    cores = len(os.sched_getaffinity(0))
    assert local_workers(ClusterConfig(n_workers=1000)) == cores
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: cluster.n_workers: 1000 workers") and f"using {cores}" in err[0]
    assert local_workers(ClusterConfig(n_workers=1000, threads_per_worker=cores + 1)) == 1
    assert local_workers(ClusterConfig(n_workers=1000, scheduler="tcp://host:8786")) == 1000  # the scheduler's workers
