//! The cron loop (spec §7.6, as meant): every few seconds, actors whose schedule is due get one
//! message "This is your cron execution" (executor `cron`) and a worker if they have none. The
//! next due time is the first slot after now, so a schedule that fell due while the platform was
//! down fires once after restart — not never, not once per missed slot. The next time is
//! advanced with an atomic compare-and-set before the message is queued, so several health
//! agents never fire the same slot twice.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use abaco_core::messages::{ContentType, MessageBody};
use abaco_core::time::now;
use abaco_core::{cron, Actor, ActorStatus, Execution, ExecutionId, MailboxMessage};
use abaco_store::{Kind, Update};

use crate::HealthContext;

/// How often schedules are checked.
pub const PERIOD: Duration = Duration::from_secs(5);

pub async fn run(ctx: HealthContext, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pass(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(fired = n, "cron pass"),
            Err(err) => tracing::warn!(cause = %err, "cron pass failed; will retry"),
        }
    }
}

/// One pass: fires every due schedule once. Returns how many fired.
pub async fn pass(ctx: &HealthContext) -> Result<usize, abaco_control::ControlError> {
    let t = now();
    let mut fired = 0;
    for actor in ctx.control.store.all_actors().await? {
        if !actor.cron_on || matches!(actor.status, ActorStatus::Error | ActorStatus::ShuttingDown)
        {
            continue;
        }
        let (Some(text), Some(next_text)) = (&actor.cron_schedule, &actor.cron_next_ex) else {
            continue;
        };
        let Some(due) = cron::parse_next(next_text) else {
            continue;
        };
        if due > t {
            continue;
        }
        let Ok((every, unit)) = cron::interval(text) else {
            continue;
        };
        let schedule = cron::Schedule {
            start: due,
            every,
            unit,
        };
        let Some(following) = schedule.next_after(t) else {
            continue;
        };
        if claim(ctx, &actor, next_text, &cron::display_next(following)).await? {
            fire(ctx, &actor).await?;
            fired += 1;
        }
    }
    Ok(fired)
}

/// Advances `cron_next_ex` from `seen` to `next`; `false` if another agent already did.
async fn claim(
    ctx: &HealthContext,
    actor: &Actor,
    seen: &str,
    next: &str,
) -> Result<bool, abaco_control::ControlError> {
    let (seen, next) = (seen.to_string(), next.to_string());
    let f = move |current: Option<&Value>| {
        let doc = current?.as_object()?;
        if doc.get("cron_next_ex").and_then(Value::as_str) != Some(seen.as_str()) {
            return None;
        }
        let mut doc = doc.clone();
        doc.insert("cron_next_ex".into(), json!(next));
        Some(Value::Object(doc))
    };
    let db_id = actor.db_id();
    let outcome = ctx
        .control
        .store
        .raw()
        .update(Kind::Actors, db_id.as_str(), actor.tenant.as_str(), &f)
        .await
        .map_err(abaco_control::ControlError::Store)?;
    Ok(matches!(outcome, Update::Written(_)))
}

async fn fire(ctx: &HealthContext, actor: &Actor) -> Result<(), abaco_control::ControlError> {
    let execution_id = ExecutionId::generate();
    let execution = Execution::submitted(actor, execution_id.clone(), "cron", now());
    let mut env = Map::new();
    env.insert("_abaco_username".into(), json!("cron"));
    env.insert("_abaco_api_server".into(), json!(actor.api_server));
    env.insert("_abaco_execution_id".into(), json!(execution_id.as_str()));
    env.insert(
        "_abaco_Content_Type".into(),
        json!(ContentType::Str.as_str()),
    );
    env.insert("_abaco_actor_revision".into(), json!(actor.revision));
    let message = MailboxMessage {
        execution_id,
        content_type: ContentType::Str,
        message: MessageBody::Text("This is your cron execution".into()),
        env,
    };
    ctx.control.enqueue(&execution, &message).await?;
    ctx.control.ensure_one_worker(actor).await?;
    tracing::info!(actor_id = %actor.db_id(), execution_id = %execution.id, "cron fired");
    Ok(())
}
