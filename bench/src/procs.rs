//! Processes the harness starts: service processes and the broker, their resource use from
//! /proc, and stopping every one of them by PID (also on Ctrl-C and on failure).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// What must be stopped if the harness is interrupted.
struct Registry {
    children: Vec<u32>,
    broker: Option<(PathBuf, PathBuf)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    children: Vec::new(),
    broker: None,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops everything still registered: service processes (SIGTERM, then SIGKILL), then the
/// broker (through its script, which stops it by its recorded PID). Idempotent.
pub fn stop_everything() {
    let (children, broker) = {
        let mut r = registry();
        (std::mem::take(&mut r.children), r.broker.take())
    };
    for pid in &children {
        signal(*pid, libc::SIGCONT);
        signal(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in &children {
        while alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(*pid) {
            signal(*pid, libc::SIGKILL);
        }
    }
    if let Some((script, dir)) = broker {
        stop_broker_now(&script, &dir);
    }
}

/// Registers another process of ours (a profiler) to be stopped on Ctrl-C.
pub fn track(pid: u32) {
    registry().children.push(pid);
}

pub fn untrack(pid: u32) {
    registry().children.retain(|p| *p != pid);
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a PID this process started and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Alive and not a zombie (a zombie child of ours counts as stopped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(stat_fields(&s).first(), Some(&"Z") | Some(&"X")),
        Err(_) => false,
    }
}

/// The fields of /proc/PID/stat after the command name (field 3, the state, first).
fn stat_fields(stat: &str) -> Vec<&str> {
    match stat.rfind(')') {
        Some(i) => stat[i + 1..].split_whitespace().collect(),
        None => Vec::new(),
    }
}

/// CPU time of a live process, all threads, in seconds: the sum of the nanosecond run times
/// in /proc/PID/task/*/schedstat. utime+stime of /proc/PID/stat count in 10 ms ticks, too
/// coarse for batches of a second; they are returned second, for cross-checking.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let f = stat_fields(&stat);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 counting from field 3.
    let ticks: u64 = f
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .zip(f.get(12).and_then(|s| s.parse::<u64>().ok()))
        .map(|(u, s)| u + s)
        .with_context(|| format!("unexpected /proc/{pid}/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let from_stat = ticks as f64 / hz;

    let mut ns: u64 = 0;
    let mut any = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between listing and reading.
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Some(v) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    let precise = if any { ns as f64 / 1e9 } else { from_stat };
    Ok((precise, from_stat))
}

/// Peak resident set size (VmHWM) of a live process, in MiB.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kib as f64 / 1024.0)
}

/// A service process of ours.
pub struct ServiceProcess {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    /// `--heap-profile-dir`: the heaptrack interpreter writing this process's profile.
    heap_writer: Option<Child>,
}

/// heaptrack's preload library and interpreter (Debian's `heaptrack` package paths, and the
/// usual install prefixes).
fn heaptrack_parts() -> anyhow::Result<(PathBuf, PathBuf)> {
    for dir in [
        "/usr/lib/heaptrack",
        "/usr/lib/x86_64-linux-gnu/heaptrack",
        "/usr/lib64/heaptrack",
        "/usr/local/lib/heaptrack",
    ] {
        let dir = Path::new(dir);
        let preload = dir.join("libheaptrack_preload.so");
        let interpret = dir.join("libexec/heaptrack_interpret");
        if preload.exists() && interpret.exists() {
            return Ok((preload, interpret));
        }
    }
    bail!("--heap-profile-dir needs heaptrack (Debian: apt-get install heaptrack zstd); its libheaptrack_preload.so was not found")
}

impl ServiceProcess {
    /// Starts `program args...`, stdout discarded, stderr to `log`. The process is killed if
    /// the harness dies (PR_SET_PDEATHSIG), and stopped by [`stop_everything`] on Ctrl-C.
    /// With `heap_profile`, the process runs under heaptrack's preload library; its trace goes
    /// through a FIFO to `heaptrack_interpret` and `zstd` into that file.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        heap_profile: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let heap_writer = match heap_profile {
            None => None,
            Some(out) => {
                let (preload, interpret) = heaptrack_parts()?;
                if let Some(dir) = out.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                let fifo = out.with_extension("fifo");
                let _ = std::fs::remove_file(&fifo);
                let made = Command::new("mkfifo")
                    .arg(&fifo)
                    .status()
                    .context("running mkfifo")?;
                if !made.success() {
                    bail!("mkfifo {} failed", fifo.display());
                }
                let writer = Command::new("sh")
                    .arg("-c")
                    .arg(r#""$1" < "$2" | zstd -q -c > "$3"; rm -f "$2""#)
                    .arg("heaptrack-writer")
                    .arg(&interpret)
                    .arg(&fifo)
                    .arg(out)
                    .stdin(Stdio::null())
                    .spawn()
                    .context("starting heaptrack_interpret (and zstd)")?;
                cmd.env("LD_PRELOAD", &preload)
                    .env("DUMP_HEAPTRACK_OUTPUT", &fifo);
                Some(writer)
            }
        };
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        registry().children.push(child.id());
        if let Some(w) = &heap_writer {
            registry().children.push(w.id());
        }
        Ok(Self {
            name: name.to_owned(),
            log,
            child,
            heap_writer,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP (`false`) or SIGCONT (`true`).
    pub fn set_running(&mut self, running: bool) -> anyhow::Result<()> {
        let sig = if running {
            libc::SIGCONT
        } else {
            libc::SIGSTOP
        };
        // SAFETY: kill(2) on our own, unreaped child.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, sig) } != 0 {
            bail!(
                "cannot signal service process {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = tail(&self.log, 20);
            self.forget();
            bail!(
                "service process {} exited unexpectedly ({status}); its log {}:\n{tail}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps the process.
    pub fn stop(mut self, grace: Duration) {
        let pid = self.child.id();
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(pid, libc::SIGCONT);
            signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // The profile is complete when the interpreter has read the FIFO to its end (a process
        // that died before opening it leaves the interpreter waiting: given up after 60 s).
        if let Some(mut writer) = self.heap_writer.take() {
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(writer.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(writer.try_wait(), Ok(None)) {
                let _ = writer.kill();
                let _ = writer.wait();
            }
            registry().children.retain(|p| *p != writer.id());
        }
        self.forget();
    }

    fn forget(&mut self) {
        let pid = self.child.id();
        registry().children.retain(|p| *p != pid);
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A broker started with `scripts/kafka-local.sh start DIR`.
pub struct Broker {
    script: PathBuf,
    dir: PathBuf,
    pub bootstrap: String,
}

impl Broker {
    /// Starts a single-node broker on `port`, data in `dir`; waits until it is ready.
    pub fn start(script: &Path, dir: &Path, port: u16) -> anyhow::Result<Self> {
        if !script.exists() {
            bail!(
                "{} not found: pass --kafka-script, or --brokers to use a running cluster",
                script.display()
            );
        }
        registry().broker = Some((script.to_owned(), dir.to_owned()));
        let out = Command::new(script)
            .arg("start")
            .arg(dir)
            .env("KAFKA_PORT", port.to_string())
            .env("NODES", "1")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {} start", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} start {} failed ({}); its messages are above",
                script.display(),
                dir.display(),
                out.status
            );
        }
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if bootstrap.is_empty() {
            bail!("{} start printed no bootstrap address", script.display());
        }
        Ok(Self {
            script: script.to_owned(),
            dir: dir.to_owned(),
            bootstrap,
        })
    }

    /// The broker JVM's PID (from the script's pid file).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("node-1/kafka.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn stop(self) {
        let taken = {
            let mut r = registry();
            r.broker.take()
        };
        if taken.is_some() {
            stop_broker_now(&self.script, &self.dir);
        }
    }
}

fn stop_broker_now(script: &Path, dir: &Path) {
    eprintln!("stopping the benchmark broker ({})", dir.display());
    let _ = Command::new(script)
        .arg("stop")
        .arg(dir)
        .arg("--clean")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status();
}
