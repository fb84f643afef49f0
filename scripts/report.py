#!/usr/bin/env python3
"""The `lungseg report` queries in Python polars, as a documented example of querying the tables.

Usage: scripts/report.py RUNS_DIR
Prints one line per run: run, best epoch, best recall, best Dice, epochs run, minutes; and, for
evaluated runs, the highest threshold whose recall reaches 0.95.
"""
import pathlib
import sys

import polars as pl


def runs(root: pathlib.Path):
    return sorted(p.parent for p in root.rglob("epochs.parquet"))


def summarise(run: pathlib.Path) -> dict:
    ep = pl.scan_parquet(run / "epochs.parquet")
    best = (
        ep.filter(pl.col("epoch") == pl.col("best_epoch").last())
        .select("run_id", "epoch", "val_recall", "val_precision", "val_dice")
        .collect()
    )
    totals = ep.select(pl.len().alias("epochs"), (pl.col("seconds").sum() / 60).alias("minutes")).collect()
    row = {
        "run": run.name,
        "best_epoch": best["epoch"][0] if best.height else None,
        "best_recall": best["val_recall"][0] if best.height else None,
        "best_dice": best["val_dice"][0] if best.height else None,
        "epochs": totals["epochs"][0],
        "minutes": round(totals["minutes"][0], 2),
    }
    sweep = run / "eval" / "thresholds.parquet"
    if sweep.exists():
        reach = pl.read_parquet(sweep).filter(pl.col("recall") >= 0.95)
        row["threshold_for_recall_0.95"] = reach["threshold"].max() if reach.height else None
    return row


if __name__ == "__main__":
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "demo/runs")
    table = pl.DataFrame([summarise(r) for r in runs(root)])
    with pl.Config(tbl_rows=100, tbl_cols=20):
        print(table)
    for r in table.iter_rows(named=True):
        print(f"run {r['run']} best_epoch {r['best_epoch']}")
