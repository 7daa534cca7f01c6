//! Docker engines seen from a test through the docker CLI (`docker -H <engine>`): containers by
//! label, every container created for a label (`docker events`), and removal of what a test left.
//! Several engines stand in for several compute hosts (`scripts/dockerd2.sh`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Runs the docker CLI against `engine`; panics when it fails.
pub fn docker(engine: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(engine)
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(abaco.host, abaco.worker, abaco.execution)` of the containers on `engine` matching `label`.
pub fn containers(engine: &str, label: &str) -> Vec<(String, String, String)> {
    let format =
        r#"{{.Label "abaco.host"}} {{.Label "abaco.worker"}} {{.Label "abaco.execution"}}"#;
    docker(
        engine,
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            format,
        ],
    )
    .lines()
    .filter_map(|l| {
        let mut parts = l.split_whitespace().map(str::to_string);
        Some((
            parts.next()?,
            parts.next()?,
            parts.next().unwrap_or_default(),
        ))
    })
    .collect()
}

/// Removes the containers matching each `(engine, label)` when dropped, so a test that fails
/// leaves nothing behind either.
pub struct Cleanup(pub Vec<(String, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (engine, label) in &self.0 {
            let ids = Command::new("docker")
                .args([
                    "-H",
                    engine,
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label={label}"),
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                let _ = Command::new("docker")
                    .args(["-H", engine, "rm", "-f", id])
                    .output();
            }
        }
    }
}

/// `docker events` of the containers matching a label created on one engine since a time (unix
/// seconds): every create, even of containers removed again since. Stops when dropped.
pub struct Creates {
    child: Child,
    out: PathBuf,
}

impl Creates {
    pub fn watch(engine: &str, label: &str, since: u64, out: PathBuf) -> Creates {
        let file = std::fs::File::create(&out).expect("events file");
        let child = Command::new("docker")
            .args(["-H", engine, "events", "--since", &since.to_string()])
            .args(["--filter", "type=container", "--filter", "event=create"])
            .args(["--filter", &format!("label={label}")])
            .args([
                "--format",
                r#"{{index .Actor.Attributes "abaco.execution"}} {{index .Actor.Attributes "abaco.worker"}}"#,
            ])
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events");
        Creates { child, out }
    }

    /// `(execution, worker)` of every create seen so far.
    pub fn seen(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (e, w) = l.split_once(' ')?;
                Some((e.to_string(), w.to_string()))
            })
            .collect()
    }
}

impl Drop for Creates {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
