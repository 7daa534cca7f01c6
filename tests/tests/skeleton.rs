//! The walking skeleton through every layer, in both modes: register an actor, wait for READY,
//! send a message, see the execution COMPLETE with its stats, and read what the container printed.

use std::time::Duration;

use abaco_tests::TestApp;
use serde_json::json;

async fn walking_skeleton(app: TestApp) {
    let actor = app
        .register_actor(json!({"image": "abaco-test/echo", "name": "skeleton",
                               "default_environment": {"GREETING": "hi"}}))
        .await;
    assert_eq!(actor["status"], "SUBMITTED");
    assert_eq!(actor["revision"], 1);
    let aid = actor["id"].as_str().expect("actor id").to_string();
    app.wait_actor_status(&aid, "READY", Duration::from_secs(30))
        .await;

    let (status, workers) = app.get(&format!("/actors/{aid}/workers")).await;
    assert_eq!(status, 200);
    assert_eq!(workers["result"][0]["status"], "READY", "{workers}");

    let eid = app.send_message(&aid, "hello from the skeleton").await;
    let execution = app
        .wait_execution_final(&aid, &eid, Duration::from_secs(60))
        .await;
    assert_eq!(execution["status"], "COMPLETE", "{execution}");
    assert_eq!(execution["exit_code"], 0);
    for field in ["runtime", "cpu", "io"] {
        assert!(execution[field].is_i64(), "{field} missing: {execution}");
    }
    assert!(execution["worker_id"].is_string());
    assert_ne!(execution["start_time"], "None");
    assert_ne!(execution["finish_time"], "None");

    let logs = app.logs(&aid, &eid).await;
    assert!(logs.contains("MSG=hello from the skeleton"), "{logs}");
    assert!(logs.contains(&format!("_abaco_actor_id={aid}")), "{logs}");
    assert!(
        logs.contains(&format!("_abaco_execution_id={eid}")),
        "{logs}"
    );
    assert!(logs.contains("_abaco_Content_Type=str"), "{logs}");
    assert!(logs.contains("_abaco_username=anonymous"), "{logs}");

    let (status, summary) = app.get(&format!("/actors/{aid}/executions")).await;
    assert_eq!(status, 200);
    assert_eq!(summary["result"]["total_executions"], 1);
    assert_eq!(summary["result"]["executions"][0]["id"], eid.as_str());

    // The public `/actors/v2` prefix serves the same resources.
    let (status, v2) = app.get(&format!("/actors/v2/{aid}")).await;
    assert_eq!(status, 200);
    assert_eq!(v2["result"]["id"], aid.as_str());

    let (status, deleted) = app.delete(&format!("/actors/{aid}")).await;
    assert_eq!(status, 200, "{deleted}");
    let (status, _) = app.get(&format!("/actors/{aid}")).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_skeleton_embedded() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    walking_skeleton(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_skeleton_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    walking_skeleton(app).await;
}

/// An image that is not on the host and cannot be pulled puts the actor in ERROR with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_puts_the_actor_in_error() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let actor = app
        .register_actor(json!({"image": "abaco-test/does-not-exist:nope"}))
        .await;
    let aid = actor["id"].as_str().expect("id").to_string();
    let actor = app
        .wait_actor_status(&aid, "ERROR", Duration::from_secs(60))
        .await;
    let why = actor["status_message"].as_str().unwrap_or("");
    assert!(
        why.contains("abaco-test/does-not-exist:nope") && why.contains("could not be pulled"),
        "{why}"
    );
    app.stop().await;
}
