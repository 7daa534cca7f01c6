//! The autoscaler (spec §7.5 as it was meant to work): its own loop, every
//! `[workers] autoscale_period` seconds. Stateless actors gain workers while their mailbox holds
//! more messages than they have idle or starting workers, up to the actor's `max_workers` (or
//! `[spawner] max_workers_per_actor`) and `[spawner] max_workers_total`; when the mailbox is
//! empty, READY workers idle longer than `[workers] autoscale_idle_time` are stopped, down to zero
//! — or down to one for actors with the `sync` hint, kept while used within `sync_max_idle_time`.
//! Stateful actors are never scaled (one worker at a time).
//!
//! Each health agent scales only the actors of the queues it lists in `[spawner] host_queues`,
//! and of each queue only while it holds the queue's lease (`autoscaler:{queue}` in the store,
//! renewed every pass, taken over when its holder has not renewed it for three periods): with a
//! health agent on every compute host, one of them scales a queue at a time, so two passes never
//! both add workers for the same messages.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use abaco_control::Start;
use abaco_core::time::{now, Timestamp};
use abaco_core::{Actor, ActorStatus, Queue, Worker, WorkerStatus};

use crate::HealthContext;

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scaling {
    pub requested: usize,
    pub stopped: usize,
}

pub async fn run(ctx: HealthContext, shutdown: CancellationToken) {
    if !ctx.config.workers.autoscaling {
        tracing::info!("autoscaler disabled ([workers] autoscaling = false)");
        return;
    }
    let period = Duration::from_secs(ctx.config.workers.autoscale_period.max(1));
    let holder = format!(
        "{}:{}",
        ctx.config.spawner.host_id,
        abaco_core::ids::new_hashid()
    );
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let queues = match leased_queues(&ctx, &holder, period).await {
            Ok(queues) => queues,
            Err(err) => {
                tracing::warn!(cause = %err, "autoscaler cannot renew its queue leases; will retry");
                continue;
            }
        };
        if queues.is_empty() {
            continue;
        }
        match pass(&ctx, &queues).await {
            Ok(s) if s != Scaling::default() => tracing::info!(?s, "autoscaler acted"),
            Ok(_) => {}
            Err(err) => tracing::warn!(cause = %err, "autoscaler pass failed; will retry"),
        }
    }
}

/// The queues of `[spawner] host_queues` whose lease `holder` holds after this call.
pub async fn leased_queues(
    ctx: &HealthContext,
    holder: &str,
    period: Duration,
) -> Result<Vec<String>, abaco_store::StoreError> {
    let ttl = period * 3;
    let mut held = Vec::new();
    for queue in &ctx.config.spawner.host_queues {
        if ctx
            .control
            .store
            .lease(&format!("autoscaler:{queue}"), holder, ttl)
            .await?
        {
            held.push(queue.clone());
        }
    }
    Ok(held)
}

/// One autoscaler pass over the actors of `queues`.
pub async fn pass(
    ctx: &HealthContext,
    queues: &[String],
) -> Result<Scaling, abaco_control::ControlError> {
    let store = &ctx.control.store;
    let mut scaling = Scaling::default();
    let all_workers = store.all_workers().await?;
    let mut total_viable = all_workers.iter().filter(|w| w.status.is_viable()).count();
    for actor in store.all_actors().await? {
        if !actor.stateless
            || !queues.contains(&actor.queue)
            || matches!(actor.status, ActorStatus::Error | ActorStatus::ShuttingDown)
        {
            continue;
        }
        let db_id = actor.db_id();
        let workers: Vec<&Worker> = all_workers
            .iter()
            .filter(|w| w.actor_id == db_id && w.status.is_viable())
            .collect();
        // An actor without workers gets its first one when a message arrives (and from health);
        // only actors with workers can need more or fewer, so only their mailboxes are read.
        if workers.is_empty() {
            continue;
        }
        let inbox = ctx
            .control
            .channels
            .len(&Queue::Mailbox(db_id.clone()))
            .await?;
        if inbox > 0 {
            let added = scale_up(ctx, &actor, &workers, inbox, total_viable).await?;
            total_viable += added;
            scaling.requested += added;
        } else {
            scaling.stopped += scale_down(ctx, &actor, &workers).await?;
        }
    }
    Ok(scaling)
}

async fn scale_up(
    ctx: &HealthContext,
    actor: &Actor,
    workers: &[&Worker],
    inbox: u64,
    total_viable: usize,
) -> Result<usize, abaco_control::ControlError> {
    let spawner = &ctx.config.spawner;
    let commands = ctx
        .control
        .channels
        .len(&Queue::Command(actor.queue.clone()))
        .await?;
    if commands > spawner.max_cmd_length {
        return Ok(0);
    }
    let cap = actor
        .max_workers
        .map(|m| m.max(1) as usize)
        .unwrap_or(spawner.max_workers_per_actor);
    // Workers that will take a message soon: idle or still starting.
    let available = workers
        .iter()
        .filter(|w| w.status != WorkerStatus::Busy)
        .count() as u64;
    let wanted = inbox.saturating_sub(available) as usize;
    let room_actor = cap.saturating_sub(workers.len());
    let room_total = spawner.max_workers_total.saturating_sub(total_viable);
    let n = wanted.min(room_actor).min(room_total);
    for _ in 0..n {
        ctx.control.request_worker(actor, Start::Additional).await?;
    }
    if n > 0 {
        tracing::info!(actor_id = %actor.db_id(), inbox, workers = workers.len(), added = n, "scaled up");
    }
    Ok(n)
}

async fn scale_down(
    ctx: &HealthContext,
    actor: &Actor,
    workers: &[&Worker],
) -> Result<usize, abaco_control::ControlError> {
    let t = now();
    let idle_for = |w: &Worker| -> Duration {
        let last: Timestamp = w.last_execution_time.unwrap_or(w.create_time);
        (t - last).to_std().unwrap_or(Duration::ZERO)
    };
    let grace = Duration::from_secs(ctx.config.workers.autoscale_idle_time.max(0) as u64);
    let mut idle: Vec<&Worker> = workers
        .iter()
        .copied()
        .filter(|w| w.status == WorkerStatus::Ready && idle_for(w) >= grace)
        .collect();
    if actor.has_hint("sync") && idle.len() == workers.len() {
        // Every worker is idle: keep the most recently used one while it was used within
        // sync_max_idle_time, so synchronous callers do not wait for a worker to start.
        let keep_window = Duration::from_secs(ctx.config.workers.sync_max_idle_time.max(0) as u64);
        idle.sort_by_key(|w| idle_for(w));
        if idle.first().is_some_and(|w| idle_for(w) < keep_window) {
            idle.remove(0);
        }
    }
    let mut stopped = 0;
    for w in idle {
        ctx.control
            .stop_worker(
                &w.actor_id,
                &w.id,
                "autoscaler: mailbox empty and worker idle",
            )
            .await?;
        stopped += 1;
    }
    Ok(stopped)
}
