"""Per-rank shards of a Parquet set, computed from the files' metadata alone.

Sharding works on Parquet *row groups*: every rank computes the same assignment without
communication, so each row is read by exactly one rank and a rank whose shard would be
empty is detected on every rank before any collective starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: the unit of sharding."""

    path: str
    index: int
    num_rows: int


def list_row_groups(directory: str | Path) -> list[RowGroup]:
    """All non-empty row groups of the ``*.parquet`` files under ``directory``, in a fixed order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"Parquet dataset directory {str(root)!r} does not exist")
    files = sorted(p for p in root.rglob("*.parquet")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"no *.parquet files under {str(root)!r}")
    groups = []
    for path in files:
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{path} is not a readable Parquet file: {err}") from err
        for i in range(meta.num_row_groups):
            rows = meta.row_group(i).num_rows
            if rows > 0:
                groups.append(RowGroup(str(path), i, rows))
    return groups


def assign_row_groups(groups: list[RowGroup], size: int) -> list[list[RowGroup]]:
    """Split row groups over ``size`` ranks, balancing rows (largest group to the lightest rank).

    Pure function of the metadata, so every rank computes the same split.
    """
    if size < 1:
        raise ValueError(f"number of ranks must be >= 1, got {size}")
    shards: list[list[RowGroup]] = [[] for _ in range(size)]
    load = [0] * size
    for group in sorted(groups, key=lambda g: -g.num_rows):  # stable: ties keep file order
        target = min(range(size), key=lambda r: (load[r], r))
        shards[target].append(group)
        load[target] += group.num_rows
    for shard in shards:
        shard.sort(key=lambda g: (g.path, g.index))
    empty = [r for r, shard in enumerate(shards) if not shard]
    if empty:
        raise ValueError(
            f"rank(s) {empty} of {size} would get no data: the dataset has only {len(groups)} "
            f"non-empty row group(s), and row groups are the unit of sharding. Write it with "
            f"more row groups (more files or a smaller row_group_size) or use fewer ranks.")
    return shards
