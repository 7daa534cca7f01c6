//! The fault suite (issue 5, "nothing accepted is lost"): a steady load of messages against the
//! distributed deployment — separate `abaco api`, `abaco spawner`, `abaco health` and `abaco
//! clientg` processes (the actor has `token` on, so its workers need clientg) over a private
//! Redis, PostgreSQL, RabbitMQ and Docker engine (`scripts/fault-services.sh`) — while, in
//! turn, each process is killed with `kill -9` and each service is restarted. After every fault
//! and its recovery it checks that every message that got a 200 has exactly one execution record
//! that reached a final status (`COMPLETE`, or `ERROR` with a reason), and that
//! no actor container is left behind; then it prints one table row per fault.
//!
//! It is run by `scripts/faults.sh` (`ABACO_FAULTS=1`), not by `cargo test --workspace`: it
//! restarts services and takes minutes. Without `ABACO_FAULTS=1` the test says so and passes.
//! The file is long because one scenario drives nine faults through the same checks.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abaco_core::config::DockerConfig;
use abaco_runtime::Runtime;
use abaco_tests::procs::{free_port, write_config, Client, Proc};
use abaco_tests::{require_docker, temp_dir, unique};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const ABACO: &str = env!("CARGO_BIN_EXE_abaco");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fault-services.sh");
/// Pace of the load: one message per tick.
const LOAD_INTERVAL: Duration = Duration::from_millis(500);
/// Messages accepted in a phase before its fault, and after the fault before the phase ends.
const MESSAGES_AROUND_FAULT: usize = 3;
/// How long every accepted message of a phase may take to reach a final status.
const SETTLE_WITHIN: Duration = Duration::from_secs(180);
/// How long the platform may take to remove containers nobody owns (a few health periods).
const CONTAINERS_GONE_WITHIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillApi,
    KillSpawner,
    KillHealth,
    KillClientg,
    KillSpawnerWhileRunning,
    Restart(&'static str),
}

impl Fault {
    fn describe(self) -> String {
        match self {
            Fault::KillApi => "kill -9 api".into(),
            Fault::KillSpawner => "kill -9 spawner".into(),
            Fault::KillHealth => "kill -9 health".into(),
            Fault::KillClientg => "kill -9 clientg".into(),
            Fault::KillSpawnerWhileRunning => "kill -9 spawner (container running)".into(),
            Fault::Restart(service) => format!("restart {service}"),
        }
    }
}

const FAULTS: [Fault; 9] = [
    Fault::KillApi,
    Fault::KillSpawner,
    Fault::KillHealth,
    Fault::KillClientg,
    Fault::KillSpawnerWhileRunning,
    Fault::Restart("rabbitmq"),
    Fault::Restart("redis"),
    Fault::Restart("postgres"),
    Fault::Restart("docker"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_accepted_is_lost_under_faults() {
    if std::env::var("ABACO_FAULTS").as_deref() != Ok("1") {
        eprintln!(
            "the fault suite runs only with ABACO_FAULTS=1: scripts/faults.sh runs it (CI does, \
             after scripts/test.sh's cargo test); nothing to do here"
        );
        return;
    }
    assert!(
        require_docker().await.is_some(),
        "the fault suite needs the Docker engine (scripts/services.sh) to build its images"
    );
    let services = fault_services(&["fresh"]);
    let mut suite = Suite::start(&services).await;
    let load = tokio::spawn(load(
        suite.client.clone(),
        suite.aid.clone(),
        suite.ledger.clone(),
        suite.stop_load.clone(),
    ));
    for fault in FAULTS {
        suite.phase(fault).await;
    }
    suite.stop_load.cancel();
    let _ = load.await;
    // Executions settle for good: nothing that was final goes back to running later.
    let last = suite.final_sweep().await;
    print_table(&suite.rows, &last);
    let failed: Vec<&Row> = suite.rows.iter().filter(|r| !r.passed()).collect();
    assert!(
        failed.is_empty() && last.is_empty(),
        "faults lost, duplicated or left work behind: {failed:#?} {last:?}; logs in {}",
        suite.dir.display()
    );
    // No fault was the actor's: it must not have been put in ERROR by any of them.
    let actor = suite
        .client
        .call(
            reqwest::Method::GET,
            &format!("/actors/{}", suite.aid),
            None,
        )
        .await
        .expect("the actor after the faults");
    assert_ne!(
        actor["result"]["status"], "ERROR",
        "an infrastructure fault put the actor in ERROR: {actor}"
    );
}

/// Runs `scripts/fault-services.sh` with `args` and returns the `export NAME=value` it printed.
fn fault_services(args: &[&str]) -> HashMap<String, String> {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("run scripts/fault-services.sh");
    assert!(
        out.status.success(),
        "scripts/fault-services.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the load generator saw: every 200 (with its execution id) and every failed send.
#[derive(Default)]
struct Ledger {
    phase: usize,
    sending: bool,
    in_flight: bool,
    accepted: Vec<Accepted>,
    /// Sends without a 200, per phase: each may have left an `ERROR` record behind.
    failed: HashMap<usize, usize>,
}

#[derive(Clone, Debug)]
struct Accepted {
    eid: String,
    phase: usize,
    at: Instant,
}

/// Sends one message per `LOAD_INTERVAL` while the ledger says so.
async fn load(
    client: Arc<Client>,
    aid: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(LOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let phase = {
            let mut ledger = ledger.lock().expect("the ledger lock");
            if !ledger.sending {
                continue;
            }
            ledger.in_flight = true;
            ledger.phase
        };
        n += 1;
        let sent = send(&client, &aid, &format!("phase {phase} message {n}")).await;
        let mut ledger = ledger.lock().expect("the ledger lock");
        ledger.in_flight = false;
        match sent {
            Some(eid) => ledger.accepted.push(Accepted {
                eid,
                phase,
                at: Instant::now(),
            }),
            None => *ledger.failed.entry(phase).or_default() += 1,
        }
    }
}

/// The execution id of a 200, or `None` for any other outcome (not an accepted message).
async fn send(client: &Client, aid: &str, text: &str) -> Option<String> {
    let resp = client
        .http
        .post(format!("{}/actors/{aid}/messages", client.base))
        .header("tenant", &client.tenant)
        .json(&json!({ "message": text }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if resp.status() != reqwest::StatusCode::OK {
        return None;
    }
    let env: Value = resp.json().await.ok()?;
    env["result"]["execution_id"].as_str().map(str::to_string)
}

/// One line of the table.
#[derive(Debug, Default)]
struct Row {
    fault: String,
    sent: usize,
    failed_sends: usize,
    completed: usize,
    errored: usize,
    lost: Vec<String>,
    /// Accepted executions `COMPLETE` with the exit code of a container the platform killed.
    killed: Vec<String>,
    /// Execution records (accepted or not) still `RUNNING` once everything settled.
    stuck: Vec<String>,
    duplicated: usize,
    leftover_containers: usize,
    recovery: Option<Duration>,
}

impl Row {
    fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.killed.is_empty()
            && self.stuck.is_empty()
            && self.duplicated == 0
            && self.leftover_containers == 0
            && self.recovery.is_some()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Api,
    Spawner,
    Health,
    Clientg,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Spawner => "spawner",
            Role::Health => "health",
            Role::Clientg => "clientg",
        }
    }
}

struct Suite {
    dir: PathBuf,
    config: PathBuf,
    procs: HashMap<&'static str, Proc>,
    starts: usize,
    client: Arc<Client>,
    aid: String,
    runtime: Runtime,
    host_id: String,
    ledger: Arc<Mutex<Ledger>>,
    stop_load: CancellationToken,
    /// Accepted executions seen in a final status, with that status.
    finals: HashMap<String, String>,
    /// Accepted executions already counted as lost (counted once, in the phase that lost them).
    lost: HashSet<String>,
    rows: Vec<Row>,
    /// Records beyond those explained by accepted and failed sends, after the last phase.
    extra_records: usize,
}

impl Suite {
    async fn start(services: &HashMap<String, String>) -> Suite {
        let var = |name: &str| {
            services
                .get(name)
                .unwrap_or_else(|| panic!("scripts/fault-services.sh did not print {name}"))
                .clone()
        };
        let dir = temp_dir("abaco-faults-");
        let port = free_port();
        let host_id = unique("faults-");
        let docker = var("ABACO_FAULTS_DOCKER");
        let config = write_config(
            &dir,
            &format!(
                "[store]\nbackend = distributed\nredis_url = {}\npostgres_url = {}\n\
                 postgres_pool_size = 4\ndata_dir = {}\n[rabbit]\nuri = {}\n\
                 [web]\nbind = 127.0.0.1:{port}\n[spawner]\nhost_id = {host_id}\n\
                 [docker]\ndd = {docker}\nnetwork = none\n\
                 [workers]\nhealth_period = 2\nautoscale_period = 1\nautoscale_idle_time = 5\n",
                var("ABACO_FAULTS_REDIS_URL"),
                var("ABACO_FAULTS_POSTGRES_URL"),
                dir.join("data").display(),
                var("ABACO_FAULTS_AMQP_URL"),
            ),
        );
        let runtime = Runtime::connect(&DockerConfig {
            dd: docker.clone(),
            network: "none".into(),
        })
        .expect("the private Docker engine of the fault suite");
        let mut suite = Suite {
            dir,
            config,
            procs: HashMap::new(),
            starts: 0,
            client: Arc::new(Client::new(port)),
            aid: String::new(),
            runtime,
            host_id,
            ledger: Arc::new(Mutex::new(Ledger::default())),
            stop_load: CancellationToken::new(),
            finals: HashMap::new(),
            lost: HashSet::new(),
            rows: Vec::new(),
            extra_records: 0,
        };
        for role in [Role::Api, Role::Spawner, Role::Health, Role::Clientg] {
            suite.start_process(role);
        }
        suite.client.wait_up().await;
        suite.aid = suite
            .client
            .register(json!({
                "image": "abaco-test/sleep",
                "default_environment": {"SLEEP": "1"},
                "max_workers": 4,
                // Workers need clientg: an OAuth client each, a token per execution.
                "token": true,
            }))
            .await;
        eprintln!(
            "fault suite: actor {} on host {}; process logs in {}",
            suite.aid,
            suite.host_id,
            suite.dir.display()
        );
        suite
    }

    fn start_process(&mut self, role: Role) {
        self.starts += 1;
        let log = self
            .dir
            .join(format!("{:02}-{}.log", self.starts, role.name()));
        let proc = Proc::start(
            ABACO.as_ref(),
            role.name(),
            &self.config,
            &[role.name()],
            &log,
        );
        self.procs.insert(role.name(), proc);
    }

    fn crash_and_restart(&mut self, role: Role) {
        if let Some(proc) = self.procs.remove(role.name()) {
            proc.crash();
        }
        self.start_process(role);
    }

    /// One fault: load before, the fault, recovery, load after, then the checks.
    async fn phase(&mut self, fault: Fault) {
        let phase = self.rows.len() + 1;
        let began = Instant::now();
        {
            let mut ledger = self.ledger.lock().expect("the ledger lock");
            ledger.phase = phase;
            ledger.sending = true;
        }
        eprintln!("fault suite: phase {phase}: {}", fault.describe());
        self.wait_accepted_since(began, "before the fault").await;
        // These two must hit an execution in flight: its container dies with them.
        if matches!(
            fault,
            Fault::KillSpawnerWhileRunning | Fault::Restart("docker")
        ) {
            self.wait_running_container().await;
        }
        let fault_at = Instant::now();
        match fault {
            Fault::KillApi => self.crash_and_restart(Role::Api),
            Fault::KillSpawner | Fault::KillSpawnerWhileRunning => {
                self.crash_and_restart(Role::Spawner)
            }
            Fault::KillHealth => self.crash_and_restart(Role::Health),
            Fault::KillClientg => self.crash_and_restart(Role::Clientg),
            Fault::Restart(service) => {
                tokio::task::spawn_blocking(move || fault_services(&["restart", service]))
                    .await
                    .expect("scripts/fault-services.sh restart");
            }
        }
        let recovery = self.wait_recovered(fault_at).await;
        self.wait_accepted_since(fault_at, "after the fault").await;
        self.pause_load().await;
        let row = self.settle(phase, fault, recovery).await;
        eprintln!("fault suite: {row:?}");
        self.rows.push(row);
    }

    async fn wait_accepted_since(&self, since: Instant, when: &str) {
        let ledger = self.ledger.clone();
        poll_until(Duration::from_secs(240), || {
            let ledger = ledger.clone();
            async move {
                let count = ledger
                    .lock()
                    .expect("the ledger lock")
                    .accepted
                    .iter()
                    .filter(|a| a.at >= since)
                    .count();
                (count >= MESSAGES_AROUND_FAULT).then_some(())
            }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no {MESSAGES_AROUND_FAULT} messages accepted {when} within 240 s; logs in {}",
                self.dir.display()
            )
        });
    }

    async fn wait_running_container(&self) {
        let label = [(abaco_worker::LABEL_HOST, self.host_id.as_str())];
        poll_until(Duration::from_secs(60), || async {
            let containers = self.runtime.list(&label).await.ok()?;
            containers.iter().any(|c| c.running).then_some(())
        })
        .await
        .expect("an actor container running under load within 60 s");
    }

    /// Time from the fault until a message accepted after it ran to `COMPLETE`.
    async fn wait_recovered(&self, fault_at: Instant) -> Option<Duration> {
        poll_until(Duration::from_secs(240), || async {
            let after: Vec<String> = self
                .ledger
                .lock()
                .expect("the ledger lock")
                .accepted
                .iter()
                .filter(|a| a.at > fault_at)
                .map(|a| a.eid.clone())
                .collect();
            for eid in after {
                if self
                    .status(&eid)
                    .await
                    .is_some_and(|e| e["status"] == "COMPLETE")
                {
                    return Some(fault_at.elapsed());
                }
            }
            None
        })
        .await
    }

    async fn pause_load(&self) {
        self.ledger.lock().expect("the ledger lock").sending = false;
        let ledger = self.ledger.clone();
        poll_until(Duration::from_secs(30), || {
            let ledger = ledger.clone();
            async move { (!ledger.lock().expect("the ledger lock").in_flight).then_some(()) }
        })
        .await
        .expect("the last send of the load to finish");
    }

    /// The execution record, or `None` when the API does not answer it (yet).
    async fn status(&self, eid: &str) -> Option<Value> {
        let env = self
            .client
            .call(
                reqwest::Method::GET,
                &format!("/actors/{}/executions/{eid}", self.aid),
                None,
            )
            .await?;
        Some(env["result"].clone())
    }

    /// Waits for every accepted message to reach a final status and for the actor's containers
    /// to go, then counts.
    async fn settle(&mut self, phase: usize, fault: Fault, recovery: Option<Duration>) -> Row {
        let (accepted, failed_sends) = {
            let ledger = self.ledger.lock().expect("the ledger lock");
            (
                ledger.accepted.clone(),
                ledger.failed.get(&phase).copied().unwrap_or(0),
            )
        };
        let mut row = Row {
            fault: fault.describe(),
            sent: accepted.iter().filter(|a| a.phase == phase).count(),
            failed_sends,
            recovery,
            ..Row::default()
        };
        let deadline = Instant::now() + SETTLE_WITHIN;
        for a in &accepted {
            if self.finals.contains_key(&a.eid) || self.lost.contains(&a.eid) {
                continue;
            }
            let mut last = Value::Null;
            let execution = loop {
                if let Some(e) = self.status(&a.eid).await {
                    if e["status"] == "COMPLETE" || e["status"] == "ERROR" {
                        break Some(e);
                    }
                    last = e;
                }
                if Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            match execution {
                Some(e) if e["status"] == "COMPLETE" => {
                    // The sleep image exits 0 unless something stopped it: a platform fault
                    // must make it run again, not pass its killed container off as its result.
                    if e["exit_code"] != 0 {
                        row.killed.push(format!(
                            "{} COMPLETE with exit code {}",
                            a.eid, e["exit_code"]
                        ));
                    }
                    row.completed += 1;
                    self.finals.insert(a.eid.clone(), "COMPLETE".into());
                }
                Some(e)
                    if e["status_message"]
                        .as_str()
                        .is_some_and(|m| !m.trim().is_empty()) =>
                {
                    eprintln!(
                        "fault suite: {} ended in ERROR: {}",
                        a.eid, e["status_message"]
                    );
                    row.errored += 1;
                    self.finals.insert(a.eid.clone(), "ERROR".into());
                }
                Some(e) => row
                    .lost
                    .push(format!("{} ERROR without a reason: {e}", a.eid)),
                None => row.lost.push(format!(
                    "{} (phase {}) not final after {SETTLE_WITHIN:?}: {}",
                    a.eid, a.phase, last["status"]
                )),
            }
            if !self.finals.contains_key(&a.eid) {
                self.lost.insert(a.eid.clone());
            }
        }
        let (extra, stuck) = self.extra_records(&accepted).await;
        row.stuck = stuck;
        row.duplicated = extra.saturating_sub(self.extra_records);
        self.extra_records = self.extra_records.max(extra);
        row.leftover_containers = self.wait_containers_gone().await;
        row
    }

    /// Execution records that neither an accepted message nor a failed send explains, plus
    /// accepted ids listed twice; and records still `RUNNING` although everything settled.
    async fn extra_records(&self, accepted: &[Accepted]) -> (usize, Vec<String>) {
        let Some(env) = self
            .client
            .call(
                reqwest::Method::GET,
                &format!("/actors/{}/executions", self.aid),
                None,
            )
            .await
        else {
            return (0, vec!["the executions list could not be read".into()]);
        };
        let list = env["result"]["executions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ids: Vec<&str> = list.iter().filter_map(|e| e["id"].as_str()).collect();
        let stuck = list
            .iter()
            .filter(|e| e["status"] == "RUNNING")
            .map(|e| format!("{} RUNNING", e["id"]))
            .collect();
        let distinct: HashSet<&str> = ids.iter().copied().collect();
        let failed: usize = self
            .ledger
            .lock()
            .expect("the ledger lock")
            .failed
            .values()
            .sum();
        let unexplained = ids.len().saturating_sub(accepted.len() + failed);
        ((ids.len() - distinct.len()) + unexplained, stuck)
    }

    /// With the load paused and every execution final, no container of this host may remain.
    async fn wait_containers_gone(&self) -> usize {
        let label = [(abaco_worker::LABEL_HOST, self.host_id.as_str())];
        let gone = poll_until(CONTAINERS_GONE_WITHIN, || async {
            self.runtime
                .list(&label)
                .await
                .ok()
                .filter(|c| c.is_empty())
                .map(|_| ())
        })
        .await;
        if gone.is_some() {
            return 0;
        }
        let left = self.runtime.list(&label).await.unwrap_or_default();
        for c in &left {
            eprintln!(
                "fault suite: container {} left behind (running: {}, labels {:?})",
                c.id, c.running, c.labels
            );
        }
        left.len()
    }

    /// After the last phase: every accepted execution is still in the final status it reached.
    async fn final_sweep(&self) -> Vec<String> {
        let mut changed = Vec::new();
        for (eid, status) in &self.finals {
            let now = self.status(eid).await;
            let now_status = now.as_ref().and_then(|e| e["status"].as_str());
            if now_status != Some(status.as_str()) {
                changed.push(format!("{eid} was {status}, now {now_status:?}"));
            }
        }
        changed
    }
}

/// Polls `probe` every 200 ms until it returns `Some`, or gives up after `within`.
async fn poll_until<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_table(rows: &[Row], last: &[String]) {
    println!();
    println!(
        "| {:<36} | {:>4} | {:>6} | {:>9} | {:>7} | {:>4} | {:>10} | {:>10} | {:>8} |",
        "fault",
        "sent",
        "no 200",
        "completed",
        "errored",
        "lost",
        "duplicated",
        "containers",
        "recovery"
    );
    println!(
        "|{:-<38}|{:->6}|{:->8}|{:->11}|{:->9}|{:->6}|{:->12}|{:->12}|{:->10}|",
        "", "", "", "", "", "", "", "", ""
    );
    for r in rows {
        let recovery = r
            .recovery
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never".into());
        println!(
            "| {:<36} | {:>4} | {:>6} | {:>9} | {:>7} | {:>4} | {:>10} | {:>10} | {:>8} |",
            r.fault,
            r.sent,
            r.failed_sends,
            r.completed,
            r.errored,
            r.lost.len(),
            r.duplicated,
            r.leftover_containers,
            recovery
        );
        for problem in r.lost.iter().chain(&r.killed).chain(&r.stuck) {
            println!("    {problem}");
        }
    }
    println!(
        "sent: messages that got a 200 in the phase; no 200: sends refused or failed (not \
         accepted); completed/errored: accepted executions that reached COMPLETE/ERROR (earlier \
         phases' stragglers count where they finished); containers: left behind once everything \
         was final; recovery: from the fault (a restarted service's own downtime included) \
         until a message accepted after it ran to COMPLETE."
    );
    for change in last {
        println!("changed after settling: {change}");
    }
}
