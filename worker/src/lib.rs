//! A worker: consumes one actor's mailbox and runs one container per message, one at a time.
//! Workers are tasks inside a spawner process (not containers, as in Abaco): a worker costs a few
//! kilobytes, starts in milliseconds, and still obeys Abaco's worker protocol — its record and
//! statuses in the store, its control queue `worker_{id}` (`status`, `force_quit`, `stop`).
//!
//! Invariant: a worker that is told to stop finishes its in-flight execution first; a message is
//! acked only after its execution's final status is recorded (the write is retried while the
//! store is unavailable, and the message requeued if it never lands); a redelivered message whose
//! execution is already final is acked without running again.

mod env;
mod execute;
mod io;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map};
use tokio_util::sync::CancellationToken;

use abaco_control::Control;
use abaco_core::time::now;
use abaco_core::{
    Config, ExecutionStatus, MailboxMessage, Queue, Worker, WorkerControl, WorkerStatus,
};
use abaco_runtime::Runtime;
use abaco_store::Transition;

pub use execute::{Outcome, LABEL_ACTOR, LABEL_EXECUTION, LABEL_HOST, LABEL_WORKER};

/// The cancellation handle of the execution in progress, so `force_quit` reaches exactly the
/// container that is running (and never a later one).
#[derive(Clone, Default)]
pub struct CurrentExecution(Arc<std::sync::Mutex<Option<CancellationToken>>>);

impl CurrentExecution {
    fn begin(&self) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(token.clone());
        }
        token
    }

    fn end(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }

    fn force_quit(&self) {
        if let Ok(slot) = self.0.lock() {
            if let Some(token) = slot.as_ref() {
                token.cancel();
            }
        }
    }
}

/// What a worker needs: configuration, store + channels, and the container runtime.
#[derive(Clone)]
pub struct WorkerContext {
    pub config: Arc<Config>,
    pub control: Control,
    pub runtime: Runtime,
}

/// How often a worker records that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// The OAuth client clientg made for this worker (actors with `token` on).
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// Runs the worker until it is told to stop (control queue) or `shutdown` is cancelled; in both
/// cases the in-flight execution finishes first.
pub async fn run(
    ctx: WorkerContext,
    worker: Worker,
    credentials: Option<ClientCredentials>,
    shutdown: CancellationToken,
) {
    let stop = shutdown.child_token();
    let force_quit = CurrentExecution::default();
    let control_task = tokio::spawn(listen_for_control(
        ctx.clone(),
        worker.clone(),
        stop.clone(),
        force_quit.clone(),
    ));
    let heartbeat_task = tokio::spawn(heartbeat(ctx.clone(), worker.clone(), stop.clone()));

    let deleted_by_request =
        serve_mailbox(&ctx, &worker, credentials.as_ref(), &stop, &force_quit).await;

    stop.cancel();
    control_task.abort();
    heartbeat_task.abort();
    // On a process shutdown the record stays, so the next start of this host's spawner knows the
    // actor had a worker here and replaces it. A requested stop removes it.
    if deleted_by_request || !shutdown.is_cancelled() {
        let _ = ctx
            .control
            .store
            .delete_worker(&worker.actor_id, &worker.id)
            .await;
        let _ = ctx
            .control
            .channels
            .delete(&Queue::WorkerControl(worker.id.clone()))
            .await;
    }
    tracing::info!(actor_id = %worker.actor_id, worker_id = %worker.id, "worker stopped");
}

/// Consumes the mailbox until stopped. Returns whether the stop was requested over the control
/// queue (as opposed to a process shutdown).
async fn serve_mailbox(
    ctx: &WorkerContext,
    worker: &Worker,
    credentials: Option<&ClientCredentials>,
    stop: &CancellationToken,
    force_quit: &CurrentExecution,
) -> bool {
    let mailbox = Queue::Mailbox(worker.actor_id.clone());
    let mut consumer = loop {
        match ctx.control.channels.consume(&mailbox).await {
            Ok(c) => break c,
            Err(err) => {
                tracing::warn!(worker_id = %worker.id, cause = %err, "cannot consume mailbox; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return true,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return true,
            d = consumer.next() => d,
        };
        let delivery = match delivery {
            Ok(Some(d)) => d,
            Ok(None) => {
                tracing::warn!(worker_id = %worker.id, "mailbox consumer closed; worker exits so health can replace it");
                return false;
            }
            Err(err) => {
                tracing::warn!(worker_id = %worker.id, cause = %err, "mailbox delivery failed");
                return false;
            }
        };
        let message = match MailboxMessage::decode(delivery.payload()) {
            Ok(m) => m,
            Err(err) => {
                tracing::error!(worker_id = %worker.id, cause = %err, "dropping undecodable mailbox message");
                // Its execution would otherwise wait for ever: close it with the reason (retried
                // while the store is away; requeued if it still cannot be written).
                if let Some(eid) = MailboxMessage::execution_id_of(delivery.payload()) {
                    let mut patch = Map::new();
                    patch.insert("status".into(), json!(ExecutionStatus::Error));
                    patch.insert(
                        "status_message".into(),
                        json!(format!("The message could not be read: {err}")),
                    );
                    patch.insert("finish_time".into(), json!(now()));
                    if !execute::record_final(ctx, &worker.actor_id, &eid, patch).await {
                        let _ = delivery.nack(true).await;
                        continue;
                    }
                }
                let _ = delivery.nack(false).await;
                continue;
            }
        };
        if delivery.redelivered() && already_final(ctx, worker, &message).await {
            // It ran to a final status and only the ack was lost (a broker restart, a crash
            // after the final write): running it again would duplicate its effects.
            let _ = delivery.ack().await;
            continue;
        }
        let actor = match ctx.control.store.actor(&worker.actor_id).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                // The actor was deleted; its mailbox goes with it.
                let _ = delivery.ack().await;
                return true;
            }
            Err(err) => {
                tracing::warn!(worker_id = %worker.id, cause = %err, "cannot read actor; message requeued");
                let _ = delivery.nack(true).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if Some(actor.revision) != worker.revision {
            // Messages after an image change run on the new revision's workers.
            let _ = delivery.nack(true).await;
            tracing::info!(worker_id = %worker.id, revision = ?worker.revision, current = actor.revision, "worker is of an old revision; stopping");
            return true;
        }
        match ctx
            .control
            .store
            .transition_worker(&worker.actor_id, &worker.id, WorkerStatus::Busy, Map::new())
            .await
        {
            Ok(Transition::Applied) => {}
            Ok(other) => {
                // Told to shut down between messages: leave the message to another worker.
                let _ = delivery.nack(true).await;
                tracing::info!(worker_id = %worker.id, outcome = ?other, "worker no longer READY; stopping");
                return true;
            }
            Err(err) => {
                tracing::warn!(worker_id = %worker.id, cause = %err, "cannot mark worker BUSY; message requeued");
                let _ = delivery.nack(true).await;
                continue;
            }
        }
        // A stateful actor runs one execution at a time, whatever number of workers exist
        // during an image update or after a crash.
        let exclusive = (!actor.stateless).then(|| format!("exec:{}", worker.actor_id));
        if let Some(lock) = &exclusive {
            if !acquire_exclusive(ctx, worker, lock).await {
                let _ = delivery.nack(true).await;
                let _ = ctx
                    .control
                    .store
                    .transition_worker(
                        &worker.actor_id,
                        &worker.id,
                        WorkerStatus::Ready,
                        Map::new(),
                    )
                    .await;
                tokio::select! {
                    _ = stop.cancelled() => return true,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                continue;
            }
        }
        let token = match credentials {
            Some(c) => access_token(ctx, worker, c).await,
            None => String::new(),
        };
        let outcome = execute::execute(ctx, &actor, worker, message, &token, force_quit).await;
        if let Some(lock) = &exclusive {
            let _ = ctx.control.store.unlock(lock, worker.id.as_str()).await;
        }
        match outcome {
            Outcome::Requeue => {
                let _ = delivery.nack(true).await;
            }
            _ => {
                if let Err(err) = delivery.ack().await {
                    tracing::warn!(worker_id = %worker.id, cause = %err, "ack failed; message may be redelivered");
                }
            }
        }
        let mut extra = Map::new();
        extra.insert("last_execution_time".into(), json!(now()));
        let _ = ctx
            .control
            .store
            .transition_worker(&worker.actor_id, &worker.id, WorkerStatus::Ready, extra)
            .await;
        if stop.is_cancelled() {
            return true;
        }
    }
}

/// Whether the execution of a redelivered message already reached a final status. When the store
/// cannot say, the message runs (again): re-running is safe, losing it is not.
async fn already_final(ctx: &WorkerContext, worker: &Worker, message: &MailboxMessage) -> bool {
    match ctx
        .control
        .store
        .execution(&worker.actor_id, &message.execution_id)
        .await
    {
        Ok(Some(execution)) if execution.status.is_final() => {
            tracing::info!(worker_id = %worker.id, execution_id = %message.execution_id, status = %execution.status, "redelivered message already ran; acked without running it again");
            true
        }
        _ => false,
    }
}

/// A fresh access token for the next execution (empty, with a warning, if clientg is down).
async fn access_token(ctx: &WorkerContext, worker: &Worker, c: &ClientCredentials) -> String {
    match ctx
        .control
        .fresh_token(
            &c.client_id,
            &c.client_secret,
            &worker.id,
            Duration::from_secs(10),
        )
        .await
    {
        Ok(reply) if reply.ok => reply.access_token,
        Ok(reply) => {
            tracing::warn!(worker_id = %worker.id, cause = %reply.message, "no access token for this execution");
            String::new()
        }
        Err(err) => {
            tracing::warn!(worker_id = %worker.id, cause = %err, "no access token for this execution");
            String::new()
        }
    }
}

/// Takes the execution lock of a stateful actor, taking it over from a holder that is gone.
async fn acquire_exclusive(ctx: &WorkerContext, worker: &Worker, lock: &str) -> bool {
    let store = &ctx.control.store;
    let me = worker.id.as_str();
    match store.try_lock(lock, me).await {
        Ok(true) => return true,
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(worker_id = %worker.id, cause = %err, "cannot take the execution lock");
            return false;
        }
    }
    let Ok(Some(holder)) = store.lock_holder(lock).await else {
        return false;
    };
    let holder_alive = matches!(
        store
            .worker(&worker.actor_id, &abaco_core::WorkerId::from(holder.as_str()))
            .await,
        Ok(Some(w)) if w.status == WorkerStatus::Busy || w.status == WorkerStatus::ShutdownRequested || w.status == WorkerStatus::ShuttingDown
    );
    if holder_alive {
        return false;
    }
    tracing::warn!(worker_id = %worker.id, previous = %holder, "taking over the execution lock of a worker that is gone");
    store.steal_lock(lock, &holder, me).await.unwrap_or(false)
}

/// Handles `worker_{id}`: health pings, force quit of the running container, stop requests.
async fn listen_for_control(
    ctx: WorkerContext,
    worker: Worker,
    stop: CancellationToken,
    force_quit: CurrentExecution,
) {
    let queue = Queue::WorkerControl(worker.id.clone());
    let mut consumer = match ctx.control.channels.consume(&queue).await {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(worker_id = %worker.id, cause = %err, "cannot consume control queue");
            return;
        }
    };
    while let Ok(Some(delivery)) = consumer.next().await {
        let command: Result<WorkerControl, _> = delivery.decode();
        let _ = delivery.ack().await;
        match command {
            Ok(WorkerControl::Status) => {
                let mut patch = Map::new();
                patch.insert("last_health_check_time".into(), json!(now()));
                let _ = ctx
                    .control
                    .store
                    .update_worker(&worker.actor_id, &worker.id, patch)
                    .await;
            }
            Ok(WorkerControl::ForceQuit) => force_quit.force_quit(),
            Ok(WorkerControl::Stop) | Ok(WorkerControl::StopNoDelete) => {
                let _ = ctx
                    .control
                    .store
                    .transition_worker(
                        &worker.actor_id,
                        &worker.id,
                        WorkerStatus::ShuttingDown,
                        Map::new(),
                    )
                    .await;
                stop.cancel();
            }
            Err(err) => {
                tracing::warn!(worker_id = %worker.id, cause = %err, "ignoring unknown control message")
            }
        }
    }
}

/// Records `last_health_check_time` so the health agent can tell a live worker from a dead one.
async fn heartbeat(ctx: WorkerContext, worker: Worker, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut patch = Map::new();
        patch.insert("last_health_check_time".into(), json!(now()));
        if let Ok(false) = ctx
            .control
            .store
            .update_worker(&worker.actor_id, &worker.id, patch)
            .await
        {
            // Our record is gone (health or an admin removed it): stop serving.
            tracing::warn!(worker_id = %worker.id, "worker record vanished; stopping");
            stop.cancel();
            return;
        }
    }
}
