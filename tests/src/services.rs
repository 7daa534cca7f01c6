//! Where the test services are (`ABACO_TEST_*` variables, loopback defaults) and whether they are
//! reachable. With `CI` set an unreachable service is a test failure, never a skip.

use std::process::Command;
use std::time::Duration;

use abaco_core::config::DockerConfig;
use abaco_runtime::Runtime;
use tokio::sync::OnceCell;

pub struct Services {
    pub redis_url: String,
    pub postgres_url: String,
    pub amqp_url: String,
}

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "0" && v != "false")
        .unwrap_or(false)
}

/// Fails under CI, otherwise explains and tells the caller to skip.
fn missing(what: &str) -> bool {
    if in_ci() {
        panic!("{what} is not available and CI is set: start it with scripts/services.sh");
    }
    eprintln!(
        "SKIPPED: {what} is not available (run scripts/services.sh); not a failure outside CI"
    );
    false
}

impl Services {
    pub fn from_env() -> Services {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        Services {
            redis_url: var("ABACO_TEST_REDIS_URL", "redis://127.0.0.1:6379/"),
            postgres_url: var(
                "ABACO_TEST_POSTGRES_URL",
                "postgres://abaco:abaco@127.0.0.1:5432/abaco",
            ),
            amqp_url: var(
                "ABACO_TEST_AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
        }
    }

    /// Checks that Redis, PostgreSQL and RabbitMQ accept TCP connections.
    pub async fn require_distributed(&self) -> bool {
        for (name, url, default_port) in [
            ("Redis", &self.redis_url, 6379),
            ("PostgreSQL", &self.postgres_url, 5432),
            ("RabbitMQ", &self.amqp_url, 5672),
        ] {
            let addr = host_port(url, default_port);
            let ok = tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::TcpStream::connect(&addr),
            )
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
            if !ok {
                return missing(&format!("{name} at {addr}"));
            }
        }
        true
    }
}

fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    }
}

static IMAGES: OnceCell<bool> = OnceCell::const_new();

/// The Docker engine, with the test images built; `None` outside CI when Docker is missing.
pub async fn require_docker() -> Option<Runtime> {
    let runtime = Runtime::connect(&DockerConfig {
        dd: std::env::var("ABACO_TEST_DOCKER")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
        network: "none".into(),
    })
    .ok()?;
    if runtime.ping().await.is_err() {
        missing("the Docker engine");
        return None;
    }
    let built = IMAGES
        .get_or_init(|| async {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/build.sh");
            let status =
                tokio::task::spawn_blocking(move || Command::new("bash").arg(script).status())
                    .await
                    .ok()
                    .and_then(|r| r.ok());
            matches!(status, Some(s) if s.success())
        })
        .await;
    assert!(
        *built,
        "images/build.sh failed: the test images could not be built"
    );
    Some(runtime)
}

static DOCKER2: OnceCell<Option<String>> = OnceCell::const_new();

/// A second Docker engine standing in for a second compute host (`scripts/dockerd2.sh` starts it
/// and loads the test images into it): its `unix://` URL, or `None` outside CI when it cannot run.
pub async fn require_docker2() -> Option<String> {
    require_docker().await?;
    let url = DOCKER2
        .get_or_init(|| async {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/dockerd2.sh");
            let out =
                tokio::task::spawn_blocking(move || Command::new("bash").arg(script).output())
                    .await
                    .ok()
                    .and_then(|r| r.ok())?;
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                return None;
            }
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("export ABACO_TEST_DOCKER2="))
                .map(str::to_string)
        })
        .await
        .clone();
    if url.is_none() {
        missing("a second Docker engine (scripts/dockerd2.sh)");
    }
    url
}
