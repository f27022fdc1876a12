#!/usr/bin/env python3
"""Ingestion benchmark: flowhealth against DuckDB (and polars for XLSX) on the same generated
files, in one run, every figure the median of interleaved runs.

usage: scripts/bench-ingest [--rows N] [--runs R] [--only SECTION,...] [--lakes 1,5,20]

Sections (all by default):
  csv          one CSV of N actions (default 5,000,000): `flowhealth ingest` into an empty lake
               against DuckDB's COPY (SELECT * FROM read_csv(...)) TO '...parquet'
  ndjson       the same rows as one-object-per-line JSON, against DuckDB's read_json
  xlsx         the first XLSX_ROWS (500,000; N when fewer) of them as a workbook, against
               polars.read_excel (calamine, through fastexcel) writing Parquet
  gbk          the same rows with Chinese teams and notes, as GBK (encoding detected), against
               flowhealth and DuckDB on the same text in UTF-8 (DuckDB reads no GBK without an
               extension download)
  incremental  a 2-row file into lakes of 1, 5 and 20 million landed actions (--lakes, millions):
               seconds and peak memory must not grow with the lake

Each tool runs as its own process, measured for wall time, peak RSS (ru_maxrss of that child,
read by a small wrapper) and CPU time ((user + system) / wall = cores busy). The tools' runs
alternate (flowhealth, other, flowhealth, ...) so a slow spell of a shared machine hits both;
each row shows the median of RUNS runs and the range. The ratio is the other tool's median
seconds over flowhealth's (above 1: flowhealth is faster). flowhealth ingests into a new lake
every run, and must land every row.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "flowhealth")
# Peak RSS and CPU time are read by a small wrapper process: a child forked straight from this
# (large) process would report this process's memory as its own high-water mark.
WRAPPER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, s, u = os.wait4(p.pid, 0); "
           "open(sys.argv[1], 'w').write(f'{u.ru_maxrss} {u.ru_utime + u.ru_stime}'); "
           "sys.exit(os.waitstatus_to_exitcode(s))")
XLSX_ROWS = 500_000
SECTIONS = ["csv", "ndjson", "xlsx", "gbk", "incremental"]


def measure(argv, **kw):
    """Runs argv as a child; returns (seconds, peak RSS MiB, cores busy) of that child alone."""
    with tempfile.NamedTemporaryFile() as out:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", WRAPPER, out.name, *argv], **kw)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{argv[0]} failed with status {done.returncode}")
        rss, cpu = open(out.name).read().split()
        return seconds, int(rss) / 1024, float(cpu) / seconds


def duckdb_copy(reader, path, out, options=""):
    """The command line of DuckDB's `COPY (SELECT * FROM <reader>(path<options>)) TO out` (Parquet),
    run as its own process."""
    return [sys.executable, "-c",
            f"import duckdb, sys; duckdb.sql(f\"COPY (SELECT * FROM {reader}('{{sys.argv[1]}}'{options})) "
            f"TO '{{sys.argv[2]}}' (FORMAT parquet)\")",
            path, out]


def settled(path):
    """Dates `path` a minute back, as an export is by the time it is ingested: the shipped config
    waits for a file changed within inbox.settle_s (it may still be being written)."""
    past = time.time() - 60
    os.utime(path, (past, past))


def actions_sql(rows, chinese=False):
    """The generated actions: every column of the dataset, a third with a store and JSON attrs."""
    teams = "['华东','华北','华南','医院']" if chinese else "['east','north','south','hospital']"
    note = "'承诺48小时内提供服务方案'" if chinese else "'promised a service plan within 48 h'"
    return f"""
      SELECT 'A' || lpad(i::varchar, 9, '0') AS action_id,
             strftime(TIMESTAMP '2026-01-05 08:00:00' + (i % 7257600) * INTERVAL 1 SECOND, '%Y-%m-%d %H:%M:%S') AS occurred_at,
             strftime(TIMESTAMP '2026-01-05 09:00:00' + (i % 7257600) * INTERVAL 1 SECOND, '%Y-%m-%d %H:%M:%S') AS recorded_at,
             'R' || (i % 412)::varchar AS owner_id,
             {teams}[1 + i % 4] AS team,
             CASE WHEN i % 3 = 0 THEN NULL ELSE 'OPP-' || (i % 200000)::varchar END AS opportunity_id,
             'C' || (i % 90000)::varchar AS customer_id,
             CASE WHEN i % 3 = 0 THEN 'S' || (i % 1286)::varchar END AS store_id,
             ['call','visit','demo','demo_feedback','proposal_sent','member_signup'][1 + i % 6] AS action_type,
             CASE WHEN i % 5 <> 0 THEN 'att://' || i::varchar END AS evidence,
             CASE WHEN i % 11 = 0 THEN {note} END AS note,
             CASE WHEN i % 3 = 0 THEN '{{"sku": "A' || (i % 97)::varchar || '"}}' END AS attrs
      FROM range({rows}) t(i)"""


class Bench:
    def __init__(self, work, rows, runs):
        self.work, self.rows, self.runs = work, rows, runs
        self.xlsx_rows = min(XLSX_ROWS, rows)
        self.config = os.path.join(work, "config.yaml")
        shutil.copy(os.path.join(ROOT, "config.yaml"), self.config)
        self.files = {}
        self.table = []

    def file(self, name):
        """Generates the input of a section once."""
        if name in self.files:
            return self.files[name]
        path = os.path.join(self.work, "files", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        print(f"generating {name} ...", flush=True)
        if name == "actions.csv":
            duckdb.sql(f"COPY ({actions_sql(self.rows)}) TO '{path}' (HEADER, DELIMITER ',')")
        elif name == "actions.ndjson":
            duckdb.sql(f"COPY ({actions_sql(self.rows)}) TO '{path}' (FORMAT json)")
        elif name == "actions-zh.csv":
            duckdb.sql(f"COPY ({actions_sql(self.rows, chinese=True)}) TO '{path}' (HEADER, DELIMITER ',')")
        elif name == "actions-gbk.csv":
            with open(self.file("actions-zh.csv"), encoding="utf-8", newline="") as src, open(path, "wb") as dst:
                for line in src:
                    dst.write(line.encode("gbk"))
        elif name == "actions.xlsx":
            import xlsxwriter
            book = xlsxwriter.Workbook(path, {"constant_memory": True})
            sheet = book.add_worksheet("actions")
            result = duckdb.connect().execute(actions_sql(self.xlsx_rows))
            sheet.write_row(0, 0, [d[0] for d in result.description])
            row = 1
            while batch := result.fetchmany(100_000):
                for values in batch:
                    sheet.write_row(row, 0, ["" if v is None else v for v in values])
                    row += 1
            book.close()
        self.files[name] = path
        return path

    def flowhealth(self, path, lake, expect):
        """One `flowhealth ingest` of `path` into `lake` (removed first)."""
        shutil.rmtree(lake, ignore_errors=True)
        inbox = os.path.join(self.work, "inbox")
        shutil.rmtree(inbox, ignore_errors=True)
        os.makedirs(os.path.join(inbox, "actions"))
        os.link(path, os.path.join(inbox, "actions", os.path.basename(path)))
        settled(path)
        env = dict(os.environ, FLOWHEALTH_LAKE=lake, FLOWHEALTH_INBOX=inbox, RUST_LOG="warn")
        result = measure([BIN, "--config", self.config, "ingest"], env=env, stdout=subprocess.DEVNULL)
        self.check_landed(lake, expect)
        return result

    def compare(self, section, path, rows, other_name, other_argv):
        """RUNS interleaved runs of flowhealth and the other tool on `path`."""
        lake = os.path.join(self.work, "lake")
        fh, other = [], []
        for run in range(self.runs):
            print(f"{section}: run {run + 1} of {self.runs}", flush=True)
            fh.append(self.flowhealth(path, lake, rows))
            out = os.path.join(self.work, "other.parquet")
            other.append(measure(other_argv(out)))
            os.remove(out)
        self.report(section, path, rows, [("flowhealth", fh), (other_name, other)])

    def report(self, section, path, rows, tools):
        size = os.path.getsize(path) / 2**20
        lines = [f"\n{section}: {rows:,} rows, {size:,.0f} MiB ({os.path.basename(path)}), median of {self.runs} runs"]
        lines.append(f"{'':18} {'seconds':>8} {'(min-max)':>13} {'rows/s':>11} {'MiB/s':>7} {'peak MiB':>9} {'cores':>6}")
        medians = {}
        for name, runs in tools:
            secs = [r[0] for r in runs]
            med = statistics.median(secs)
            medians[name] = (med, secs)
            lines.append(f"{name:18} {med:8.2f} {min(secs):6.2f}-{max(secs):<6.2f} {rows / med:11,.0f} "
                         f"{size / med:7.1f} {statistics.median(r[1] for r in runs):9.0f} "
                         f"{statistics.median(r[2] for r in runs):6.2f}")
        (first, (fh, fh_runs)), *others = medians.items()
        for name, (med, secs) in others:
            per_run = sorted(o / f for o, f in zip(secs, fh_runs))
            lines.append(f"ratio {name} / {first} seconds: {med / fh:.2f}x "
                         f"(per run {per_run[0]:.2f}x-{per_run[-1]:.2f}x)")
        print("\n".join(lines), flush=True)
        self.table.append("\n".join(lines))

    def csv(self):
        path = self.file("actions.csv")
        self.compare("csv", path, self.rows, "duckdb COPY", lambda out: duckdb_copy("read_csv", path, out))

    def ndjson(self):
        path = self.file("actions.ndjson")
        self.compare("ndjson", path, self.rows, "duckdb COPY",
                     lambda out: duckdb_copy("read_json", path, out, ", format='newline_delimited'"))

    def xlsx(self):
        path = self.file("actions.xlsx")
        self.compare("xlsx", path, self.xlsx_rows, "polars read_excel", lambda out: [
            sys.executable, "-c",
            "import polars, sys; polars.read_excel(sys.argv[1], infer_schema_length=0).write_parquet(sys.argv[2])",
            path, out])

    def gbk(self):
        gbk, utf8 = self.file("actions-gbk.csv"), self.file("actions-zh.csv")
        lake = os.path.join(self.work, "lake")
        runs = {"flowhealth gbk": [], "flowhealth utf-8": [], "duckdb COPY utf-8": []}
        for run in range(self.runs):
            print(f"gbk: run {run + 1} of {self.runs}", flush=True)
            runs["flowhealth gbk"].append(self.flowhealth(gbk, lake, self.rows))
            runs["flowhealth utf-8"].append(self.flowhealth(utf8, lake, self.rows))
            out = os.path.join(self.work, "other.parquet")
            runs["duckdb COPY utf-8"].append(measure(duckdb_copy("read_csv", utf8, out)))
            os.remove(out)
        self.report("gbk", gbk, self.rows, list(runs.items()))

    def check_landed(self, lake, expect):
        landed = duckdb.sql(f"select count(*) from read_parquet('{lake}/raw/actions/**/*.parquet')").fetchall()[0][0]
        if landed != expect:
            sys.exit(f"{lake} holds {landed:,} rows, expected {expect:,}: the timing means nothing")

    def incremental(self, lakes):
        """A 2-row file into lakes of each size; the lakes are built by flowhealth itself."""
        env = lambda lake, inbox: dict(os.environ, FLOWHEALTH_LAKE=lake, FLOWHEALTH_INBOX=inbox, RUST_LOG="warn")
        built = []
        for millions in lakes:
            lake = os.path.join(self.work, f"lake-{millions}m")
            inbox = os.path.join(self.work, f"inbox-{millions}m")
            shutil.rmtree(lake, ignore_errors=True)
            shutil.rmtree(inbox, ignore_errors=True)
            os.makedirs(os.path.join(inbox, "actions"))
            big = os.path.join(inbox, "actions", "history.csv")
            print(f"incremental: building a lake of {millions}M actions ...", flush=True)
            duckdb.sql(f"COPY ({actions_sql(int(millions * 1_000_000))}) TO '{big}' (HEADER, DELIMITER ',')")
            settled(big)
            seconds, rss, cores = measure([BIN, "--config", self.config, "ingest"], env=env(lake, inbox),
                                          stdout=subprocess.DEVNULL)
            print(f"  landed in {seconds:.1f} s, peak {rss:.0f} MiB", flush=True)
            os.remove(big)  # an ingested file is moved away, as a pipeline archives it
            self.check_landed(lake, int(millions * 1_000_000))
            built.append((millions, lake, inbox))
        results = {m: [] for m, _, _ in built}
        for run in range(self.runs):
            for millions, lake, inbox in built:
                name = os.path.join(inbox, "actions", f"new-{run}.csv")
                with open(name, "w") as f:
                    f.write("action_id,occurred_at,owner_id,action_type\n")
                    f.write(f"N{run}a,2026-03-02 09:00:00,R1,call\nN{run}b,2026-03-02 10:00:00,R2,visit\n")
                settled(name)
                results[millions].append(measure([BIN, "--config", self.config, "ingest"], env=env(lake, inbox),
                                                  stdout=subprocess.DEVNULL))
                os.remove(name)
                # Both rows landed, or the timing measured a file that waited.
                self.check_landed(lake, int(millions * 1_000_000) + 2 * (run + 1))
        lines = [f"\nincremental: a 2-row file into a lake of N landed actions, median of {self.runs} runs"]
        lines.append(f"{'lake':>10} {'seconds':>8} {'(min-max)':>13} {'peak MiB':>9}")
        for millions, runs in results.items():
            secs = [r[0] for r in runs]
            lines.append(f"{millions:>9g}M {statistics.median(secs):8.3f} {min(secs):6.3f}-{max(secs):<6.3f} "
                         f"{statistics.median(r[1] for r in runs):9.0f}")
        print("\n".join(lines), flush=True)
        self.table.append("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--lakes", default="1,5,20", help="incremental: lake sizes in millions of actions")
    args = parser.parse_args()
    sections = args.only.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown section(s) {', '.join(sorted(unknown))}: expected {', '.join(SECTIONS)}")
    work = tempfile.mkdtemp(prefix="flowhealth-bench-")
    try:
        bench = Bench(work, args.rows, args.runs)
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        started = time.strftime("%Y-%m-%d %H:%M")
        for section in sections:
            if section == "incremental":
                bench.incremental([float(m) for m in args.lakes.split(",")])
            else:
                getattr(bench, section)()
        with open("/proc/loadavg") as f:
            load_end = f.read().split()[:3]
        print(f"\n==== {started}, {os.cpu_count()} cores, load average {' '.join(load)} at the start, "
              f"{' '.join(load_end)} at the end")
        print("\n".join(bench.table))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
