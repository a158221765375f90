"""Blocks of work on Dask distributed, gathered in order by one writer.

A stage cuts its heavy work into blocks (e.g. 16 units of the sweep), describes it as a
`BlockTask` (plain, picklable fields: paths, model specs, configs) and iterates
`map_blocks(task, blocks, cfg)`: results come back in block order whatever worker
computed them, so the caller writes them as a stream and the output does not depend on
the number of workers. At most `2 x workers` blocks are in flight, so memory stays flat
in the number of blocks.

- `cluster.scheduler` set: work goes to that running scheduler (a lab's SLURM workers via
  dask-jobqueue, see docs/scale-and-share.md); otherwise a local cluster of `n_workers` processes
  (0 = run in this process, no Dask; -1 = as many as the cores allow).
- Each worker process loads the task's models once (`BlockTask.load`), not per block.
- A worker that dies mid-block (killed, out of memory) is replaced by its nanny and the
  scheduler reruns its block elsewhere; results are the same bytes.
- Torch threads per worker: `threads_per_worker`. workers x threads should not exceed
  the cores: two 2-thread torch processes on 2 cores were 2x slower than two 1-thread ones.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from tqdm.auto import tqdm

from linkstyle.core.config import check
from linkstyle.core.errors import UserError

__all__ = ["ClusterConfig", "BlockTask", "map_blocks", "local_workers"]


@dataclass(frozen=True)
class ClusterConfig:
    """Params section `cluster`: where the heavy per-unit blocks run."""

    scheduler: str = ""          # address of a running Dask scheduler, e.g. tcp://node01:8786
    n_workers: int = -1          # local cluster: -1 = cores // threads_per_worker; 0 = in this process
    threads_per_worker: int = 1  # torch threads in each worker
    connect_timeout_s: float = 30.0

    def __post_init__(self):
        check(self.n_workers >= -1, "n_workers", f"must be >= 0, or -1 for the machine's cores, got {self.n_workers}")
        check(self.threads_per_worker >= 1, "threads_per_worker", f"must be >= 1, got {self.threads_per_worker}")
        check(self.connect_timeout_s > 0, "connect_timeout_s", "must be > 0")
        check(not self.scheduler or "://" in self.scheduler, "scheduler",
              f"must be an address such as tcp://host:8786, or empty for a local cluster, got {self.scheduler!r}")


class BlockTask:
    """Work on blocks. Subclasses are frozen dataclasses of plain fields (they travel to the
    workers), implement `load()` (models etc., once per worker process) and `run(state, block)`."""

    def cache_key(self) -> Any:
        """What identifies the loaded state in a worker; a task with array fields overrides it."""
        return self

    def load(self) -> Any:
        return None

    def run(self, state: Any, block: Any) -> Any:
        raise NotImplementedError


def local_workers(cfg: ClusterConfig) -> int:
    """Workers of a local cluster: as configured, or as many as the cores allow, and never more.

    More local workers than the cores allow are capped there with a one-line warning rather than
    rejected: results do not depend on the number of workers, so a params.yaml written for a
    larger machine still runs (the same bytes) on a smaller one, while every extra process only
    loads the models again and competes for the same cores (1000 would start 1000 processes).
    With `cluster.scheduler` set the workers are the scheduler's, so the number is left alone.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    most = max(1, cores // cfg.threads_per_worker)
    if cfg.n_workers < 0:
        return most
    if cfg.n_workers > most and not cfg.scheduler:
        print(f"warning: cluster.n_workers: {cfg.n_workers} workers x {cfg.threads_per_worker} threads exceed the "
              f"{cores} cores here; using {most} (set n_workers: -1 to fit the machine)", file=sys.stderr)
        return most
    return cfg.n_workers


# One task state per worker process: the models stay loaded across blocks.
_STATE: dict = {}


def _set_threads(n: int) -> None:
    import torch

    # Also what `runtime.cpu_threads` reports, so thread pools sized from it (DIS flow,
    # joblib) keep to the worker's share of the cores.
    os.environ["LINKSTYLE_THREADS"] = str(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _execute(task: BlockTask, block: Any, threads: int) -> Any:
    key = task.cache_key()
    _set_threads(threads)
    if key not in _STATE:
        _STATE.clear()  # a new task (another stage in a long-lived worker): free the old models
        _STATE[key] = task.load()
    _set_threads(threads)  # after load: resolving a device also sets the thread count
    return task.run(_STATE[key], block)


def _client(cfg: ClusterConfig, n_workers: int):
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        try:
            return Client(cfg.scheduler, timeout=cfg.connect_timeout_s), None
        except (OSError, TimeoutError) as e:
            raise UserError(f"cluster.scheduler: cannot reach {cfg.scheduler} ({type(e).__name__}); start the "
                            "scheduler and workers (docs/scale-and-share.md) or leave it empty for a local cluster") from None
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.CRITICAL)  # a block's UserError reaches the stage as one line
    return Client(cluster), cluster


def map_blocks(task: BlockTask, blocks: Sequence[Any], cfg: ClusterConfig, *, sizes: Sequence[int] | None = None,
               desc: str = "blocks", unit: str = "block", progress: bool = True) -> Iterator[Any]:
    """Results of `task.run` for every block, in block order. `sizes` (e.g. images per block)
    drive the progress bar's rate and ETA."""
    sizes = list(sizes) if sizes is not None else [1] * len(blocks)
    if len(sizes) != len(blocks):
        raise ValueError("map_blocks: one size per block")
    bar = tqdm(total=sum(sizes), desc=desc, unit=unit, disable=not progress, smoothing=0.1)
    n_workers = local_workers(cfg)
    try:
        if not cfg.scheduler and n_workers == 0:
            import torch

            # In this process: the worker's thread settings for the blocks, then the caller's back.
            env, threads = os.environ.get("LINKSTYLE_THREADS"), torch.get_num_threads()
            try:
                _set_threads(cfg.threads_per_worker)
                state = task.load()
                _set_threads(cfg.threads_per_worker)
                for b, n in zip(blocks, sizes):
                    yield task.run(state, b)
                    bar.update(n)
            finally:
                torch.set_num_threads(threads)
                if env is None:
                    os.environ.pop("LINKSTYLE_THREADS", None)
                else:
                    os.environ["LINKSTYLE_THREADS"] = env
            return
        client, cluster = _client(cfg, n_workers)
        try:
            window = 2 * max(1, len(client.scheduler_info().get("workers", {})) or n_workers)
            futures: deque = deque()
            nxt = 0
            for i in range(len(blocks)):
                while nxt < len(blocks) and nxt - i < window:
                    futures.append(client.submit(_execute, task, blocks[nxt], cfg.threads_per_worker, pure=False))
                    nxt += 1
                fut = futures.popleft()
                res = fut.result()
                fut.release()
                yield res
                bar.update(sizes[i])
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    finally:
        bar.close()
