//! `/actors/{actor_id}/messages`: send a message (an execution), count and purge the mailbox.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use abaco_core::messages::{ContentType, MessageBody};
use abaco_core::time::now;
use abaco_core::{Execution, ExecutionId, ExecutionStatus, MailboxMessage, Queue};

use abaco_core::PermissionLevel;

use super::load_actor;
use crate::case;
use crate::identity::Identity;
use crate::params::{content_type, parse_json, parse_urlencoded};
use crate::reply::{ApiError, Reply};
use crate::{wire, Api};

/// Query parameters that steer the request and never reach the container.
const RESERVED: &[&str] = &["message", "x-nonce", "_abaco_synchronous"];

pub async fn count_messages(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    let n = api
        .control
        .channels
        .len(&Queue::Mailbox(actor.db_id()))
        .await?;
    Ok(Reply::ok(
        "The request was successful",
        json!({"messages": n, "_links": wire::messages_links(&actor)}),
    ))
}

pub async fn purge_messages(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Update).await?;
    let purged = api
        .control
        .channels
        .purge(&Queue::Mailbox(actor.db_id()))
        .await?;
    tracing::info!(actor_id = %actor.db_id(), purged, "mailbox purged");
    Ok(Reply::ok(
        "The request was successful",
        json!({"msg": "Actor mailbox purged.", "_links": wire::messages_links(&actor)}),
    ))
}

pub async fn send_message(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Execute).await?;
    let query = parse_urlencoded(query.as_deref().unwrap_or(""));
    let (content_type, message) = extract_message(&api, &headers, &query, &body)?;
    let synchronous = query
        .iter()
        .any(|(k, v)| k == "_abaco_synchronous" && v.eq_ignore_ascii_case("true"));

    let execution_id = ExecutionId::generate();
    let mut env = Map::new();
    for (k, v) in &query {
        if !RESERVED.contains(&k.as_str()) && !k.is_empty() && !k.contains('=') {
            env.insert(k.clone(), Value::String(v.clone()));
        }
    }
    env.insert("_abaco_username".into(), json!(who.user));
    env.insert("_abaco_api_server".into(), json!(who.api_server));
    if let Some(h) = &who.jwt_header_name {
        env.insert("_abaco_jwt_header_name".into(), json!(h));
    }
    env.insert("_abaco_execution_id".into(), json!(execution_id.as_str()));
    env.insert("_abaco_Content_Type".into(), json!(content_type.as_str()));
    env.insert("_abaco_actor_revision".into(), json!(actor.revision));

    let echoed = match &message {
        MessageBody::Text(s) => Value::String(s.clone()),
        MessageBody::Json(v) => v.clone(),
        MessageBody::Binary(_) => Value::String("binary - omitted".into()),
    };
    let execution = Execution::submitted(&actor, execution_id.clone(), &who.user, now());
    let mailbox_message = MailboxMessage {
        execution_id: execution_id.clone(),
        content_type,
        message,
        env,
    };
    if let (Some(limit), MessageBody::Binary(bytes)) =
        (api.control.channels.max_payload(), &mailbox_message.message)
    {
        if bytes.len() > limit {
            return Err(ApiError::bad(format!(
                "Message exceeds max content length of: {limit} (the message broker's limit)"
            )));
        }
    }
    api.control.enqueue(&execution, &mailbox_message).await?;
    // A worker that fails to be requested must not lose the accepted message: health retries.
    if let Err(err) = api.control.ensure_one_worker(&actor).await {
        tracing::warn!(actor_id = %actor.db_id(), cause = %err, "could not request a worker; health will retry");
    }

    if synchronous {
        return wait_for_result(&api, &actor.db_id(), &execution_id).await;
    }
    let mut receipt = Map::new();
    receipt.insert("execution_id".into(), json!(execution_id.as_str()));
    receipt.insert("msg".into(), echoed);
    receipt.insert(
        "_links".into(),
        wire::receipt_links(&actor, execution_id.as_str()),
    );
    Ok(Reply::ok("The request was successful", case::dict(api.case, receipt)).into_response())
}

/// The message and its `_abaco_Content_Type` (spec §4.8), without Abaco's 500s: any JSON
/// document is accepted, and a plain-text body is a text message.
fn extract_message(
    api: &Api,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: &[u8],
) -> Result<(ContentType, MessageBody), ApiError> {
    let ctype = content_type(headers);
    let unserializable = || {
        ApiError::bad(
            "message POST body could not be serialized. Pass JSON data or use the message attribute.",
        )
    };
    // 1. an explicit `message` parameter: JSON field, form field or query parameter.
    let mut explicit: Option<String> = None;
    if ctype == "application/json" {
        if let Ok(Value::Object(m)) = parse_json(body) {
            if let Some(v) = m.get("message").filter(|v| !v.is_null()) {
                explicit = Some(match v {
                    Value::String(s) => s.clone(),
                    other => abaco_core::pyrepr::env_value(other),
                });
            }
        }
    } else if ctype == "application/x-www-form-urlencoded" {
        let text = std::str::from_utf8(body).map_err(|_| unserializable())?;
        explicit = parse_urlencoded(text)
            .into_iter()
            .find(|(k, _)| k == "message")
            .map(|(_, v)| v);
    }
    if explicit.is_none() {
        explicit = query
            .iter()
            .find(|(k, _)| k == "message")
            .map(|(_, v)| v.clone());
    }
    if let Some(text) = explicit.filter(|s| !s.is_empty()) {
        return Ok((ContentType::Str, MessageBody::Text(text)));
    }
    // 2. binary.
    if ctype == "application/octet-stream" {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .ok_or_else(|| ApiError::bad("Content Length required for application/octet-stream."))?
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad("Content Length must be an integer."))?;
        let max = api.config.web.max_content_length;
        if declared > max || body.len() as u64 > max {
            return Err(ApiError::bad(format!(
                "Message exceeds max content length of: {max}"
            )));
        }
        return Ok((ContentType::Binary, MessageBody::Binary(body.to_vec())));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(unserializable());
    }
    // 3. a JSON document.
    if ctype == "application/json" {
        let value: Value = parse_json(body).map_err(|e| {
            ApiError::bad(format!(
                "message POST body could not be parsed as JSON: {e}. Pass JSON data or use the message attribute."
            ))
        })?;
        return Ok((ContentType::Json, MessageBody::Json(value)));
    }
    // 4. any other body: JSON when it parses, else the text itself.
    let text = std::str::from_utf8(body).map_err(|_| unserializable())?;
    match parse_json(text.as_bytes()) {
        Ok(Value::String(s)) => Ok((ContentType::Str, MessageBody::Text(s))),
        Ok(value) => Ok((
            ContentType::Str,
            MessageBody::Text(abaco_core::pyrepr::env_value(&value)),
        )),
        Err(_) => Ok((ContentType::Str, MessageBody::Text(text.to_string()))),
    }
}

/// `_abaco_synchronous=true`: waits for the execution to finish and answers with its first
/// result (octet-stream) or its logs (text), or a clear error after `[web] sync_timeout`.
async fn wait_for_result(
    api: &Api,
    db_id: &abaco_core::DbId,
    execution_id: &ExecutionId,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(api.config.web.sync_timeout);
    let results = Queue::Results(db_id.clone(), execution_id.clone());
    loop {
        if let Some(delivery) = api
            .control
            .channels
            .get(&results, Duration::from_millis(100))
            .await?
        {
            let (payload, delivery) = delivery.into_payload();
            delivery.ack().await?;
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                payload,
            )
                .into_response());
        }
        let execution = api
            .control
            .store
            .execution(db_id, execution_id)
            .await?
            .ok_or_else(|| {
                // The actor (and with it its executions) was deleted while this request waited.
                ApiError::not_found(format!(
                    "Execution {execution_id} no longer exists: its actor was deleted while this \
                     synchronous request waited for it."
                ))
            })?;
        if execution.status.is_final() {
            if let Some(delivery) = api
                .control
                .channels
                .get(&results, Duration::from_millis(100))
                .await?
            {
                let (payload, delivery) = delivery.into_payload();
                delivery.ack().await?;
                return Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    payload,
                )
                    .into_response());
            }
            if execution.status == ExecutionStatus::Error {
                return Err(ApiError::bad(format!(
                    "Execution {execution_id} ended in ERROR: {}",
                    execution.status_message.unwrap_or_default()
                )));
            }
            let logs = api
                .control
                .store
                .logs(execution_id)
                .await?
                .unwrap_or_default();
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                logs,
            )
                .into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Timeout(format!(
                "Synchronous execution {execution_id} did not finish within {} s ([web] sync_timeout); it keeps running — poll GET .../executions/{execution_id}.",
                api.config.web.sync_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
