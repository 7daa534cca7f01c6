//! The spawner: consumes worker-start commands from `command_channel_{queue}` for each of this
//! host's queues, takes each requested worker through `SPAWNER SETUP → PULLING IMAGE → CREATING
//! CONTAINER → READY`, and runs it as a task of this process. It takes one command at a time and
//! only while the host has room (`max_workers_per_host`), so the spawners of a queue share its
//! commands (ARCHITECTURE.md, "Hosts and queues").
//!
//! On start it recovers from a crash of its previous incarnation: worker records of this host are
//! stale (their tasks died with the process), so they are removed, leftover actor containers of
//! this host are removed, and each affected actor gets a worker again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use abaco_control::Control;
use abaco_core::messages::EventType;
use abaco_core::time::now;
use abaco_core::{ActorStatus, Config, DbId, Queue, SpawnerCommand, WorkerStatus};
use abaco_runtime::Runtime;
use abaco_store::Transition;
use abaco_worker::{ClientCredentials, WorkerContext};

#[cfg(test)]
mod tests;

/// Errors that stop the spawner from starting at all.
#[derive(Debug, thiserror::Error)]
pub enum SpawnerError {
    #[error(transparent)]
    Control(#[from] abaco_control::ControlError),
    #[error(transparent)]
    Store(#[from] abaco_store::StoreError),
}

#[derive(Clone)]
pub struct SpawnerContext {
    pub config: Arc<Config>,
    pub control: Control,
    pub runtime: Runtime,
}

/// Runs the spawner until `shutdown`; then waits for its workers to finish their in-flight
/// executions.
pub async fn run(ctx: SpawnerContext, shutdown: CancellationToken) -> Result<(), SpawnerError> {
    recover(&ctx).await?;
    let workers = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
    // One command at a time across all of this host's queues, so that none of them starts a
    // worker beyond `max_workers_per_host` while another is starting one.
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let mut queues = JoinSet::new();
    for queue in ctx.config.spawner.host_queues.clone() {
        queues.spawn(serve_queue(
            ctx.clone(),
            queue,
            workers.clone(),
            turn.clone(),
            shutdown.clone(),
        ));
    }
    while queues.join_next().await.is_some() {}
    let mut workers = workers.lock().await;
    tracing::info!(
        workers = workers.len(),
        "spawner stopping; waiting for in-flight executions"
    );
    while workers.join_next().await.is_some() {}
    Ok(())
}

async fn serve_queue(
    ctx: SpawnerContext,
    queue: String,
    workers: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    shutdown: CancellationToken,
) {
    let command_queue = Queue::Command(queue.clone());
    let capacity = ctx.config.spawner.max_workers_per_host;
    let mut announced = false;
    loop {
        // A host at capacity holds no consumer of the command queue: the broker would still hand
        // it a command (prefetch), which would then wait for a worker of this host to end while
        // other spawners of the queue have room. Consuming only with room leaves such commands
        // to them.
        while running(&workers).await >= capacity {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        let mut consumer = match ctx.control.channels.consume(&command_queue).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(%queue, cause = %err, "cannot consume command queue; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if !announced {
            tracing::info!(%queue, host_id = %ctx.config.spawner.host_id, "spawner serving command queue");
            announced = true;
        }
        while running(&workers).await < capacity {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return,
                d = consumer.next() => d,
            };
            let delivery = match delivery {
                Ok(Some(d)) => d,
                Ok(None) | Err(_) => {
                    tracing::warn!(%queue, "command consumer closed; reconnecting");
                    break;
                }
            };
            let _turn = turn.lock().await;
            if running(&workers).await >= capacity {
                // Another of this host's queues took the last room while this consumer waited.
                let _ = delivery.nack(true).await;
                break;
            }
            let command: SpawnerCommand = match delivery.decode() {
                Ok(c) => c,
                Err(err) => {
                    tracing::error!(cause = %err, "dropping undecodable spawner command");
                    let _ = delivery.nack(false).await;
                    continue;
                }
            };
            // Acked after processing: a spawner that dies mid-way gets the command redelivered
            // (to itself after restart, or to another spawner of the queue).
            spawn_worker(&ctx, command, &workers, &shutdown).await;
            let _ = delivery.ack().await;
        }
        // Dropping the consumer gives a command the broker had already handed to this host back
        // to the queue.
        drop(consumer);
    }
}

/// Workers of this host that are still running.
async fn running(workers: &tokio::sync::Mutex<JoinSet<()>>) -> usize {
    let mut set = workers.lock().await;
    while set.try_join_next().is_some() {}
    set.len()
}

/// Takes one requested worker to READY and starts it.
async fn spawn_worker(
    ctx: &SpawnerContext,
    command: SpawnerCommand,
    workers: &Arc<tokio::sync::Mutex<JoinSet<()>>>,
    shutdown: &CancellationToken,
) {
    let store = &ctx.control.store;
    let db_id = command.actor_id.clone();
    let wid = command.worker_id.clone();
    let actor = match store.actor(&db_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            let _ = store.delete_worker(&db_id, &wid).await;
            return;
        }
        Err(err) => {
            tracing::error!(actor_id = %db_id, cause = %err, "cannot read actor for spawner command");
            return;
        }
    };
    if actor.status == ActorStatus::Error || actor.status == ActorStatus::ShuttingDown {
        let _ = store.delete_worker(&db_id, &wid).await;
        return;
    }
    let host = &ctx.config.spawner;
    let mut setup = Map::new();
    setup.insert("host_id".into(), json!(host.host_id));
    setup.insert("host_ip".into(), json!(host.host_ip));
    match store
        .transition_worker(&db_id, &wid, WorkerStatus::SpawnerSetup, setup)
        .await
    {
        Ok(Transition::Applied) => {}
        Ok(Transition::Refused(status)) => {
            if !status.is_viable() {
                let _ = store.delete_worker(&db_id, &wid).await;
            }
            return;
        }
        Ok(Transition::Missing) => return,
        Err(err) => {
            tracing::error!(worker_id = %wid, cause = %err, "cannot start worker setup");
            return;
        }
    }
    let credentials = if wants_client(ctx, &actor) {
        match ctx
            .control
            .request_client(&actor, &wid, Duration::from_secs(30))
            .await
        {
            Ok(reply) if reply.ok => Some(ClientCredentials {
                client_id: reply.client_id,
                client_secret: reply.client_secret,
            }),
            // clientg down or slow, the store or the broker briefly away: nothing is wrong with
            // the actor, so it is not put in ERROR; a later worker request tries again.
            Ok(reply) => {
                let why = format!(
                    "Could not obtain an OAuth client for the worker: {}",
                    reply.message
                );
                retry_later(ctx, &actor, &command, &why).await;
                return;
            }
            Err(err) => {
                let why = format!("Could not obtain an OAuth client for the worker: {err}");
                retry_later(ctx, &actor, &command, &why).await;
                return;
            }
        }
    } else {
        None
    };
    let _ = store
        .transition_worker(&db_id, &wid, WorkerStatus::PullingImage, Map::new())
        .await;
    match ensure_image(ctx, &command.image, command.repull).await {
        Ok(()) => {}
        Err(ImageFailure::Transient(why)) => {
            retry_later(ctx, &actor, &command, &why).await;
            return;
        }
        Err(ImageFailure::Actor(why)) => {
            tracing::error!(actor_id = %db_id, image = %command.image, cause = %why, "image unavailable; actor in ERROR");
            let _ = store.delete_worker(&db_id, &wid).await;
            let _ = store
                .set_actor_status(&db_id, ActorStatus::Error, &why)
                .await;
            actor_error_event(ctx, &actor, &why).await;
            return;
        }
    }
    let _ = store
        .transition_worker(&db_id, &wid, WorkerStatus::CreatingContainer, Map::new())
        .await;
    let mut ready = Map::new();
    ready.insert("image".into(), json!(command.image));
    ready.insert("revision".into(), json!(command.revision));
    ready.insert("location".into(), json!(ctx.config.docker.dd));
    ready.insert("last_health_check_time".into(), json!(now()));
    if !matches!(
        store
            .transition_worker(&db_id, &wid, WorkerStatus::Ready, ready)
            .await,
        Ok(Transition::Applied)
    ) {
        return;
    }
    let worker = match store.worker(&db_id, &wid).await {
        Ok(Some(w)) => w,
        _ => return,
    };
    // Read again: a setup that failed meanwhile may have set a waiting message to clear.
    let actor = match store.actor(&db_id).await {
        Ok(Some(current)) => current,
        _ => actor,
    };
    if actor.status != ActorStatus::Ready || actor.status_message.starts_with(WAITING) {
        let _ = store
            .set_actor_status(&db_id, ActorStatus::Ready, " ")
            .await;
        let mut extra = serde_json::Map::new();
        extra.insert("status_message".into(), json!(" "));
        ctx.control
            .publish_event(&actor, EventType::ActorReady, extra)
            .await;
    }
    let worker_ctx = WorkerContext {
        config: ctx.config.clone(),
        control: ctx.control.clone(),
        runtime: ctx.runtime.clone(),
    };
    workers.lock().await.spawn(abaco_worker::run(
        worker_ctx,
        worker,
        credentials,
        shutdown.clone(),
    ));
    tracing::info!(actor_id = %db_id, worker_id = %wid, "worker READY");
    if command.stop_existing {
        if let Err(err) = ctx
            .control
            .stop_workers(
                &db_id,
                std::slice::from_ref(&wid),
                "replaced by a worker of a new revision",
            )
            .await
        {
            tracing::warn!(actor_id = %db_id, cause = %err, "could not stop old workers");
        }
    }
}

/// Whether the actor's workers get an OAuth client (its `token` attribute, and the tenant's
/// `[workers] {tenant}_generate_clients` / `generate_clients`).
fn wants_client(ctx: &SpawnerContext, actor: &abaco_core::Actor) -> bool {
    let enabled = ctx
        .config
        .raw
        .get(
            "workers",
            &format!(
                "{}_generate_clients",
                actor.tenant.as_str().to_ascii_lowercase()
            ),
        )
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(ctx.config.workers.generate_clients);
    enabled && actor.wants_token()
}

async fn actor_error_event(ctx: &SpawnerContext, actor: &abaco_core::Actor, why: &str) {
    let mut extra = serde_json::Map::new();
    extra.insert("status_message".into(), json!(why));
    ctx.control
        .publish_event(actor, EventType::ActorError, extra)
        .await;
}

/// Why a worker's image is not there.
enum ImageFailure {
    /// The image is missing and cannot be pulled: the actor cannot run (it goes to ERROR).
    Actor(String),
    /// The Docker engine could not be reached: a later attempt may succeed.
    Transient(String),
}

/// The image is used as is when present locally; otherwise pulled once. With `repull` it is
/// pulled again, falling back to the local copy when the registry cannot be reached.
async fn ensure_image(ctx: &SpawnerContext, image: &str, repull: bool) -> Result<(), ImageFailure> {
    let failure = |what: String, err: abaco_runtime::RuntimeError| {
        if err.is_retryable() {
            ImageFailure::Transient(format!("{what}: {err}"))
        } else {
            ImageFailure::Actor(format!("{what}: {err}"))
        }
    };
    match ctx.runtime.image_exists(image).await {
        Ok(true) if repull => {
            if let Err(err) = ctx.runtime.pull(image).await {
                tracing::warn!(%image, cause = %err, "re-pull failed; using the local image");
            }
            Ok(())
        }
        Ok(true) => Ok(()),
        Ok(false) => ctx.runtime.pull(image).await.map_err(|e| {
            failure(
                format!("Image {image} is not available locally and could not be pulled"),
                e,
            )
        }),
        Err(e) => Err(failure(format!("Could not inspect image {image}"), e)),
    }
}

/// How the status message of an actor waiting for a worker begins (cleared once one is READY).
const WAITING: &str = "Waiting to start a worker: ";

/// How long a worker setup that failed for a reason outside the actor waits before its command
/// is sent again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A worker whose setup failed for a reason outside the actor (clientg, the store, the broker or
/// the Docker engine unreachable): the actor keeps its status, with a message that says what it
/// waits for; the worker goes back to REQUESTED (its heartbeat refreshed, so health does not take
/// it for a stuck setup) and its command is sent again after `RETRY_AFTER`, to any spawner of
/// the queue. A replacement for a new revision is retried like any other, never dropped. If this
/// process dies before resending, health removes the worker as a stuck setup and gives an actor
/// with queued messages a new one.
async fn retry_later(
    ctx: &SpawnerContext,
    actor: &abaco_core::Actor,
    command: &SpawnerCommand,
    why: &str,
) {
    let db_id = actor.db_id();
    let wid = &command.worker_id;
    tracing::warn!(actor_id = %db_id, worker_id = %wid, cause = why, retry_in = ?RETRY_AFTER, "worker setup failed; retrying");
    let store = &ctx.control.store;
    let _ = store
        .set_actor_status_message(&db_id, &format!("{WAITING}{why}"))
        .await;
    let mut requested = Map::new();
    requested.insert("status".into(), json!(WorkerStatus::Requested.as_str()));
    requested.insert("last_health_check_time".into(), json!(now()));
    // A worker that is gone (its actor deleted, or stopped meanwhile) is not retried.
    if !matches!(store.update_worker(&db_id, wid, requested).await, Ok(true)) {
        return;
    }
    let channels = ctx.control.channels.clone();
    let queue = Queue::Command(actor.queue.clone());
    let command = command.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RETRY_AFTER).await;
        if let Err(err) = channels.publish(&queue, &command).await {
            tracing::warn!(worker_id = %command.worker_id, cause = %err, "could not resend the worker command; health will replace the worker");
        }
    });
}

/// Cleans up after a previous incarnation of this host's spawner (see the module docs).
pub async fn recover(ctx: &SpawnerContext) -> Result<(), SpawnerError> {
    let host_id = &ctx.config.spawner.host_id;
    let store = &ctx.control.store;
    let mut affected: HashSet<DbId> = HashSet::new();
    for worker in store.all_workers().await? {
        if worker.host_id.as_deref() == Some(host_id.as_str()) {
            store.delete_worker(&worker.actor_id, &worker.id).await?;
            affected.insert(worker.actor_id.clone());
        }
    }
    match ctx
        .runtime
        .list(&[(abaco_worker::LABEL_HOST, host_id.as_str())])
        .await
    {
        Ok(containers) => {
            for c in containers {
                let _ = ctx.runtime.remove(&c.id, true).await;
            }
        }
        Err(err) => tracing::warn!(cause = %err, "cannot list leftover containers"),
    }
    for db_id in &affected {
        if let Some(actor) = store.actor(db_id).await? {
            if actor.status != ActorStatus::Error && actor.status != ActorStatus::ShuttingDown {
                ctx.control.ensure_one_worker(&actor).await?;
            }
        }
    }
    if !affected.is_empty() {
        tracing::info!(host_id = %host_id, actors = affected.len(), "recovered workers of a previous run");
    }
    Ok(())
}
