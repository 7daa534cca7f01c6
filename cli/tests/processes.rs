//! End-to-end tests of the real `abaco` processes, started as a user would and killed as a crash
//! would (`kill -9`): a message that got a 200 is executed after the process that accepted it is
//! killed and restarted, in the embedded mode and in the distributed mode (separate `abaco api`
//! and `abaco spawner` processes over Redis, PostgreSQL and RabbitMQ).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use abaco_tests::{require_docker, temp_dir, unique, wait_for, Services};
use serde_json::{json, Value};

/// A child process that is killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn start(name: &'static str, config: &Path, args: &[&str], log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_abaco"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start abaco {name}: {e}"));
        Proc { child, name }
    }

    /// `kill -9`.
    fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("killed -9: abaco {}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Client {
    base: String,
    tenant: String,
    http: reqwest::Client,
}

impl Client {
    fn new(port: u16) -> Client {
        Client {
            base: format!("http://127.0.0.1:{port}"),
            tenant: unique("E").to_ascii_uppercase(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("tenant", &self.tenant)
            .timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn wait_up(&self) {
        wait_for("the API to answer", Duration::from_secs(60), || async {
            self.call(reqwest::Method::GET, "/actors", None).await
        })
        .await;
    }

    async fn register(&self, body: Value) -> String {
        let env = self
            .call(reqwest::Method::POST, "/actors", Some(body))
            .await
            .expect("actor registered");
        env["result"]["id"].as_str().expect("id").to_string()
    }

    async fn send(&self, aid: &str, text: &str) -> String {
        let env = self
            .call(
                reqwest::Method::POST,
                &format!("/actors/{aid}/messages"),
                Some(json!({ "message": text })),
            )
            .await
            .expect("message accepted with a 200");
        env["result"]["execution_id"]
            .as_str()
            .expect("eid")
            .to_string()
    }

    async fn wait_complete(&self, aid: &str, eids: &[String], within: Duration) {
        for eid in eids {
            let path = format!("/actors/{aid}/executions/{eid}");
            let execution = wait_for(&format!("execution {eid} to complete"), within, || async {
                let env = self.call(reqwest::Method::GET, &path, None).await?;
                let status = env["result"]["status"].as_str()?.to_string();
                (status == "COMPLETE" || status == "ERROR").then(|| env["result"].clone())
            })
            .await;
            assert_eq!(execution["status"], "COMPLETE", "{execution}");
        }
        let env = self
            .call(
                reqwest::Method::GET,
                &format!("/actors/{aid}/executions"),
                None,
            )
            .await
            .expect("executions summary");
        assert_eq!(
            env["result"]["total_executions"],
            eids.len(),
            "one execution record per accepted message: {env}"
        );
    }
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("abaco.conf");
    std::fs::write(&path, body).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_messages_survive_kill_9_of_serve() {
    if require_docker().await.is_none() {
        return;
    }
    let dir = temp_dir("abaco-e2e-");
    let port = free_port();
    let config = write_config(
        &dir,
        &format!(
            "[store]\ndata_dir = {}\n[web]\nbind = 127.0.0.1:{port}\n[spawner]\nhost_id = {}\n[docker]\nnetwork = none\n",
            dir.join("data").display(),
            unique("e2e-")
        ),
    );
    let serve = Proc::start("serve", &config, &["serve"], &dir.join("serve-1.log"));
    let client = Client::new(port);
    client.wait_up().await;
    let aid = client
        .register(json!({"image": "abaco-test/sleep", "default_environment": {"SLEEP": "1"}}))
        .await;
    let mut eids = Vec::new();
    for i in 0..5 {
        eids.push(client.send(&aid, &format!("m{i}")).await);
    }
    // Every message got its 200; the process dies before (most of) them ran.
    serve.crash();
    let _serve = Proc::start("serve", &config, &["serve"], &dir.join("serve-2.log"));
    client.wait_up().await;
    client
        .wait_complete(&aid, &eids, Duration::from_secs(120))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_processes_run_and_survive_kill_9() {
    if require_docker().await.is_none() || !Services::from_env().require_distributed().await {
        return;
    }
    let services = Services::from_env();
    let dir = temp_dir("abaco-e2e-");
    let port = free_port();
    let queue = unique("q");
    let config = write_config(
        &dir,
        &format!(
            "[store]\nbackend = distributed\nredis_url = {}\npostgres_url = {}\n[rabbit]\nuri = {}\n\
             [web]\nbind = 127.0.0.1:{port}\n[spawner]\nhost_queues = {queue}\nhost_id = {}\n\
             [docker]\nnetwork = none\n",
            services.redis_url,
            services.postgres_url,
            services.amqp_url,
            unique("e2e-")
        ),
    );
    let api = Proc::start("api", &config, &["api"], &dir.join("api-1.log"));
    let spawner = Proc::start("spawner", &config, &["spawner"], &dir.join("spawner-1.log"));
    let client = Client::new(port);
    client.wait_up().await;
    let aid = client
        .register(json!({"image": "abaco-test/sleep", "default_environment": {"SLEEP": "1"}}))
        .await;
    let mut eids = Vec::new();
    for i in 0..3 {
        eids.push(client.send(&aid, &format!("before-{i}")).await);
    }
    // The API that accepted them dies; the spawner still runs them.
    api.crash();
    // Then the spawner dies while executing; its successor recovers and finishes the work.
    let label = format!("label=abaco.actor={}_{aid}", client.tenant);
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let out = Command::new("docker")
                .args(["ps", "-q", "--filter", &label])
                .output();
            if matches!(out, Ok(o) if !o.stdout.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("an execution started running");
    spawner.crash();
    let _spawner = Proc::start("spawner", &config, &["spawner"], &dir.join("spawner-2.log"));
    let _api = Proc::start("api", &config, &["api"], &dir.join("api-2.log"));
    client.wait_up().await;
    for i in 0..2 {
        eids.push(client.send(&aid, &format!("after-{i}")).await);
    }
    client
        .wait_complete(&aid, &eids, Duration::from_secs(180))
        .await;
}
