#!/usr/bin/env python3
"""Ingestion benchmark: flowhealth vs DuckDB on the same generated CSV, in one run.

usage: scripts/bench-ingest [ROWS]   (default 5,000,000; builds flowhealth --release first)

flowhealth: `flowhealth ingest` of one CSV of ROWS actions into an empty lake (validation,
dedup, partitioning by local date, quarantine, ledger). DuckDB: the same file through
COPY (SELECT * FROM read_csv(...)) TO '...parquet', the baseline the issue names. Each runs as its
own process; wall time and peak RSS (ru_maxrss of that child) are reported with the ratio.
"""
import os, shutil, subprocess, sys, tempfile, time

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "flowhealth")
# Peak RSS is read by a small wrapper process: a child forked straight from this (large) process
# would report this process's memory as its own high-water mark.
RSS_WRAPPER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, s, u = os.wait4(p.pid, 0); "
               "open(sys.argv[1], 'w').write(str(u.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(s))")


def measure(argv, **kw):
    """Runs argv as a child; returns (seconds, peak RSS in MiB of that child alone)."""
    with tempfile.NamedTemporaryFile() as rss:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", RSS_WRAPPER, rss.name, *argv], **kw)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{argv[0]} failed with status {done.returncode}")
        return seconds, int(open(rss.name).read()) / 1024


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000
    work = tempfile.mkdtemp(prefix="flowhealth-bench-")
    try:
        csv_path = os.path.join(work, "inbox", "actions", "actions.csv")
        os.makedirs(os.path.dirname(csv_path))
        print(f"generating {rows:,} actions ...", flush=True)
        duckdb.sql(f"""
            COPY (
              SELECT 'A' || lpad(i::varchar, 9, '0') AS action_id,
                     strftime(TIMESTAMP '2026-01-05 08:00:00' + (i % 7257600) * INTERVAL 1 SECOND, '%Y-%m-%d %H:%M:%S') AS occurred_at,
                     strftime(TIMESTAMP '2026-01-05 09:00:00' + (i % 7257600) * INTERVAL 1 SECOND, '%Y-%m-%d %H:%M:%S') AS recorded_at,
                     'R' || (i % 412)::varchar AS owner_id,
                     ['east','north','south','hospital'][1 + i % 4] AS team,
                     CASE WHEN i % 3 = 0 THEN NULL ELSE 'OPP-' || (i % 200000)::varchar END AS opportunity_id,
                     'C' || (i % 90000)::varchar AS customer_id,
                     CASE WHEN i % 3 = 0 THEN 'S' || (i % 1286)::varchar END AS store_id,
                     ['call','visit','demo','demo_feedback','proposal_sent','member_signup'][1 + i % 6] AS action_type,
                     CASE WHEN i % 5 <> 0 THEN 'att://' || i::varchar END AS evidence,
                     CASE WHEN i % 11 = 0 THEN 'promised a service plan within 48 h' END AS note,
                     CASE WHEN i % 3 = 0 THEN '{{"sku": "A' || (i % 97)::varchar || '"}}' END AS attrs
              FROM range({rows}) t(i)
            ) TO '{csv_path}' (HEADER, DELIMITER ',')""")
        size = os.path.getsize(csv_path) / 2**20
        # Written a minute ago, as an export is by the time it is ingested: the shipped config
        # waits for a file changed within inbox.settle_s (it may still be being written).
        past = time.time() - 60
        os.utime(csv_path, (past, past))
        config = os.path.join(work, "config.yaml")
        with open(os.path.join(ROOT, "config.yaml")) as f:
            text = f.read()
        with open(config, "w") as f:
            f.write(text)
        env = dict(os.environ, FLOWHEALTH_LAKE=os.path.join(work, "lake"), FLOWHEALTH_INBOX=os.path.join(work, "inbox"),
                   RUST_LOG="warn")
        fh_s, fh_mb = measure([BIN, "--config", config, "ingest"], env=env, stdout=subprocess.DEVNULL)
        out = os.path.join(work, "duck.parquet")
        duck_s, duck_mb = measure([sys.executable, "-c",
                                   "import duckdb, sys; duckdb.sql(f\"COPY (SELECT * FROM read_csv('{sys.argv[1]}')) TO '{sys.argv[2]}' (FORMAT parquet)\")",
                                   csv_path, out])
        landed = duckdb.sql(f"select count(*) from read_parquet('{work}/lake/raw/actions/**/*.parquet')").fetchall()[0][0]
        print(f"\ninput: {rows:,} rows, {size:,.0f} MiB CSV; flowhealth landed {landed:,}")
        if landed != rows:
            sys.exit(f"flowhealth landed {landed:,} of {rows:,} rows: the timing means nothing")
        print(f"{'':12} {'seconds':>8} {'rows/s':>12} {'peak MiB':>9}")
        print(f"{'flowhealth':12} {fh_s:8.2f} {rows / fh_s:12,.0f} {fh_mb:9.0f}")
        print(f"{'duckdb':12} {duck_s:8.2f} {rows / duck_s:12,.0f} {duck_mb:9.0f}")
        print(f"throughput ratio flowhealth/duckdb: {duck_s / fh_s:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
