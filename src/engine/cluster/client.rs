//! A client session on the Ballista cluster: plans locally, runs every query on the cluster.

use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::CancelJobParams;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::protobuf::LogicalPlanNode;

use super::Scratch;
use super::codec::{Libraries, LogicalCodec, PhysicalCodec};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::lake::Lake;

/// A session whose queries run on the scheduler `config.engine.scheduler`, checked with a probe:
/// a file written to the lake now must come back through the cluster.
pub async fn open(config: &Config, lake: &Lake) -> Result<Engine> {
    let url = &config.engine.scheduler;
    let (host, port) = config
        .engine
        .scheduler_address()
        .map_err(|e| Error::Config(vec![format!("engine.scheduler: {e}")]))?;
    let libraries = Libraries::with(&crate::udf::Settings::of(config))?;
    // Ballista takes its deadlines in whole seconds.
    let deadline_s = config.engine.timeout_s.ceil().max(1.0) as u64;
    let session = crate::engine::session_config(config)
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::new(libraries.clone())))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::new(libraries)))
        // Ballista's own restrictions (no Utf8View, no dynamic filters across stages, ...), applied
        // here so that the options set after them are kept (`remote_with_state` applies them only
        // to a config that has no Ballista options yet).
        .upgrade_for_ballista()
        // Three of Ballista 55's defaults gave wrong rows or failed on the metric catalog (found
        // by tests/it/cluster.rs, which compares every metric with the local engine):
        // - the adaptive planner ran every branch of a UNION ALL in more than one task
        //   (duplicate rows: entry_lag, chronic_followup_validity);
        // - a sort-merge LEFT JOIN with a filter failed on a NULL in a non-nullable column
        //   (silent_warnings);
        // - a small build side is broadcast (`CollectLeft`), and each task of a LEFT or FULL
        //   join then keeps the unmatched build rows to itself, waiting for the others, which
        //   run elsewhere: they are never emitted (silent_warnings lost its carried rows).
        // So: the static planner, hash joins, both sides always hash-partitioned.
        .with_ballista_adaptive_query_planner(false)
        .set_bool("datafusion.optimizer.prefer_hash_join", true)
        .set_u64(
            "datafusion.optimizer.hash_join_single_partition_threshold",
            0,
        )
        .set_u64(
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
            0,
        )
        // A scheduler that accepts and then never answers must not hold the command.
        .set_u64("ballista.client.grpc_connect_timeout_seconds", deadline_s)
        .set_u64("ballista.client.grpc_timeout_seconds", deadline_s);
    let state = SessionStateBuilder::new()
        .with_config(session)
        .with_default_features()
        .build();
    let ctx = SessionContext::remote_with_state(&format!("df://{host}:{port}"), state)
        .await
        .map_err(|e| unreachable(url, &e.strip_backtrace()))?;
    let session = Session {
        scratch: Scratch::new(),
        scheduler: url.clone(),
        grpc: format!("http://{host}:{port}"),
        readyz: format!("http://{host}:{port}/readyz"),
        job_timeout: std::time::Duration::from_secs_f64(config.engine.job_timeout_s),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5.min(deadline_s)))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build an HTTP client: {e}")))?,
    };
    let engine = Engine::populate(ctx, config, lake, Some(session)).await?;
    Scratch::sweep(lake).await?;
    probe(&engine, config, lake).await?;
    Ok(engine)
}

/// What a client session knows of its cluster.
pub struct Session {
    /// Where the session's computed tables go.
    pub scratch: Scratch,
    /// `engine.scheduler`, for messages.
    scheduler: String,
    /// The scheduler's gRPC endpoint (`http://host:port`), to cancel a job past its deadline.
    grpc: String,
    /// `engine.job_timeout_s`.
    job_timeout: std::time::Duration,
    /// The scheduler's readiness URL, which counts its live executors.
    readyz: String,
    http: reqwest::Client,
}

impl Session {
    /// Runs `frame` on the cluster (see [`Engine::collect`]).
    ///
    /// A job during which an executor left the cluster is failed, whatever it returned: Ballista
    /// 55 runs the lost executor's tasks again elsewhere, and in tests/it/cluster.rs such a job
    /// came back with wrong rows. The scheduler's count of live executors before and after the
    /// job tells (an executor that dies is dropped from it after `scheduler::EXECUTOR_TIMEOUT_S`,
    /// while the job waits for its tasks); a job that failed while an executor left is a cluster
    /// fault too, whatever its message. A job still running after `engine.job_timeout_s` is
    /// cancelled on the scheduler (Ballista 55 can wait for ever on a stage it rolled back after
    /// losing an executor). Both are cluster faults, so a pipeline runs the step again, on the
    /// executors that are left.
    pub(crate) async fn collect(
        &self,
        frame: DataFrame,
        failed: impl FnOnce(DataFusionError) -> Error,
    ) -> Result<Vec<RecordBatch>> {
        let before = self.executors().await;
        let task = Arc::new(frame.task_ctx());
        let job = async {
            let plan = frame.create_physical_plan().await?;
            let rows = datafusion::physical_plan::collect(plan.clone(), task);
            match tokio::time::timeout(self.job_timeout, rows).await {
                Ok(rows) => rows.map(Ok),
                Err(_) => Ok(Err(self.cancel(plan.as_ref()).await)),
            }
        };
        let result = job.await;
        let after = self.executors().await;
        let lost = match (before, after) {
            (Some(before), Some(after)) if after < before => Some((before, after)),
            _ => None,
        };
        match (result, lost) {
            (_, Some((before, after))) => Err(Error::Cluster(format!(
                "an executor left the Ballista cluster at {} while the query ran ({before} \
                 executors, then {after}): its result is not trusted; run it again",
                self.scheduler
            ))),
            (Ok(Ok(batches)), None) => Ok(batches),
            (Ok(Err(cancelled)), None) => Err(Error::Cluster(format!(
                "the query did not finish on the Ballista cluster at {} within {} s \
                 (engine.job_timeout_s); {cancelled}",
                self.scheduler,
                self.job_timeout.as_secs_f64()
            ))),
            (Err(e), None) => {
                let message = e.strip_backtrace();
                Err(if is_connection_error(&message) {
                    unreachable(&self.scheduler, &message)
                } else if is_cluster_fault(&message) {
                    Error::Cluster(format!(
                        "the Ballista cluster at {} lost the query: {message}",
                        self.scheduler
                    ))
                } else {
                    failed(e)
                })
            }
        }
    }

    /// Asks the scheduler to cancel the job `plan` sent (a plan Ballista planned knows its job
    /// once the scheduler accepted it); says what came of it, for the caller's error.
    async fn cancel(&self, plan: &dyn ExecutionPlan) -> String {
        let Some(job) = plan
            .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            .and_then(DistributedQueryExec::job_id)
        else {
            return "the scheduler had not accepted its job yet, so none was cancelled".into();
        };
        let job = String::from(job);
        let cancelled = async {
            SchedulerGrpcClient::connect(self.grpc.clone())
                .await
                .map_err(|e| e.to_string())?
                .cancel_job(CancelJobParams {
                    job_id: job.clone(),
                })
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), cancelled).await {
            Ok(Ok(_)) => format!("its job {job} was cancelled"),
            Ok(Err(e)) => format!("cancelling its job {job} failed: {e}"),
            Err(_) => format!("cancelling its job {job} got no answer within 10 s"),
        }
    }

    /// The live executors the scheduler counts (`/readyz`); `None` when it does not answer.
    async fn executors(&self) -> Option<usize> {
        let body = self
            .http
            .get(&self.readyz)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        // `ready: 2 executors registered` or `not ready: 0/1 executors registered`.
        let count = body.split_once("ready: ")?.1;
        count
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

/// Writes a random token to the session's scratch folder and reads it back through the cluster:
/// the scheduler must list the file and an executor read it. Ballista answers a scan of files it
/// cannot see with no rows (apache/datafusion-ballista#353); this turns that into an error.
async fn probe(engine: &Engine, config: &Config, lake: &Lake) -> Result<()> {
    let url = &config.engine.scheduler;
    let token = format!("{:016x}", rand::random::<u64>());
    let batch = RecordBatch::try_from_iter([(
        "token",
        Arc::new(StringArray::from(vec![token.clone()])) as ArrayRef,
    )])?;
    engine
        .register_rows("flowhealth_probe", batch.schema(), vec![batch])
        .await?;
    let result = async {
        engine
            .ctx()
            .sql("SELECT token FROM flowhealth_probe")
            .await?
            .collect()
            .await
    }
    .await;
    engine.ctx().deregister_table("flowhealth_probe")?;
    let batches = result.map_err(|e| {
        let message = e.strip_backtrace();
        if is_connection_error(&message) {
            unreachable(url, &message)
        } else if is_timeout(&message) {
            Error::Cluster(format!(
                "cannot reach the Ballista scheduler at {url} (engine.scheduler): no answer within \
                 {} s (engine.timeout_s)",
                config.engine.timeout_s
            ))
        } else {
            Error::Cluster(format!(
                "the Ballista cluster at {url} cannot read the lake at {}: {message}",
                lake.display()
            ))
        }
    })?;
    let seen: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    if seen != [token] {
        return Err(Error::Cluster(format!(
            "the Ballista cluster at {url} does not see the lake at {}: a file written there \
             just now came back as {seen:?}. Every scheduler and executor must see the lake at \
             the same path (a shared mount) or on S3.",
            lake.display()
        )));
    }
    tracing::debug!(scheduler = %url, "The cluster sees the lake.");
    Ok(())
}

/// Whether a failed Ballista job failed for the cluster's sake (an executor lost, a shuffle that
/// could not be fetched), not for the query's.
fn is_cluster_fault(message: &str) -> bool {
    [
        "FetchFailed",
        "fetch partition",
        "xecutor lost",
        "lost xecutor",
        "no executors",
        "tonic",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// Whether a Ballista error says the scheduler could not be reached (its gRPC transport errors
/// arrive as `Debug` text).
fn is_connection_error(message: &str) -> bool {
    [
        "tcp connect error",
        "ConnectError",
        "transport error",
        "Connection refused",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// Whether a Ballista error is a gRPC deadline that passed (`engine.timeout_s`).
fn is_timeout(message: &str) -> bool {
    message.contains("TimeoutExpired") || message.contains("Timeout expired")
}

fn unreachable(url: &str, message: &str) -> Error {
    Error::Cluster(format!(
        "cannot reach the Ballista scheduler at {url} (engine.scheduler): is `flowhealth \
         scheduler` running there? ({message})"
    ))
}
