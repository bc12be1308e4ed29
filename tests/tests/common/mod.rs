//! Helpers shared by the end-to-end tests: service binaries as child processes.
#![allow(dead_code)] // each test file uses a part

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use choreograph::KafkaConfig;

/// A service binary running as a child process; killed when dropped.
pub struct ServiceProcess {
    pub name: &'static str,
    /// A label for this process (its log file is `target/test-logs/<prefix><instance>.log`).
    pub instance: String,
    config: KafkaConfig,
    env: Vec<(String, String)>,
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
        Self::start_with(name, name, config, Vec::new())
    }

    /// A service process labelled `instance` (several instances of one service can run), with
    /// extra environment variables on top of the Kafka settings of `config`.
    pub fn start_with(
        name: &'static str,
        instance: &str,
        config: &KafkaConfig,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut p = Self {
            name,
            instance: instance.to_owned(),
            config: config.clone(),
            env,
            child: None,
        };
        p.spawn();
        p
    }

    /// Where the process logs (stderr), across restarts.
    pub fn log_path(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/test-logs")
            .join(format!("{}{}.log", self.config.topic_prefix, self.instance))
    }

    fn spawn(&mut self) {
        let config = &self.config;
        let log_path = self.log_path();
        std::fs::create_dir_all(log_path.parent().unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = Command::new(binary(self.name));
        command
            .env("KAFKA_BOOTSTRAP_SERVERS", config.bootstrap_servers())
            .env("CHOREOGRAPH_TOPIC_PREFIX", &config.topic_prefix)
            .env(
                "CHOREOGRAPH_TOPIC_PARTITIONS",
                config.topics.partitions.to_string(),
            )
            .env(
                "CHOREOGRAPH_TOPIC_REPLICATION_FACTOR",
                config.topics.replication_factor.to_string(),
            )
            // A killed instance's partitions move after this long (the broker's minimum).
            .env("CHOREOGRAPH_KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.instance));
        self.child = Some(child);
    }

    /// Starts the process again (same service, label, configuration and environment) after
    /// [`ServiceProcess::kill_9`] or [`ServiceProcess::terminate`].
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is still running: stop it before restarting it",
            self.instance
        );
        self.spawn();
    }

    /// The PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (started, not stopped by the test, and not exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The exit status, if the process exited by itself (not stopped by the test).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
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
        assert!(ok, "cannot signal {}", self.instance);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                c.kill().ok();
                panic!("{} did not stop within 60 s of SIGTERM", self.instance);
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

/// A Kafka cluster of a test's own (1 or 3 nodes), run by `scripts/kafka-local.sh` in a temporary
/// directory on free ports, so the suite's shared broker is untouched. Stopped and deleted by the
/// script when dropped (also when the test panics).
pub struct KafkaCluster {
    dir: PathBuf,
    pub nodes: u32,
    pub base_port: u16,
    bootstrap: String,
}

/// Where dedicated clusters look for free ports (clear of the suite's broker, 39092, and of the
/// usual development ports).
const CLUSTER_PORTS: std::ops::Range<u16> = 29500..29900;

impl KafkaCluster {
    /// Starts a cluster of `nodes` nodes and waits until it is ready.
    ///
    /// # Panics
    /// With the script's output when the cluster cannot start: a fault test never passes
    /// without its cluster.
    pub fn start(nodes: u32) -> Self {
        let base_port = free_base_port(nodes);
        let dir = std::env::temp_dir().join(format!(
            "choreograph-faults-{}-{}",
            std::process::id(),
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        ));
        // Created by the script (which deletes only a DIR it created).
        let mut cluster = Self {
            dir,
            nodes,
            base_port,
            bootstrap: String::new(),
        };
        let started = Instant::now();
        let out = cluster.script(
            &["start"],
            &[
                ("NODES", nodes.to_string()),
                ("KAFKA_PORT", base_port.to_string()),
            ],
        );
        cluster.bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            !cluster.bootstrap.is_empty(),
            "kafka-local.sh start printed no bootstrap address"
        );
        eprintln!(
            "dedicated {nodes}-node cluster at {} ready in {:.0?} (data and logs in {})",
            cluster.bootstrap,
            started.elapsed(),
            cluster.dir.display()
        );
        cluster
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Stops every node (SIGTERM), keeping the data.
    pub fn stop(&self) {
        self.script(&["stop"], &[]);
    }

    /// Starts the stopped cluster again on its data and waits until it is ready.
    pub fn restart(&self) {
        self.script(&["start"], &[]);
    }

    /// SIGKILL of node `n` (1-based; node `n` has `node.id` n).
    pub fn kill_node(&self, n: u32) {
        self.script(&["kill", &n.to_string()], &[]);
    }

    /// Starts node `n` again on its data and waits until it is ready.
    pub fn start_node(&self, n: u32) {
        self.script(&["start-node", &n.to_string()], &[]);
    }

    /// Runs `kafka-local.sh <command> DIR <args...>`; panics with its output when it fails.
    fn script(&self, command: &[&str], env: &[(&str, String)]) -> std::process::Output {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-local.sh");
        let mut c = Command::new(&script);
        c.arg(command[0]).arg(&self.dir).args(&command[1..]);
        // The suite's own broker settings (scripts/test.sh, .ci/run) must not leak in: later
        // commands on DIR use what DIR recorded.
        c.env_remove("KAFKA_PORT").env_remove("NODES");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "`kafka-local.sh {} {}` failed ({}):\n{}",
            command[0],
            self.dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for KafkaCluster {
    /// Stops the cluster; deletes its data unless the test failed (then the data and the
    /// broker logs stay for a look, and the directory is printed).
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-local.sh");
        let mut command = Command::new(script);
        command
            .arg("stop")
            .arg(&self.dir)
            .env_remove("KAFKA_PORT")
            .env_remove("NODES");
        if !failed {
            command.arg("--clean");
        }
        let out = command.stdin(Stdio::null()).output();
        match out {
            Ok(o) if o.status.success() => {
                if failed {
                    eprintln!(
                        "the test failed: the dedicated cluster is stopped, its data and logs kept in {} \
                         (look with `KAFKA_PORT={} scripts/kafka-local.sh start {}`; delete with `scripts/kafka-local.sh stop {} --clean`)",
                        self.dir.display(),
                        self.base_port,
                        self.dir.display(),
                        self.dir.display()
                    );
                }
            }
            Ok(o) => eprintln!(
                "stopping the dedicated cluster in {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("cannot run kafka-local.sh stop: {e}"),
        }
    }
}

/// A base port with `2 * nodes` free ports from it (client + controller port per node).
fn free_base_port(nodes: u32) -> u16 {
    let span = 2 * nodes as u16;
    let mut base = CLUSTER_PORTS.start;
    // Start at a port that depends on the process, so two test runs rarely collide.
    base += (std::process::id() % 20) as u16 * 10;
    for _ in 0..CLUSTER_PORTS.len() / 10 {
        if base + span > CLUSTER_PORTS.end {
            base = CLUSTER_PORTS.start;
        }
        let free =
            (base..base + span).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
        base += 10;
    }
    panic!("no {span} free ports in {CLUSTER_PORTS:?} on 127.0.0.1 for a dedicated cluster");
}

/// The event types of each registration outcome's causal chain (each exactly once, by `ce_id`),
/// sorted.
pub fn expected_types(outcome: choreograph::SagaOutcome) -> Vec<&'static str> {
    use choreograph::{Event, SagaOutcome};
    use registration_events::*;
    let mut t = vec![UserRegistered::TYPE];
    match outcome {
        SagaOutcome::Completed => t.extend([
            NewcomerEnrolled::TYPE,
            CouponIssued::TYPE,
            PointsGranted::TYPE,
            WelcomePackageCompleted::TYPE,
            UserWelcomed::TYPE,
        ]),
        SagaOutcome::Failed => t.extend([EnrollmentRejected::TYPE, RegistrationRejected::TYPE]),
        SagaOutcome::Compensated => t.extend([
            NewcomerEnrolled::TYPE,
            CouponIssued::TYPE,
            PointsGrantRejected::TYPE,
            CouponRevoked::TYPE,
            WelcomePackageFailed::TYPE,
            RegistrationFlagged::TYPE,
        ]),
    }
    t.sort_unstable();
    t
}

/// Sends the in-process services' logs to the test's captured output (shown when a test
/// fails). `RUST_LOG` overrides the filter.
pub fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
