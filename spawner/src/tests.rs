//! Worker setup against failures outside the actor: with the Docker engine unreachable, the
//! actor keeps its status (not ERROR) with a message saying what it waits for, the worker goes
//! back to REQUESTED, and its command is sent again. (A missing image, the actor's own fault, is
//! `tests/tests/skeleton.rs`.)

use std::sync::Arc;

use abaco_channels::Channels;
use abaco_control::Control;
use abaco_core::config::DockerConfig;
use abaco_core::time::now;
use abaco_core::{
    Actor, ActorId, ActorStatus, Config, Queue, SpawnerCommand, Tenant, Worker, WorkerId,
    WorkerStatus,
};
use abaco_runtime::Runtime;
use abaco_store::Store;
use serde_json::{json, Map};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{spawn_worker, SpawnerContext, WAITING};

fn actor(status: ActorStatus) -> Actor {
    let time = now();
    Actor {
        id: ActorId::generate(),
        tenant: Tenant::from("SPAWNER-TEST"),
        owner: "testuser".into(),
        api_server: "http://127.0.0.1:8000".into(),
        image: "abaco-test/echo:latest".into(),
        name: None,
        description: String::new(),
        stateless: true,
        kind: "none".into(),
        link: String::new(),
        webhook: String::new(),
        hints: Vec::new(),
        token: json!(false),
        privileged: false,
        max_workers: None,
        mem_limit: None,
        max_cpus: None,
        use_container_uid: false,
        default_environment: Map::new(),
        status,
        status_message: " ".into(),
        state: json!({}),
        create_time: time,
        last_update_time: time,
        mounts: Vec::new(),
        revision: 1,
        tasdir: None,
        uid: None,
        gid: None,
        queue: "default".into(),
        log_ex: None,
        cron_on: false,
        cron_schedule: None,
        cron_next_ex: None,
    }
}

#[tokio::test]
async fn an_unreachable_docker_engine_does_not_put_the_actor_in_error() {
    let dir = std::env::temp_dir().join(format!("abaco-spawner-{}", WorkerId::generate()));
    let store = Store::open_embedded(&dir).expect("embedded store");
    let channels = Channels::open_embedded(&dir).expect("embedded channels");
    // A socket file nobody listens on: an engine that is down (connections are refused).
    let socket = dir.join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a unix socket"));
    let runtime = Runtime::connect(&DockerConfig {
        dd: format!("unix://{}", socket.display()),
        network: "none".into(),
    })
    .expect("a runtime handle");
    let ctx = SpawnerContext {
        config: Arc::new(Config::defaults().expect("default configuration")),
        control: Control::new(store.clone(), channels.clone()),
        runtime,
    };
    let owner = actor(ActorStatus::Ready);
    store.insert_actor(&owner).await.unwrap();
    let worker = Worker::requested(&owner, WorkerId::generate(), now());
    store.put_worker(&worker).await.unwrap();
    let command = SpawnerCommand {
        actor_id: owner.db_id(),
        worker_id: worker.id.clone(),
        image: owner.image.clone(),
        revision: 1,
        tenant: owner.tenant.clone(),
        stop_existing: false,
        repull: false,
    };
    let workers = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
    spawn_worker(&ctx, command.clone(), &workers, &CancellationToken::new()).await;

    let after = store.actor(&owner.db_id()).await.unwrap().unwrap();
    assert_eq!(after.status, ActorStatus::Ready, "{after:?}");
    assert!(
        after.status_message.starts_with(WAITING) && after.status_message.contains("unreachable"),
        "{}",
        after.status_message
    );
    assert!(workers.lock().await.is_empty(), "no worker was started");
    let waiting = store
        .worker(&owner.db_id(), &worker.id)
        .await
        .unwrap()
        .expect("the worker is kept for the retry");
    assert_eq!(waiting.status, WorkerStatus::Requested);
    // The command comes back to the queue, for this or another spawner to try again.
    let resent = channels
        .get(
            &Queue::Command(owner.queue.clone()),
            crate::RETRY_AFTER + std::time::Duration::from_secs(10),
        )
        .await
        .expect("the command queue answers")
        .expect("the command is sent again");
    assert_eq!(resent.decode::<SpawnerCommand>().unwrap(), command);
    let _ = resent.ack().await;
    drop(ctx);
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}
