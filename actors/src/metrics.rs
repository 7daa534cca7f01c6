//! `GET /metrics` in the Prometheus text format: per-actor mailbox length, workers by status,
//! executions by final status and an execution-duration histogram (cluster-wide, from counters
//! the workers keep in the store), plus this process's own metrics from `/proc`.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use abaco_core::metrics::{self as layout, DURATION_BUCKETS};
use abaco_core::{ExecutionStatus, Queue, WorkerStatus};

use crate::reply::ApiError;
use crate::Api;

pub async fn get_metrics(State(api): State<Api>) -> Result<Response, ApiError> {
    let store = &api.control.store;
    let mut out = String::new();

    out.push_str("# HELP abaco_actor_mailbox_messages Messages waiting in an actor's mailbox.\n");
    out.push_str("# TYPE abaco_actor_mailbox_messages gauge\n");
    let actors = store.all_actors().await?;
    for actor in &actors {
        let n = api
            .control
            .channels
            .len(&Queue::Mailbox(actor.db_id()))
            .await?;
        let _ = writeln!(
            out,
            "abaco_actor_mailbox_messages{{tenant=\"{}\",actor_id=\"{}\"}} {n}",
            escape(actor.tenant.as_str()),
            escape(actor.id.as_str())
        );
    }
    let _ = writeln!(
        out,
        "# HELP abaco_actors Registered actors.\n# TYPE abaco_actors gauge\nabaco_actors {}",
        actors.len()
    );

    out.push_str("# HELP abaco_workers Workers by status.\n# TYPE abaco_workers gauge\n");
    let workers = store.all_workers().await?;
    for status in WorkerStatus::ALL {
        let n = workers.iter().filter(|w| w.status == *status).count();
        let _ = writeln!(out, "abaco_workers{{status=\"{}\"}} {n}", status.as_str());
    }

    let counters = store.counters(layout::EXECUTIONS).await?;
    render_executions(&mut out, &counters);
    render_process(&mut out);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

fn counter(counters: &Map<String, Value>, field: &str) -> i64 {
    counters.get(field).and_then(Value::as_i64).unwrap_or(0)
}

fn render_executions(out: &mut String, counters: &Map<String, Value>) {
    out.push_str("# HELP abaco_executions_total Executions that reached a final status.\n");
    out.push_str("# TYPE abaco_executions_total counter\n");
    for status in [ExecutionStatus::Complete, ExecutionStatus::Error] {
        let _ = writeln!(
            out,
            "abaco_executions_total{{status=\"{status}\"}} {}",
            counter(counters, &layout::status_field(status))
        );
    }
    out.push_str("# HELP abaco_execution_duration_seconds Wall time of executions.\n");
    out.push_str("# TYPE abaco_execution_duration_seconds histogram\n");
    let mut cumulative = 0;
    for (i, le) in DURATION_BUCKETS.iter().enumerate() {
        cumulative += counter(counters, &layout::bucket_field(i));
        let _ = writeln!(
            out,
            "abaco_execution_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let count = counter(counters, layout::COUNT);
    let _ = writeln!(
        out,
        "abaco_execution_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "abaco_execution_duration_seconds_sum {}",
        counter(counters, layout::SUM_MS) as f64 / 1000.0
    );
    let _ = writeln!(out, "abaco_execution_duration_seconds_count {count}");
}

/// Standard process metrics of this process, read from `/proc/self`.
fn render_process(out: &mut String) {
    let page = 4096.0;
    let ticks = 100.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may contain spaces) start at index 2.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            let cpu = (num(11) + num(12)) / ticks;
            let _ = writeln!(out, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}");
            let _ = writeln!(out, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {}", num(20));
            let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}", num(21) * page);
            if let Some(boot) = boot_time() {
                let start = boot + num(19) / ticks;
                let _ = writeln!(out, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start}");
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(out, "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}", fds.count());
    }
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
