#!/usr/bin/env python3
"""Cluster benchmark: `flowhealth metrics run` cold, in the process (engine: local) and on a
Ballista cluster of this machine (a scheduler and two executors of the same release binary), side
by side in one run, over the 48-week lake of scripts/bench-metrics; plus the fixed cost of a
trivial query on each.

usage: scripts/bench-cluster [ACTIONS] [WEEKS]   (default 40,000,000 actions over 48 weeks, a
                                                   tenth as many stage changes: bench-metrics'
                                                   "4x history" lake)

Cold: nothing computed before (the metric outputs and the kept opportunity snapshot are removed
before every run), so silent_warnings and the snapshot read the whole history. The two engines'
runs alternate, RUNS of each, and the median is reported with the client's peak RSS (the
executors' memory is their own). The index and silent_warnings rows of the two must be equal.
On one machine the cluster is not expected to be faster: it does the same work through more
processes, shuffles through files and the network stack, and pays a job's overhead per query;
what it buys is that the work spreads over machines. With BENCH_KEEP=1 in the environment the
lake is kept (its folder is printed), e.g. to profile a cold run on it.
"""
import os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

import duckdb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_metrics import BIN, METRICS, ROOT, generate, measure, median  # noqa: E402

RUNS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A scheduler and two executors on loopback, for `lake`."""

    def __init__(self, work, lake):
        self.config = os.path.join(work, "cluster.yaml")
        with open(self.config, "w") as f:
            f.write(f"lake: {{ url: {lake} }}\n")
        self.port = free_port()
        self.url = f"df://127.0.0.1:{self.port}"
        self.logs = open(os.path.join(work, "cluster.log"), "w")
        env = dict(os.environ, RUST_LOG="warn")
        self.processes = [subprocess.Popen([BIN, "--config", self.config, "scheduler", "--port", str(self.port)],
                                           stdout=self.logs, stderr=self.logs, env=env)]
        for _ in range(2):
            self.processes.append(subprocess.Popen(
                [BIN, "--config", self.config, "executor", "--scheduler", self.url,
                 "--port", str(free_port()), "--grpc-port", str(free_port())],
                stdout=self.logs, stderr=self.logs, env=env))
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if b"ready: 2 executors" in r.read():
                        return
            except OSError:
                pass
            if time.time() > deadline:
                self.stop()
                sys.exit("the cluster did not get ready (see cluster.log)")
            time.sleep(0.2)

    def stop(self):
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            p.wait(timeout=60)


class Runs:
    """flowhealth over one lake, locally or on `cluster`."""

    def __init__(self, work, lake, cluster):
        self.lake, self.cluster = lake, cluster
        self.config = os.path.join(work, "config.yaml")
        with open(os.path.join(ROOT, "config.yaml")) as f:
            text = f.read().replace("queries: ./queries", f"queries: {ROOT}/queries")
        with open(self.config, "w") as f:
            f.write(text)

    def env(self, engine):
        return dict(os.environ, FLOWHEALTH_LAKE=self.lake, FLOWHEALTH_TIMEZONE="UTC", RUST_LOG="warn",
                    FLOWHEALTH_ENGINE=engine, FLOWHEALTH_SCHEDULER=self.cluster.url)

    def cold(self, engine, week):
        for path in ("metrics", "breaches", "_flowhealth/snapshots"):
            shutil.rmtree(os.path.join(self.lake, path), ignore_errors=True)
        os.sync()
        run = measure([BIN, "--config", self.config, "metrics", "run", *METRICS, "--period", week], env=self.env(engine))
        return run, self.rows(week)

    def trivial(self, engine):
        return measure([BIN, "--config", self.config, "query", "select count(*) from stages", "--format", "csv"],
                       env=self.env(engine))

    def rows(self, week):
        scan = lambda m: f"read_parquet('{self.lake}/metrics/{m}/**/*.parquet', hive_partitioning=1)"
        index = duckdb.sql(f"select team, value from {scan('process_health_index')} where period = '{week}' "
                           "order by team nulls first").fetchall()
        warnings = duckdb.sql(f"select * exclude (run_id, as_of) from {scan('silent_warnings')} "
                              f"where period = '{week}' order by opportunity_id").fetchall()
        return index, warnings


def main():
    actions = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000_000
    weeks = int(sys.argv[2]) if len(sys.argv) > 2 else 48
    end, week = "2026-03-30", "2026-W13"
    work = tempfile.mkdtemp(prefix="flowhealth-bench-cluster-")
    cluster = None
    try:
        lake = os.path.join(work, "lake")
        print(f"generating {actions:,} actions, {actions // 10:,} stage changes over {weeks} weeks ...", flush=True)
        generate(lake, actions, weeks, end)
        cluster = Cluster(work, lake)
        runs = Runs(work, lake, cluster)
        cold, rows = {"local": [], "ballista": []}, {}
        for _ in range(RUNS):
            for engine in ("local", "ballista"):
                run, result = runs.cold(engine, week)
                cold[engine].append(run)
                if rows.setdefault(engine, result) != result:
                    sys.exit(f"two {engine} runs of {week} gave different rows")
        if rows["local"] != rows["ballista"]:
            sys.exit(f"the engines disagree on {week}: local {rows['local'][0]}, ballista {rows['ballista'][0]}")
        trivial = {engine: median([runs.trivial(engine) for _ in range(5)]) for engine in ("local", "ballista")}
        local, remote = median(cold["local"]), median(cold["ballista"])
        print(f"\nweek {week} of a {weeks}-week lake: {', '.join(METRICS)} (with silent_warnings), cold, median of {RUNS}")
        print(f"{'':28} {'local s':>8} {'MiB':>5} {'cluster s':>10} {'MiB':>5} {'cluster / local':>16}")
        print(f"{'metrics run (cold)':28} {local[0]:8.2f} {local[1]:5.0f} {remote[0]:10.2f} {remote[1]:5.0f} {remote[0] / local[0]:15.2f}x")
        t_local, t_remote = trivial["local"], trivial["ballista"]
        print(f"{'trivial query (process)':28} {t_local[0]:8.2f} {t_local[1]:5.0f} {t_remote[0]:10.2f} {t_remote[1]:5.0f} "
              f"{t_remote[0] / t_local[0]:15.2f}x")
        spread = lambda runs: f"{min(r[0] for r in runs):.2f}-{max(r[0] for r in runs):.2f}"
        ratios = [r[0] / l[0] for l, r in zip(cold["local"], cold["ballista"])]
        print(f"spread: local {spread(cold['local'])} s, cluster {spread(cold['ballista'])} s, "
              f"cluster / local per round {min(ratios):.2f}x-{max(ratios):.2f}x")
        print("cluster: a scheduler and two executors on this machine (MiB: the client process only);")
        print("the trivial query's cluster time includes the session's probe (one more job); the rows agree")
    finally:
        if cluster:
            cluster.stop()
        if os.environ.get("BENCH_KEEP", "0") not in ("", "0"):
            print(f"kept (BENCH_KEEP): {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
