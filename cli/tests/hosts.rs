//! End-to-end tests of a distributed deployment over several compute hosts: real `abaco api`,
//! `abaco spawner` and `abaco health` processes sharing Redis, PostgreSQL and RabbitMQ, each
//! spawner with its own `host_id` and Docker engine (the second engine is `scripts/dockerd2.sh`).
//! Host queues (an actor's `queue` decides which spawners start its workers), workers of one queue
//! spread over every host serving it (a full host takes no command from any of its queues and
//! leaves them to the others), and per-host cleanup (recovery and the orphan sweep touch only
//! containers labelled with their own host).
//! One file of a little over 600 lines: the three scenarios share the set-up of processes and
//! hosts at the top, and each reads best as one story from start-up to clean-up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abaco_tests::engines::{containers, docker, Cleanup, Creates};
use abaco_tests::procs::{free_port, write_config, Client, Proc};
use abaco_tests::{require_docker2, temp_dir, unique, wait_for, Services};
use serde_json::{json, Value};

const ABACO: &str = env!("CARGO_BIN_EXE_abaco");
const ENGINE1: &str = "unix:///var/run/docker.sock";
/// The Redis database of these tests (see `own_redis_db`).
const REDIS_DB: u32 = 11;

/// The services and the second engine's URL, or `None` (outside CI) when something is missing.
async fn hosts_available() -> Option<String> {
    let dd2 = require_docker2().await?;
    Services::from_env()
        .require_distributed()
        .await
        .then_some(dd2)
}

/// One process's configuration in its own directory: the shared services, the API's port, and
/// the process's own `[spawner]`, `[docker] dd` and `[workers]` lines.
fn host_config(
    dir: &Path,
    name: &str,
    port: u16,
    spawner: &str,
    dd: &str,
    workers: &str,
) -> PathBuf {
    let services = Services::from_env();
    let home = dir.join(name);
    std::fs::create_dir_all(&home).expect("process directory");
    write_config(
        &home,
        &format!(
            "[store]\nbackend = distributed\ndata_dir = {}\nredis_url = {}\npostgres_url = {}\n\
             [rabbit]\nuri = {}\n[web]\nbind = 127.0.0.1:{port}\n[spawner]\n{spawner}\n\
             [docker]\ndd = {dd}\nnetwork = none\n[workers]\n{workers}\n",
            home.join("data").display(),
            own_redis_db(&services.redis_url),
            services.postgres_url,
            services.amqp_url,
        ),
    )
}

/// Other tests share Redis and run autoscalers that stop any READY worker idle for a second or
/// two; the processes here keep their actors and workers in a database of their own so that the
/// workers these tests count are only ever stopped by them.
fn own_redis_db(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}/{REDIS_DB}")
}

fn start(name: &'static str, command: &str, config: &Path) -> Proc {
    let log = config.with_file_name(format!("{name}.log"));
    Proc::start(ABACO.as_ref(), name, config, &[command], &log)
}

/// Waits until the spawner started as `name` with `config` says it consumes its command queues.
async fn wait_serving(config: &Path, name: &str) {
    let log = config.with_file_name(format!("{name}.log"));
    wait_for(
        &format!("{name} to serve its queues"),
        Duration::from_secs(30),
        || async {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("spawner serving command queue")
                .then_some(())
        },
    )
    .await;
}

/// An API call that returns the status code and the envelope, whatever the status.
async fn request(client: &Client, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client
        .http
        .request(
            method.parse().expect("HTTP method"),
            format!("{}{path}", client.base),
        )
        .header("tenant", &client.tenant)
        .timeout(Duration::from_secs(10));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn workers(client: &Client, aid: &str) -> Vec<Value> {
    let (status, env) = request(client, "GET", &format!("/actors/{aid}/workers"), None).await;
    assert_eq!(status, 200, "{env}");
    env["result"].as_array().cloned().unwrap_or_default()
}

/// READY workers of an actor by host_id, once there are exactly `n` workers and all are READY.
async fn wait_ready(client: &Client, aid: &str, n: usize) -> BTreeMap<String, String> {
    wait_for(
        &format!("{n} READY workers of {aid}"),
        Duration::from_secs(45),
        || async {
            let list = workers(client, aid).await;
            let ready = list.iter().filter(|w| w["status"] == "READY").count();
            (list.len() == n && ready == n).then(|| {
                list.iter()
                    .map(|w| {
                        (
                            w["id"].as_str().unwrap_or_default().to_string(),
                            w["host_id"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
        },
    )
    .await
}

/// Deletes the command queues a test made up, so test runs do not pile up durable queues (one
/// still holding a command nobody served) in the broker.
async fn delete_command_queues(queues: &[&String]) {
    let services = Services::from_env();
    let channels = abaco_channels::Channels::connect_amqp(&services.amqp_url, 1)
        .await
        .expect("RabbitMQ connects");
    for q in queues {
        channels
            .delete(&abaco_core::Queue::Command((*q).clone()))
            .await
            .unwrap_or_else(|e| panic!("command queue {q} deleted: {e}"));
    }
}

fn alive(proc: &mut Proc) -> bool {
    matches!(proc.child.try_wait(), Ok(None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_get_workers_only_from_spawners_of_their_queue() {
    let Some(dd2) = hosts_available().await else {
        return;
    };
    let dir = temp_dir("abaco-hosts-");
    let port = free_port();
    let (qa, qb, qc) = (unique("qa"), unique("qb"), unique("qc"));
    let (ha, hb) = (unique("host-a-"), unique("host-b-"));
    let _cleanup = Cleanup(vec![
        (ENGINE1.into(), format!("abaco.host={ha}")),
        (dd2.clone(), format!("abaco.host={hb}")),
    ]);
    // The API accepts the three queues; no spawner serves qc. Containers are kept so their labels
    // can be read afterwards.
    let api = host_config(
        &dir,
        "api",
        port,
        &format!("host_queues = {qa}, {qb}, {qc}"),
        ENGINE1,
        "",
    );
    let keep = "leave_containers = true";
    let conf_a = host_config(
        &dir,
        "a",
        port,
        &format!("host_queues = {qa}\nhost_id = {ha}"),
        ENGINE1,
        keep,
    );
    let conf_b = host_config(
        &dir,
        "b",
        port,
        &format!("host_queues = {qb}\nhost_id = {hb}"),
        &dd2,
        keep,
    );
    let _api = start("api", "api", &api);
    let mut spawner_a = start("spawner-a", "spawner", &conf_a);
    let mut spawner_b = start("spawner-b", "spawner", &conf_b);
    let client = Client::new(port);
    client.wait_up().await;

    // A queue the API does not know is refused on registration and on update (spec §4.1).
    let (status, env) = request(
        &client,
        "POST",
        "/actors",
        Some(json!({"image": "abaco-test/echo", "queue": unique("nope")})),
    )
    .await;
    assert_eq!(status, 400, "{env}");
    assert!(
        env["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Invalid queue name."),
        "{env}"
    );

    let aid_a = client
        .register(json!({"image": "abaco-test/echo", "queue": qa}))
        .await;
    let aid_b = client
        .register(json!({"image": "abaco-test/echo", "queue": qb}))
        .await;
    let aid_c = client
        .register(json!({"image": "abaco-test/echo", "queue": qc}))
        .await;
    let (status, env) = request(
        &client,
        "PUT",
        &format!("/actors/{aid_a}"),
        Some(json!({"image": "abaco-test/echo", "queue": "no such queue"})),
    )
    .await;
    assert_eq!(status, 400, "{env}");
    let (_, env) = request(&client, "GET", &format!("/actors/{aid_b}"), None).await;
    assert_eq!(env["result"]["queue"], qb.as_str(), "{env}");

    let mut sent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for aid in [&aid_a, &aid_b] {
        for i in 0..3 {
            sent.entry(aid)
                .or_default()
                .push(client.send(aid, &format!("m{i}")).await);
        }
    }
    let eid_c = client.send(&aid_c, "nobody serves this queue").await;
    for (aid, eids) in &sent {
        client
            .wait_complete(aid, eids, Duration::from_secs(60))
            .await;
    }

    // Each actor's workers, and the containers of its executions, come from its queue's host only.
    for (aid, host, engine, other_engine) in [
        (&aid_a, &ha, ENGINE1, dd2.as_str()),
        (&aid_b, &hb, dd2.as_str(), ENGINE1),
    ] {
        let list = workers(&client, aid).await;
        assert!(!list.is_empty(), "actor {aid} has workers");
        for w in &list {
            assert_eq!(
                w["host_id"],
                host.as_str(),
                "worker of {aid} on the wrong host: {w}"
            );
            assert_eq!(w["location"], engine, "{w}");
        }
        let label = format!("abaco.actor={}_{aid}", client.tenant);
        let here = containers(engine, &label);
        let ran: BTreeSet<String> = here.iter().map(|(_, _, e)| e.clone()).collect();
        let expected: BTreeSet<String> = sent[aid.as_str()].iter().cloned().collect();
        assert_eq!(
            ran, expected,
            "one container per execution of {aid} on its host's engine"
        );
        assert_eq!(
            here.len(),
            expected.len(),
            "each execution ran once: {here:?}"
        );
        assert!(here.iter().all(|(h, _, _)| h == host), "{here:?}");
        assert!(
            containers(other_engine, &label).is_empty(),
            "no container of {aid} on the other engine"
        );
        for eid in &expected {
            let (_, env) = request(
                &client,
                "GET",
                &format!("/actors/{aid}/executions/{eid}"),
                None,
            )
            .await;
            let worker = env["result"]["worker_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                here.iter().any(|(_, w, e)| *w == worker && e == eid),
                "{env}"
            );
        }
    }

    // An actor on a queue nobody serves is accepted and keeps its message, without a worker on
    // any host; the API and the spawners carry on.
    let (status, env) = request(&client, "GET", &format!("/actors/{aid_c}"), None).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["result"]["status"], "SUBMITTED", "{env}");
    for w in workers(&client, &aid_c).await {
        assert_eq!(w["status"], "REQUESTED", "{w}");
        assert!(w["host_id"].is_null(), "{w}");
    }
    let (_, env) = request(
        &client,
        "GET",
        &format!("/actors/{aid_c}/executions/{eid_c}"),
        None,
    )
    .await;
    assert_eq!(env["result"]["status"], "SUBMITTED", "{env}");
    assert!(
        alive(&mut spawner_a) && alive(&mut spawner_b),
        "spawners still run"
    );
    // Moved to a served queue with a new revision, it gets a worker there and runs.
    let (status, env) = request(
        &client,
        "PUT",
        &format!("/actors/{aid_c}"),
        Some(json!({"image": "abaco-test/echo:latest", "queue": qb})),
    )
    .await;
    assert_eq!(status, 200, "{env}");
    client
        .wait_complete(&aid_c, &[eid_c], Duration::from_secs(60))
        .await;
    let label = format!("abaco.actor={}_{aid_c}", client.tenant);
    assert_eq!(containers(&dd2, &label).len(), 1);
    assert!(containers(ENGINE1, &label).is_empty());
    for aid in [&aid_a, &aid_b, &aid_c] {
        let (status, env) = request(&client, "DELETE", &format!("/actors/{aid}"), None).await;
        assert_eq!(status, 200, "{env}");
    }
    delete_command_queues(&[&qa, &qb, &qc]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_of_one_queue_spread_over_its_hosts() {
    let Some(dd2) = hosts_available().await else {
        return;
    };
    let dir = temp_dir("abaco-hosts-");
    let port = free_port();
    let queue = unique("q");
    let (h1, h2) = (unique("host-1-"), unique("host-2-"));
    let client = Client::new(port);
    let fake_actor = format!("{}_{}", client.tenant, unique("gone"));
    let _cleanup = Cleanup(vec![
        (ENGINE1.into(), format!("abaco.host={h1}")),
        (ENGINE1.into(), format!("abaco.host={h2}")),
        (dd2.clone(), format!("abaco.host={h2}")),
    ]);
    // Containers of vanished workers on engine 1, one labelled with each host. Only host 1's
    // health agent sweeps engine 1, and only host 1's containers.
    let fake = |host: &str| {
        docker(
            ENGINE1,
            &[
                "create",
                "--label",
                &format!("abaco.host={host}"),
                "--label",
                &format!("abaco.worker={}", unique("w")),
                "--label",
                &format!("abaco.actor={fake_actor}"),
                "abaco-test/busybox",
                "true",
            ],
        )
        .trim()
        .to_string()
    };
    let fake_h2 = fake(&h2);

    // Host 1 takes at most three workers; host 2 has room for all.
    let api = host_config(
        &dir,
        "api",
        port,
        &format!("host_queues = {queue}"),
        ENGINE1,
        "",
    );
    let conf1 = host_config(
        &dir,
        "h1",
        port,
        &format!("host_queues = {queue}\nhost_id = {h1}\nmax_workers_per_host = 3"),
        ENGINE1,
        "autoscaling = false",
    );
    let conf2 = host_config(
        &dir,
        "h2",
        port,
        &format!("host_queues = {queue}\nhost_id = {h2}"),
        &dd2,
        "",
    );
    let _api = start("api", "api", &api);
    let spawner1 = start("spawner-1", "spawner", &conf1);
    let _spawner2 = start("spawner-2", "spawner", &conf2);
    client.wait_up().await;
    // Both hosts consume the queue before the first request (a host that comes later only gets
    // the requests made after it came).
    wait_serving(&conf1, "spawner-1").await;
    wait_serving(&conf2, "spawner-2").await;

    let aid = client
        .register(json!({
            "image": "abaco-test/sleep",
            "default_environment": {"SLEEP": "2"},
            "max_workers": 8,
        }))
        .await;
    let label = format!("abaco.actor={}_{aid}", client.tenant);
    let scale = |num: u32| {
        let path = format!("/actors/{aid}/workers");
        let client = &client;
        async move {
            let (status, env) = request(client, "POST", &path, Some(json!({ "num": num }))).await;
            assert_eq!(status, 200, "{env}");
        }
    };
    // Requests alternate between the free spawners of the queue.
    scale(4).await;
    let hosts = wait_ready(&client, &aid, 4).await;
    let on = |hosts: &BTreeMap<String, String>, h: &str| hosts.values().filter(|x| *x == h).count();
    assert!(
        on(&hosts, &h1) >= 1 && on(&hosts, &h2) >= 1,
        "spread: {hosts:?}"
    );
    // Host 1 fills up; the commands it cannot take go to host 2 instead of waiting for it.
    scale(8).await;
    let hosts = wait_ready(&client, &aid, 8).await;
    assert_eq!(
        on(&hosts, &h1),
        3,
        "host 1 is full at three workers: {hosts:?}"
    );

    // Host 1's health agent runs beside them (its first pass is at start).
    let fake_h1 = fake(&h1);
    let _health = start("health-1", "health", &conf1);

    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 1;
    let creates1 = Creates::watch(ENGINE1, &label, since, dir.join("events-1"));
    let creates2 = Creates::watch(&dd2, &label, since, dir.join("events-2"));
    let mut eids = Vec::new();
    for i in 0..8 {
        eids.push(client.send(&aid, &format!("burst-{i}")).await);
    }
    client
        .wait_complete(&aid, &eids, Duration::from_secs(90))
        .await;
    // Every execution ran in exactly one container, on both engines, each by a worker of the
    // engine's host.
    let expected: BTreeSet<String> = eids.iter().cloned().collect();
    let (seen1, seen2) = wait_for(
        "the create events of every execution",
        Duration::from_secs(20),
        || async {
            let (s1, s2) = (creates1.seen(), creates2.seen());
            (s1.len() + s2.len() >= expected.len()).then_some((s1, s2))
        },
    )
    .await;
    assert!(
        !seen1.is_empty() && !seen2.is_empty(),
        "executions on both hosts: {seen1:?} {seen2:?}"
    );
    let mut all: Vec<String> = seen1.iter().chain(&seen2).map(|(e, _)| e.clone()).collect();
    all.sort();
    assert_eq!(
        all,
        expected.iter().cloned().collect::<Vec<_>>(),
        "each execution ran once"
    );
    for (seen, host) in [(&seen1, &h1), (&seen2, &h2)] {
        for (eid, worker) in seen {
            assert_eq!(
                hosts.get(worker),
                Some(host),
                "execution {eid} ran by worker {worker}"
            );
        }
    }
    // Nothing is left behind on either engine.
    for engine in [ENGINE1, dd2.as_str()] {
        wait_for(
            "the execution containers to go",
            Duration::from_secs(20),
            || async { containers(engine, &label).is_empty().then_some(()) },
        )
        .await;
    }

    // Host 1's health pass removed host 1's orphan, left host 2's alone, and kept host 2's
    // workers whose containers it cannot see.
    wait_for(
        "health to remove host 1's orphan",
        Duration::from_secs(30),
        || async {
            docker(
                ENGINE1,
                &["ps", "-aq", "--filter", &format!("id={fake_h1}")],
            )
            .trim()
            .is_empty()
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        docker(
            ENGINE1,
            &[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("id={fake_h2}")
            ]
        )
        .trim(),
        fake_h2,
        "host 1's health agent must not remove host 2's containers"
    );
    let now: BTreeMap<String, String> = workers(&client, &aid)
        .await
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap_or_default().into(),
                w["host_id"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    assert_eq!(now, hosts, "health kept every worker");

    // Host 1's spawner crashes and comes back: its recovery removes host 1's workers only.
    spawner1.crash();
    let _spawner1 = start("spawner-1b", "spawner", &conf1);
    let left = wait_for(
        "host 1's workers to be recovered",
        Duration::from_secs(30),
        || async {
            let list = workers(&client, &aid).await;
            list.iter()
                .all(|w| w["host_id"] != h1.as_str())
                .then_some(list)
        },
    )
    .await;
    let left: BTreeSet<&str> = left.iter().filter_map(|w| w["id"].as_str()).collect();
    let on_h2: BTreeSet<&str> = hosts
        .iter()
        .filter(|(_, h)| **h == h2)
        .map(|(w, _)| w.as_str())
        .collect();
    assert_eq!(left, on_h2, "host 2's workers are untouched");
    eids.push(client.send(&aid, "after the recovery").await);
    client
        .wait_complete(&aid, &eids, Duration::from_secs(60))
        .await;

    let (status, env) = request(&client, "DELETE", &format!("/actors/{aid}"), None).await;
    assert_eq!(status, 200, "{env}");
    for engine in [ENGINE1, dd2.as_str()] {
        wait_for(
            "no container of the actor",
            Duration::from_secs(20),
            || async { containers(engine, &label).is_empty().then_some(()) },
        )
        .await;
    }
    delete_command_queues(&[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_host_takes_no_command_from_any_of_its_queues() {
    let Some(_dd2) = hosts_available().await else {
        return;
    };
    let dir = temp_dir("abaco-hosts-");
    let port = free_port();
    let (q1, q2) = (unique("q1"), unique("q2"));
    let host = unique("host-full-");
    let _cleanup = Cleanup(vec![(ENGINE1.into(), format!("abaco.host={host}"))]);
    let queues = format!("host_queues = {q1}, {q2}");
    let api = host_config(&dir, "api", port, &queues, ENGINE1, "");
    let conf = host_config(
        &dir,
        "h",
        port,
        &format!("{queues}\nhost_id = {host}\nmax_workers_per_host = 1"),
        ENGINE1,
        "",
    );
    let _api = start("api", "api", &api);
    let _spawner = start("spawner", "spawner", &conf);
    let client = Client::new(port);
    client.wait_up().await;

    let first = client
        .register(json!({"image": "abaco-test/echo", "queue": q1}))
        .await;
    wait_ready(&client, &first, 1).await;
    // The host is full: the command for the second actor, on its other queue, waits in the
    // queue (for another host, or for room here) while the first actor runs a message.
    let second = client
        .register(json!({"image": "abaco-test/echo", "queue": q2}))
        .await;
    let eid = client.send(&first, "while full").await;
    client
        .wait_complete(&first, &[eid], Duration::from_secs(30))
        .await;
    let list = workers(&client, &second).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "REQUESTED", "{list:?}");
    // Room again: the second actor gets its worker.
    let (status, env) = request(&client, "DELETE", &format!("/actors/{first}"), None).await;
    assert_eq!(status, 200, "{env}");
    let hosts = wait_ready(&client, &second, 1).await;
    assert!(hosts.values().all(|h| *h == host), "{hosts:?}");
    let (status, env) = request(&client, "DELETE", &format!("/actors/{second}"), None).await;
    assert_eq!(status, 200, "{env}");
    delete_command_queues(&[&q1, &q2]).await;
}
