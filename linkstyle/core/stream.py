"""Writing tables and statistics block by block, in memory flat in the number of blocks.

The unit sweep's stages get their results one block of units at a time
(`linkstyle.core.distribute.map_blocks`) and must not hold them all:

- `TableWriter` appends DataFrames to a parquet file in row groups of a fixed number
  of rows (`ROW_GROUP_ROWS`), whatever the blocks' sizes: it buffers at most one row
  group, and the file is the same bytes as pandas' `to_parquet(row_group_size=...)` of
  the whole table (a table of one row group: as plain `to_parquet`).
- `read_row_groups` reads such a file back one row group at a time (a second pass).
- `Spool` appends float64 arrays under names to scratch files, to read back one name
  at a time at the end (statistics that need every value, e.g. ranks).
- `Moments` merges the centred sums of (x, y) chunks (Chan et al.), for a Pearson
  correlation over data never held at once.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from linkstyle.core.io import scratch_path

__all__ = ["ROW_GROUP_ROWS", "TableWriter", "read_row_groups", "Spool", "Moments"]

# Rows per parquet row group. Tables up to this size are the bytes a plain `to_parquet`
# writes; larger ones are cut here rather than at pyarrow's default of 1Mi rows, so the
# writer's buffer (about 80 bytes a row) stays a few MB.
ROW_GROUP_ROWS = 65_536


class TableWriter:
    """Parquet file written frame by frame in row groups of `row_group_rows` rows.

    The schema (and pandas metadata) is the first non-empty frame's; later frames are cast to it.
    Use as a context manager, or call `close()`; `rows` counts the rows written so far
    (buffered included), `buffered` those not yet in a row group.
    """

    def __init__(self, path: str | os.PathLike, row_group_rows: int = ROW_GROUP_ROWS):
        if row_group_rows < 1:
            raise ValueError("row_group_rows must be >= 1")
        self.path, self.row_group_rows = Path(path), int(row_group_rows)
        self.schema = None
        self.rows = self.buffered = self.row_groups = 0
        self._buffer: list = []
        self._writer = None
        self.closed = False
        self._empty = None

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa

        if self.closed:
            raise ValueError(f"{self.path}: written after close")
        if self.schema is None:
            if len(df) == 0:  # an empty object column has no type yet: wait for rows
                self._empty = df
                return
            self.schema = pa.Table.from_pandas(df, preserve_index=False).schema
        table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False)
        self._buffer.append(table)
        self.rows += table.num_rows
        self.buffered += table.num_rows
        while self.buffered >= self.row_group_rows and self.buffered > 0:
            self._flush(self.row_group_rows)

    def _table(self):
        import pyarrow as pa

        return pa.concat_tables(self._buffer).combine_chunks() if self._buffer else self.schema.empty_table()

    def _flush(self, n: int) -> None:
        import pyarrow.parquet as pq

        table = self._table()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema)
        self._writer.write_table(table.slice(0, n), row_group_size=n)
        self.row_groups += 1
        rest = table.slice(n)
        self._buffer = [rest] if rest.num_rows else []
        self.buffered = rest.num_rows

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.closed:
            return
        if self.schema is None:
            if self._empty is None:
                raise ValueError(f"{self.path}: no frame was written, so the table has no schema")
            self.schema = pa.Table.from_pandas(self._empty, preserve_index=False).schema
        if self._writer is None:
            # One row group or none: exactly what pandas' to_parquet writes.
            pq.write_table(self._table(), self.path)
        else:
            if self.buffered:
                self._flush(self.buffered)
            self._writer.close()
        self._buffer, self._writer, self.closed = [], None, True

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
        elif self._writer is not None:  # an error: release the file, the caller discards it
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer, self.closed = None, True


def read_row_groups(path: str | os.PathLike, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The table at `path` one row group at a time (only `columns`, if given); a table of
    no rows gives one empty frame, so a copy keeps the schema."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    try:
        if f.num_row_groups == 0:
            empty = f.schema_arrow.empty_table()
            yield (empty.select(columns) if columns else empty).to_pandas()
        for i in range(f.num_row_groups):
            yield f.read_row_group(i, columns=columns).to_pandas()
    finally:
        f.close()


class Spool:
    """Float64 arrays appended under names to scratch files beside `near`; `read(name)`
    gives one name's values, in the order appended. Use as a context manager: the files
    are removed on exit."""

    def __init__(self, near: str | os.PathLike):
        self.near = Path(near)
        self._stack = contextlib.ExitStack()
        self._files: dict[str, tuple[Path, object]] = {}
        self.sizes: dict[str, int] = {}

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        for _, fh in self._files.values():
            fh.close()
        self._stack.close()

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def append(self, name: str, values) -> None:
        if name not in self._files:
            path = self._stack.enter_context(scratch_path(self.near))
            self._files[name] = (path, open(path, "wb"))
            self.sizes[name] = 0
        a = np.ascontiguousarray(values, dtype=np.float64).ravel()
        self._files[name][1].write(a.tobytes())
        self.sizes[name] += a.size

    def read(self, name: str) -> np.ndarray:
        if name not in self._files:
            return np.zeros(0)
        path, fh = self._files[name]
        fh.flush()
        return np.fromfile(path, dtype=np.float64)


class Moments:
    """Count, means and centred sums of squares and products of (x, y) pairs, merged chunk
    by chunk (Chan, Golub and LeVeque's pairwise update: stable, no large sums cancel)."""

    def __init__(self):
        self.n, self.mx, self.my, self.sxx, self.syy, self.sxy = 0, 0.0, 0.0, 0.0, 0.0, 0.0

    def add(self, x, y) -> None:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        m = len(x)
        if m == 0:
            return
        mx, my = x.mean(), y.mean()
        dx, dy = x - mx, y - my
        sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
        n = self.n + m
        ex, ey = mx - self.mx, my - self.my
        f = self.n * m / n
        self.sxx += sxx + ex * ex * f
        self.syy += syy + ey * ey * f
        self.sxy += sxy + ex * ey * f
        self.mx += ex * m / n
        self.my += ey * m / n
        self.n = n

    def pearson(self) -> float:
        """Pearson's r (as np.corrcoef, clipped to [-1, 1]); NaN for no spread."""
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.sxy / np.sqrt(self.sxx) / np.sqrt(self.syy)
        return float(np.clip(r, -1.0, 1.0)) if np.isfinite(r) else float("nan")
