//! Helpers shared by the end-to-end tests: service binaries as child processes.
#![allow(dead_code)] // each test file uses a part

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use choreograph::KafkaConfig;

/// A service binary running as a child process; killed when dropped.
pub struct ServiceProcess {
    pub name: &'static str,
    child: Option<Child>,
}

/// Processes of the given services (all four registration services: `start_all`).
pub fn start(names: &[&'static str], config: &KafkaConfig) -> Vec<ServiceProcess> {
    names
        .iter()
        .map(|s| ServiceProcess::start(s, config))
        .collect()
}

/// The four registration services, each as its own process.
pub fn start_all(config: &KafkaConfig) -> Vec<ServiceProcess> {
    start(&["user", "activity", "coupon", "points"], config)
}

/// A binary of the workspace in `target/debug` (built by `cargo build --workspace`).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first with `cargo build --workspace` (scripts/test.sh does)",
        path.display()
    );
    path
}

impl ServiceProcess {
    pub fn start(name: &'static str, config: &KafkaConfig) -> Self {
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}{name}.log", config.topic_prefix)))
            .unwrap();
        let child = Command::new(binary(name))
            .env("KAFKA_BOOTSTRAP_SERVERS", config.bootstrap_servers())
            .env("CHOREOGRAPH_TOPIC_PREFIX", &config.topic_prefix)
            // A killed instance's partitions move after this long (the broker's minimum).
            .env("CHOREOGRAPH_KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name,
            child: Some(child),
        }
    }

    /// SIGKILL: a crash, no shutdown at all.
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot signal {}", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                c.kill().ok();
                panic!("{} did not stop within 60 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}
