//! Container runtime over the Docker Engine API. Only this crate knows Docker: callers see a
//! [`Runtime`] handle, plain spec/state structs and [`RuntimeError`], never a bollard type.
//!
//! The handle is cheap to clone (one shared HTTP client). The API version is negotiated with the
//! daemon on first use, so one binary works against old engines (20.10 speaks API 1.41) and new
//! ones; until the daemon answers, every call fails with the retryable
//! [`RuntimeError::Unavailable`].

mod error;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptionsBuilder, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::StreamExt;
use tokio::sync::OnceCell;

use abaco_core::config::DockerConfig;
use error::{classify, status_code, Subject};

pub use error::{Result, RuntimeError};

/// The daemon used when `[docker] dd` is empty.
pub const DEFAULT_DAEMON: &str = "unix:///var/run/docker.sock";

/// Seconds a request may wait for the daemon's answer headers. Long waits (`wait`, `logs`) are not
/// bounded by it: Docker sends headers at once and streams the body.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// Everything needed to create one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Image reference, e.g. `abaco-test/echo:latest`. Must already be on the host.
    pub image: String,
    /// Command; `None` uses the image's `CMD`.
    pub cmd: Option<Vec<String>>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Labels; used to find and clean up containers with [`Runtime::list`].
    pub labels: HashMap<String, String>,
    /// Bind mounts in Docker's `host:container[:ro]` form.
    pub binds: Vec<String>,
    /// `uid[:gid]` or a user name; `None` uses the image's user.
    pub user: Option<String>,
    /// Memory limit in bytes; `None` or a value <= 0 means unlimited.
    pub memory: Option<i64>,
    /// CPU limit in billionths of a CPU; `None` or a value <= 0 means unlimited.
    pub nano_cpus: Option<i64>,
    /// Run privileged.
    pub privileged: bool,
    /// `bridge`, `none`, `host` or a network name; `None` uses `[docker] network`.
    pub network_mode: Option<String>,
}

/// Resource usage of a container at one instant (cumulative since it started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used, nanoseconds.
    pub cpu_ns: i64,
    /// Block I/O read + written plus network received + sent, bytes.
    pub io_bytes: i64,
    /// Memory in use, bytes.
    pub memory_bytes: i64,
}

/// The state of a container as Docker reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerState {
    pub running: bool,
    /// Set once the container has exited or failed to start; `None` before.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// RFC 3339; `None` if never started.
    pub started_at: Option<String>,
    /// RFC 3339; `None` if still running or never started.
    pub finished_at: Option<String>,
    /// Docker's `State` object, unchanged.
    pub raw: serde_json::Value,
}

/// One container found by [`Runtime::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
}

/// Handle on one Docker daemon. Clones share the connection.
#[derive(Clone)]
pub struct Runtime {
    docker: Docker,
    /// The daemon address, for messages.
    endpoint: Arc<str>,
    /// `[docker] network`: the network mode of containers whose spec names none.
    network: Option<Arc<str>>,
    /// Set once the API version has been negotiated with the daemon.
    negotiated: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Prepares a client for the daemon at `config.dd` (`unix:///path`, a bare socket path,
    /// `tcp://host:port` or `http://host:port`; empty means [`DEFAULT_DAEMON`]). Does no IO
    /// beyond checking that a unix socket exists (if not: the retryable
    /// [`RuntimeError::Unavailable`]); a daemon that is down surfaces as `Unavailable` on the
    /// first call. `config.network` becomes the network mode of specs that name none.
    pub fn connect(config: &DockerConfig) -> Result<Runtime> {
        let dd = config.dd.trim();
        let endpoint = if dd.is_empty() { DEFAULT_DAEMON } else { dd };
        let connected = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if endpoint.starts_with('/') {
            Docker::connect_with_unix(endpoint, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(endpoint, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else {
            return Err(RuntimeError::Failed {
                op: "connect".to_string(),
                cause: format!(
                    "[docker] dd = {endpoint:?} is not a supported address; use unix:///path/to/docker.sock or tcp://host:port"
                ),
            });
        };
        let docker = connected
            .map_err(|err| classify(endpoint, "connect".to_string(), Subject::Daemon, err))?;
        Ok(Runtime {
            docker,
            endpoint: Arc::from(endpoint),
            network: Some(config.network.trim())
                .filter(|network| !network.is_empty())
                .map(Arc::from),
            negotiated: Arc::new(OnceCell::new()),
        })
    }

    /// Checks that the daemon answers.
    pub async fn ping(&self) -> Result<()> {
        let docker = self.client().await?;
        docker
            .ping()
            .await
            .map_err(|err| self.err("ping the daemon", Subject::Daemon, err))?;
        Ok(())
    }

    /// True if `image` is present on the host.
    pub async fn image_exists(&self, image: &str) -> Result<bool> {
        let docker = self.client().await?;
        match docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(err) if status_code(&err) == Some(404) => Ok(false),
            Err(err) => Err(self.err(format!("inspect image {image}"), Subject::Image(image), err)),
        }
    }

    /// Pulls `image` from its registry. Fails with a message naming the image and Docker's reason
    /// when no registry is reachable. Not bounded in time: callers add their own deadline.
    pub async fn pull(&self, image: &str) -> Result<()> {
        let docker = self.client().await?;
        let (name, tag) = split_tag(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            step.map_err(|err| {
                match classify(
                    &self.endpoint,
                    format!("pull image {image}"),
                    Subject::Daemon,
                    err,
                ) {
                    RuntimeError::Failed { op, cause } => RuntimeError::Failed {
                        op,
                        cause: format!("image {image} could not be pulled: {cause}"),
                    },
                    other => other,
                }
            })?;
        }
        Ok(())
    }

    /// Creates (does not start) a container; returns its id.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let docker = self.client().await?;
        let body = create_body(spec, self.network.as_deref());
        match docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
        {
            Ok(created) => Ok(created.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            }) if !message.contains("network") => Err(RuntimeError::ImageNotFound {
                image: spec.image.clone(),
            }),
            Err(err) => Err(self.err(
                format!("create a container from image {}", spec.image),
                Subject::Daemon,
                err,
            )),
        }
    }

    /// Starts a created container.
    pub async fn start(&self, id: &str) -> Result<()> {
        let docker = self.client().await?;
        docker
            .start_container(id, None)
            .await
            .map_err(|err| self.err(format!("start container {id}"), Subject::Container(id), err))
    }

    /// Waits until the container exits and returns its exit code (non-zero codes are `Ok`).
    pub async fn wait(&self, id: &str) -> Result<i64> {
        let docker = self.client().await?;
        let mut answers = docker.wait_container(id, None::<WaitContainerOptions>);
        match answers.next().await {
            Some(Ok(answer)) => Ok(answer.status_code),
            // bollard turns a non-zero exit into an error; for us it is a result.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(err)) => Err(self.err(
                format!("wait for container {id}"),
                Subject::Container(id),
                err,
            )),
            None => Err(RuntimeError::Failed {
                op: format!("wait for container {id}"),
                cause: "the daemon closed the wait without an exit code".to_string(),
            }),
        }
    }

    /// Everything the container wrote to stdout and stderr so far, interleaved as written.
    /// Raw bytes: actors may print anything.
    pub async fn logs(&self, id: &str) -> Result<Vec<u8>> {
        let docker = self.client().await?;
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "all".to_string(),
            ..Default::default()
        };
        let mut chunks = docker.logs(id, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|err| {
                self.err(
                    format!("read the logs of container {id}"),
                    Subject::Container(id),
                    err,
                )
            })?;
            match chunk {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => out.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(out)
    }

    /// One snapshot of resource usage, without Docker's two-second sampling. All zeros once the
    /// container has exited.
    pub async fn stats(&self, id: &str) -> Result<Stats> {
        let docker = self.client().await?;
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut samples = docker.stats(id, Some(options));
        match samples.next().await {
            Some(Ok(sample)) => Ok(stats::from_docker(&sample)),
            Some(Err(err)) => Err(self.err(
                format!("read the stats of container {id}"),
                Subject::Container(id),
                err,
            )),
            None => Ok(Stats::default()),
        }
    }

    /// The container's state.
    pub async fn inspect(&self, id: &str) -> Result<ContainerState> {
        let docker = self.client().await?;
        let inspected = docker.inspect_container(id, None).await.map_err(|err| {
            self.err(
                format!("inspect container {id}"),
                Subject::Container(id),
                err,
            )
        })?;
        let state = inspected.state.unwrap_or_default();
        let raw = serde_json::to_value(&state).unwrap_or(serde_json::Value::Null);
        let running = state.running.unwrap_or(false);
        let finished_at = state.finished_at.filter(|at| !is_zero_time(at));
        // Docker reports 0 before a container has run; a failed start leaves a non-zero code
        // without a finish time.
        let exit_code = match state.exit_code {
            Some(code) if !running && (finished_at.is_some() || code != 0) => Some(code),
            _ => None,
        };
        Ok(ContainerState {
            running,
            exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at: state.started_at.filter(|at| !is_zero_time(at)),
            finished_at,
            raw,
        })
    }

    /// Stops the container: SIGTERM, then SIGKILL after `grace`. Stopping a stopped container is Ok.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let docker = self.client().await?;
        let grace_secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        // The daemon answers only once the container is down, so leave it the grace period.
        let docker = docker.clone().with_timeout(Duration::from_secs(
            REQUEST_TIMEOUT_SECS.saturating_add(grace.as_secs()),
        ));
        let options = StopContainerOptions {
            t: Some(grace_secs),
            signal: None,
        };
        docker
            .stop_container(id, Some(options))
            .await
            .map_err(|err| self.err(format!("stop container {id}"), Subject::Container(id), err))
    }

    /// Sends SIGKILL. Killing a container that is no longer running is Ok.
    pub async fn kill(&self, id: &str) -> Result<()> {
        let docker = self.client().await?;
        let options = KillContainerOptions {
            signal: "SIGKILL".to_string(),
        };
        match docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 409: not running; what a kill wants anyway.
            Err(err) if status_code(&err) == Some(409) => Ok(()),
            Err(err) => Err(self.err(format!("kill container {id}"), Subject::Container(id), err)),
        }
    }

    /// Removes the container and its anonymous volumes; `force` also kills it if running.
    /// Removing a container that does not exist (or is being removed) is Ok.
    pub async fn remove(&self, id: &str, force: bool) -> Result<()> {
        let docker = self.client().await?;
        let options = RemoveContainerOptions {
            force,
            v: true,
            link: false,
        };
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if status_code(&err) == Some(404) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(err) => Err(self.err(
                format!("remove container {id}"),
                Subject::Container(id),
                err,
            )),
        }
    }

    /// All containers (running or not) carrying every one of `labels`.
    pub async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>> {
        let docker = self.client().await?;
        let filters = HashMap::from([(
            "label".to_string(),
            labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>(),
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: if labels.is_empty() {
                None
            } else {
                Some(filters)
            },
            ..Default::default()
        };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|err| self.err("list containers", Subject::Daemon, err))?;
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                Some(ContainerSummary {
                    id: container.id?,
                    labels: container.labels.unwrap_or_default(),
                    running: container.state == Some(ContainerSummaryStateEnum::RUNNING),
                })
            })
            .collect())
    }

    /// The client, after negotiating the API version once (retried on the next call if the
    /// daemon was unreachable).
    async fn client(&self) -> Result<&Docker> {
        self.negotiated
            .get_or_try_init(|| async {
                // Clones share the version, so negotiating on a clone updates `self.docker`.
                self.docker
                    .clone()
                    .negotiate_version()
                    .await
                    .map(|_| ())
                    .map_err(|err| self.err("negotiate the API version", Subject::Daemon, err))
            })
            .await?;
        Ok(&self.docker)
    }

    fn err(
        &self,
        op: impl Into<String>,
        subject: Subject<'_>,
        err: bollard::errors::Error,
    ) -> RuntimeError {
        classify(&self.endpoint, op.into(), subject, err)
    }
}

/// The body of a create request.
fn create_body(spec: &ContainerSpec, default_network: Option<&str>) -> ContainerCreateBody {
    let env = spec
        .env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let host_config = HostConfig {
        binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
        memory: spec.memory.filter(|bytes| *bytes > 0),
        nano_cpus: spec.nano_cpus.filter(|nanos| *nanos > 0),
        privileged: Some(spec.privileged),
        network_mode: spec
            .network_mode
            .clone()
            .or_else(|| default_network.map(str::to_string)),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.cmd.clone(),
        env: Some(env),
        labels: Some(spec.labels.clone()),
        user: spec.user.clone(),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Splits `repo[:tag]` (a `:` inside a registry host:port is not a tag); the tag defaults to `latest`.
fn split_tag(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// Docker's "never" timestamp.
fn is_zero_time(at: &str) -> bool {
    at.is_empty() || at.starts_with("0001-01-01")
}

#[cfg(test)]
mod tests;
