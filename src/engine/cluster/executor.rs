//! `flowhealth executor`: a Ballista executor, with flowhealth's codecs and the lake's store.

use std::path::PathBuf;
use std::sync::Arc;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use ballista_core::JobId;
use ballista_core::serde::protobuf::{
    RuntimeStatsReport, ShuffleWritePartition, TaskColumnStats, WindowStateReport,
};
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::prelude::SessionConfig;

use super::codec::{Libraries, LogicalCodec, PhysicalCodec};
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::lake::Lake;

/// Where the executor listens and which scheduler it joins.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    /// The scheduler to register with, df://host:port.
    #[arg(long, env = "FLOWHEALTH_SCHEDULER")]
    pub scheduler: String,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// The host name clients and other executors reach this one by (default: the address the
    /// scheduler sees it connect from).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Port serving results and shuffle data (Arrow Flight) to clients and other executors.
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// Port for tasks sent by the scheduler (gRPC). Unused: flowhealth's executors ask for work.
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Tasks run at once; 0 is one per core.
    #[arg(long, default_value_t = 0)]
    pub concurrency: usize,
    /// Folder for shuffle files and spills (default: a temporary folder removed at exit).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Runs the executor until SIGTERM or Ctrl-C (it then tells the scheduler, and lets the tasks
/// it is running finish).
pub async fn run(lake: &Lake, args: &ExecutorArgs) -> Result<()> {
    let scheduler = EngineConfig {
        scheduler: args.scheduler.clone(),
        ..EngineConfig::default()
    };
    let (scheduler_host, scheduler_port) = scheduler
        .scheduler_address()
        .map_err(|e| Error::Usage(format!("--scheduler: {e}")))?;
    super::check_lake(lake, "executor").await?;
    // Kept until the process ends: dropping it removes the folder.
    let temporary;
    let work_dir = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            dir.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("flowhealth-executor-")
                .tempdir()
                .map_err(|e| Error::io(std::env::temp_dir(), e))?;
            temporary.path().to_path_buf()
        }
    };
    let work_dir_text = work_dir.display().to_string();
    let store = lake.store().clone();
    let store_url = ObjectStoreUrl::parse(lake.base_url())?;
    let spill_dir = work_dir_text.clone();
    // Every task's runtime reads the lake through this process's own store (its S3 credentials).
    let runtime: ballista_core::RuntimeProducer = Arc::new(move |_config: &SessionConfig| {
        let runtime = RuntimeEnvBuilder::new()
            .with_temp_file_path(spill_dir.clone())
            .build_arc()?;
        runtime.register_object_store(store_url.as_ref(), store.clone());
        Ok(runtime)
    });
    let libraries = Arc::new(Libraries::default());
    // DataFusion's functions go by name. Ballista's executor registry lacks the nested (array)
    // ones the client and the scheduler have (`array_to_string`, `array_sort`, ...): add them.
    let mut registry = ballista_core::registry::BallistaFunctionRegistry::default();
    for function in datafusion::functions_nested::all_default_nested_functions() {
        registry
            .scalar_functions
            .insert(function.name().to_string(), function);
    }
    let config = ExecutorProcessConfig {
        bind_host: args.bind.clone(),
        external_host: args.external_host.clone(),
        port: args.port,
        grpc_port: args.grpc_port,
        scheduler_host,
        scheduler_port,
        // Started beside the scheduler (docker compose): wait for it rather than fail.
        scheduler_connect_timeout_seconds: 60,
        vcores: args.concurrency,
        // The executor asks for work (see `scheduler::run`).
        task_scheduling_policy: ballista_core::config::TaskSchedulingPolicy::PullStaged,
        work_dir: Some(work_dir_text),
        override_logical_codec: Some(Arc::new(LogicalCodec::new(libraries.clone()))),
        override_physical_codec: Some(Arc::new(PhysicalCodec::new(libraries))),
        override_runtime_producer: Some(runtime),
        override_function_registry: Some(Arc::new(registry)),
        override_execution_engine: Some(Arc::new(StageEngine::default())),
        ..ExecutorProcessConfig::default()
    };
    tracing::info!(
        scheduler = %args.scheduler,
        port = args.port,
        grpc_port = args.grpc_port,
        work_dir = %work_dir.display(),
        lake = %lake.display(),
        "Executor starting: it registers with the scheduler, whose /readyz then counts it."
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::Cluster(format!("executor: {e}")))
}

/// Ballista's execution engine, except that a task reports no operator metrics to the scheduler.
///
/// Ballista 55's scheduler adds a stage's task metrics up operator by operator and expects every
/// task of the stage to report the same number. Under a `UnionExec` each task runs only its own
/// branch, and the others become stubs; when a branch is an empty scan (an `EmptyExec`, which has
/// no metrics, against a stub, which has), two tasks report different numbers, the scheduler
/// rejects the second task's status, and the job never ends. A `UNION ALL` over a period without
/// data did that, now and then. Without metrics the scheduler skips that step; nothing of
/// flowhealth reads them.
#[derive(Default)]
struct StageEngine {
    inner: DefaultExecutionEngine,
}

impl ExecutionEngine for StageEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> datafusion::error::Result<Arc<dyn QueryStageExecutor>> {
        let stage = self.inner.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )?;
        Ok(Arc::new(Unmetered(stage)))
    }
}

/// A query stage whose operator metrics are not reported (see [`StageEngine`]).
#[derive(Debug)]
struct Unmetered(Arc<dyn QueryStageExecutor>);

impl fmt::Display for Unmetered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

type StageFuture<'a> = Pin<
    Box<dyn Future<Output = datafusion::error::Result<Vec<ShuffleWritePartition>>> + Send + 'a>,
>;

// Written out as `async_trait` expands it (the trait is declared with that macro), so that
// flowhealth needs no macro crate of its own.
impl QueryStageExecutor for Unmetered {
    fn execute_query_stage<'life0, 'async_trait>(
        &'life0 self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> StageFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.0.execute_query_stage(task_id, context)
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        Vec::new()
    }

    fn collect_runtime_stats_reports(&self) -> Vec<RuntimeStatsReport> {
        self.0.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(&self) -> datafusion::error::Result<Vec<WindowStateReport>> {
        self.0.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.0.collect_column_stats()
    }
}
