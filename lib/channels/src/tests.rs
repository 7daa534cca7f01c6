//! The channels conformance suite, run against the embedded backend (temp dir) and the real
//! RabbitMQ (`ABACO_TEST_AMQP_URL`), plus embedded-only durability across a restart and AMQP-only
//! reconnection and redeclaration. With `CI` set, an unreachable RabbitMQ fails the test.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use abaco_core::{DbId, ExecutionId, Queue, WorkerControl};

use crate::{Channels, Consumer, Delivery};

/// Upper bound for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(10);
/// How long to watch for a message that must not come.
const QUIET: Duration = Duration::from_millis(300);

fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("test_{label}_{}_{nanos}", std::process::id())
}

fn mailbox(prefix: &str, name: &str) -> Queue {
    Queue::Mailbox(DbId::from(format!("{prefix}_{name}")))
}

async fn publish(ch: &Channels, queue: &Queue, text: &str) {
    ch.publish_bytes(queue, text.as_bytes().to_vec())
        .await
        .expect("publish");
}

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(PROMPT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer next")
        .expect("consumer still open")
}

async fn get(ch: &Channels, queue: &Queue) -> Delivery {
    ch.get(queue, PROMPT)
        .await
        .expect("get")
        .expect("a message in time")
}

fn text(delivery: &Delivery) -> &str {
    std::str::from_utf8(delivery.payload()).expect("utf-8 payload")
}

async fn assert_quiet(consumer: &mut Consumer) {
    if let Ok(got) = tokio::time::timeout(QUIET, consumer.next()).await {
        let got = got.expect("consumer next");
        panic!(
            "expected no delivery, got {:?}",
            got.as_ref().map(|d| d.payload().to_vec())
        );
    }
}

/// Every backend must pass this.
async fn suite(ch: Channels, prefix: &str) {
    delivered_once(&ch, prefix).await;
    redelivered_after_nack_or_drop(&ch, prefix).await;
    redelivered_after_consumer_drop(&ch, prefix).await;
    order_kept(&ch, prefix).await;
    requeue_goes_to_front(&ch, prefix).await;
    competing_consumers(&ch, prefix).await;
    len_purge_delete(&ch, prefix).await;
    get_times_out(&ch, prefix).await;
    results_and_json(&ch, prefix).await;
}

async fn delivered_once(ch: &Channels, prefix: &str) {
    let queue = mailbox(prefix, "once");
    for t in ["a", "b", "c"] {
        publish(ch, &queue, t).await;
    }
    let mut consumer = ch.consume(&queue).await.expect("consume");
    for t in ["a", "b", "c"] {
        let delivery = next(&mut consumer).await;
        assert_eq!(text(&delivery), t);
        assert!(!delivery.redelivered());
        delivery.ack().await.expect("ack");
    }
    assert_quiet(&mut consumer).await;
    drop(consumer);
    let mut again = ch.consume(&queue).await.expect("consume again");
    assert_quiet(&mut again).await;
    assert!(ch.get(&queue, QUIET).await.expect("get").is_none());
    assert_eq!(ch.len(&queue).await.expect("len"), 0);
    ch.delete(&queue).await.expect("delete");
}

async fn redelivered_after_nack_or_drop(ch: &Channels, prefix: &str) {
    let queue = mailbox(prefix, "nack");
    let mut consumer = ch.consume(&queue).await.expect("consume");

    publish(ch, &queue, "nacked").await;
    let first = next(&mut consumer).await;
    assert_eq!(text(&first), "nacked");
    first.nack(true).await.expect("nack");
    let again = next(&mut consumer).await;
    assert_eq!(text(&again), "nacked");
    assert!(
        again.redelivered(),
        "a requeued message is flagged redelivered"
    );
    again.ack().await.expect("ack");

    publish(ch, &queue, "dropped").await;
    let first = next(&mut consumer).await;
    assert_eq!(text(&first), "dropped");
    drop(first);
    let again = next(&mut consumer).await;
    assert_eq!(text(&again), "dropped");
    assert!(again.redelivered());
    again.ack().await.expect("ack");

    publish(ch, &queue, "rejected").await;
    let first = next(&mut consumer).await;
    first.nack(false).await.expect("nack without requeue");
    assert_quiet(&mut consumer).await;
    ch.delete(&queue).await.expect("delete");
}

async fn redelivered_after_consumer_drop(ch: &Channels, prefix: &str) {
    let queue = mailbox(prefix, "gone");
    publish(ch, &queue, "orphan").await;
    let mut first = ch.consume(&queue).await.expect("consume");
    let held = next(&mut first).await;
    assert_eq!(text(&held), "orphan");
    drop(first);
    let mut second = ch.consume(&queue).await.expect("consume again");
    let again = next(&mut second).await;
    assert_eq!(text(&again), "orphan");
    assert!(again.redelivered());
    again.ack().await.expect("ack by the new owner");
    // The old delivery lost ownership with its consumer: acking it must not claim success.
    assert!(held.ack().await.is_err());
    assert_quiet(&mut second).await;

    // Same with the delivery dropped too.
    publish(ch, &queue, "both").await;
    let held = next(&mut second).await;
    drop(second);
    drop(held);
    let again = get(ch, &queue).await;
    assert_eq!(text(&again), "both");
    again.ack().await.expect("ack");
    ch.delete(&queue).await.expect("delete");
}

async fn order_kept(ch: &Channels, prefix: &str) {
    let queue = mailbox(prefix, "order");
    for i in 0..100 {
        publish(ch, &queue, &i.to_string()).await;
    }
    let mut consumer = ch.consume(&queue).await.expect("consume");
    for i in 0..100 {
        let delivery = next(&mut consumer).await;
        assert_eq!(text(&delivery), i.to_string());
        delivery.ack().await.expect("ack");
    }
    ch.delete(&queue).await.expect("delete");
}

async fn requeue_goes_to_front(ch: &Channels, prefix: &str) {
    let queue = mailbox(prefix, "front");
    for t in ["1", "2", "3"] {
        publish(ch, &queue, t).await;
    }
    let one = get(ch, &queue).await;
    let two = get(ch, &queue).await;
    assert_eq!((text(&one), text(&two)), ("1", "2"));
    two.nack(true).await.expect("nack");
    one.nack(true).await.expect("nack");
    for t in ["1", "2", "3"] {
        let delivery = get(ch, &queue).await;
        assert_eq!(text(&delivery), t);
        delivery.ack().await.expect("ack");
    }
    ch.delete(&queue).await.expect("delete");
}

async fn competing_consumers(ch: &Channels, prefix: &str) {
    let queue = mailbox(prefix, "compete");
    let total = 50;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut consumer = ch.consume(&queue).await.expect("consume");
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Ok(Some(delivery))) = tokio::time::timeout(QUIET, consumer.next()).await {
                seen.push(text(&delivery).to_string());
                delivery.ack().await.expect("ack");
            }
            seen
        }));
    }
    for i in 0..total {
        publish(ch, &queue, &i.to_string()).await;
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.expect("consumer task"));
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), total, "each message delivered exactly once");
    assert_eq!(distinct.len(), total);
    ch.delete(&queue).await.expect("delete");
}

async fn len_purge_delete(ch: &Channels, prefix: &str) {
    let never = mailbox(prefix, "never");
    assert_eq!(ch.len(&never).await.expect("len of a missing queue"), 0);
    assert_eq!(ch.purge(&never).await.expect("purge of a missing queue"), 0);
    ch.delete(&never).await.expect("delete of a missing queue");

    let queue = mailbox(prefix, "len");
    for i in 0..5 {
        publish(ch, &queue, &i.to_string()).await;
    }
    assert_eq!(ch.len(&queue).await.expect("len"), 5);
    let in_flight = get(ch, &queue).await;
    assert_eq!(
        ch.len(&queue).await.expect("len"),
        4,
        "in-flight is not counted"
    );
    assert_eq!(ch.purge(&queue).await.expect("purge"), 4);
    assert_eq!(ch.len(&queue).await.expect("len"), 0);
    in_flight.ack().await.expect("ack survives a purge");
    assert!(ch.get(&queue, QUIET).await.expect("get").is_none());

    publish(ch, &queue, "x").await;
    ch.delete(&queue).await.expect("delete");
    assert_eq!(ch.len(&queue).await.expect("len"), 0);
    // A deleted queue is created again on next use.
    publish(ch, &queue, "y").await;
    assert_eq!(ch.len(&queue).await.expect("len"), 1);
    let delivery = get(ch, &queue).await;
    assert_eq!(text(&delivery), "y");
    delivery.ack().await.expect("ack");
    ch.delete(&queue).await.expect("delete");
}

async fn get_times_out(ch: &Channels, prefix: &str) {
    let queue = mailbox(prefix, "empty");
    let wait = Duration::from_millis(400);
    let started = Instant::now();
    assert!(ch.get(&queue, wait).await.expect("get").is_none());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "returned early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "overran its deadline: {took:?}"
    );

    // A message published while a get waits is taken by it.
    let waiter = {
        let ch = ch.clone();
        let queue = queue.clone();
        tokio::spawn(async move { ch.get(&queue, PROMPT).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(ch, &queue, "late").await;
    let delivery = waiter
        .await
        .expect("get task")
        .expect("get")
        .expect("a message");
    assert_eq!(text(&delivery), "late");
    delivery.ack().await.expect("ack");
    ch.delete(&queue).await.expect("delete");
}

async fn results_and_json(ch: &Channels, prefix: &str) {
    let results = Queue::Results(DbId::from(format!("{prefix}_res")), ExecutionId::from("e1"));
    assert!(!results.is_durable());
    publish(ch, &results, "r1").await;
    assert_eq!(ch.len(&results).await.expect("len"), 1);
    let delivery = get(ch, &results).await;
    assert_eq!(text(&delivery), "r1");
    delivery.ack().await.expect("ack");
    ch.delete(&results).await.expect("delete");

    let control = mailbox(prefix, "json");
    ch.publish(&control, &WorkerControl::Stop)
        .await
        .expect("publish json");
    let delivery = get(ch, &control).await;
    assert_eq!(
        delivery.decode::<WorkerControl>().expect("decode"),
        WorkerControl::Stop
    );
    assert!(delivery.decode::<u64>().is_err());
    delivery.ack().await.expect("ack");
    ch.delete(&control).await.expect("delete");
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(label));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_conformance() {
    let dir = TempDir::new("embedded");
    let ch = Channels::open_embedded(&dir.0).expect("open");
    suite(ch, &unique("emb")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_restart() {
    let dir = TempDir::new("restart");
    let queue = mailbox("restart", "q");
    let results = Queue::Results(DbId::from("restart"), ExecutionId::from("e"));
    {
        let ch = Channels::open_embedded(&dir.0).expect("open");
        for t in ["a", "b", "c", "d"] {
            publish(&ch, &queue, t).await;
        }
        publish(&ch, &results, "transient").await;
        let in_flight = get(&ch, &queue).await;
        assert_eq!(text(&in_flight), "a");
        let acked = get(&ch, &queue).await;
        assert_eq!(text(&acked), "b");
        acked.ack().await.expect("ack");
        // A crash: the in-flight delivery is neither acked nor requeued.
        std::mem::forget(in_flight);
    }
    {
        let ch = Channels::open_embedded(&dir.0).expect("reopen");
        assert_eq!(ch.len(&queue).await.expect("len"), 3);
        assert_eq!(
            ch.len(&results).await.expect("len"),
            0,
            "results are not durable"
        );
        let a = get(&ch, &queue).await;
        assert_eq!(text(&a), "a");
        assert!(a.redelivered(), "it was in flight when the process died");
        let c = get(&ch, &queue).await;
        assert_eq!(text(&c), "c");
        assert!(!c.redelivered());
        a.ack().await.expect("ack");
        c.ack().await.expect("ack");
        // Left unacked at shutdown: redelivered next time.
        let d = get(&ch, &queue).await;
        assert_eq!(text(&d), "d");
        drop(ch);
        drop(d);
    }
    let ch = Channels::open_embedded(&dir.0).expect("reopen again");
    assert_eq!(ch.len(&queue).await.expect("len"), 1);
    let d = get(&ch, &queue).await;
    assert_eq!(text(&d), "d");
    d.ack().await.expect("ack");
    ch.purge(&queue).await.expect("purge");
    drop(ch);
    let ch = Channels::open_embedded(&dir.0).expect("reopen a third time");
    assert_eq!(ch.len(&queue).await.expect("len"), 0);
}

/// Many concurrent publishers share commits; prints the rate as a smoke measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_group_commit() {
    let dir = TempDir::new("throughput");
    let ch = Channels::open_embedded(&dir.0).expect("open");
    let queue = mailbox("throughput", "q");
    let (tasks, each) = (64, 100);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let ch = ch.clone();
        let queue = queue.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..each {
                publish(&ch, &queue, &format!("{t}-{i}")).await;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("publisher");
    }
    let took = started.elapsed();
    let total = tasks * each;
    eprintln!(
        "embedded: {total} durable publishes in {took:?} ({:.0}/s)",
        total as f64 / took.as_secs_f64()
    );
    assert_eq!(ch.len(&queue).await.expect("len"), total as u64);
    drop(ch);
    let ch = Channels::open_embedded(&dir.0).expect("reopen");
    assert_eq!(ch.len(&queue).await.expect("len"), total as u64);
}

/// RabbitMQ, or `None` (with a note) when unreachable outside CI.
async fn rabbit() -> Option<Channels> {
    let url = amqp_url();
    match Channels::connect_amqp(&url, 10).await {
        Ok(ch) => Some(ch),
        Err(err) if std::env::var_os("CI").is_some() => {
            panic!("RabbitMQ at {url} is unreachable and CI is set: {err}")
        }
        Err(err) => {
            eprintln!("note: skipping the RabbitMQ suite, {url} is unreachable: {err}");
            None
        }
    }
}

fn amqp_url() -> String {
    std::env::var("ABACO_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_conformance() {
    let Some(ch) = rabbit().await else { return };
    suite(ch, &unique("amqp")).await;
}

/// Concurrent publishers pipeline their confirms on the shared channel; prints the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_concurrent_publishes() {
    let Some(ch) = rabbit().await else { return };
    let queue = mailbox(&unique("amqp"), "throughput");
    let (tasks, each) = (256, 20);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let ch = ch.clone();
        let queue = queue.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..each {
                publish(&ch, &queue, &format!("{t}-{i}")).await;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("publisher");
    }
    let took = started.elapsed();
    let total = tasks * each;
    eprintln!(
        "amqp: {total} confirmed persistent publishes in {took:?} ({:.0}/s)",
        total as f64 / took.as_secs_f64()
    );
    assert_eq!(ch.len(&queue).await.expect("len"), total as u64);
    ch.delete(&queue).await.expect("delete");
}

/// A queue deleted by another connection is declared again by a publisher that had cached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_redeclares_a_queue_deleted_elsewhere() {
    let Some(one) = rabbit().await else { return };
    let Some(other) = rabbit().await else { return };
    let queue = mailbox(&unique("amqp"), "redeclare");
    publish(&one, &queue, "first").await;
    other.delete(&queue).await.expect("delete elsewhere");
    publish(&one, &queue, "second").await;
    let delivery = get(&other, &queue).await;
    assert_eq!(text(&delivery), "second");
    delivery.ack().await.expect("ack");
    one.delete(&queue).await.expect("delete");
}

/// After the connection drops, operations fail `Unavailable` or reconnect; the next ones work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_reconnects_lazily() {
    if rabbit().await.is_none() {
        return;
    }
    let amqp = crate::amqp::Amqp::connect(&amqp_url(), 10)
        .await
        .expect("connect");
    let amqp = std::sync::Arc::new(amqp);
    let ch = Channels(amqp.clone());
    let queue = mailbox(&unique("amqp"), "reconnect");
    publish(&ch, &queue, "before").await;
    let mut consumer = ch.consume(&queue).await.expect("consume");
    let held = next(&mut consumer).await;
    amqp.close_connection_for_test().await;
    // The old consumer ends (or errs); its unacked delivery goes back to the queue.
    let ended = tokio::time::timeout(PROMPT, consumer.next())
        .await
        .expect("consumer notices the closed connection");
    assert!(!matches!(ended, Ok(Some(_))));
    assert!(held.ack().await.is_err());
    publish(&ch, &queue, "after").await;
    let mut consumer = ch.consume(&queue).await.expect("consume after reconnect");
    let before = next(&mut consumer).await;
    assert_eq!(text(&before), "before");
    assert!(before.redelivered());
    before.ack().await.expect("ack");
    let after = next(&mut consumer).await;
    assert_eq!(text(&after), "after");
    after.ack().await.expect("ack");
    ch.delete(&queue).await.expect("delete");
}
