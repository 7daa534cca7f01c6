//! The events agent (spec §7.7): consumes `events_channel_default` and delivers each actor or
//! execution event to the actor's `link` (as a JSON message to the linked actor, executor
//! `Abaco Event`, which gets a worker if it has none) and to its `webhook` (HTTP POST of the
//! event, with bounded retries; failures are logged and kept under `webhook_failures:{db_id}`).

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use abaco_core::messages::{ContentType, MessageBody};
use abaco_core::time::now;
use abaco_core::{DbId, Execution, ExecutionId, MailboxMessage, Queue};
use abaco_store::{Kind, Update};

use crate::HealthContext;

/// Attempts per webhook delivery, and the first backoff (doubled each time).
pub const WEBHOOK_ATTEMPTS: u32 = 3;
const WEBHOOK_BACKOFF: Duration = Duration::from_millis(500);
/// Failures kept per actor.
const KEPT_FAILURES: usize = 20;

pub async fn run(ctx: HealthContext, shutdown: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    loop {
        let mut consumer = match ctx.control.channels.consume(&Queue::Events).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(cause = %err, "cannot consume events; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return,
                d = consumer.next() => d,
            };
            let Ok(Some(delivery)) = delivery else { break };
            match delivery.decode::<Value>() {
                Ok(Value::Object(event)) => deliver(&ctx, &http, event).await,
                _ => tracing::error!("dropping an undecodable event"),
            }
            let _ = delivery.ack().await;
        }
    }
}

async fn deliver(ctx: &HealthContext, http: &reqwest::Client, mut event: Map<String, Value>) {
    let text = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (link, webhook, source) = (
        text("_abaco_link"),
        text("_abaco_webhook"),
        text("actor_dbid"),
    );
    if !link.is_empty() {
        match to_linked_actor(ctx, &DbId::from(link.as_str()), &event).await {
            Ok(Some(eid)) => {
                event.insert("_abaco_execution_id".into(), json!(eid.as_str()));
            }
            Ok(None) => {
                tracing::warn!(link = %link, "linked actor no longer exists; event dropped for it")
            }
            Err(err) => {
                tracing::warn!(link = %link, cause = %err, "could not message the linked actor")
            }
        }
    }
    if !webhook.is_empty() {
        // Deliveries retry with backoff; do not hold up the next event meanwhile.
        let (ctx, http) = (ctx.clone(), http.clone());
        tokio::spawn(async move { post_webhook(&ctx, &http, &source, &webhook, event).await });
    }
}

/// Sends the event as a JSON message to the linked actor; returns the execution id.
async fn to_linked_actor(
    ctx: &HealthContext,
    link: &DbId,
    event: &Map<String, Value>,
) -> Result<Option<ExecutionId>, abaco_control::ControlError> {
    let Some(actor) = ctx.control.store.actor(link).await? else {
        return Ok(None);
    };
    let execution_id = ExecutionId::generate();
    let execution = Execution::submitted(&actor, execution_id.clone(), "Abaco Event", now());
    let mut env = Map::new();
    env.insert("_abaco_username".into(), json!("Abaco Event"));
    env.insert("_abaco_api_server".into(), json!(actor.api_server));
    env.insert("_abaco_execution_id".into(), json!(execution_id.as_str()));
    env.insert(
        "_abaco_Content_Type".into(),
        json!(ContentType::Json.as_str()),
    );
    let message = MailboxMessage {
        execution_id: execution_id.clone(),
        content_type: ContentType::Json,
        message: MessageBody::Json(Value::Object(event.clone())),
        env,
    };
    ctx.control.enqueue(&execution, &message).await?;
    ctx.control.ensure_one_worker(&actor).await?;
    Ok(Some(execution_id))
}

async fn post_webhook(
    ctx: &HealthContext,
    http: &reqwest::Client,
    source: &str,
    url: &str,
    mut event: Map<String, Value>,
) {
    event
        .entry("_abaco_username")
        .or_insert_with(|| json!("Abaco Event"));
    event
        .entry("_abaco_Content_Type")
        .or_insert_with(|| json!(ContentType::Json.as_str()));
    let actor = DbId::from(
        event
            .get("actor_dbid")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let api_server = match ctx.control.store.actor(&actor).await {
        Ok(Some(a)) => a.api_server,
        _ => ctx.config.api_server(),
    };
    event.insert("_abaco_api_server".into(), json!(api_server));
    let mut backoff = WEBHOOK_BACKOFF;
    let mut last_error = String::new();
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        match http.post(url).json(&event).send().await {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => last_error = format!("HTTP {}", resp.status()),
            Err(err) => last_error = err.to_string(),
        }
        tracing::warn!(url, attempt, cause = %last_error, "webhook delivery failed");
        if attempt < WEBHOOK_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    record_failure(ctx, source, url, &event, &last_error).await;
}

/// Keeps the last failures per actor where operators can find them.
async fn record_failure(
    ctx: &HealthContext,
    source: &str,
    url: &str,
    event: &Map<String, Value>,
    error: &str,
) {
    let entry = json!({
        "time": now(),
        "url": url,
        "event_type": event.get("event_type"),
        "error": error,
        "attempts": WEBHOOK_ATTEMPTS,
    });
    let f = move |current: Option<&Value>| {
        let mut list = current
            .and_then(|d| d.get("failures"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        list.push(entry.clone());
        let skip = list.len().saturating_sub(KEPT_FAILURES);
        Some(json!({ "failures": list.into_iter().skip(skip).collect::<Vec<_>>() }))
    };
    let key = format!("webhook_failures:{source}");
    match ctx
        .control
        .store
        .raw()
        .update(Kind::Meta, &key, source, &f)
        .await
    {
        Ok(Update::Written(_)) | Ok(Update::Unchanged(_)) => {}
        Err(err) => tracing::warn!(cause = %err, "could not record a webhook failure"),
    }
}
