//! Conformance of `Runtime` against the real Docker engine of this machine, using the test images
//! that `images/build.sh` builds locally. Every container carries a label unique to its test and
//! is removed by that label when the test ends, even when it fails.
//!
//! Docker unreachable: with `CI` set the tests fail; otherwise they print a note and pass.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use abaco_core::config::DockerConfig;
use abaco_runtime::{ContainerSpec, Runtime, RuntimeError, Stats};

const LABEL_KEY: &str = "abaco-runtime-test";
const ECHO: &str = "abaco-test/echo:latest";
const SLEEP: &str = "abaco-test/sleep:latest";
const BUSYBOX: &str = "abaco-test/busybox:latest";

/// One test's runtime and label; removes the test's containers when dropped.
struct Harness {
    runtime: Runtime,
    label: String,
}

impl Harness {
    /// Connects, checks Docker is up and the images are built. `None`: skip (Docker down, no CI).
    async fn start(test: &str) -> Option<Harness> {
        let config = DockerConfig {
            dd: std::env::var("ABACO_TEST_DOCKER")
                .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string()),
            network: "none".to_string(),
        };
        let reachable = match Runtime::connect(&config) {
            Ok(runtime) => runtime.ping().await.map(|()| runtime),
            Err(err) => Err(err),
        };
        let runtime = match reachable {
            Ok(runtime) => runtime,
            Err(err) if std::env::var_os("CI").is_some() => {
                panic!("Docker is required in CI but unreachable: {err}")
            }
            Err(err) => {
                eprintln!(
                    "note: skipping {test}: Docker is unreachable ({err}); run scripts/services.sh"
                );
                return None;
            }
        };
        build_images();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let label = format!("{test}-{}-{nanos}", std::process::id());
        Some(Harness { runtime, label })
    }

    /// A spec for `image` carrying this test's label, without network (faster to start).
    fn spec(&self, image: &str, env: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            image: image.to_string(),
            env: env
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            labels: HashMap::from([(LABEL_KEY.to_string(), self.label.clone())]),
            network_mode: Some("none".to_string()),
            ..Default::default()
        }
    }

    async fn run(&self, spec: &ContainerSpec) -> String {
        let id = self.runtime.create(spec).await.expect("create");
        self.runtime.start(&id).await.expect("start");
        id
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Synchronous on purpose: runs on panic too, without a runtime.
        let filter = format!("label={LABEL_KEY}={}", self.label);
        let listed = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(listed) = listed {
            let ids = String::from_utf8_lossy(&listed.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// Runs `images/build.sh` once per test binary.
fn build_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../images/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run images/build.sh");
        assert!(
            output.status.success(),
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

fn docker_inspect(id: &str, format: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .expect("docker inspect");
    assert!(output.status.success(), "docker inspect {id} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test]
async fn echo_runs_to_completion() {
    let Some(h) = Harness::start("echo").await else {
        return;
    };
    let id = h
        .run(&h.spec(ECHO, &[("MSG", "hello"), ("_abaco_actor_id", "a1")]))
        .await;
    assert_eq!(h.runtime.wait(&id).await.expect("wait"), 0);

    let logs = String::from_utf8(h.runtime.logs(&id).await.expect("logs")).expect("utf-8");
    assert!(logs.contains("MSG=hello"), "logs: {logs}");
    assert!(logs.contains("_abaco_actor_id=a1"), "logs: {logs}");

    let state = h.runtime.inspect(&id).await.expect("inspect");
    assert!(!state.running);
    assert_eq!(state.exit_code, Some(0));
    assert!(!state.oom_killed);
    assert!(
        state.started_at.is_some() && state.finished_at.is_some(),
        "{state:?}"
    );
    assert_eq!(state.raw["Status"], "exited", "raw: {}", state.raw);

    h.runtime.remove(&id, false).await.expect("remove");
    assert!(matches!(
        h.runtime.inspect(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
    h.runtime
        .remove(&id, false)
        .await
        .expect("removing twice is Ok");
}

#[tokio::test]
async fn nonzero_exit_is_a_result() {
    let Some(h) = Harness::start("exit").await else {
        return;
    };
    let id = h
        .run(&h.spec(ECHO, &[("MSG", "x"), ("EXIT_CODE", "3")]))
        .await;
    assert_eq!(h.runtime.wait(&id).await.expect("wait"), 3);
    let state = h.runtime.inspect(&id).await.expect("inspect");
    assert_eq!(state.exit_code, Some(3));
    // Waiting on an exited container answers at once with the same code.
    assert_eq!(h.runtime.wait(&id).await.expect("wait again"), 3);
}

#[tokio::test]
async fn logs_are_raw_bytes_from_both_streams() {
    let Some(h) = Harness::start("logs").await else {
        return;
    };
    let mut spec = h.spec(BUSYBOX, &[]);
    spec.cmd = Some(vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        r"printf 'out\377\n'; echo err >&2".to_string(),
    ]);
    let id = h.run(&spec).await;
    assert_eq!(h.runtime.wait(&id).await.expect("wait"), 0);
    let logs = h.runtime.logs(&id).await.expect("logs");
    // The json-file log driver stores lines as JSON strings and so replaces invalid UTF-8 with
    // U+FFFD; other drivers keep the byte. Either way the runtime must hand the bytes back.
    let kept = logs.windows(4).any(|w| w == b"out\xff");
    let replaced = logs.windows(6).any(|w| w == "out\u{fffd}".as_bytes());
    assert!(kept || replaced, "logs: {logs:?}");
    assert!(logs.windows(3).any(|w| w == b"err"), "logs: {logs:?}");
}

#[tokio::test]
async fn stats_of_a_running_container() {
    let Some(h) = Harness::start("stats").await else {
        return;
    };
    let id = h.run(&h.spec(SLEEP, &[("SLEEP", "30")])).await;
    assert!(h.runtime.inspect(&id).await.expect("inspect").running);

    let asked = Instant::now();
    let stats = h.runtime.stats(&id).await.expect("stats");
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "one-shot stats took {:?}",
        asked.elapsed()
    );
    assert!(stats.cpu_ns > 0, "{stats:?}");
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert!(stats.io_bytes >= 0, "{stats:?}");

    h.runtime.kill(&id).await.expect("kill");
    assert_eq!(h.runtime.wait(&id).await.expect("wait"), 137);
    h.runtime
        .kill(&id)
        .await
        .expect("killing an exited container is Ok");
    assert_eq!(
        h.runtime.stats(&id).await.expect("stats after exit"),
        Stats::default()
    );
}

#[tokio::test]
async fn stop_a_running_container() {
    let Some(h) = Harness::start("stop").await else {
        return;
    };
    let id = h.run(&h.spec(SLEEP, &[("SLEEP", "300")])).await;
    let asked = Instant::now();
    h.runtime
        .stop(&id, Duration::from_secs(20))
        .await
        .expect("stop");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the image traps SIGTERM; took {:?}",
        asked.elapsed()
    );
    assert_eq!(h.runtime.wait(&id).await.expect("wait"), 143);
    let state = h.runtime.inspect(&id).await.expect("inspect");
    assert!(!state.running);
    assert_eq!(state.exit_code, Some(143));
    h.runtime
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stopping twice is Ok");
    let logs = String::from_utf8_lossy(&h.runtime.logs(&id).await.expect("logs")).to_string();
    assert!(logs.contains("stopped"), "logs: {logs}");
}

#[tokio::test]
async fn list_by_label_then_remove() {
    let Some(h) = Harness::start("list").await else {
        return;
    };
    let running = h.run(&h.spec(SLEEP, &[("SLEEP", "60")])).await;
    let created = h.runtime.create(&h.spec(ECHO, &[])).await.expect("create");

    let mut listed = h
        .runtime
        .list(&[(LABEL_KEY, &h.label)])
        .await
        .expect("list");
    listed.sort_by_key(|summary| summary.id != running);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        (listed[0].id.as_str(), listed[0].running),
        (running.as_str(), true)
    );
    assert_eq!(
        (listed[1].id.as_str(), listed[1].running),
        (created.as_str(), false)
    );
    assert_eq!(listed[0].labels.get(LABEL_KEY), Some(&h.label));

    for summary in &listed {
        h.runtime.remove(&summary.id, true).await.expect("remove");
    }
    let left = h
        .runtime
        .list(&[(LABEL_KEY, &h.label)])
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn images_present_and_missing() {
    let Some(h) = Harness::start("images").await else {
        return;
    };
    assert!(h.runtime.image_exists(ECHO).await.expect("exists"));
    assert!(!h
        .runtime
        .image_exists("abaco-test/no-such-image:latest")
        .await
        .expect("exists"));

    let missing = h.spec("abaco-test/no-such-image:latest", &[]);
    match h.runtime.create(&missing).await {
        Err(RuntimeError::ImageNotFound { image }) => assert_eq!(image, missing.image),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    match h.runtime.start("no-such-container-abaco").await {
        Err(err @ RuntimeError::NotFound { .. }) => assert!(!err.is_retryable()),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn pull_without_registry_fails_fast() {
    let Some(h) = Harness::start("pull").await else {
        return;
    };
    let image = "abaco-test/no-such-image-anywhere:latest";
    let pulled = tokio::time::timeout(Duration::from_secs(60), h.runtime.pull(image))
        .await
        .expect("pull must not hang");
    let err = pulled.expect_err("nothing can be pulled here");
    let message = err.to_string();
    assert!(
        message.contains(image) && message.contains("could not be pulled"),
        "{message}"
    );
}

#[tokio::test]
async fn resource_limits_are_applied() {
    let Some(h) = Harness::start("limits").await else {
        return;
    };
    let mut spec = h.spec(ECHO, &[("MSG", "limited")]);
    spec.memory = Some(64 * 1024 * 1024);
    spec.nano_cpus = Some(500_000_000);
    spec.user = Some("65534:65534".to_string());
    // No network in the spec: `[docker] network` (here `none`) applies.
    spec.network_mode = None;
    let id = h.run(&spec).await;
    assert_eq!(h.runtime.wait(&id).await.expect("wait"), 0);
    assert_eq!(docker_inspect(&id, "{{.HostConfig.Memory}}"), "67108864");
    assert_eq!(docker_inspect(&id, "{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(docker_inspect(&id, "{{.Config.User}}"), "65534:65534");
    assert_eq!(docker_inspect(&id, "{{.HostConfig.NetworkMode}}"), "none");
}

#[tokio::test]
async fn unreachable_daemon_is_retryable() {
    let missing_socket = DockerConfig {
        dd: "unix:///nonexistent/docker.sock".to_string(),
        network: "none".to_string(),
    };
    match Runtime::connect(&missing_socket) {
        Err(err) => assert!(err.is_retryable(), "{err}"),
        Ok(runtime) => assert!(runtime.ping().await.expect_err("no daemon").is_retryable()),
    }
    let closed_port = DockerConfig {
        dd: "tcp://127.0.0.1:1".to_string(),
        network: "none".to_string(),
    };
    let runtime = Runtime::connect(&closed_port).expect("connect does no IO");
    let err = runtime.ping().await.expect_err("nothing listens on port 1");
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let bad = DockerConfig {
        dd: "ftp://host".to_string(),
        network: "none".to_string(),
    };
    assert!(Runtime::connect(&bad).is_err());
}
