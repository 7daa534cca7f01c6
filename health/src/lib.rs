//! The health agent: on a fixed period it removes worker records whose worker died (no heartbeat),
//! never started, or lingers in shutdown; stops workers idle longer than `worker_ttl`; gives a
//! worker back to every actor that has queued messages but none; and removes actor containers of
//! this host that no live worker owns, or whose execution is over although they remain (their
//! worker could not remove them). Every action is logged with its reason.

pub mod autoscaler;
pub mod cron;
pub mod events;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use abaco_control::Control;
use abaco_core::time::now;
use abaco_core::{ActorStatus, Config, DbId, ExecutionId, Queue, WorkerId, WorkerStatus};
use abaco_runtime::Runtime;

#[derive(Clone)]
pub struct HealthContext {
    pub config: Arc<Config>,
    pub control: Control,
    pub runtime: Runtime,
    /// How often a pass runs.
    pub period: Duration,
}

/// A worker whose heartbeat is older than this is dead (it beats every `abaco_worker::HEARTBEAT`).
pub const DEAD_AFTER: Duration = Duration::from_secs(35);
/// Workers still being set up, or shutting down, get this long.
pub const SETUP_GRACE: Duration = Duration::from_secs(300);

/// What one pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub dead_workers_removed: usize,
    pub idle_workers_stopped: usize,
    pub workers_requested: usize,
    pub orphan_containers_removed: usize,
    pub clients_removed: usize,
}

pub async fn run(ctx: HealthContext, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pass(&ctx).await {
            Ok(report) if report != Report::default() => {
                tracing::info!(?report, "health pass acted")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(cause = %err, "health pass failed; will retry"),
        }
    }
}

/// One health pass.
pub async fn pass(ctx: &HealthContext) -> Result<Report, abaco_control::ControlError> {
    let store = &ctx.control.store;
    let mut report = Report::default();
    let t = now();
    let age = |since: Option<abaco_core::time::Timestamp>| {
        since
            .map(|s| (t - s).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::MAX)
    };
    let mut live: HashSet<WorkerId> = HashSet::new();
    for worker in store.all_workers().await? {
        let heartbeat = age(worker.last_health_check_time.or(Some(worker.create_time)));
        let verdict = match worker.status {
            WorkerStatus::Ready | WorkerStatus::Busy if heartbeat > DEAD_AFTER => {
                Some("no heartbeat: the worker's process died")
            }
            WorkerStatus::Requested
            | WorkerStatus::SpawnerSetup
            | WorkerStatus::PullingImage
            | WorkerStatus::CreatingContainer
            | WorkerStatus::UpdatingStore
                if heartbeat > SETUP_GRACE =>
            {
                Some("never became READY: no spawner started it")
            }
            WorkerStatus::ShutdownRequested | WorkerStatus::ShuttingDown | WorkerStatus::Error
                if heartbeat > DEAD_AFTER.max(Duration::from_secs(60)) =>
            {
                Some("lingered in shutdown")
            }
            _ => None,
        };
        if let Some(reason) = verdict {
            store.delete_worker(&worker.actor_id, &worker.id).await?;
            let _ = ctx
                .control
                .channels
                .delete(&Queue::WorkerControl(worker.id.clone()))
                .await;
            tracing::warn!(actor_id = %worker.actor_id, worker_id = %worker.id, status = %worker.status, reason, "health removed worker");
            report.dead_workers_removed += 1;
            continue;
        }
        live.insert(worker.id.clone());
        let ttl = ctx.config.workers.worker_ttl;
        if ttl > 0 && worker.status == WorkerStatus::Ready {
            let idle = age(worker.last_execution_time.or(Some(worker.create_time)));
            if idle > Duration::from_secs(ttl as u64) {
                ctx.control
                    .stop_worker(&worker.actor_id, &worker.id, "idle longer than worker_ttl")
                    .await?;
                report.idle_workers_stopped += 1;
            }
        }
    }
    report.workers_requested = ensure_workers_for_queued_messages(ctx).await?;
    report.clients_removed = remove_orphan_clients(ctx).await;
    report.orphan_containers_removed = remove_orphan_containers(ctx, &live).await;
    Ok(report)
}

/// Every actor with messages waiting and no worker gets one (after crashes, scale-down, errors
/// in requesting workers).
async fn ensure_workers_for_queued_messages(
    ctx: &HealthContext,
) -> Result<usize, abaco_control::ControlError> {
    let mut requested = 0;
    for actor in ctx.control.store.all_actors().await? {
        if matches!(actor.status, ActorStatus::Error | ActorStatus::ShuttingDown) {
            continue;
        }
        // Only actors without a worker need a look at their mailbox.
        let workers = ctx.control.store.workers_of(&actor.db_id()).await?;
        if workers.iter().any(|w| w.status.is_viable()) {
            continue;
        }
        let queued = ctx
            .control
            .channels
            .len(&Queue::Mailbox(actor.db_id()))
            .await?;
        if queued > 0 && ctx.control.ensure_one_worker(&actor).await?.is_some() {
            tracing::info!(actor_id = %actor.db_id(), queued, "health requested a worker for queued messages");
            requested += 1;
        }
    }
    Ok(requested)
}

/// Deletes OAuth clients made for workers that no longer exist (a worker that died could not
/// delete its own), which revokes their tokens.
async fn remove_orphan_clients(ctx: &HealthContext) -> usize {
    let store = &ctx.control.store;
    let Ok(clients) = abaco_control::tokens::all_clients(store).await else {
        return 0;
    };
    let mut removed = 0;
    for client in clients {
        let (Some(actor_id), Some(worker_id)) = (&client.actor_id, &client.worker_id) else {
            continue;
        };
        if let Ok(None) = store.worker(actor_id, worker_id).await {
            if let Ok(true) = abaco_control::tokens::delete_client(store, &client.client_id).await {
                tracing::info!(client_id = %client.client_id, worker_id = %worker_id, "health removed the OAuth client of a vanished worker");
                removed += 1;
            }
        }
    }
    removed
}

/// Whether a live worker's container is one it could not remove: it has stopped and its
/// execution's final status is recorded. A worker removes its container before it records the
/// final status, and never runs a message again once its execution is final, so such a container
/// is nobody's (its removal failed, e.g. while the Docker engine restarted). Kept with
/// `leave_containers`.
async fn finished_and_recorded(ctx: &HealthContext, c: &abaco_runtime::ContainerSummary) -> bool {
    if c.running || ctx.config.workers.leave_containers {
        return false;
    }
    let (Some(actor), Some(eid)) = (
        c.labels.get(abaco_worker::LABEL_ACTOR),
        c.labels.get(abaco_worker::LABEL_EXECUTION),
    ) else {
        return false;
    };
    matches!(
        ctx.control
            .store
            .execution(&DbId::from(actor.as_str()), &ExecutionId::from(eid.as_str()))
            .await,
        Ok(Some(e)) if e.status.is_final()
    )
}

/// Removes actor containers of this host whose worker is gone, and stopped containers of
/// finished executions that their worker could not remove.
async fn remove_orphan_containers(ctx: &HealthContext, live: &HashSet<WorkerId>) -> usize {
    let host_id = ctx.config.spawner.host_id.as_str();
    let containers = match ctx
        .runtime
        .list(&[(abaco_worker::LABEL_HOST, host_id)])
        .await
    {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(cause = %err, "cannot list containers");
            return 0;
        }
    };
    let mut removed = 0;
    for c in containers {
        let Some(worker_id) = c.labels.get(abaco_worker::LABEL_WORKER) else {
            continue;
        };
        if live.contains(&WorkerId::from(worker_id.as_str())) {
            if finished_and_recorded(ctx, &c).await && ctx.runtime.remove(&c.id, true).await.is_ok()
            {
                tracing::warn!(container = %c.id, worker_id = %worker_id, "health removed the container of a finished execution");
                removed += 1;
            }
            continue;
        }
        // The list of live workers was read at the start of the pass: a worker started since
        // (a scale-up) owns containers too. Re-check its record right before removing anything.
        // Containers always carry their actor; one without it cannot be re-checked and is
        // judged by the list alone.
        let actor = c
            .labels
            .get(abaco_worker::LABEL_ACTOR)
            .cloned()
            .unwrap_or_default();
        if !actor.is_empty() {
            let record = ctx
                .control
                .store
                .worker(
                    &DbId::from(actor.as_str()),
                    &WorkerId::from(worker_id.as_str()),
                )
                .await;
            if !matches!(record, Ok(None)) {
                continue;
            }
        }
        if ctx.runtime.remove(&c.id, true).await.is_ok() {
            tracing::warn!(container = %c.id, worker_id = %worker_id, actor_id = %actor, "health removed orphaned container");
            removed += 1;
        }
    }
    removed
}
