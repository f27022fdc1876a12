//! `flowhealth scheduler`: the Ballista scheduler, with flowhealth's codecs and the lake's store.

use std::sync::Arc;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use super::codec::{Libraries, LogicalCodec, PhysicalCodec};
use crate::error::{Error, Result};
use crate::lake::Lake;

/// How the scheduler is reached.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Port for clients and executors (gRPC), and for `GET /readyz`.
    #[arg(long, default_value_t = 50050)]
    pub port: u16,
}

/// Seconds without word from an executor after which it is taken for dead and its tasks run
/// elsewhere. An executor asks for work at least every 5 seconds, busy or not (Ballista's
/// pull-based scheduling), and that is its heartbeat.
pub const EXECUTOR_TIMEOUT_S: u64 = 15;

/// Runs the scheduler until SIGTERM or Ctrl-C. `GET /readyz` on its port answers 200 once an
/// executor has registered.
pub async fn run(lake: &Lake, args: &SchedulerArgs) -> Result<()> {
    super::check_lake(lake, "scheduler").await?;
    let libraries = Arc::new(Libraries::default());
    let store = lake.store().clone();
    let store_url = ObjectStoreUrl::parse(lake.base_url())?;
    // The scheduler lists the lake's files to plan a scan: every session it builds for a job
    // gets the lake's store (S3 with this process's own credentials).
    let session_builder: ballista_scheduler::SessionBuilder =
        Arc::new(move |config: SessionConfig| {
            let state = ballista_core::utils::default_session_builder(config)?;
            state
                .runtime_env()
                .register_object_store(store_url.as_ref(), store.clone());
            Ok(state)
        });
    let listener = tokio::net::TcpListener::bind((args.bind.as_str(), args.port))
        .await
        .map_err(|e| {
            Error::Cluster(format!(
                "scheduler: cannot listen on {}:{}: {e}",
                args.bind, args.port
            ))
        })?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::Cluster(format!("scheduler: {e}")))?;
    let config = SchedulerConfig {
        bind_host: args.bind.clone(),
        bind_port: address.port(),
        external_host: hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into()),
        override_logical_codec: Some(Arc::new(LogicalCodec::new(libraries.clone()))),
        override_physical_codec: Some(Arc::new(PhysicalCodec::new(libraries))),
        override_session_builder: Some(session_builder),
        min_ready_executors: 1,
        // Executors ask for work rather than being sent it. With Ballista 55's push-based
        // default, an executor killed mid-job left the scheduler counting the survivors' slots
        // as taken: the job, and every job after it, waited forever. Pulled, the job finishes
        // on the survivors once the dead one has timed out.
        scheduling_policy: ballista_core::config::TaskSchedulingPolicy::PullStaged,
        executor_timeout_seconds: EXECUTOR_TIMEOUT_S,
        expire_dead_executor_interval_seconds: 5,
        no_executors_grace_period_seconds: EXECUTOR_TIMEOUT_S,
        ..SchedulerConfig::default()
    };
    config.validate().map_err(ballista_error)?;
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_error)?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(ballista_error)?;
    tracing::info!(
        %address,
        lake = %lake.display(),
        "Scheduler listening: executors register here, clients submit here; GET /readyz is 200 once an executor has registered."
    );
    tokio::select! {
        served = start_grpc_service_with_listener(listener, scheduler) => served.map_err(ballista_error),
        () = super::shutdown_signal() => {
            tracing::info!("Scheduler stopping (signal).");
            Ok(())
        }
    }
}

fn ballista_error(error: ballista_core::error::BallistaError) -> Error {
    Error::Cluster(format!("scheduler: {error}"))
}
