//! Every Parquet file flowhealth writes reads the same in every reader BI users run: DuckDB,
//! pandas with pyarrow, and polars (`docs/contract.md` section 5).

use crate::common::Workspace;

/// A pipeline whose `sql:` export makes timestamps the ways SQL does: `now()` and
/// `to_timestamp(column)` (nanoseconds, the session's timezone), a lake column (microseconds UTC).
const EXPORT: &str = r#"name: readers
schedule: "0 0 8 * * Mon"
period: week
steps:
  - metrics: [evidence_rate]
  - sql:
      output: weekly_actions
      query: >-
        SELECT action_type, count(*) AS actions, max(occurred_at) AS latest,
               now() AS exported_at, max(to_timestamp(CAST(dt AS VARCHAR))) AS last_day_start,
               max(local_date(occurred_at)) AS last_day
        FROM actions WHERE dt >= $period_start_date AND dt < $period_end_date GROUP BY 1
"#;

/// For each table of the lake (a dataset folder; one version of a metric): its rows and its
/// columns' types as DuckDB, pyarrow (what pandas reads through) and polars see them, mapped to
/// one vocabulary; the rows pandas reads; every file's timestamp columns; and every column that
/// repeats a Hive partition key of its file's folders. Prints JSON.
const READ: &str = r#"
import glob, json, os, re, sys
import duckdb, pandas as pd, polars as pl, pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq
lake = sys.argv[1]
tables = []
for area in ('raw', 'quarantine'):
    tables += sorted(glob.glob(f'{lake}/{area}/*'))
tables += sorted(glob.glob(f'{lake}/metrics/*/version=*'))
tables += [f'{lake}/breaches', f'{lake}/runs'] + sorted(glob.glob(f'{lake}/exports/*'))

def family(t):
    t = str(t)
    for pattern, name in [
        (r'^(VARCHAR|string|large_string|string_view|String|Utf8)$', 'text'),
        (r"^(TIMESTAMP WITH TIME ZONE|timestamp\[us, tz=UTC\]|Datetime\(time_unit='us', time_zone='UTC'\))$", 'instant_us'),
        (r'^(BIGINT|int64|Int64)$', 'int64'),
        (r'^(DOUBLE|double|Float64)$', 'float64'),
        (r'^(BOOLEAN|bool|Boolean)$', 'bool'),
        (r'^(DATE|date32\[day\]|Date)$', 'date'),
        (r'^(DECIMAL\(18,2\)|decimal128\(18, 2\)|Decimal\(precision=18, scale=2\))$', 'decimal'),
    ]:
        if re.match(pattern, t):
            return name
    return 'other: ' + t

con = duckdb.connect()
con.execute('SET enable_progress_bar = false')  # standard output is the JSON alone
con.execute("SET TimeZone='UTC'")
out = {'tables': {}, 'timestamps': {}, 'duplicated_keys': []}
for table in tables:
    name = os.path.relpath(table, lake)
    files = sorted(glob.glob(f'{table}/**/*.parquet', recursive=True))
    if not files:
        continue
    keys = set()
    for f in files:
        folders = dict(p.split('=', 1) for p in os.path.relpath(f, lake).split('/')[:-1] if '=' in p)
        keys |= set(folders)
        schema = pq.read_schema(f)
        dup = set(schema.names) & set(folders)
        if dup:
            out['duplicated_keys'].append(f'{os.path.relpath(f, lake)}: {sorted(dup)}')
        for field in schema:
            if pa.types.is_timestamp(field.type):
                out['timestamps'][str(field.type)] = os.path.relpath(f, lake)
    scan = f"read_parquet('{table}/**/*.parquet', hive_partitioning=1)"
    duck_rows = con.execute(f'select count(*) from {scan}').fetchone()[0]
    duck_types = {r[0]: family(r[1]) for r in con.execute(f'describe select * from {scan}').fetchall()}
    arrow = ds.dataset(table, format='parquet', partitioning='hive').to_table()
    pandas_rows = len(pd.read_parquet(table))
    polars = pl.read_parquet(f'{table}/**/*.parquet', hive_partitioning=True)
    out['tables'][name] = {
        'rows': {'duckdb': duck_rows, 'pandas': pandas_rows, 'pyarrow': arrow.num_rows, 'polars': polars.height},
        # The files' own columns: a partition key's type is each reader's guess from a folder name.
        'types': {
            'duckdb': {c: t for c, t in duck_types.items() if c not in keys},
            'pyarrow': {f.name: family(f.type) for f in arrow.schema if f.name not in keys},
            'polars': {c: family(t) for c, t in polars.schema.items() if c not in keys},
        },
    }
print(json.dumps(out))
"#;

#[test]
fn every_reader_reads_every_area_of_the_demo_lake_alike() {
    let ws = Workspace::new("");
    crate::demo::run_demo_weeks(&ws, 3);
    std::fs::create_dir_all(ws.path().join("pipelines")).unwrap();
    std::fs::write(ws.path().join("pipelines/readers.yaml"), EXPORT).unwrap();
    let validate = ws.command().arg("validate").output().unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    let run = ws
        .command()
        .args(["run", "readers", "--period", "2026-W13"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let lake = ws.lake().display().to_string();
    let seen: serde_json::Value = crate::common::python_json(&["-c", READ, &lake]);
    let tables = seen["tables"].as_object().unwrap();
    for area in [
        "raw/actions",
        "raw/stage_changes",
        "raw/opportunities",
        "quarantine/actions",
        "metrics/process_health_index/version=2",
        "metrics/evidence_rate/version=3",
        "breaches",
        "runs",
        "exports/weekly_actions",
    ] {
        assert!(tables.contains_key(area), "{area} not read: {seen}");
    }
    for (name, table) in tables {
        let rows = &table["rows"];
        let n = &rows["duckdb"];
        for reader in ["pandas", "pyarrow", "polars"] {
            assert_eq!(&rows[reader], n, "{name}: {rows}");
        }
        let types = &table["types"];
        assert_eq!(types["pyarrow"], types["duckdb"], "{name}: {types}");
        assert_eq!(types["polars"], types["duckdb"], "{name}: {types}");
        let other: Vec<_> = types["duckdb"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, t)| t.as_str().unwrap().starts_with("other"))
            .collect();
        assert!(other.is_empty(), "{name}: {other:?}");
    }
    // Microseconds UTC in every file, the export's now() and to_timestamp() included.
    let timestamps: Vec<&String> = seen["timestamps"].as_object().unwrap().keys().collect();
    assert_eq!(timestamps, ["timestamp[us, tz=UTC]"], "{seen}");
    assert_eq!(seen["duplicated_keys"], serde_json::json!([]), "{seen}");
    let export = &tables["exports/weekly_actions"]["types"]["duckdb"];
    for column in ["latest", "exported_at", "last_day_start"] {
        assert_eq!(export[column], "instant_us", "{export}");
    }

    // The export's to_timestamp(column) is local midnight: the week's last day in Shanghai.
    let last = ws.duckdb(
        "select strftime(max(last_day_start), '%Y-%m-%d %H:%M') from read_parquet('{lake}/exports/weekly_actions/*/*.parquet')",
    );
    assert_eq!(last, vec![vec![serde_json::json!("2026-03-28 16:00")]]);
}

#[test]
fn validate_refuses_an_export_that_repeats_its_period_partition() {
    let ws = Workspace::new("pipelines: ./pipelines\n");
    std::fs::create_dir_all(ws.path().join("pipelines")).unwrap();
    std::fs::write(
        ws.path().join("pipelines/bad.yaml"),
        "name: bad\nschedule: \"0 0 8 * * Mon\"\nsteps:\n  - sql: { query: \"SELECT $period_id AS period, 1 AS n\", output: bad }\n",
    )
    .unwrap();
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml: steps[0].sql.query: the query has a column `period`"),
        "{stderr}"
    );
    let run = ws.command().args(["run", "bad"]).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(!ws.lake().join("exports").exists());
}

/// A timestamp without a timezone has no known instant (DataFusion's `CAST(<lake column> AS
/// TIMESTAMP)` gives UTC wall-clock time, a `TIMESTAMP '...'` literal the time as written): a
/// file holding one is refused, never written hours off; with `AT TIME ZONE` it is an instant.
#[test]
fn a_timestamp_without_a_timezone_is_refused_and_at_time_zone_says_which() {
    let ws = Workspace::in_timezone("Asia/Shanghai", "pipelines: ./pipelines\n");
    ws.inbox(
        "actions/a.csv",
        "action_id,occurred_at,owner_id,team,action_type\nA1,2026-03-02 10:00:00,R1,a,call\n",
    );
    assert!(
        ws.command()
            .arg("ingest")
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = ws.path().join("out.parquet");
    let query = |sql: &str| {
        ws.command()
            .args(["query", "--format", "parquet", "--output"])
            .arg(&out)
            .arg(sql)
            .output()
            .unwrap()
    };
    let refused = query("SELECT CAST(occurred_at AS TIMESTAMP) AS naive FROM actions");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("column `naive` is a timestamp without a timezone"),
        "{stderr}"
    );
    assert!(!out.exists());

    // 10:00 in Shanghai is 02:00 UTC, whichever way it is said.
    let said = query(
        "SELECT CAST(occurred_at AS TIMESTAMP) AT TIME ZONE 'UTC' AS a, \
         TIMESTAMP '2026-03-02 10:00:00' AT TIME ZONE 'Asia/Shanghai' AS b FROM actions",
    );
    assert!(
        said.status.success(),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    let rows = ws.duckdb(&format!(
        "select strftime(a AT TIME ZONE 'UTC', '%H:%M'), strftime(b AT TIME ZONE 'UTC', '%H:%M') \
         from read_parquet('{}')",
        out.display()
    ));
    assert_eq!(rows, [["02:00", "02:00"]]);

    // validate says the same of a pipeline's export.
    std::fs::create_dir_all(ws.path().join("pipelines")).unwrap();
    std::fs::write(
        ws.path().join("pipelines/naive.yaml"),
        "name: naive\nschedule: \"0 0 8 * * Mon\"\nsteps:\n  - sql: { query: \"SELECT TIMESTAMP '2026-03-02 10:00:00' AS t\", output: naive }\n",
    )
    .unwrap();
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "naive.yaml: steps[0].sql.query: column `t` is a timestamp without a timezone"
        ),
        "{stderr}"
    );
}
