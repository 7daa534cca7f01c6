//! One execution: create and start the actor's container, supervise it (stats, streamed logs,
//! force quit, `max_run_time`), then record logs and the final status, and remove the container.
//! The container receives the actor's configs (`_actor_configs`), secrets decrypted here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use abaco_core::model::parse_mem_limit;
use abaco_core::time::{now, Timestamp};
use abaco_core::{Actor, ExecutionStatus, MailboxMessage, Worker};
use abaco_identity::SecretBox;
use abaco_runtime::{ContainerSpec, RuntimeError, Stats};
use abaco_store::{Kind, Page};

use crate::io::ExecutionIo;
use crate::{env, CurrentExecution, WorkerContext};

/// Labels put on every actor container, so health can find and own them.
pub const LABEL_EXECUTION: &str = "abaco.execution";
pub const LABEL_WORKER: &str = "abaco.worker";
pub const LABEL_ACTOR: &str = "abaco.actor";
pub const LABEL_HOST: &str = "abaco.host";

const TRUNCATION_MARKER: &str = " LOG LIMIT EXCEEDED; this execution log was TRUNCATED!";

/// What became of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The execution reached `COMPLETE`.
    Complete,
    /// The execution reached `ERROR` (its record says why).
    Failed,
    /// The platform could not run it now (the container runtime is unreachable) or could not
    /// record its final status (the store is unreachable); requeue.
    Requeue,
}

pub async fn execute(
    ctx: &WorkerContext,
    actor: &Actor,
    worker: &Worker,
    message: MailboxMessage,
    access_token: &str,
    current: &CurrentExecution,
) -> Outcome {
    let db_id = actor.db_id();
    let eid = message.execution_id.clone();
    let store = &ctx.control.store;
    let mut patch = Map::new();
    patch.insert("worker_id".into(), json!(worker.id));
    let _ = store.update_execution(&db_id, &eid, patch).await;

    let mut io = match ExecutionIo::prepare(ctx, worker, &message).await {
        Ok(io) => io,
        Err(err) => {
            return fail(
                ctx,
                actor,
                &eid,
                format!("Could not prepare the results socket or binary message: {err}"),
            )
            .await;
        }
    };
    let configs = actor_configs(ctx, actor).await;
    let mut spec = container_spec(ctx, actor, worker, &message, access_token, &configs);
    let memory_limit = spec.memory;
    spec.binds.extend(io.binds());
    let results_task = io.forward_results(ctx, &db_id, &eid);
    let container = match ctx.runtime.create(&spec).await {
        Ok(id) => id,
        Err(RuntimeError::Unavailable { cause, .. }) => {
            results_task.abort();
            tracing::warn!(execution_id = %eid, %cause, "container runtime unavailable; message requeued");
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Outcome::Requeue;
        }
        Err(err) => {
            return fail(
                ctx,
                actor,
                &eid,
                format!("Could not create the actor container: {err}"),
            )
            .await;
        }
    };
    // Force quit must reach this container from the moment it may run.
    let force_quit = current.begin();
    if let Err(err) = ctx.runtime.start(&container).await {
        current.end();
        let _ = ctx.runtime.remove(&container, true).await;
        if err.is_retryable() {
            // The engine went away between create and start: like a failed create, run later.
            results_task.abort();
            tracing::warn!(execution_id = %eid, cause = %err, "container runtime unavailable; message requeued");
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Outcome::Requeue;
        }
        return fail(
            ctx,
            actor,
            &eid,
            format!("Could not start the actor container: {err}"),
        )
        .await;
    }
    let start_time = now();
    let started = Instant::now();
    let mut patch = Map::new();
    patch.insert("status".into(), json!(ExecutionStatus::Running));
    patch.insert("start_time".into(), json!(start_time));
    let _ = store.update_execution(&db_id, &eid, patch).await;
    tracing::info!(actor_id = %db_id, execution_id = %eid, container = %container, "execution running");

    let supervision = supervise(ctx, actor, &eid, &container, &force_quit, started).await;
    current.end();

    let state = match ctx.runtime.inspect(&container).await {
        Ok(state) => Some(state),
        Err(err) if err.is_retryable() && supervision.stopped_because.is_none() => {
            // The engine went away while the container ran (a Docker restart stops every
            // container): the run says nothing about the message, so it runs again once the
            // engine is back. Health removes this container when it can.
            io.finish(results_task).await;
            tracing::warn!(execution_id = %eid, container = %container, cause = %err, "container runtime lost during the execution; message requeued to run again");
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Outcome::Requeue;
        }
        Err(_) => None,
    };
    // Datagrams sent just before exit are still in the socket: drain them, then stop.
    io.finish(results_task).await;
    let raw_logs = ctx.runtime.logs(&container).await.unwrap_or_default();
    let runtime_secs = started.elapsed().as_secs() as i64;
    if !ctx.config.workers.leave_containers {
        if let Err(err) = ctx.runtime.remove(&container, true).await {
            tracing::warn!(container = %container, cause = %err, "could not remove actor container; health will");
        }
    }
    let logs = truncate_logs(&raw_logs, ctx.config.web.max_log_length);
    // Logs first, so a client that sees COMPLETE can read them at once.
    let _ = store
        .set_logs(&db_id, &eid, &logs, log_expiry(ctx, actor))
        .await;

    let exit_code = supervision
        .exit_code
        .or_else(|| state.as_ref().and_then(|s| s.exit_code));
    let oom = state.as_ref().map(|s| s.oom_killed).unwrap_or(false);
    let mut status_message = supervision.stopped_because.clone();
    if oom {
        status_message = Some("The container was killed: out of memory (mem_limit).".into());
    } else if status_message.is_none() && exit_code == Some(137) {
        // On cgroup v1 Docker does not always report OOMKilled; a SIGKILL nobody asked for
        // under a memory limit is the kernel's OOM killer.
        status_message = Some(match memory_limit {
            Some(bytes) => format!(
                "The container was killed with SIGKILL (exit code 137), most likely out of memory: its memory limit is {} MiB (mem_limit).",
                bytes / (1024 * 1024)
            ),
            None => "The container was killed with SIGKILL (exit code 137).".into(),
        });
    }
    let finish_time: Timestamp = now();
    let mut patch = Map::new();
    patch.insert("status".into(), json!(ExecutionStatus::Complete));
    patch.insert(
        "exit_code".into(),
        exit_code.map(Value::from).unwrap_or(json!("undetermined")),
    );
    patch.insert("runtime".into(), json!(runtime_secs));
    patch.insert("cpu".into(), json!(supervision.stats.cpu_ns));
    patch.insert("io".into(), json!(supervision.stats.io_bytes));
    patch.insert("finish_time".into(), json!(finish_time));
    patch.insert(
        "final_state".into(),
        state
            .map(|s| s.raw)
            .unwrap_or_else(|| json!({"unavailable": true})),
    );
    patch.insert("status_message".into(), json!(status_message));
    if !record_final(ctx, &db_id, &eid, patch).await {
        return Outcome::Requeue;
    }
    if let Err(err) = store
        .add_execution_totals(
            &db_id,
            supervision.stats.cpu_ns as i64,
            supervision.stats.io_bytes as i64,
            runtime_secs,
        )
        .await
    {
        tracing::warn!(actor_id = %db_id, execution_id = %eid, cause = %err, "could not add the execution to its actor's totals");
    }
    record_metrics(ctx, ExecutionStatus::Complete, started.elapsed()).await;
    let mut extra = Map::new();
    extra.insert("execution_id".into(), json!(eid.as_str()));
    extra.insert("status".into(), json!(ExecutionStatus::Complete));
    extra.insert(
        "exit_code".into(),
        exit_code.map(Value::from).unwrap_or(json!("undetermined")),
    );
    ctx.control
        .publish_event(
            actor,
            abaco_core::messages::EventType::ExecutionComplete,
            extra,
        )
        .await;
    tracing::info!(actor_id = %db_id, execution_id = %eid, exit_code = ?exit_code, runtime_secs, "execution complete");
    Outcome::Complete
}

struct Supervision {
    exit_code: Option<i64>,
    stats: Stats,
    stopped_because: Option<String>,
}

/// Waits for the container while sampling stats, streaming logs into the store, and obeying
/// force quit and `max_run_time`.
async fn supervise(
    ctx: &WorkerContext,
    actor: &Actor,
    eid: &abaco_core::ExecutionId,
    container: &str,
    force_quit: &tokio_util::sync::CancellationToken,
    started: Instant,
) -> Supervision {
    let mut out = Supervision {
        exit_code: None,
        stats: Stats::default(),
        stopped_because: None,
    };
    let max_run_time = ctx.config.workers.max_run_time;
    let deadline = (max_run_time > 0).then(|| started + Duration::from_secs(max_run_time as u64));
    let wait = ctx.runtime.wait(container);
    tokio::pin!(wait);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            code = &mut wait => {
                out.exit_code = code.ok();
                return out;
            }
            _ = force_quit.cancelled(), if out.stopped_because.is_none() => {
                out.stopped_because = Some("Execution was force quit by request.".into());
                let _ = ctx.runtime.stop(container, Duration::from_secs(10)).await;
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            }, if out.stopped_because.is_none() => {
                out.stopped_because = Some(format!(
                    "Execution exceeded max_run_time of {max_run_time} s and was stopped."
                ));
                let _ = ctx.runtime.stop(container, Duration::from_secs(10)).await;
            }
            _ = tick.tick() => {
                ticks += 1;
                if let Ok(stats) = ctx.runtime.stats(container).await {
                    // Docker's counters are cumulative: keep the latest, never sum samples.
                    out.stats.cpu_ns = out.stats.cpu_ns.max(stats.cpu_ns);
                    out.stats.io_bytes = out.stats.io_bytes.max(stats.io_bytes);
                    out.stats.memory_bytes = out.stats.memory_bytes.max(stats.memory_bytes);
                }
                if ticks.is_multiple_of(3) {
                    if let Ok(raw) = ctx.runtime.logs(container).await {
                        let logs = truncate_logs(&raw, ctx.config.web.max_log_length);
                        let _ = ctx.control.store
                            .set_logs(&actor.db_id(), eid, &logs, log_expiry(ctx, actor))
                            .await;
                    }
                }
            }
        }
    }
}

fn container_spec(
    ctx: &WorkerContext,
    actor: &Actor,
    worker: &Worker,
    message: &MailboxMessage,
    access_token: &str,
    configs: &Map<String, Value>,
) -> ContainerSpec {
    let workers = &ctx.config.workers;
    let memory = actor
        .mem_limit
        .as_deref()
        .and_then(parse_mem_limit)
        .or_else(|| parse_mem_limit(&workers.mem_limit))
        .filter(|m| *m > 0);
    let nano_cpus = actor.max_cpus.or(Some(workers.max_cpus)).filter(|c| *c > 0);
    let mut labels = HashMap::new();
    labels.insert(LABEL_EXECUTION.to_string(), message.execution_id.0.clone());
    labels.insert(LABEL_WORKER.to_string(), worker.id.0.clone());
    labels.insert(LABEL_ACTOR.to_string(), actor.db_id().0);
    labels.insert(LABEL_HOST.to_string(), ctx.config.spawner.host_id.clone());
    let user = if actor.use_container_uid {
        None
    } else {
        match (&actor.uid, &actor.gid) {
            (Some(uid), Some(gid)) => Some(format!("{uid}:{gid}")),
            (Some(uid), None) => Some(uid.clone()),
            _ => None,
        }
    };
    let binds = actor
        .mounts
        .iter()
        .map(|m| format!("{}:{}:{}", m.host_path, m.container_path, m.mode))
        .collect();
    ContainerSpec {
        image: worker.image.clone().unwrap_or_else(|| actor.image.clone()),
        cmd: None,
        env: env::build(actor, worker, message, access_token, configs),
        labels,
        binds,
        user,
        memory,
        nano_cpus,
        privileged: actor.privileged && workers.allow_privileged,
        network_mode: Some(ctx.config.docker.network.clone()),
    }
}

/// `{name: value}` of the configs of the actor's tenant that name it by id or alias (spec §5.2),
/// secrets decrypted. A config that cannot be read or decrypted is left out with a warning (that
/// names the config, never its value), so a bad key does not stop the actor from running.
async fn actor_configs(ctx: &WorkerContext, actor: &Actor) -> Map<String, Value> {
    let mut out = Map::new();
    let store = ctx.control.store.raw();
    let tenant = actor.tenant.as_str();
    let configs = match store.list(Kind::Configs, Some(tenant), Page::all()).await {
        Ok(configs) => configs,
        Err(err) => {
            tracing::warn!(actor_id = %actor.db_id(), cause = %err, "could not read actor configs");
            return out;
        }
    };
    if configs.is_empty() {
        return out;
    }
    let prefix = format!("{tenant}_");
    let aliases = match store.list(Kind::Aliases, Some(tenant), Page::all()).await {
        Ok(aliases) => aliases,
        Err(err) => {
            tracing::warn!(actor_id = %actor.db_id(), cause = %err, "could not read aliases for configs");
            Vec::new()
        }
    };
    let mut names: Vec<&str> = vec![actor.id.as_str()];
    names.extend(aliases.iter().filter_map(|(key, doc)| {
        let alias = key.strip_prefix(&prefix)?;
        (doc.get("actor_id").and_then(Value::as_str) == Some(actor.id.as_str())).then_some(alias)
    }));
    let secrets = ctx.config.web.encryption_key.as_deref().map(SecretBox::new);
    for (key, doc) in &configs {
        let field = |f: &str| doc.get(f).and_then(Value::as_str);
        let (Some(name), Some(value), Some(actors)) =
            (field("name"), field("value"), field("actors"))
        else {
            tracing::warn!(config = %key, "skipping unreadable config");
            continue;
        };
        if !env::names_actor(actors, &names) {
            continue;
        }
        let is_secret = doc
            .get("is_secret")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let plaintext = if is_secret {
            match &secrets {
                Some(Ok(secrets)) => match secrets.decrypt(value) {
                    Ok(plain) => plain,
                    Err(err) => {
                        tracing::warn!(config = %key, cause = %err, "secret config not delivered: it does not decrypt");
                        continue;
                    }
                },
                Some(Err(err)) => {
                    tracing::warn!(config = %key, cause = %err, "secret config not delivered: [web] encryption_key is invalid");
                    continue;
                }
                None => {
                    tracing::warn!(config = %key, "secret config not delivered: no [web] encryption_key");
                    continue;
                }
            }
        } else {
            value.to_string()
        };
        out.insert(name.to_string(), Value::String(plaintext));
    }
    out
}

/// When logs expire (spec §7.10): the actor's `log_ex` capped by `log_ex_limit`, else the default.
fn log_expiry(ctx: &WorkerContext, actor: &Actor) -> Option<Timestamp> {
    let web = &ctx.config.web;
    let ttl = match actor.log_ex {
        Some(v) if v > 0 => v.min(web.log_ex_limit),
        _ => web.log_ex,
    };
    (ttl > 0).then(|| now() + chrono::Duration::seconds(ttl))
}

/// Container output as text (invalid UTF-8 replaced), cut at `max` characters with a marker.
fn truncate_logs(raw: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.chars().count() <= max {
        return text.into_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push_str(TRUNCATION_MARKER);
    cut
}

async fn fail(
    ctx: &WorkerContext,
    actor: &Actor,
    eid: &abaco_core::ExecutionId,
    why: String,
) -> Outcome {
    tracing::error!(actor_id = %actor.db_id(), execution_id = %eid, cause = %why, "execution failed");
    let mut patch = Map::new();
    patch.insert("status".into(), json!(ExecutionStatus::Error));
    patch.insert("status_message".into(), json!(why));
    patch.insert("finish_time".into(), json!(now()));
    if !record_final(ctx, &actor.db_id(), eid, patch).await {
        return Outcome::Requeue;
    }
    record_metrics(ctx, ExecutionStatus::Error, Duration::ZERO).await;
    Outcome::Failed
}

/// How long a worker keeps trying to record a final status while the store is unreachable.
const FINAL_WRITE_WITHIN: Duration = Duration::from_secs(120);

/// Writes an execution's final status, retrying while the store is unavailable (a restarting
/// Redis or PostgreSQL). The message is acked only after this succeeded: `false` means it could
/// not be recorded and the caller requeues the message, which runs again under the same id.
pub(crate) async fn record_final(
    ctx: &WorkerContext,
    db_id: &abaco_core::DbId,
    eid: &abaco_core::ExecutionId,
    patch: Map<String, Value>,
) -> bool {
    let deadline = Instant::now() + FINAL_WRITE_WITHIN;
    let mut pause = Duration::from_millis(200);
    loop {
        match ctx
            .control
            .store
            .update_execution(db_id, eid, patch.clone())
            .await
        {
            Ok(_) => return true,
            Err(err @ abaco_store::StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tracing::warn!(execution_id = %eid, cause = %err, "cannot record the final status yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(err) => {
                tracing::error!(execution_id = %eid, cause = %err, "could not record the final status; the message is requeued and runs again");
                return false;
            }
        }
    }
}

/// Counts a finished execution into the cluster-wide counters `/metrics` reports.
async fn record_metrics(ctx: &WorkerContext, status: ExecutionStatus, took: Duration) {
    use abaco_core::metrics as layout;
    let store = &ctx.control.store;
    let status_field = layout::status_field(status);
    let bucket = layout::bucket_of(took.as_secs_f64());
    let mut fields = vec![
        (status_field.as_str(), 1),
        (layout::COUNT, 1),
        (layout::SUM_MS, took.as_millis() as i64),
    ];
    if let Some(bucket) = &bucket {
        fields.push((bucket.as_str(), 1));
    }
    if let Err(err) = store.increment_counters(layout::EXECUTIONS, &fields).await {
        tracing::warn!(cause = %err, "could not update execution metrics");
    }
}

#[cfg(test)]
mod tests {
    use super::truncate_logs;

    #[test]
    fn logs_are_truncated_with_a_marker_and_survive_bad_utf8() {
        assert_eq!(truncate_logs(b"hello", 10), "hello");
        let cut = truncate_logs(b"hello world", 5);
        assert!(cut.starts_with("hello LOG LIMIT EXCEEDED"), "{cut}");
        assert_eq!(truncate_logs(&[0x66, 0xff, 0x6f], 10), "f\u{fffd}o");
    }
}
