//! Unit tests of the pure parts of the runtime: request building and stats reduction.

use super::*;

fn check_split(image: &str, expect: (&str, &str)) {
    assert_eq!(split_tag(image), expect, "{image}");
}

#[test]
fn splits_image_tags() {
    check_split("busybox", ("busybox", "latest"));
    check_split("abaco-test/echo:v2", ("abaco-test/echo", "v2"));
    check_split("localhost:5000/echo", ("localhost:5000/echo", "latest"));
    check_split("localhost:5000/echo:1", ("localhost:5000/echo", "1"));
    check_split("echo@sha256:abc", ("echo@sha256:abc", ""));
}

#[test]
fn builds_create_body() {
    let spec = ContainerSpec {
        image: "abaco-test/echo:latest".to_string(),
        env: vec![("MSG".to_string(), "a=b".to_string())],
        memory: Some(-1),
        nano_cpus: Some(500_000_000),
        ..Default::default()
    };
    let body = create_body(&spec, Some("none"));
    assert_eq!(body.env, Some(vec!["MSG=a=b".to_string()]));
    let host = body.host_config.expect("host config");
    assert_eq!(host.memory, None, "non-positive memory means unlimited");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.binds, None);
    assert_eq!(
        host.network_mode.as_deref(),
        Some("none"),
        "[docker] network applies"
    );
}

#[test]
fn reduces_stats() {
    let sample: bollard::models::ContainerStatsResponse =
        serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 1500}},
            "memory_stats": {"usage": 4096},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "Read", "value": 10},
                {"major": 8, "minor": 0, "op": "write", "value": 5},
                {"major": 8, "minor": 0, "op": "Total", "value": 15}
            ]},
            "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 1}}
        }))
        .expect("stats json");
    assert_eq!(
        stats::from_docker(&sample),
        Stats {
            cpu_ns: 1500,
            io_bytes: 116,
            memory_bytes: 4096
        }
    );
    let empty = bollard::models::ContainerStatsResponse::default();
    assert_eq!(stats::from_docker(&empty), Stats::default());
}

#[test]
fn zero_time_is_never() {
    assert!(is_zero_time("0001-01-01T00:00:00Z"));
    assert!(!is_zero_time("2026-01-01T00:00:00Z"));
}
