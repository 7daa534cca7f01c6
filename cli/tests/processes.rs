//! End-to-end tests of the real `abaco` processes, started as a user would and killed as a crash
//! would (`kill -9`): a message that got a 200 is executed after the process that accepted it is
//! killed and restarted, in the embedded mode and in the distributed mode (separate `abaco api`
//! and `abaco spawner` processes over Redis, PostgreSQL and RabbitMQ).

use std::process::Command;
use std::time::Duration;

use abaco_tests::procs::{free_port, write_config, Client, Proc};
use abaco_tests::{require_docker, temp_dir, unique, Services};
use serde_json::json;

const ABACO: &str = env!("CARGO_BIN_EXE_abaco");

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
    let serve = Proc::start(
        ABACO.as_ref(),
        "serve",
        &config,
        &["serve"],
        &dir.join("serve-1.log"),
    );
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
    let _serve = Proc::start(
        ABACO.as_ref(),
        "serve",
        &config,
        &["serve"],
        &dir.join("serve-2.log"),
    );
    client.wait_up().await;
    client
        .wait_complete(&aid, &eids, Duration::from_secs(120))
        .await;

    // A second `abaco serve` on the same data directory refuses to start, naming the owner.
    let other_port = free_port();
    let mut second = Command::new(ABACO)
        .arg("--config")
        .arg(&config)
        .args(["--bind", &format!("127.0.0.1:{other_port}"), "serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second abaco serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait for the second serve") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second abaco serve on a data directory in use kept running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "second serve exited {status}: {stderr}");
    assert!(
        stderr.contains("is in use by process") && stderr.contains("--data-dir"),
        "{stderr}"
    );
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
    let api = Proc::start(
        ABACO.as_ref(),
        "api",
        &config,
        &["api"],
        &dir.join("api-1.log"),
    );
    let spawner = Proc::start(
        ABACO.as_ref(),
        "spawner",
        &config,
        &["spawner"],
        &dir.join("spawner-1.log"),
    );
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
    let _spawner = Proc::start(
        ABACO.as_ref(),
        "spawner",
        &config,
        &["spawner"],
        &dir.join("spawner-2.log"),
    );
    let _api = Proc::start(
        ABACO.as_ref(),
        "api",
        &config,
        &["api"],
        &dir.join("api-2.log"),
    );
    client.wait_up().await;
    for i in 0..2 {
        eids.push(client.send(&aid, &format!("after-{i}")).await);
    }
    client
        .wait_complete(&aid, &eids, Duration::from_secs(180))
        .await;
}
