#!/usr/bin/env python3
"""Weekly metric benchmark: `flowhealth metrics run` of the health-index metrics against the same
definitions written as plain SQL in DuckDB over the same Parquet, in one run; then the same week
over a lake with four times the history.

usage: scripts/bench-metrics [ACTIONS] [WEEKS]   (default 10,000,000 actions over 12 weeks,
                                                   a tenth as many stage changes)

Metrics: stage_compliance_rate, evidence_rate, silent_warnings, silent_overtime_rate,
process_health_index (the weekly report's core), for the last week of the lake. flowhealth runs
cold (nothing computed before: silent_warnings and the opportunity snapshot read the whole
history) and warm (after the previous week's run, as the weekly job finds it: silent_warnings
starts from that week's open opportunities, the opportunity snapshot is the one kept). Warm and
DuckDB are the median of 5 runs, the two lakes' runs interleaved (so a slow spell of the machine
hits both alike). Each engine runs as its own process; wall time and peak RSS
(ru_maxrss of that child) are reported. The index values must agree, and the warm rows must
equal the cold.
"""
import json, os, shutil, subprocess, sys, tempfile, time

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "flowhealth")
# Peak RSS is read by a small wrapper process: a child forked straight from this (large) process
# would report this process's memory as its own high-water mark.
RSS_WRAPPER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, s, u = os.wait4(p.pid, 0); "
               "open(sys.argv[1], 'w').write(str(u.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(s))")
RUNS = 5  # warm flowhealth and DuckDB: the median of this many runs on each lake
METRICS = ["stage_compliance_rate", "evidence_rate", "silent_overtime_rate", "process_health_index"]
STAGES = ["lead", "qualified", "demo", "proposal", "negotiation", "contract_approval", "won", "lost"]
TIMEOUTS = {"proposal": 72, "negotiation": 72}
EVIDENCE = ["demo", "proposal_sent", "contract_submitted", "member_signup", "chronic_followup",
            "high_margin_recommendation"]


def generate(lake, actions, weeks, end):
    """A lake whose history ends on `end` (a Monday, UTC timezone): `weeks` weeks of data."""
    seconds = weeks * 7 * 86400
    changes = actions // 10
    opps = changes // 5
    start = f"TIMESTAMPTZ '{end} 00:00:00+00' - INTERVAL {seconds} SECOND"
    for dataset in ("actions", "stage_changes", "opportunities"):
        os.makedirs(f"{lake}/raw/{dataset}")
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")
    stages = "['" + "','".join(STAGES) + "']"
    con.execute(f"""COPY (
      SELECT 'A' || i AS action_id,
             {start} + (i * 7919 % {seconds}) * INTERVAL 1 SECOND AS occurred_at,
             {start} + (i * 7919 % {seconds} + i % 90000) * INTERVAL 1 SECOND AS recorded_at,
             'R' || (i % 400) AS owner_id, ['east','north','south','hospital'][1 + i % 4] AS team,
             'OPP-' || (i % {opps}) AS opportunity_id, 'C' || (i % 90000) AS customer_id,
             CASE WHEN i % 3 = 0 THEN 'S' || (i % 1200) END AS store_id,
             ['call','visit','demo','proposal_sent','member_signup','chronic_followup'][1 + i % 6] AS action_type,
             CASE WHEN i % 7 <> 0 THEN 'att://' || i END AS evidence, NULL::VARCHAR AS note, NULL::VARCHAR AS attrs,
             'bench.csv' AS source_file, i + 2 AS source_line, occurred_at AS ingested_at,
             strftime(occurred_at, '%Y-%m-%d') AS dt
      FROM range({actions}) t(i)) TO '{lake}/raw/actions' (FORMAT parquet, PARTITION_BY (dt))""")
    # Five changes per opportunity, a day or so apart, the last one to lost (so the open
    # opportunities at any time are those in flight, as many in a long lake as in a short one);
    # one opportunity in ten jumps a stage.
    con.execute(f"""COPY (
      SELECT 'OPP-' || (i // 5) AS opportunity_id,
             CASE WHEN i % 5 = 0 THEN NULL ELSE {stages}[i % 5] END AS from_stage,
             CASE WHEN i % 5 = 4 THEN 'lost'
                  ELSE {stages}[1 + i % 5 + (CASE WHEN (i // 5) % 10 = 0 AND i % 5 = 2 THEN 1 ELSE 0 END)] END AS to_stage,
             {start} + ((i // 5) * 104729 % {seconds} + (i % 5) * 97000) * INTERVAL 1 SECOND AS changed_at,
             'R' || (i % 400) AS owner_id, 'bench.csv' AS source_file, i + 2 AS source_line,
             changed_at AS ingested_at, strftime(changed_at, '%Y-%m-%d') AS dt
      FROM range({changes}) t(i) WHERE changed_at < TIMESTAMPTZ '{end} 00:00:00+00')
      TO '{lake}/raw/stage_changes' (FORMAT parquet, PARTITION_BY (dt))""")
    con.execute(f"""COPY (
      SELECT 'OPP-' || i AS opportunity_id, 'C' || i AS customer_id, 'R' || (i % 400) AS owner_id,
             ['east','north','south','hospital'][1 + i % 4] AS team, 'retail' AS industry,
             CAST(1000 + i % 5000 AS DECIMAL(18,2)) AS amount, NULL::TIMESTAMPTZ AS created_at,
             'open' AS status, NULL::TIMESTAMPTZ AS closed_at, 'bench.csv' AS source_file, i + 2 AS source_line,
             TIMESTAMPTZ '{end} 00:00:00+00' - INTERVAL 1 DAY AS ingested_at, '{end}' AS dt
      FROM range({opps}) t(i)) TO '{lake}/raw/opportunities' (FORMAT parquet, PARTITION_BY (dt))""")


def duck_sql(lake, start, end):
    """The four metrics (and silent_warnings) in plain DuckDB SQL, the index printed as JSON."""
    scan = lambda ds: f"read_parquet('{lake}/raw/{ds}/**/*.parquet', hive_partitioning=1)"
    rank = lambda col: "list_position(['" + "','".join(STAGES) + f"'], {col})"
    skip = (f"CASE WHEN {rank('to_stage')} IS NULL THEN NULL WHEN to_stage = 'lost' THEN false "
            f"WHEN coalesce(from_stage, '') = '' AND to_stage = 'qualified' THEN false "
            f"ELSE {rank('to_stage')} > coalesce({rank('from_stage')}, 0) + 1 END")
    timeout = "CASE stage " + " ".join(f"WHEN '{s}' THEN {t}" for s, t in TIMEOUTS.items()) + " ELSE 48 END"
    evidence = "'" + "','".join(EVIDENCE) + "'"
    return f"""
    SET TimeZone='UTC';
    SET enable_progress_bar=false;
    CREATE TEMP VIEW opps AS SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY opportunity_id ORDER BY ingested_at DESC, source_line DESC) r FROM {scan('opportunities')}) WHERE r = 1;
    CREATE TEMP TABLE compliance AS
      WITH moved AS (SELECT opportunity_id, bool_and(NOT ({skip})) FILTER (WHERE ({skip}) IS NOT NULL) AS ok
                     FROM {scan('stage_changes')} WHERE dt >= DATE '{start}' AND dt < DATE '{end}'
                       AND changed_at >= TIMESTAMPTZ '{start} 00:00:00+00' AND changed_at < TIMESTAMPTZ '{end} 00:00:00+00'
                       AND from_stage IS DISTINCT FROM to_stage
                     GROUP BY 1),
           j AS (SELECT m.*, o.team FROM moved m LEFT JOIN opps o USING (opportunity_id) WHERE ok IS NOT NULL)
      SELECT team, count(*) FILTER (WHERE ok) / count(*) AS value FROM j WHERE team IS NOT NULL GROUP BY team
      UNION ALL SELECT NULL, CASE WHEN count(*) > 0 THEN count(*) FILTER (WHERE ok) / count(*) END FROM j;
    CREATE TEMP TABLE evidence AS
      WITH due AS (SELECT team, coalesce(trim(evidence), '') <> '' AS has FROM {scan('actions')}
                   WHERE dt >= DATE '{start}' AND dt < DATE '{end}' AND action_type IN ({evidence}))
      SELECT team, count(*) FILTER (WHERE has) / count(*) AS value FROM due WHERE team IS NOT NULL GROUP BY team
      UNION ALL SELECT NULL, CASE WHEN count(*) > 0 THEN count(*) FILTER (WHERE has) / count(*) END FROM due;
    CREATE TEMP TABLE warnings AS
      WITH latest AS (SELECT opportunity_id, to_stage AS stage, changed_at AS entered_at FROM
                       (SELECT *, row_number() OVER (PARTITION BY opportunity_id ORDER BY changed_at DESC, ingested_at DESC, source_line DESC) r
                        FROM {scan('stage_changes')} WHERE dt < DATE '{end}' AND changed_at < TIMESTAMPTZ '{end} 00:00:00+00'
                          AND from_stage IS DISTINCT FROM to_stage) WHERE r = 1),
           open AS (SELECT * FROM latest WHERE stage NOT IN ('won', 'lost')),
           act AS (SELECT o.opportunity_id, max(a.occurred_at) AS last FROM open o JOIN {scan('actions')} a USING (opportunity_id)
                   WHERE a.dt < DATE '{end}' AND a.occurred_at >= o.entered_at AND a.occurred_at < TIMESTAMPTZ '{end} 00:00:00+00' GROUP BY 1)
      SELECT o.opportunity_id, opp.team, o.stage,
             (epoch_us(TIMESTAMPTZ '{end} 00:00:00+00') - epoch_us(coalesce(act.last, o.entered_at))) / 3600e6 AS silent_hours,
             {timeout.replace('stage', 'o.stage', 1)} AS timeout_h
      FROM open o LEFT JOIN act USING (opportunity_id) LEFT JOIN opps opp USING (opportunity_id);
    CREATE TEMP TABLE silent AS
      SELECT team, count(*) FILTER (WHERE silent_hours > timeout_h) / count(*) AS value FROM warnings WHERE team IS NOT NULL GROUP BY team
      UNION ALL SELECT NULL, CASE WHEN count(*) > 0 THEN count(*) FILTER (WHERE silent_hours > timeout_h) / count(*) END FROM warnings;
    SELECT to_json(list({{'team': team, 'value': value}} ORDER BY team NULLS FIRST)) FROM (
      SELECT team, (coalesce(6 * c, 0) + coalesce(3 * e, 0) + coalesce(1 - s, 0)) /
             nullif((CASE WHEN c IS NULL THEN 0 ELSE 6 END) + (CASE WHEN e IS NULL THEN 0 ELSE 3 END) + (CASE WHEN s IS NULL THEN 0 ELSE 1 END), 0) AS value
      FROM (SELECT team, max(c) c, max(e) e, max(s) s FROM (
              SELECT team, value c, NULL e, NULL s FROM compliance UNION ALL
              SELECT team, NULL, value, NULL FROM evidence UNION ALL
              SELECT team, NULL, NULL, value FROM silent) GROUP BY team));
    """


def median(runs):
    """The run of median wall time."""
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


def measure(argv, **kw):
    """Runs argv; returns (seconds, peak RSS in MiB of that process alone, its stdout)."""
    with tempfile.NamedTemporaryFile() as rss:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", RSS_WRAPPER, rss.name, *argv], stdout=subprocess.PIPE, **kw)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{argv[:4]} failed")
        return seconds, int(open(rss.name).read()) / 1024, done.stdout.decode()


class Engines:
    """flowhealth and DuckDB over one lake, for the week from `start` to `end`."""

    def __init__(self, work, lake, week, previous, start, end):
        self.lake, self.week, self.previous = lake, week, previous
        config = os.path.join(work, "config.yaml")
        with open(os.path.join(ROOT, "config.yaml")) as f:
            text = f.read().replace("queries: ./queries", f"queries: {ROOT}/queries")
        with open(config, "w") as f:
            f.write(text)
        self.config = config
        self.env = dict(os.environ, FLOWHEALTH_LAKE=lake, FLOWHEALTH_TIMEZONE="UTC", RUST_LOG="warn")
        self.script = os.path.join(work, f"duck-{os.path.basename(lake)}.sql")
        with open(self.script, "w") as f:
            f.write(duck_sql(lake, start, end))

    def flowhealth(self, period):
        return measure([BIN, "--config", self.config, "metrics", "run", *METRICS, "--period", period], env=self.env)

    def duckdb(self):
        return measure([sys.executable, "-c",
                        "import duckdb, sys; con = duckdb.connect(); r = con.execute(open(sys.argv[1]).read()).fetchall(); print(r[0][0])",
                        self.script])

    def index(self):
        return duckdb.sql(f"select team, value from read_parquet('{self.lake}/metrics/process_health_index/**/*.parquet', hive_partitioning=1) "
                          f"where period = '{self.week}' order by team nulls first").fetchall()

    def warnings(self):
        return duckdb.sql(f"select * exclude (run_id) from read_parquet('{self.lake}/metrics/silent_warnings/**/*.parquet', hive_partitioning=1) "
                          f"where period = '{self.week}' order by opportunity_id").fetchall()

    def cold(self):
        """The week from scratch, then the previous week (the state the warm runs start from)."""
        cold = self.flowhealth(self.week)
        self.cold_rows = (self.index(), self.warnings())
        self.flowhealth(self.previous)
        return cold

    def check(self, warm, duck):
        """The warm run started from the previous week and equals the cold; DuckDB agrees."""
        if f"from {self.previous}'s state" not in warm[2]:
            sys.exit(f"the run of {self.week} did not start from {self.previous}'s state:\n{warm[2]}")
        ours = self.index()
        if (ours, self.warnings()) != self.cold_rows:
            sys.exit(f"{self.week} from {self.previous}'s state differs from {self.week} computed from scratch")
        theirs = [(r["team"], r["value"]) for r in json.loads(duck[2].strip().splitlines()[-1])]
        for (t1, v1), (t2, v2) in zip(ours, theirs):
            if t1 != t2 or (v1 is None) != (v2 is None) or (v1 is not None and abs(v1 - v2) > 1e-9):
                sys.exit(f"the engines disagree: flowhealth {ours}, duckdb {theirs}")


def main():
    actions = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    weeks = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    end, start, week, previous = "2026-03-30", "2026-03-23", "2026-W13", "2026-W12"
    work = tempfile.mkdtemp(prefix="flowhealth-bench-")
    try:
        labels, lakes = ("lake", "4x history"), []
        for factor in (1, 4):
            lake = os.path.join(work, f"lake{factor}")
            print(f"generating {actions * factor:,} actions, {actions * factor // 10:,} stage changes over {weeks * factor} weeks ...", flush=True)
            generate(lake, actions * factor, weeks * factor, end)
            lakes.append(Engines(work, lake, week, previous, start, end))
        os.sync()  # the lakes' write-back would otherwise land in the timed runs
        colds = [engines.cold() for engines in lakes]
        # Interleaved, so that a slow spell of the machine hits both lakes alike.
        warms, ducks = [[], []], [[], []]
        for _ in range(RUNS):
            for i, engines in enumerate(lakes):
                warms[i].append(engines.flowhealth(week))
                ducks[i].append(engines.duckdb())
        rows = []
        for label, engines, cold, warm, duck in zip(labels, lakes, colds, warms, ducks):
            warm, duck = median(warm), median(duck)
            engines.check(warm, duck)
            rows.append((label, cold, warm, duck))
        print(f"\nweek {week}: {', '.join(METRICS)} (with silent_warnings)")
        print("cold: nothing computed before; warm: after the previous week's run (the weekly job)")
        print(f"{'':12} {'cold s':>7} {'MiB':>5} {'warm s':>7} {'MiB':>5} {'duckdb s':>9} {'MiB':>5} {'cold ratio':>10} {'warm ratio':>10}")
        for label, cold, warm, duck in rows:
            print(f"{label:12} {cold[0]:7.2f} {cold[1]:5.0f} {warm[0]:7.2f} {warm[1]:5.0f} {duck[0]:9.2f} {duck[1]:5.0f} "
                  f"{duck[0] / cold[0]:9.2f}x {duck[0] / warm[0]:9.2f}x")
        growth = lambda i: rows[1][i][0] / rows[0][i][0]
        print(f"4x history / 1x, same week: flowhealth cold {growth(1):.2f}x, warm {growth(2):.2f}x; duckdb {growth(3):.2f}x")
        print("ratio = duckdb seconds / flowhealth seconds (above 1: flowhealth is faster); the index values agree,")
        print("and the warm run's silent_warnings and index rows equal the cold run's")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
