#!/usr/bin/env python3
"""SQL function micro-benchmark: flowhealth's silent_hours and is_stage_skip against the
equivalent plain-SQL expressions in DuckDB, over the same Parquet, in one run.

usage: scripts/bench-functions [ROWS] [RUNS]   (default 10,000,000 rows, best of 3 runs)

A lake with ROWS stage changes (one Parquet file per day, the layout ingest writes) is generated
by DuckDB. Each query runs as its own process (`flowhealth query` / `python -c duckdb...`), so
both sides pay their start-up and the Parquet scan; a plain scan of the same columns is timed too,
to show how much of each time is the function. Both sides' answers must agree.
"""
import math, os, shutil, subprocess, sys, tempfile, time

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "flowhealth")

# The shipped stages (config.yaml): name, entry, from_any.
STAGES = [("lead", False, False), ("qualified", True, False), ("demo", False, False),
          ("proposal", False, False), ("negotiation", False, False),
          ("contract_approval", False, False), ("won", False, False), ("lost", False, True)]


def duck_skip(frm, to):
    """is_stage_skip written as plain SQL (docs/contract.md section 4.1), for DuckDB."""
    rank = lambda col: "CASE " + col + " " + " ".join(
        f"WHEN '{name}' THEN {i + 1}" for i, (name, _, _) in enumerate(STAGES)) + " END"
    entry = ", ".join(f"'{n}'" for n, e, _ in STAGES if e)
    from_any = ", ".join(f"'{n}'" for n, _, a in STAGES if a)
    created = f"({frm} IS NULL OR {frm} = '')"
    return (f"CASE WHEN {rank(to)} IS NULL OR (NOT {created} AND {rank(frm)} IS NULL) THEN NULL "
            f"WHEN {to} IN ({from_any}) THEN false "
            f"WHEN {created} AND {to} IN ({entry}) THEN false "
            f"ELSE {rank(to)} > coalesce({rank(frm)}, 0) + 1 END")


def run(argv, env=None):
    """Runs argv; returns (seconds, stdout)."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{argv[:3]} failed: {done.stderr}")
    return seconds, done.stdout


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="flowhealth-bench-")
    try:
        lake = os.path.join(work, "lake")
        folder = os.path.join(lake, "raw", "stage_changes")
        os.makedirs(folder)
        print(f"generating {rows:,} stage changes ...", flush=True)
        names = [n for n, _, _ in STAGES]
        duckdb.sql(f"""
            COPY (
              SELECT 'OPP-' || (i // 5)::varchar AS opportunity_id,
                     CASE WHEN i % 5 = 0 THEN NULL ELSE {names}[1 + (i * 7) % 8] END AS from_stage,
                     {names}[1 + (i * 3) % 8] AS to_stage,
                     (TIMESTAMPTZ '2026-01-05 08:00:00+00' + (i % 7257600) * INTERVAL 1 SECOND) AS changed_at,
                     'R' || (i % 412)::varchar AS owner_id,
                     'bench.csv' AS source_file,
                     i + 2 AS source_line,
                     changed_at + (i % 500) * INTERVAL 1 HOUR AS ingested_at,
                     strftime(changed_at, '%Y-%m-%d') AS dt
              FROM range({rows}) t(i)
            ) TO '{folder}' (FORMAT parquet, PARTITION_BY (dt))""")
        glob = f"{folder}/**/*.parquet"
        config = os.path.join(work, "config.yaml")
        shutil.copy(os.path.join(ROOT, "config.yaml"), config)
        env = dict(os.environ, FLOWHEALTH_LAKE=lake, FLOWHEALTH_TIMEZONE="UTC", RUST_LOG="warn")

        source = f"read_parquet('{glob}')"
        cases = [
            ("start-up (SELECT 1)", "SELECT 1", "SELECT 1"),
            ("scan timestamps",
             "SELECT count(*) FROM stage_changes WHERE ingested_at > changed_at",
             f"SELECT count(*) FROM {source} WHERE ingested_at > changed_at"),
            ("silent_hours",
             "SELECT sum(silent_hours(changed_at, ingested_at)) FROM stage_changes",
             f"SELECT sum((epoch_us(ingested_at) - epoch_us(changed_at)) / 3600e6) FROM {source}"),
            ("scan stages",
             "SELECT count(*) FROM stage_changes WHERE from_stage = to_stage",
             f"SELECT count(*) FROM {source} WHERE from_stage = to_stage"),
            ("is_stage_skip",
             "SELECT count(*) FILTER (WHERE is_stage_skip(from_stage, to_stage)) FROM stage_changes",
             f"SELECT count(*) FILTER (WHERE {duck_skip('from_stage', 'to_stage')}) FROM {source}"),
        ]
        print(f"\n{rows:,} rows, best of {runs} runs, each a fresh process (wall seconds include it);"
              " rows/s are net of each engine's start-up (the SELECT 1 row)")
        print(f"{'query':20} {'flowhealth s':>12} {'rows/s':>13} {'duckdb s':>9} {'rows/s':>13} {'ratio':>6}")
        startup = None
        for label, fh_sql, duck_sql in cases:
            fh = [run([BIN, "--config", config, "query", fh_sql, "--format", "csv"], env) for _ in range(runs)]
            duck = [run([sys.executable, "-c",
                         "import duckdb, sys; print(duckdb.sql(sys.argv[1]).fetchall())", duck_sql])
                    for _ in range(runs)]
            fh_answer = fh[0][1].strip().splitlines()[-1].split(",")
            duck_answer = [str(v) for v in eval(duck[0][1])[0]]
            if not all(math.isclose(float(a), float(b), rel_tol=1e-9) for a, b in zip(fh_answer, duck_answer)):
                sys.exit(f"{label}: answers differ: flowhealth {fh_answer}, duckdb {duck_answer}")
            fh_s, duck_s = min(s for s, _ in fh), min(s for s, _ in duck)
            if startup is None:
                startup = (fh_s, duck_s)
                print(f"{label:20} {fh_s:12.2f} {'':>13} {duck_s:9.2f}", flush=True)
                continue
            fh_net, duck_net = max(fh_s - startup[0], 1e-3), max(duck_s - startup[1], 1e-3)
            print(f"{label:20} {fh_s:12.2f} {rows / fh_net:13,.0f} {duck_s:9.2f} {rows / duck_net:13,.0f} "
                  f"{duck_net / fh_net:5.2f}x", flush=True)
        print("ratio = duckdb net seconds / flowhealth net seconds (above 1: flowhealth is faster)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
