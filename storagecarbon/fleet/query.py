"""SQL over a fleet dataset with DuckDB (embedded; no server).

The dataset written by ``report --dataset DIR`` is visible as the view ``intervals`` (every
column of :data:`storagecarbon.fleet.dataset.COLUMNS` plus the partition columns ``node`` and
``date``)::

    storagecarbon query --dataset DIR "SELECT node, tier, sum(embodied_gco2e) FROM intervals GROUP BY ALL"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import StoragecarbonError

VIEW = "intervals"


def connect(dataset: Path) -> Any:
    """A DuckDB connection with the view ``intervals`` over ``dataset``."""
    import duckdb

    dataset = Path(dataset)
    if not dataset.is_dir():
        raise StoragecarbonError(f"{dataset}: dataset directory does not exist (write one with report --dataset)")
    if not any(dataset.rglob("*.parquet")):
        raise StoragecarbonError(f"{dataset}: no Parquet files in the dataset")
    con = duckdb.connect(":memory:")
    glob = str(dataset / "**" / "*.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW {VIEW} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                "hive_types = {'node': VARCHAR, 'date': DATE}, union_by_name = true)")
    return con


def run_query(dataset: Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows of ``sql`` over the dataset; a SQL error is one line."""
    import duckdb

    con = connect(dataset)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in (cur.description or [])]
        return cols, cur.fetchall()
    except duckdb.Error as exc:
        msg = str(exc).strip().splitlines()[0]
        raise StoragecarbonError(f"query: {msg}") from None
    finally:
        con.close()
