"""Fleets: a live Prometheus exporter (:mod:`.export`), many traces reported together
(:mod:`.multi`), a Hive-partitioned Parquet dataset of per-interval attribution (:mod:`.dataset`)
and DuckDB queries over it (:mod:`.query`)."""
