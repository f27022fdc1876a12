//! The lake and the inbox on S3, against a real S3-compatible server on loopback: moto in server
//! mode (installed by scripts/test).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowhealth::config::Config;
use flowhealth::ingest::FileStatus;
use flowhealth::lake::Lake;

use crate::common::{ACTION_HEADER, STAGES};

/// A moto S3 server on loopback with the bucket `flowhealth`, stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto server starts (pip install 'moto[server]')");
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start listening"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let moto = Moto { child, endpoint };
    moto.create_bucket("flowhealth");
    moto
}

impl Moto {
    /// Creates bucket `name` on the server.
    pub fn create_bucket(&self, name: &str) {
        let create = Command::new("python3")
            .args([
                "-c",
                "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
                 aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[2])",
                &self.endpoint,
                name,
            ])
            .status()
            .unwrap();
        assert!(create.success(), "bucket {name} created");
    }

    /// The `s3:` settings of a store on this server.
    pub fn s3_yaml(&self) -> String {
        format!(
            "s3: {{ endpoint: \"{}\", region: us-east-1, access_key_id: test, secret_access_key: test, allow_http: true }}",
            self.endpoint
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_and_inbox_on_s3() {
    let moto = start_moto();
    let s3 = format!(
        "s3: {{ endpoint: \"{}\", region: us-east-1, access_key_id: test, secret_access_key: test, allow_http: true }}",
        moto.endpoint
    );
    let text = format!(
        "timezone: Europe/Berlin\nlake: {{ url: s3://flowhealth/lake, {s3} }}\ninbox: {{ url: s3://flowhealth/inbox, {s3} }}\nqueries: {}/queries\n{STAGES}",
        env!("CARGO_MANIFEST_DIR")
    );
    let config = Config::parse(&text, "s3.yaml", ".".into(), |_| None).unwrap();
    let inbox = Lake::open_store(&config, &config.inbox).unwrap();
    let mut csv = format!("{ACTION_HEADER}\n");
    for i in 0..500 {
        csv += &format!(
            "s{i},2026-03-{:02} 10:00,,R1,east,,,../../etc,call,,,\n",
            1 + i % 28
        );
    }
    csv += "broken,not-a-time,,R1,,,,,call,,,\n";
    inbox
        .put(&inbox.path(&["actions", "export.csv"]), csv.into())
        .await
        .unwrap();
    inbox.put(&inbox.path(&["actions", "again.ndjson"]), "{\"action_id\":\"s1\",\"occurred_at\":\"2026-03-02T10:00:00Z\",\"owner_id\":\"R1\",\"action_type\":\"call\"}\n".into()).await.unwrap();

    let report = flowhealth::ingest::ingest(&config, &[]).await.unwrap();
    let t = report.totals();
    assert_eq!(
        (t.rows_read, t.landed, t.quarantined, t.duplicates),
        (502, 500, 1, 1),
        "{report}"
    );

    // Read back what is on the server: every data file under lake/raw/actions/dt=.../
    let lake = Lake::open(&config).unwrap();
    let objects = lake.list(&["raw", "actions"]).await.unwrap();
    assert!(!objects.is_empty());
    let mut rows = 0;
    for object in &objects {
        let key = object.location.as_ref();
        assert!(
            key.starts_with("lake/raw/actions/dt=2026-03-") && key.ends_with(".parquet"),
            "{key}"
        );
        let bytes = lake.get(&object.location).await.unwrap().unwrap();
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes,
            )
            .unwrap()
            .build()
            .unwrap();
        rows += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
    }
    assert_eq!(rows, 500);
    assert_eq!(
        lake.list(&["quarantine", "actions"]).await.unwrap().len(),
        1
    );
    assert!(
        lake.list(&["_flowhealth", "locks"])
            .await
            .unwrap()
            .is_empty(),
        "the lock is released"
    );

    let again = flowhealth::ingest::ingest(&config, &[]).await.unwrap();
    assert!(
        again
            .files
            .iter()
            .all(|f| f.status == FileStatus::AlreadyIngested),
        "{again}"
    );
    assert_eq!(
        lake.list(&["raw", "actions"]).await.unwrap().len(),
        objects.len()
    );

    // Metrics read the lake on S3 and write their outputs there. Week 2026-W10 is 2 to 8 March:
    // days 2..=8 are i % 28 in 1..=7, 18 rows each.
    let catalog = flowhealth::metrics::catalog(&config).unwrap();
    let request = flowhealth::metrics::run::Request {
        metrics: vec!["entry_lag".into()],
        period: Some("2026-W10".into()),
        as_of: None,
    };
    let report = flowhealth::metrics::run::run(&config, &lake, &catalog, &request)
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let bytes = lake
        .get(&lake.path(&[
            "metrics",
            "entry_lag",
            "version=1",
            "period=2026-W10",
            "part-0.parquet",
        ]))
        .await
        .unwrap()
        .expect("the metric output is on S3");
    let batch =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
    let text =
        datafusion::arrow::util::pretty::pretty_format_batches(&[batch.project(&[0, 1]).unwrap()])
            .unwrap()
            .to_string();
    assert!(
        text.contains("|          | 126     |") && text.contains("| R1       | 126     |"),
        "{text}"
    );
}
