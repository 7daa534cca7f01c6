//! The raw bollard baseline of `bench/exec_overhead.py`: create, start, wait, logs and remove one
//! container straight through bollard (the Docker client the platform uses), with no platform
//! code in between, driven over stdin/stdout by the Python benchmark.
//!
//! One JSON command per line on stdin, one JSON answer per line on stdout:
//!
//! - `{"cmd":"run","image":"...","env":{"MSG":"x"}}` runs one container and answers
//!   `{"create":s,"start":s,"wait":s,"logs_rm":s,"total":s}` (seconds, f64);
//! - `{"cmd":"parallel","image":"...","n":N,"par":P,"env":{...}}` runs N containers from P
//!   concurrent tasks and answers `{"elapsed":s,"times":[total of each run, s]}`;
//! - anything that fails answers `{"error":"<step>: <cause>"}` and the loop goes on.
//!
//! Each run is what a platform worker does for one execution, minus the platform: create (label
//! `abaco.bench=raw`, `HostConfig.NetworkMode = bridge`, not privileged), start, wait (a non-zero
//! exit is a result, not an error), logs (stdout and stderr, drained to the end), remove (force,
//! with anonymous volumes). The client is connected as `abaco_runtime::Runtime::connect` does it
//! (`/var/run/docker.sock`, or `DOCKER_HOST=unix:///path`; 120 s request timeout; API version
//! negotiated once), and the process runs a multi-thread tokio runtime with the default worker
//! count, as `abaco serve` and `abaco spawner` do, so both sides pay the same scheduling.
//!
//! ```sh
//! cargo build --release -p abaco-runtime --example raw_docker_loop
//! echo '{"cmd":"run","image":"abaco-test/echo:latest","env":{"MSG":"hi"}}' \
//!   | target/release/examples/raw_docker_loop
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::OnceCell;

/// The daemon when `DOCKER_HOST` names no unix socket (the platform's default `[docker] dd`).
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The platform's request timeout (lib/runtime/src/lib.rs).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// One command line.
#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
enum Command {
    Run {
        image: String,
        #[serde(default)]
        env: Map<String, Value>,
    },
    Parallel {
        image: String,
        n: usize,
        par: usize,
        #[serde(default)]
        env: Map<String, Value>,
    },
}

/// The phase times of one run, in seconds.
struct Phases {
    create: f64,
    start: f64,
    wait: f64,
    logs_rm: f64,
    total: f64,
}

/// A failure, named by the step it happened in.
struct StepError {
    step: &'static str,
    cause: String,
}

impl StepError {
    fn at(step: &'static str) -> impl FnOnce(bollard::errors::Error) -> StepError {
        move |err| StepError {
            step,
            cause: err.to_string(),
        }
    }

    fn message(&self) -> String {
        format!("{}: {}", self.step, self.cause)
    }
}

/// The client, with the API version negotiated on first use (retried on the next command if the
/// daemon did not answer).
struct Client {
    docker: Docker,
    negotiated: OnceCell<()>,
}

impl Client {
    async fn get(&self) -> Result<&Docker, StepError> {
        self.negotiated
            .get_or_try_init(|| async {
                self.docker
                    .clone()
                    .negotiate_version()
                    .await
                    .map(|_| ())
                    .map_err(StepError::at("negotiate the API version"))
            })
            .await?;
        Ok(&self.docker)
    }
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            answer(&json!({ "error": format!("start the tokio runtime: {err}") }));
            std::process::exit(1);
        }
    };
    // Run the loop as a task, on the worker threads, as the platform's workers run.
    let served = runtime.block_on(async { tokio::spawn(serve()).await });
    if let Err(err) = served {
        answer(&json!({ "error": format!("the command loop panicked: {err}") }));
        std::process::exit(1);
    }
}

async fn serve() {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    let docker = match Docker::connect_with_unix(&socket, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
    {
        Ok(docker) => docker,
        Err(err) => {
            answer(&json!({ "error": format!("connect to {socket}: {err}") }));
            return;
        }
    };
    let client = Client {
        docker,
        negotiated: OnceCell::new(),
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return, // stdin closed: the benchmark is done
            Err(err) => {
                answer(&json!({ "error": format!("read stdin: {err}") }));
                return;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Command>(&line) {
            Ok(command) => execute(&client, command).await,
            Err(err) => json!({ "error": format!("parse the command: {err}") }),
        };
        answer(&reply);
    }
}

async fn execute(client: &Client, command: Command) -> Value {
    let docker = match client.get().await {
        Ok(docker) => docker,
        Err(err) => return json!({ "error": err.message() }),
    };
    match command {
        Command::Run { image, env } => match run_once(docker, &image, &env_list(&env)).await {
            Ok(p) => json!({
                "create": p.create,
                "start": p.start,
                "wait": p.wait,
                "logs_rm": p.logs_rm,
                "total": p.total,
            }),
            Err(err) => json!({ "error": err.message() }),
        },
        Command::Parallel { image, n, par, env } => {
            parallel(docker, image, n, par.max(1), env_list(&env)).await
        }
    }
}

/// `n` runs from `par` tasks sharing one client; each task takes the next run until none is left.
async fn parallel(docker: &Docker, image: String, n: usize, par: usize, env: Vec<String>) -> Value {
    let todo = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(n));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..par.min(n.max(1)) {
        let (docker, image, env, todo) = (docker.clone(), image.clone(), env.clone(), todo.clone());
        tasks.spawn(async move {
            let mut times = Vec::new();
            let mut errors = Vec::new();
            while todo
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |left| left.checked_sub(1),
                )
                .is_ok()
            {
                match run_once(&docker, &image, &env).await {
                    Ok(phases) => times.push(phases.total),
                    Err(err) => errors.push(err.message()),
                }
            }
            (times, errors)
        });
    }
    let mut times = Vec::with_capacity(n);
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((t, e)) => {
                times.extend(t);
                errors.extend(e);
            }
            Err(err) => errors.push(format!("task: {err}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    match errors.first() {
        Some(first) => json!({
            "error": format!("{} of {n} runs failed; first: {first}", errors.len()),
        }),
        None => json!({ "elapsed": elapsed, "times": times }),
    }
}

/// One execution: create, start, wait, logs (drained), remove.
async fn run_once(docker: &Docker, image: &str, env: &[String]) -> Result<Phases, StepError> {
    let t0 = Instant::now();
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env.to_vec()),
        labels: Some(HashMap::from([(
            "abaco.bench".to_string(),
            "raw".to_string(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("bridge".to_string()),
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(StepError::at("create"))?
        .id;
    let t1 = Instant::now();
    let result = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(StepError::at("start"))?;
        let t2 = Instant::now();
        let mut waited = docker.wait_container(&id, None::<WaitContainerOptions>);
        match waited.next().await {
            // bollard reports a non-zero exit as an error; here it is a result.
            Some(Ok(_)) | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {}
            Some(Err(err)) => return Err(StepError::at("wait")(err)),
            None => {
                return Err(StepError {
                    step: "wait",
                    cause: "the daemon closed the wait without an exit code".to_string(),
                })
            }
        }
        let t3 = Instant::now();
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "all".to_string(),
            ..Default::default()
        };
        let mut chunks = docker.logs(&id, Some(options));
        let mut bytes = 0usize;
        while let Some(chunk) = chunks.next().await {
            match chunk.map_err(StepError::at("logs"))? {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => bytes += message.len(),
                LogOutput::StdIn { .. } => {}
            }
        }
        std::hint::black_box(bytes);
        Ok((t2, t3))
    }
    .await;
    // Remove even when a step failed, so a broken run leaves no container behind.
    let removed = docker
        .remove_container(
            &id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            }),
        )
        .await
        .map_err(StepError::at("remove"));
    let (t2, t3) = result?;
    removed?;
    let t4 = Instant::now();
    Ok(Phases {
        create: (t1 - t0).as_secs_f64(),
        start: (t2 - t1).as_secs_f64(),
        wait: (t3 - t2).as_secs_f64(),
        logs_rm: (t4 - t3).as_secs_f64(),
        total: (t4 - t0).as_secs_f64(),
    })
}

/// `{"K":"v"}` as Docker's `K=v` list, in the command's order; non-string values as JSON text.
fn env_list(env: &Map<String, Value>) -> Vec<String> {
    env.iter()
        .map(|(key, value)| match value {
            Value::String(text) => format!("{key}={text}"),
            other => format!("{key}={other}"),
        })
        .collect()
}

/// One answer line on stdout, flushed at once (the benchmark waits for it).
fn answer(reply: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the benchmark is gone; nothing is left to tell.
    let _ = writeln!(out, "{reply}").and_then(|()| out.flush());
}
