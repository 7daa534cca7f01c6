//! Real `abaco` processes for end-to-end and fault tests: start one as a user would, kill it as a
//! crash would (`kill -9`), and talk to its API with a small client that waits on conditions.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{unique, wait_for};

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn start(bin: &Path, name: &'static str, config: &Path, args: &[&str], log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin)
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
    pub fn crash(mut self) {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Client {
    pub base: String,
    pub tenant: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client {
            base: format!("http://127.0.0.1:{port}"),
            tenant: unique("E").to_ascii_uppercase(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
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

    pub async fn wait_up(&self) {
        wait_for("the API to answer", Duration::from_secs(60), || async {
            self.call(reqwest::Method::GET, "/actors", None).await
        })
        .await;
    }

    pub async fn register(&self, body: Value) -> String {
        let env = self
            .call(reqwest::Method::POST, "/actors", Some(body))
            .await
            .expect("actor registered");
        env["result"]["id"].as_str().expect("id").to_string()
    }

    pub async fn send(&self, aid: &str, text: &str) -> String {
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

    pub async fn wait_complete(&self, aid: &str, eids: &[String], within: Duration) {
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

pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("abaco.conf");
    std::fs::write(&path, body).expect("write config");
    path
}
