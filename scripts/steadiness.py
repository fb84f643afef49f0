#!/usr/bin/env python3
"""Steadiness of the validation curve, lungseg against the PyTorch reference (issue #17).

Three subcommands:

  run    trains lungseg (`lungseg train`) and the PyTorch reference
         (scripts/torch_train_reference.py) with the same recipe on the same prepared data,
         one run per seed and side, one after the other, into OUT:
           OUT/lungseg-s<seed>/        (a lungseg run directory, epochs.parquet)
           OUT/torch-s<seed>.csv       (the reference's per-epoch table)
         A finished run is not redone (lungseg skips it; an existing CSV is kept).
  table  prints, as a markdown table ready for BENCHMARKS.md, for every run and per side:
           std    population standard deviation of val Dice over epochs FROM..LAST (5..25)
           min    the lowest val Dice from epoch FROM on
           kept   the Dice of the epoch each side keeps: lungseg's own best_epoch
                  (epochs.parquet), and for PyTorch the same rule applied to its table
                  (largest F2 = 5PR/(4P+R) among epochs with precision >= 0.05; ties to the
                  higher Dice; the earlier epoch on a full tie)
         and the three targets: lungseg's mean std <= 1.5x PyTorch's mean std; lungseg's mean
         min >= PyTorch's mean min - 0.05; every lungseg kept Dice >= PyTorch's mean kept Dice
         - 0.01.
  order  how mixed lungseg's training batches are (`lungseg-bench order`, which reads the
         trainer's own shard stream): per epoch, the distinct patients in the last --tail
         batches and per full batch, against 200 uniform permutations of the same index.

Usage:
    python3 scripts/steadiness.py run --data DATA --out OUT [--seeds 1,2,3]
        [--torch-seeds 0,1,2] [--lungseg PATH] [--epochs 25] [--base 8] [--lr 3e-3]
        [--batch 8] [--patch 128] [--threshold 0.35] [--threads 2] [--only lungseg|torch]
        [--bn-refresh-batches N]
    python3 scripts/steadiness.py table OUT [--from 5] [--last 25]
        (or: table --lungseg RUN_DIR... --torch CSV...)
    python3 scripts/steadiness.py order --data DATA [--tail 20] [--epochs 5] [--seed 1]
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np
import polars as pl

HERE = os.path.dirname(os.path.abspath(__file__))


def default_lungseg():
    target = os.environ.get("CARGO_TARGET_DIR",
                            os.path.expanduser("~/.cache/lungseg-target"))
    return os.path.join(target, "debug", "lungseg")


def cmd_run(a):
    os.makedirs(a.out, exist_ok=True)
    if a.only in (None, "lungseg"):
        for s in a.seeds:
            run = os.path.join(a.out, f"lungseg-s{s}")
            cmd = [a.lungseg, "-q", "train", "--data", a.data, "--run", run, "--device", "cpu",
                   "--base-channels", str(a.base), "--lr", str(a.lr), "--batch-size",
                   str(a.batch), "--max-epochs", str(a.epochs), "--patience", str(a.epochs),
                   "--patch", str(a.patch), "--fg-crop", "0", "--flips", "false",
                   "--threshold", str(a.threshold), "--seed", str(s)]
            if a.bn_refresh_batches is not None:
                cmd += ["--bn-refresh-batches", str(a.bn_refresh_batches)]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    if a.only in (None, "torch"):
        for s in a.torch_seeds:
            out = os.path.join(a.out, f"torch-s{s}.csv")
            if os.path.exists(out) and len(pl.read_csv(out)) >= a.epochs:
                print(f"{out}: done", flush=True)
                continue
            cmd = [sys.executable, os.path.join(HERE, "torch_train_reference.py"),
                   "--data", a.data, "--out", out, "--base", str(a.base), "--lr", str(a.lr),
                   "--batch", str(a.batch), "--epochs", str(a.epochs), "--patch", str(a.patch),
                   "--threshold", str(a.threshold), "--seed", str(s),
                   "--threads", str(a.threads), "-q"]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)


def f2(p, r):
    den = 4 * p + r
    return 0.0 if den == 0 else 5 * p * r / den


def kept_epoch(df):
    """lungseg's selection rule (src/train/early_stop.rs) with beta 2, min precision 0.05."""
    best = None
    for row in df.iter_rows(named=True):
        if row["val_precision"] < 0.05:
            continue
        v = f2(row["val_precision"], row["val_recall"])
        if best is None or v > best[0] or (v == best[0] and row["val_dice"] > best[1]):
            best = (v, row["val_dice"], row["epoch"])
    return None if best is None else best[2]


def stats(df, first, last, kept):
    tail = df.filter((pl.col("epoch") >= first) & (pl.col("epoch") <= last))
    dice = tail["val_dice"].to_numpy()
    kept_dice = float(df.filter(pl.col("epoch") == kept)["val_dice"][0]) if kept else float("nan")
    return {
        "epochs": int(df["epoch"].max()),
        "std": float(np.std(dice)) if len(dice) else float("nan"),
        "min": float(dice.min()) if len(dice) else float("nan"),
        "min_epoch": int(tail["epoch"][int(np.argmin(dice))]) if len(dice) else 0,
        "min_precision": float(tail["val_precision"][int(np.argmin(dice))]) if len(dice) else 0,
        "kept_epoch": kept or 0,
        "kept": kept_dice,
        "best": float(df["val_dice"].max()),
    }


def load_lungseg(run):
    df = pl.read_parquet(os.path.join(run, "epochs.parquet")).sort("epoch")
    best = df["best_epoch"][-1]
    kept = int(best) if best is not None else None
    return df, kept


def load_torch(path):
    df = pl.read_csv(path).sort("epoch")
    return df, kept_epoch(df)


def cmd_table(a):
    runs = []
    lungseg = list(a.lungseg or [])
    torch = list(a.torch or [])
    if a.dir:
        lungseg += sorted(d for d in glob.glob(os.path.join(a.dir, "lungseg-s*"))
                          if os.path.exists(os.path.join(d, "epochs.parquet")))
        torch += sorted(glob.glob(os.path.join(a.dir, "torch-s*.csv")))
    for r in lungseg:
        df, kept = load_lungseg(r)
        runs.append(("lungseg", os.path.basename(os.path.normpath(r)), stats(df, a.first,
                                                                               a.last, kept)))
    for r in torch:
        df, kept = load_torch(r)
        runs.append(("PyTorch", os.path.basename(r), stats(df, a.first, a.last, kept)))
    if not runs:
        raise SystemExit("no runs found")
    w = f"{a.first}–{a.last}"
    print(f"| side | run | epochs | std of val Dice, epochs {w} | lowest val Dice from epoch "
          f"{a.first} (epoch, precision) | kept epoch | kept Dice | best Dice |")
    print("|---|---|---|---|---|---|---|---|")
    for side, name, s in runs:
        print(f"| {side} | {name} | {s['epochs']} | {s['std']:.3f} | {s['min']:.3f} "
              f"({s['min_epoch']}, {s['min_precision']:.2f}) | {s['kept_epoch']} | "
              f"{s['kept']:.3f} | {s['best']:.3f} |")
    means = {}
    for side in ("lungseg", "PyTorch"):
        rs = [s for sd, _, s in runs if sd == side]
        if rs:
            means[side] = {k: float(np.mean([r[k] for r in rs])) for k in ("std", "min", "kept",
                                                                           "best")}
            means[side]["n"] = len(rs)
            m = means[side]
            print(f"| **{side}** | mean of {len(rs)} | | **{m['std']:.3f}** | **{m['min']:.3f}** "
                  f"| | **{m['kept']:.3f}** | {m['best']:.3f} |")
    if len(means) == 2:
        ls, pt = means["lungseg"], means["PyTorch"]
        kept_all = [s["kept"] for sd, _, s in runs if sd == "lungseg"]
        ratio = ls["std"] / pt["std"] if pt["std"] > 0 else float("inf")
        print()
        print("| target | lungseg | PyTorch | met |")
        print("|---|---|---|---|")
        print(f"| std over epochs {w} within 1.5x PyTorch's | {ls['std']:.3f} ({ratio:.2f}x) | "
              f"{pt['std']:.3f} | {'yes' if ratio <= 1.5 else 'no'} |")
        print(f"| lowest Dice from epoch {a.first} within 0.05 of PyTorch's | {ls['min']:.3f} | "
              f"{pt['min']:.3f} | {'yes' if ls['min'] >= pt['min'] - 0.05 else 'no'} |")
        ok = all(k >= pt["kept"] - 0.01 for k in kept_all)
        print(f"| every kept Dice >= PyTorch's mean kept Dice - 0.01 | "
              f"{', '.join(f'{k:.3f}' for k in kept_all)} | {pt['kept']:.3f} | "
              f"{'yes' if ok else 'no'} |")


def cmd_order(a):
    """Runs `lungseg-bench order` (the trainer's own stream) and prints its figures."""
    out = subprocess.run([a.bench, "order", "--data", a.data, "--epochs", str(a.epochs),
                          "--tail", str(a.tail), "--batch", str(a.batch), "--seed",
                          str(a.seed)], check=True, capture_output=True, text=True).stdout
    d = json.loads(out)
    print(f"{d['slices']} training slices of {d['patients']} patients, batches of {d['batch']}, "
          f"shuffle buffer {d['shuffle_buffer']}, seed {d['seed']}")
    print(f"| epoch | distinct patients in the last {d['tail_batches']} batches: lungseg "
          f"| uniform permutation, mean (min-max of 200) | per batch: lungseg | per batch: "
          f"permutation |")
    print("|---|---|---|---|---|")
    for e in d["epochs"]:
        print(f"| {e['epoch']} | {e['tail_patients']} | "
              f"{e['permutation_tail_patients_mean']:.1f} "
              f"({e['permutation_tail_patients_min']}-{e['permutation_tail_patients_max']}) | "
              f"{e['per_batch_patients']:.2f} | {e['permutation_per_batch_patients']:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--seeds", default="1,2,3")
    r.add_argument("--torch-seeds", default="0,1,2")
    r.add_argument("--lungseg", default=default_lungseg())
    r.add_argument("--epochs", type=int, default=25)
    r.add_argument("--base", type=int, default=8)
    r.add_argument("--lr", type=float, default=3e-3)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--patch", type=int, default=128)
    r.add_argument("--threshold", type=float, default=0.35)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--only", choices=["lungseg", "torch"])
    r.add_argument("--bn-refresh-batches", type=int,
                   help="lungseg's batch-norm refresh (default: pipeline/train.toml's; 0 = "
                        "PyTorch's running averages)")
    t = sub.add_parser("table")
    t.add_argument("dir", nargs="?")
    t.add_argument("--lungseg", nargs="*")
    t.add_argument("--torch", nargs="*")
    t.add_argument("--from", dest="first", type=int, default=5)
    t.add_argument("--last", type=int, default=25)
    o = sub.add_parser("order")
    o.add_argument("--data", required=True)
    o.add_argument("--tail", type=int, default=20)
    o.add_argument("--batch", type=int, default=8)
    o.add_argument("--epochs", type=int, default=5)
    o.add_argument("--seed", type=int, default=1)
    o.add_argument("--bench", default=default_lungseg() + "-bench")
    a = ap.parse_args()
    if a.cmd == "run":
        a.seeds = [int(s) for s in a.seeds.split(",") if s]
        a.torch_seeds = [int(s) for s in a.torch_seeds.split(",") if s]
        cmd_run(a)
    elif a.cmd == "table":
        cmd_table(a)
    else:
        cmd_order(a)


if __name__ == "__main__":
    main()
