//! End-to-end tests of the process driver with the real supervisor program, in a temporary data
//! directory. Every test kills whatever it started in a drop guard, even when it fails.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sandgate_core::{LiveStatus, Observed, SandboxRecord, SandboxSpec};
use sandgate_driver::{DeletePlan, Driver, DriverError, Observation};
use sandgate_process::{CgroupMode, ProcessDriver, ProcessDriverConfig, REASON_AFTER_SIGTERM};
use tokio::sync::mpsc;

const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads state letter and session of `/proc/<pid>/stat`, or `None` if the process is gone.
fn stat_of(pid: i32) -> Option<(char, i32, i32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        rest[0].chars().next()?,
        rest[1].parse().ok()?,
        rest[3].parse().ok()?,
        rest[19].parse().ok()?,
    ))
}

/// Returns whether `pid` runs. A zombie does not.
fn is_running(pid: i32) -> bool {
    stat_of(pid).is_some_and(|(state, ..)| state != 'Z' && state != 'X')
}

fn descendants(ancestor: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            && let Some((_, ppid, ..)) = stat_of(pid)
        {
            parents.push((pid, ppid));
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![ancestor];
    while let Some(parent) = queue.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                queue.push(pid);
            }
        }
    }
    found
}

fn kill(pid: i32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// A driver on a temporary data directory, with its observation channel.
struct Harness {
    driver: Option<ProcessDriver>,
    observations: mpsc::UnboundedReceiver<Observation>,
    data_dir: tempfile::TempDir,
    mode: CgroupMode,
    /// Pids this test must kill on drop, with the start time they had.
    pids: Vec<(i32, u64)>,
    cgroup_base: Option<PathBuf>,
}

impl Harness {
    async fn new(mode: CgroupMode) -> Harness {
        let data_dir = tempfile::tempdir().unwrap();
        let (driver, observations) = start_driver(data_dir.path(), mode, Vec::new()).await;
        let cgroup_base = driver.cgroup_base().map(Path::to_path_buf);
        Harness {
            driver: Some(driver),
            observations,
            data_dir,
            mode,
            pids: Vec::new(),
            cgroup_base,
        }
    }

    fn driver(&self) -> &ProcessDriver {
        self.driver.as_ref().unwrap()
    }

    /// Drops the driver, as a gateway exit would, and starts a new one on the same directory.
    async fn restart(&mut self, records: Vec<SandboxRecord>) {
        drop(self.driver.take());
        let (driver, observations) = start_driver(self.data_dir.path(), self.mode, records).await;
        self.driver = Some(driver);
        self.observations = observations;
    }

    /// Creates a sandbox and records its supervisor and command pids for cleanup.
    async fn create(&mut self, argv: &[&str], grace: Duration) -> SandboxRecord {
        let mut record = record(argv, grace);
        let details = self.driver().create(&record).await.unwrap();
        for key in ["pid", "command_pid"] {
            if let Some(pid) = details.attributes.get(key) {
                self.track(pid.parse().unwrap());
            }
        }
        record.driver = details;
        record
    }

    fn track(&mut self, pid: i32) {
        if let Some((.., start_time)) = stat_of(pid) {
            self.pids.push((pid, start_time));
        }
    }

    fn attribute(record: &SandboxRecord, key: &str) -> i32 {
        record.driver.attributes[key].parse().unwrap()
    }

    fn work_dir(&self, record: &SandboxRecord) -> PathBuf {
        self.driver().sandbox_dir(record.id).join("work")
    }

    /// Waits for an observation of `record` that matches `matches`.
    async fn wait_for(
        &mut self,
        record: &SandboxRecord,
        what: &str,
        matches: impl Fn(&Observed) -> bool,
    ) -> Observed {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.observations.recv()).await {
                Ok(Some(observation)) if observation.id == record.id => {
                    if matches(&observation.observed) {
                        return observation.observed;
                    }
                    seen.push(observation.observed);
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("observation channel closed while waiting for {what}"),
                Err(_) => panic!(
                    "no observation {what} within {EVENT_TIMEOUT:?}; observed instead: {seen:?}"
                ),
            }
        }
    }

    async fn wait_ready(&mut self, record: &SandboxRecord) {
        self.wait_for(record, "READY", |observed| {
            matches!(
                observed,
                Observed::Present {
                    status: LiveStatus::Ready(_),
                    ..
                }
            )
        })
        .await;
    }

    async fn wait_gone(&mut self, record: &SandboxRecord) -> Observed {
        self.wait_for(record, "Gone", |observed| {
            matches!(observed, Observed::Gone { .. })
        })
        .await
    }

    async fn delete(&self, record: &SandboxRecord, grace: Duration, force: bool) {
        let plan = DeletePlan {
            kill_at: SystemTime::now() + grace,
            force,
        };
        self.driver().delete(record, plan).await.unwrap();
    }

    /// Waits for a file that the command writes in its working directory, and returns it.
    async fn wait_file(&self, path: &Path) -> String {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(path)
                && text.ends_with('\n')
            {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{} not written in time",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.driver.take());
        for &(pid, start_time) in &self.pids {
            if stat_of(pid).is_some_and(|(.., start)| start == start_time) {
                for child in descendants(pid) {
                    kill(child);
                }
                kill(pid);
            }
        }
        if let Some(base) = &self.cgroup_base {
            if let Ok(entries) = fs::read_dir(base) {
                for entry in entries.flatten() {
                    let _ = fs::write(entry.path().join("cgroup.kill"), "1");
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            remove_cgroup_tree(base);
        }
    }
}

fn remove_cgroup_tree(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(path);
}

async fn start_driver(
    data_dir: &Path,
    mode: CgroupMode,
    records: Vec<SandboxRecord>,
) -> (ProcessDriver, mpsc::UnboundedReceiver<Observation>) {
    let driver = ProcessDriver::new(ProcessDriverConfig {
        data_dir: data_dir.to_path_buf(),
        supervisor: vec![env!("CARGO_BIN_EXE_sandgate-supervisor").into()],
        cgroup: mode,
    })
    .unwrap();
    if mode == CgroupMode::Auto {
        assert!(
            driver.cgroup_base().is_some(),
            "cgroup v2 is not usable here, so the cgroup variants of these tests cannot run"
        );
    }
    let (sink, observations) = mpsc::unbounded_channel();
    driver.start(records, sink).await.unwrap();
    (driver, observations)
}

fn record(argv: &[&str], grace: Duration) -> SandboxRecord {
    let spec = SandboxSpec {
        command: argv.iter().map(|arg| arg.to_string()).collect(),
        args: Vec::new(),
        env: BTreeMap::from([("SANDGATE_TEST".to_string(), "hello env".to_string())]),
        grace_period: grace,
        image: None,
    };
    SandboxRecord::new(
        "default".to_string(),
        "test".to_string(),
        BTreeMap::new(),
        spec,
        SystemTime::now(),
    )
}

const GRACE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn create_runs_command_in_own_session() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let record = harness
        .create(
            &[
                "sh",
                "-c",
                "echo \"out $SANDGATE_TEST\"; echo err >&2; exec sleep 1000",
            ],
            GRACE,
        )
        .await;
    harness.wait_ready(&record).await;

    let command_pid = Harness::attribute(&record, "command_pid");
    let (_, _, session, _) = stat_of(command_pid).expect("command not running");
    assert_eq!(session, command_pid, "command is not a session leader");
    let cwd = fs::read_link(format!("/proc/{command_pid}/cwd")).unwrap();
    assert_eq!(cwd, harness.work_dir(&record));

    let log = PathBuf::from(&record.driver.attributes["log"]);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("out hello env\n") && text.contains("err\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log lacks the command output: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cgroup = PathBuf::from(&record.driver.attributes["cgroup"]);
    let payload = fs::read_to_string(cgroup.join("payload/cgroup.procs")).unwrap();
    assert!(
        payload.lines().any(|line| line == command_pid.to_string()),
        "command {command_pid} not in payload cgroup: {payload:?}"
    );
}

#[tokio::test]
async fn supervisor_holds_no_gateway_descriptor() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let record = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&record).await;

    let supervisor = Harness::attribute(&record, "pid");
    let log = PathBuf::from(&record.driver.attributes["log"]);
    assert_eq!(
        fs::read_link(format!("/proc/{supervisor}/fd/0")).unwrap(),
        PathBuf::from("/dev/null")
    );
    for fd in [1, 2] {
        assert_eq!(
            fs::read_link(format!("/proc/{supervisor}/fd/{fd}")).unwrap(),
            log
        );
    }
    let (_, _, session, _) = stat_of(supervisor).unwrap();
    assert_eq!(session, supervisor, "supervisor is not in its own session");
}

async fn delete_removes_every_process(mode: CgroupMode) {
    let mut harness = Harness::new(mode).await;
    let record = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&record).await;
    let supervisor = Harness::attribute(&record, "pid");
    let command = Harness::attribute(&record, "command_pid");
    assert!(is_running(command));

    harness.delete(&record, GRACE, false).await;
    let gone = harness.wait_gone(&record).await;

    assert!(
        !is_running(command),
        "command {command} still runs after Gone"
    );
    assert!(
        !is_running(supervisor),
        "supervisor {supervisor} still runs after Gone"
    );
    assert_eq!(
        gone,
        Observed::Gone {
            exit_code: Some(-15)
        }
    );
    assert!(
        !harness.driver().sandbox_dir(record.id).exists(),
        "directory of a deleted sandbox remains"
    );
    assert!(harness.driver().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_removes_every_process_with_cgroup() {
    delete_removes_every_process(CgroupMode::Auto).await;
}

#[tokio::test]
async fn delete_removes_every_process_without_cgroup() {
    delete_removes_every_process(CgroupMode::Off).await;
}

async fn sigterm_ignored_until_grace(mode: CgroupMode) {
    let grace = Duration::from_secs(2);
    let mut harness = Harness::new(mode).await;
    let record = harness
        .create(
            &["sh", "-c", "trap '' TERM; echo trapped; sleep 1000"],
            grace,
        )
        .await;
    harness.wait_ready(&record).await;
    let log = PathBuf::from(&record.driver.attributes["log"]);
    harness.wait_file(&log).await;

    let started = Instant::now();
    harness.delete(&record, grace, false).await;
    harness
        .wait_for(&record, "terminating after SIGTERM", |observed| {
            matches!(observed, Observed::Present { terminating: Some(reason), .. } if reason == REASON_AFTER_SIGTERM)
        })
        .await;
    harness.wait_gone(&record).await;
    let elapsed = started.elapsed();

    assert!(
        elapsed >= grace,
        "killed after {elapsed:?}, before the grace period"
    );
    assert!(
        elapsed < grace + Duration::from_secs(5),
        "killed after {elapsed:?}, long after the grace period"
    );
}

#[tokio::test]
async fn sigterm_ignored_until_grace_with_cgroup() {
    sigterm_ignored_until_grace(CgroupMode::Auto).await;
}

#[tokio::test]
async fn sigterm_ignored_until_grace_without_cgroup() {
    sigterm_ignored_until_grace(CgroupMode::Off).await;
}

async fn setsid_descendants_are_deleted(mode: CgroupMode) {
    let mut harness = Harness::new(mode).await;
    // One daemon calls setsid from a background job; the other double-forks so that its
    // parent exits and it is re-parented to the supervisor.
    let script = "setsid sh -c 'echo $$ > direct.pid; exec sleep 1000' & \
                  ( setsid sh -c 'echo $$ > orphan.pid; exec sleep 1000' & ) ; \
                  exec sleep 1000";
    let record = harness.create(&["sh", "-c", script], GRACE).await;
    harness.wait_ready(&record).await;
    let work = harness.work_dir(&record);
    let mut daemons = Vec::new();
    for name in ["direct.pid", "orphan.pid"] {
        let pid: i32 = harness
            .wait_file(&work.join(name))
            .await
            .trim()
            .parse()
            .unwrap();
        harness.track(pid);
        daemons.push(pid);
    }
    let command = Harness::attribute(&record, "command_pid");
    for &daemon in &daemons {
        let (_, _, session, _) = stat_of(daemon).expect("daemon not running");
        assert_ne!(
            session,
            Harness::attribute(&record, "command_pid"),
            "daemon {daemon} did not leave the session"
        );
    }

    harness.delete(&record, GRACE, false).await;
    harness.wait_gone(&record).await;

    assert!(
        !is_running(command),
        "command {command} still runs after Gone"
    );
    for daemon in daemons {
        assert!(
            !is_running(daemon),
            "setsid daemon {daemon} still runs after Gone"
        );
    }
}

#[tokio::test]
async fn setsid_descendants_are_deleted_with_cgroup() {
    setsid_descendants_are_deleted(CgroupMode::Auto).await;
}

#[tokio::test]
async fn setsid_descendants_are_deleted_without_cgroup() {
    setsid_descendants_are_deleted(CgroupMode::Off).await;
}

#[tokio::test]
async fn exit_code_is_reported() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let record = harness
        .create(&["sh", "-c", "setsid sleep 1 & exit 3"], GRACE)
        .await;
    harness
        .wait_for(&record, "Exited(3)", |observed| {
            matches!(
                observed,
                Observed::Present {
                    status: LiveStatus::Exited(3),
                    ..
                }
            )
        })
        .await;
    let gone = harness.wait_gone(&record).await;
    assert_eq!(gone, Observed::Gone { exit_code: Some(3) });

    // An exited sandbox stays listed until it is deleted.
    let listed = harness.driver().list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].observed, Observed::Gone { exit_code: Some(3) });
}

#[tokio::test]
async fn force_delete_escalates_grace() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let record = harness
        .create(
            &["sh", "-c", "trap '' TERM; sleep 1000"],
            Duration::from_secs(30),
        )
        .await;
    harness.wait_ready(&record).await;

    harness
        .delete(&record, Duration::from_secs(30), false)
        .await;
    harness
        .wait_for(&record, "terminating after SIGTERM", |observed| {
            matches!(observed, Observed::Present { terminating: Some(reason), .. } if reason == REASON_AFTER_SIGTERM)
        })
        .await;
    let forced = Instant::now();
    harness.delete(&record, Duration::ZERO, true).await;
    harness.wait_gone(&record).await;
    assert!(
        forced.elapsed() < Duration::from_secs(5),
        "forced deletion took {:?}",
        forced.elapsed()
    );
}

#[tokio::test]
async fn restart_recognises_running_sandbox() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let record = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&record).await;
    let supervisor = Harness::attribute(&record, "pid");

    harness.restart(vec![record.clone()]).await;
    assert!(is_running(supervisor), "supervisor died with the driver");
    harness.wait_ready(&record).await;
    let observed = harness.driver().observe(&record).await.unwrap();
    assert!(
        matches!(
            observed,
            Observed::Present {
                status: LiveStatus::Ready(_),
                ..
            }
        ),
        "{observed:?}"
    );

    // A record whose creation a crash interrupted has no details, and is still found by id.
    let mut without_details = record.clone();
    without_details.driver = Default::default();
    let observed = harness.driver().observe(&without_details).await.unwrap();
    assert!(
        matches!(
            observed,
            Observed::Present {
                status: LiveStatus::Ready(_),
                ..
            }
        ),
        "{observed:?}"
    );

    let adopted = harness.driver().create(&record).await.unwrap();
    assert_eq!(
        adopted.attributes["pid"],
        supervisor.to_string(),
        "create started a second supervisor"
    );

    harness.delete(&record, GRACE, false).await;
    harness.wait_gone(&record).await;
    assert!(
        !is_running(supervisor),
        "supervisor {supervisor} still runs after Gone"
    );
}

#[tokio::test]
async fn reused_pid_is_not_alive() {
    let harness = Harness::new(CgroupMode::Off).await;
    let record = record(&["sleep", "1000"], GRACE);
    let dir = harness.driver().sandbox_dir(record.id);
    fs::create_dir_all(&dir).unwrap();
    // The handle names this test process, which runs, but with a start time it never had.
    let own = std::process::id() as i32;
    let (.., start_time) = stat_of(own).unwrap();
    let handle = format!(
        r#"{{"pid":{own},"start_time":{},"cgroup":null}}"#,
        start_time + 1
    );
    fs::write(dir.join("handle.json"), handle).unwrap();
    fs::write(
        dir.join("started.json"),
        format!(r#"{{"running":{{"pid":{own}}}}}"#),
    )
    .unwrap();

    let observed = harness.driver().observe(&record).await.unwrap();
    assert_eq!(observed, Observed::Gone { exit_code: None });
    assert!(is_running(own));
}

#[tokio::test]
async fn missing_command_is_reported() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let record = harness.create(&["sandgate-no-such-command"], GRACE).await;
    let observed = harness
        .wait_for(&record, "an error", |observed| {
            matches!(
                observed,
                Observed::Present {
                    status: LiveStatus::Error(_),
                    ..
                }
            )
        })
        .await;
    assert_eq!(
        observed,
        Observed::Present {
            status: LiveStatus::Error("command not found: sandgate-no-such-command".into()),
            terminating: None,
        }
    );

    harness.delete(&record, GRACE, false).await;
    assert_eq!(
        harness.wait_gone(&record).await,
        Observed::Gone { exit_code: None }
    );
}

#[tokio::test]
async fn validate_rejects_image_and_empty_command() {
    let harness = Harness::new(CgroupMode::Off).await;
    let mut with_image = record(&["sleep", "1"], GRACE);
    with_image.spec.image = Some("alpine".to_string());
    match harness.driver().validate(&with_image) {
        Err(DriverError::Unsupported { field, .. }) => assert_eq!(field, "spec.image"),
        other => panic!("expected Unsupported on spec.image, got {other:?}"),
    }
    let empty = record(&[], GRACE);
    match harness.driver().validate(&empty) {
        Err(DriverError::Unsupported { field, message }) => {
            assert_eq!(field, "spec.command");
            assert!(message.contains("command is required"), "{message}");
        }
        other => panic!("expected Unsupported on spec.command, got {other:?}"),
    }
}

#[tokio::test]
async fn orphan_delete_kills_at_once() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let record = harness
        .create(
            &["sh", "-c", "trap '' TERM; sleep 1000"],
            Duration::from_secs(60),
        )
        .await;
    harness.wait_ready(&record).await;
    let command = Harness::attribute(&record, "command_pid");
    let started = Instant::now();
    harness.driver().delete_orphan(record.id).await.unwrap();
    harness.wait_gone(&record).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(!is_running(command));
}
