//! End-to-end tests of the process driver with the real supervisor program, in a temporary data
//! directory. Every test kills whatever it started in a drop guard, even when it fails.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sandgate_core::{LiveStatus, Observed, SandboxRecord, SandboxSpec};
use sandgate_driver::{DeletePlan, Driver, DriverError, Observation};
use sandgate_process::{
    CgroupMode, ProcessDriver, ProcessDriverConfig, REASON_AFTER_SIGTERM, REASON_DIRECTORY_MISSING,
    REASON_STATE_UNREADABLE, REASON_SUPERVISOR_VANISHED,
};
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
        self.driver().work_dir(record.id)
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

// Faults a sandbox can cause itself: its command runs as the gateway's user, so it can rewrite,
// remove or plant files in its state directory and move itself between cgroups.

/// A cgroup this test creates next to the driver's base, killed and removed on drop.
struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    fn new(harness: &Harness, name: &str) -> TestCgroup {
        let parent = harness
            .cgroup_base
            .as_ref()
            .and_then(|base| base.parent())
            .expect("cgroup base has no parent")
            .to_path_buf();
        let path = parent.join(format!("sandgate-test-{name}-{}", std::process::id()));
        fs::create_dir_all(&path).unwrap();
        TestCgroup { path }
    }

    fn add(&self, pid: i32) {
        fs::write(self.path.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A process tree that is not part of any sandbox: `sh` waiting on a `sleep` child.
struct Decoy {
    child: std::process::Child,
    sleeper: i32,
}

impl Decoy {
    fn start() -> Decoy {
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 1000 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let sleeper = loop {
            if let Some(&sleeper) = descendants(pid).first() {
                break sleeper;
            }
            assert!(Instant::now() < deadline, "decoy sleep did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        Decoy { child, sleeper }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Writes the handle file the sandbox could write, naming this tree.
    fn forge_handle(&self, dir: &Path, cgroup: Option<&Path>) {
        let (.., start_time) = stat_of(self.pid()).unwrap();
        let handle = serde_json::json!({
            "pid": self.pid(),
            "start_time": start_time,
            "cgroup": cgroup,
        });
        fs::write(dir.join("handle.json"), handle.to_string()).unwrap();
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        kill(self.sleeper);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_present(observed: &Observed) -> bool {
    matches!(observed, Observed::Present { .. })
}

#[tokio::test]
async fn forged_handle_does_not_redirect_delete_with_cgroup() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let decoy = Decoy::start();
    let decoy_cgroup = TestCgroup::new(&harness, "decoy");
    decoy_cgroup.add(decoy.pid());
    decoy_cgroup.add(decoy.sleeper);

    let record = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&record).await;
    let supervisor = Harness::attribute(&record, "pid");
    let command = Harness::attribute(&record, "command_pid");
    decoy.forge_handle(
        &harness.driver().sandbox_dir(record.id),
        Some(&decoy_cgroup.path),
    );

    harness.delete(&record, Duration::ZERO, true).await;
    harness.wait_gone(&record).await;

    assert!(!is_running(command), "command {command} runs after Gone");
    assert!(
        !is_running(supervisor),
        "supervisor {supervisor} runs after Gone"
    );
    assert!(
        is_running(decoy.pid()),
        "the decoy named by the forged handle was killed"
    );
    assert!(is_running(decoy.sleeper), "the decoy's child was killed");
    assert!(
        decoy_cgroup.path.exists(),
        "the cgroup named by the forged handle was removed"
    );
}

#[tokio::test]
async fn forged_handle_does_not_redirect_delete_without_cgroup() {
    let mut harness = Harness::new(CgroupMode::Off).await;
    let decoy = Decoy::start();
    let record = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&record).await;
    let supervisor = Harness::attribute(&record, "pid");
    let command = Harness::attribute(&record, "command_pid");
    decoy.forge_handle(&harness.driver().sandbox_dir(record.id), None);

    // A new driver without records can find the supervisor only through the directory, as
    // after a crash between the spawn and the store write.
    harness.restart(Vec::new()).await;
    let mut without_details = record.clone();
    without_details.driver = Default::default();
    let observed = harness.driver().observe(&without_details).await.unwrap();
    assert!(is_present(&observed), "{observed:?}");

    harness.driver().delete_orphan(record.id).await.unwrap();
    harness.wait_gone(&record).await;

    assert!(!is_running(command), "command {command} runs after Gone");
    assert!(
        !is_running(supervisor),
        "supervisor {supervisor} runs after Gone"
    );
    assert!(
        is_running(decoy.pid()),
        "the decoy named by the forged handle was killed"
    );
    assert!(is_running(decoy.sleeper), "the decoy's child was killed");
}

async fn removed_directory_is_not_gone(mode: CgroupMode) {
    let mut harness = Harness::new(mode).await;
    let record = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&record).await;
    let supervisor = Harness::attribute(&record, "pid");
    let command = Harness::attribute(&record, "command_pid");
    fs::remove_dir_all(harness.driver().sandbox_dir(record.id)).unwrap();

    let observed = harness.driver().observe(&record).await.unwrap();
    assert_eq!(
        observed,
        Observed::Present {
            status: LiveStatus::Unknown(REASON_DIRECTORY_MISSING.into()),
            terminating: None,
        }
    );
    let listed = harness.driver().list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|found| found.id == record.id && is_present(&found.observed)),
        "list lacks the sandbox without a directory: {listed:?}"
    );

    if mode == CgroupMode::Auto {
        // Without any record, only the cgroup is left to find it by.
        harness.restart(Vec::new()).await;
        let listed = harness.driver().list().await.unwrap();
        assert!(
            listed
                .iter()
                .any(|found| found.id == record.id && is_present(&found.observed)),
            "list lacks the orphan cgroup: {listed:?}"
        );
        harness.driver().delete_orphan(record.id).await.unwrap();
    } else {
        harness.delete(&record, Duration::ZERO, true).await;
    }
    harness.wait_gone(&record).await;

    assert!(!is_running(command), "command {command} runs after Gone");
    assert!(
        !is_running(supervisor),
        "supervisor {supervisor} runs after Gone"
    );
    assert!(
        !harness.driver().work_dir(record.id).exists(),
        "working directory remains after Gone"
    );
}

#[tokio::test]
async fn removed_directory_is_not_gone_with_cgroup() {
    removed_directory_is_not_gone(CgroupMode::Auto).await;
}

#[tokio::test]
async fn removed_directory_is_not_gone_without_cgroup() {
    removed_directory_is_not_gone(CgroupMode::Off).await;
}

#[tokio::test]
async fn garbage_state_file_does_not_break_list() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let bad = harness.create(&["sleep", "1000"], GRACE).await;
    let good = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&bad).await;
    let command = Harness::attribute(&bad, "command_pid");
    fs::write(
        harness.driver().sandbox_dir(bad.id).join("started.json"),
        "garbage\n",
    )
    .unwrap();

    let listed = harness.driver().list().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let bad_found = listed.iter().find(|found| found.id == bad.id).unwrap();
    assert!(
        matches!(
            &bad_found.observed,
            Observed::Present { status: LiveStatus::Unknown(reason), .. }
                if reason.starts_with(REASON_STATE_UNREADABLE)
        ),
        "{:?}",
        bad_found.observed
    );
    let good_found = listed.iter().find(|found| found.id == good.id).unwrap();
    assert!(
        matches!(
            good_found.observed,
            Observed::Present {
                status: LiveStatus::Ready(_),
                ..
            }
        ),
        "{:?}",
        good_found.observed
    );

    harness.delete(&bad, Duration::from_secs(2), false).await;
    harness.wait_gone(&bad).await;
    assert!(!is_running(command), "command {command} runs after Gone");
    let listed = harness.driver().list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, good.id);
}

#[tokio::test]
async fn escaped_process_is_killed_on_delete() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let escape = TestCgroup::new(&harness, "escape");
    // The escaped process leaves the session and ignores SIGTERM, so only a SIGKILL by pid
    // reaches it.
    let script = format!(
        "setsid sh -c \"trap '' TERM; echo \\$\\$ > {procs}; echo \\$\\$ > escaped.pid; \
         exec sleep 1000\" & exec sleep 1000",
        procs = escape.path.join("cgroup.procs").display()
    );
    let record = harness.create(&["sh", "-c", &script], GRACE).await;
    harness.wait_ready(&record).await;
    let escaped: i32 = harness
        .wait_file(&harness.work_dir(&record).join("escaped.pid"))
        .await
        .trim()
        .parse()
        .unwrap();
    harness.track(escaped);
    let members = fs::read_to_string(escape.path.join("cgroup.procs")).unwrap();
    assert!(
        members.lines().any(|line| line == escaped.to_string()),
        "process {escaped} did not leave the sandbox cgroup: {members:?}"
    );

    harness.delete(&record, Duration::ZERO, true).await;
    harness.wait_gone(&record).await;
    assert!(
        !is_running(escaped),
        "process {escaped} that left the sandbox cgroup runs after Gone"
    );
}

#[tokio::test]
async fn garbage_control_file_does_not_block_delete() {
    let mut harness = Harness::new(CgroupMode::Off).await;
    let record = harness
        .create(&["sh", "-c", "trap '' TERM; sleep 1000"], GRACE)
        .await;
    harness.wait_ready(&record).await;
    let command = Harness::attribute(&record, "command_pid");
    fs::write(
        harness.driver().sandbox_dir(record.id).join("control.json"),
        "garbage\n",
    )
    .unwrap();

    let started = Instant::now();
    harness.delete(&record, Duration::ZERO, true).await;
    harness.wait_gone(&record).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "forced deletion took {:?}",
        started.elapsed()
    );
    assert!(!is_running(command), "command {command} runs after Gone");
}

#[tokio::test]
async fn planted_temp_symlink_is_not_followed() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let victims = tempfile::tempdir().unwrap();
    let victim = victims.path().join("victim.txt");
    let linked_victim = victims.path().join("linked.txt");
    let forged_started = victims.path().join("started.json");
    fs::write(&victim, "precious\n").unwrap();
    fs::write(&linked_victim, "precious too\n").unwrap();
    fs::write(&forged_started, r#"{"failed":{"message":"forged"}}"#).unwrap();

    let record = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&record).await;
    let dir = harness.driver().sandbox_dir(record.id);
    let temp_name = format!(".control.json.{}.tmp", std::process::id());
    std::os::unix::fs::symlink(&victim, dir.join(temp_name)).unwrap();
    std::os::unix::fs::symlink(&linked_victim, dir.join("control.json")).unwrap();
    fs::remove_file(dir.join("started.json")).unwrap();
    std::os::unix::fs::symlink(&forged_started, dir.join("started.json")).unwrap();

    let observed = harness.driver().observe(&record).await.unwrap();
    assert!(
        matches!(
            &observed,
            Observed::Present { status: LiveStatus::Unknown(reason), .. }
                if reason.starts_with(REASON_STATE_UNREADABLE)
        ),
        "a state file was read through a symbolic link: {observed:?}"
    );

    harness.delete(&record, Duration::ZERO, true).await;
    harness.wait_gone(&record).await;
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        fs::read_to_string(&linked_victim).unwrap(),
        "precious too\n"
    );
    let names: Vec<_> = fs::read_dir(victims.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "files appeared next to the victims: {names:?}"
    );
}

#[tokio::test]
async fn work_dir_is_outside_state_dir() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    // Relative writes that once landed on the state files.
    let record = harness
        .create(
            &[
                "sh",
                "-c",
                "echo garbage > ../control.json; echo garbage > ../started.json; exec sleep 1000",
            ],
            GRACE,
        )
        .await;
    harness.wait_ready(&record).await;
    let command = Harness::attribute(&record, "command_pid");
    let state_dir = harness.driver().sandbox_dir(record.id);
    let work = harness.work_dir(&record);
    let cwd = fs::read_link(format!("/proc/{command}/cwd")).unwrap();
    assert_eq!(cwd, work);
    assert!(
        !work.starts_with(&state_dir),
        "{} is inside {}",
        work.display(),
        state_dir.display()
    );
    assert!(!state_dir.join("work").exists());
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

    harness.delete(&record, GRACE, false).await;
    harness.wait_gone(&record).await;
    assert!(!state_dir.exists(), "state directory remains after Gone");
    assert!(!work.exists(), "working directory remains after Gone");
}

#[tokio::test]
async fn killed_supervisor_is_reported_as_error() {
    let mut harness = Harness::new(CgroupMode::Auto).await;
    let record = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&record).await;
    let supervisor = Harness::attribute(&record, "pid");
    let command = Harness::attribute(&record, "command_pid");
    let cgroup = PathBuf::from(&record.driver.attributes["cgroup"]);

    kill(supervisor);
    harness
        .wait_for(&record, "supervisor vanished", |observed| {
            *observed
                == Observed::Present {
                    status: LiveStatus::Error(REASON_SUPERVISOR_VANISHED.into()),
                    terminating: None,
                }
        })
        .await;
    assert!(
        is_running(command),
        "command {command} died with the supervisor"
    );

    harness.delete(&record, Duration::ZERO, true).await;
    harness.wait_gone(&record).await;
    assert!(!is_running(command), "command {command} runs after Gone");
    assert!(!cgroup.exists(), "sandbox cgroup remains after Gone");
}

#[tokio::test]
async fn interrupted_removal_leaves_nothing_listed() {
    let mut harness = Harness::new(CgroupMode::Off).await;
    let removed = harness.create(&["sleep", "1000"], GRACE).await;
    harness.wait_ready(&removed).await;
    harness.delete(&removed, Duration::from_secs(2), true).await;
    harness.wait_gone(&removed).await;

    // A removal killed after its rename leaves this, with part of the state files.
    let sandboxes = harness.data_dir.path().join("sandboxes");
    let leftover = sandboxes.join(format!(".removing-{}", removed.id));
    fs::create_dir(&leftover).unwrap();
    fs::write(leftover.join("started.json"), "{}").unwrap();
    harness.restart(Vec::new()).await;

    assert!(
        !leftover.exists(),
        "a restart removes what an interrupted removal left"
    );
    let listed = harness.driver().list().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
