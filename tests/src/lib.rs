//! Test harness shared by the black-box and end-to-end tests: starts the platform in-process on
//! `127.0.0.1:0` (embedded, or distributed over the real Redis, PostgreSQL and RabbitMQ), builds
//! the test images, and offers small typed helpers that wait on conditions with deadlines.
//!
//! Services: when `CI` is set a missing service fails the test; otherwise the test prints why it
//! did not run and passes, so a developer without RabbitMQ can still run the rest.

pub mod engines;
pub mod procs;
pub mod services;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use abaco_channels::Channels;
use abaco_control::Control;
use abaco_core::config::{Backend, Ini};
use abaco_core::Config;
use abaco_runtime::Runtime;
use abaco_store::Store;

pub use services::{require_docker, require_docker2, Services};

/// A running platform for one test.
pub struct TestApp {
    pub base: String,
    pub tenant: String,
    pub config: Arc<Config>,
    pub control: Control,
    pub runtime: Runtime,
    client: reqwest::Client,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    pub data_dir: PathBuf,
}

/// How to start a `TestApp`.
pub struct Builder {
    backend: Backend,
    extra: Vec<(String, String, String)>,
    health_period: Duration,
    data_dir: Option<PathBuf>,
}

impl TestApp {
    /// Everything in one process on the embedded store.
    pub fn embedded() -> Builder {
        Builder {
            backend: Backend::Embedded,
            extra: Vec::new(),
            health_period: Duration::from_secs(2),
            data_dir: None,
        }
    }

    /// API, spawner and health in this process over the real Redis, PostgreSQL and RabbitMQ.
    pub fn distributed() -> Builder {
        Builder {
            backend: Backend::Distributed,
            ..TestApp::embedded()
        }
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:x}", rand::random::<u64>())
}

/// A fresh temporary directory (removed by the OS's tmp cleanup; tests never share one).
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl Builder {
    /// Sets `[section] key = value` in the test's configuration.
    pub fn with(mut self, section: &str, key: &str, value: &str) -> Builder {
        self.extra.push((section.into(), key.into(), value.into()));
        self
    }

    pub fn health_period(mut self, period: Duration) -> Builder {
        self.health_period = period;
        self
    }

    pub fn data_dir(mut self, dir: PathBuf) -> Builder {
        self.data_dir = Some(dir);
        self
    }

    /// Starts the platform, or returns `None` (outside CI) when a needed service is missing.
    pub async fn start(self) -> Option<TestApp> {
        init_tracing();
        let services = Services::from_env();
        let runtime = require_docker().await?;
        if self.backend == Backend::Distributed && !services.require_distributed().await {
            return None;
        }
        let data_dir = self.data_dir.unwrap_or_else(|| temp_dir("abaco-test-"));
        // Unique host queue and host id: tests share the brokers and the Docker engine.
        let queue = unique("q");
        let host_id = unique("host-");
        let mut text = format!(
            "[store]\nbackend = {}\ndata_dir = {}\nredis_url = {}\npostgres_url = {}\n\
             [rabbit]\nuri = {}\n[spawner]\nhost_queues = {queue}\nhost_id = {host_id}\n\
             [web]\nbind = 127.0.0.1:0\n[docker]\nnetwork = none\n",
            match self.backend {
                Backend::Embedded => "embedded",
                Backend::Distributed => "distributed",
            },
            data_dir.display(),
            services.redis_url,
            services.postgres_url,
            services.amqp_url,
        );
        let mut sections: std::collections::BTreeMap<String, Vec<(String, String)>> =
            Default::default();
        for (s, k, v) in self.extra {
            sections.entry(s).or_default().push((k, v));
        }
        for (s, kvs) in sections {
            text.push_str(&format!("[{s}]\n"));
            for (k, v) in kvs {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        let config = Config::from_ini(Ini::parse(&text).expect("test config parses"))
            .expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut config = config;
        config.web.api_server = Some(format!("http://{addr}"));
        let config = Arc::new(config);
        let store = Store::connect(&config.store).await.expect("store connects");
        let channels = Channels::connect(&config).await.expect("channels connect");
        let control = Control::new(store, channels);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let api = abaco_actors::Api::new(config.clone(), control.clone())
            .await
            .expect("API keys load");
        let token = shutdown.clone();
        tasks.spawn(async move {
            let _ = abaco_actors::run(api, listener, token).await;
        });
        let spawner = abaco_spawner::SpawnerContext {
            config: config.clone(),
            control: control.clone(),
            runtime: runtime.clone(),
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = abaco_spawner::run(spawner, token).await {
                tracing::error!(cause = %err, "test spawner failed");
            }
        });
        let health = abaco_health::HealthContext {
            config: config.clone(),
            control: control.clone(),
            runtime: runtime.clone(),
            period: self.health_period,
        };
        let token = shutdown.clone();
        tasks.spawn(abaco_health::autoscaler::run(health.clone(), token));
        let token = shutdown.clone();
        tasks.spawn(abaco_health::cron::run(health.clone(), token));
        let token = shutdown.clone();
        tasks.spawn(abaco_health::events::run(health.clone(), token));
        let clientg = abaco_clientg::ClientgContext {
            config: config.clone(),
            control: control.clone(),
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = abaco_clientg::run(clientg, token).await {
                tracing::error!(cause = %err, "test clientg failed");
            }
        });
        let token = shutdown.clone();
        tasks.spawn(abaco_health::run(health, token));
        Some(TestApp {
            base: format!("http://{addr}"),
            tenant: unique("T").to_ascii_uppercase(),
            config,
            control,
            runtime,
            client: reqwest::Client::new(),
            shutdown,
            tasks,
            data_dir,
        })
    }
}

impl TestApp {
    /// Stops every component, letting in-flight executions finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("tenant", &self.tenant)
    }

    /// Sends a request and returns the status and the parsed JSON envelope.
    pub async fn call(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request reaches the API");
        let status = resp.status();
        let text = resp.text().await.expect("response body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {status} {text:?}"));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn put_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }

    /// Registers an actor and returns its display; panics unless the API says success.
    pub async fn register_actor(&self, body: Value) -> Value {
        let (status, env) = self.post_json("/actors", body).await;
        assert_eq!(status, StatusCode::OK, "register failed: {env}");
        env["result"].clone()
    }

    /// Sends a text message; returns the execution id.
    pub async fn send_message(&self, actor_id: &str, text: &str) -> String {
        let (status, env) = self
            .post_json(
                &format!("/actors/{actor_id}/messages"),
                json!({"message": text}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send failed: {env}");
        env["result"]["execution_id"]
            .as_str()
            .expect("execution_id in receipt")
            .to_string()
    }

    pub async fn wait_actor_status(&self, actor_id: &str, status: &str, within: Duration) -> Value {
        let path = format!("/actors/{actor_id}");
        wait_for(
            &format!("actor {actor_id} to be {status}"),
            within,
            || async {
                let (_, env) = self.get(&path).await;
                (env["result"]["status"] == status).then(|| env["result"].clone())
            },
        )
        .await
    }

    /// Waits until the execution is `COMPLETE` or `ERROR` and returns it.
    pub async fn wait_execution_final(&self, actor_id: &str, eid: &str, within: Duration) -> Value {
        let path = format!("/actors/{actor_id}/executions/{eid}");
        wait_for(&format!("execution {eid} to finish"), within, || async {
            let (_, env) = self.get(&path).await;
            let status = env["result"]["status"].as_str().unwrap_or("").to_string();
            (status == "COMPLETE" || status == "ERROR").then(|| env["result"].clone())
        })
        .await
    }

    pub async fn logs(&self, actor_id: &str, eid: &str) -> String {
        let (status, env) = self
            .get(&format!("/actors/{actor_id}/executions/{eid}/logs"))
            .await;
        assert_eq!(status, StatusCode::OK, "logs: {env}");
        env["result"]["logs"].as_str().unwrap_or("").to_string()
    }
}

/// Polls `probe` until it returns `Some`, or panics naming `what` after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ABACO_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
