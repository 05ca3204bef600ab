//! The `sandgate` command line against a real gateway: output formats, waits, exit codes and
//! bad input.

use std::process::Output;

use sandgate_e2e::gateway::{Gateway, sandgate_binary};
use sandgate_e2e::processes;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn id_of(gateway: &Gateway, name: &str) -> String {
    let output = gateway.cli(&["get", name, "-o", "json"]);
    assert!(output.status.success(), "get {name}: {}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    value["id"].as_str().unwrap().to_string()
}

#[test]
fn create_list_get_delete_round_trip() {
    let gateway = Gateway::start();
    let created = gateway.cli(&["create", "web", "--label", "team=ml", "--", "sleep", "1000"]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).contains("sandbox \"web\" created"),
        "{}",
        stdout(&created)
    );

    let listed = gateway.cli(&["list"]);
    assert!(listed.status.success());
    let table = stdout(&listed);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "PHASE", "AGE", "REASON"]);
    assert!(
        table.lines().any(|line| line.starts_with("web ")),
        "{table}"
    );

    let all = stdout(&gateway.cli(&["list", "-A"]));
    assert!(all.starts_with("WORKSPACE"), "{all}");

    let json = gateway.cli(&["list", "-l", "team=ml", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let array = value.as_array().expect("list -o json prints an array");
    assert_eq!(array.len(), 1);
    assert_eq!(array[0]["name"], "web");
    assert_eq!(array[0]["labels"]["team"], "ml");
    assert!(array[0]["createdAt"].as_str().unwrap().ends_with('Z'));

    let names = gateway.cli(&["list", "-o", "name"]);
    assert_eq!(stdout(&names), "sandbox/web\n");

    let none = gateway.cli(&["list", "-l", "team=other", "-o", "json"]);
    assert_eq!(stdout(&none).trim(), "[]");

    let id = id_of(&gateway, "web");
    let deleted = gateway.cli(&["delete", "web"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(stdout(&deleted).contains("deleted"), "{}", stdout(&deleted));
    assert!(processes::sandbox_processes(gateway.data_dir(), &id).is_empty());

    let missing = gateway.cli(&["get", "web"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );

    let removed = gateway.cli(&["get", "--id", &id]);
    assert_eq!(removed.status.code(), Some(1));
    assert!(
        stderr(&removed).contains(&format!("sandbox with id {id} not found: it was \"web\"")),
        "a get by the id of a removed sandbox says what it was: {}",
        stderr(&removed)
    );
    let again = gateway.cli(&["delete", "--id", &id]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("deleted"), "{}", stdout(&again));
}

#[test]
fn delete_waits_for_all_names_under_one_deadline() {
    let gateway = Gateway::start();
    for name in ["a", "b"] {
        let output = gateway.cli(&[
            "create",
            name,
            "--grace-period",
            "2s",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 1000",
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let started = std::time::Instant::now();
    let output = gateway.cli(&["delete", "a", "b", "--timeout", "30s"]);
    let elapsed = started.elapsed();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        text.lines().count(),
        2,
        "one result line per sandbox: {text}"
    );
    assert!(
        elapsed >= std::time::Duration::from_secs(2),
        "returned after {elapsed:?}"
    );
    // Both wait at once: well under two grace periods plus overhead.
    assert!(
        elapsed < std::time::Duration::from_secs(12),
        "took {elapsed:?}"
    );
}

#[test]
fn delete_of_missing_name_fails_naming_it() {
    let gateway = Gateway::start();
    let created = gateway.cli(&["create", "here", "--", "sleep", "1000"]);
    assert!(created.status.success());
    let output = gateway.cli(&["delete", "here", "absent"]);
    assert!(!output.status.success());
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(all.contains("\"absent\""), "{all}");
    assert!(all.contains("not found"), "{all}");

    let ignored = gateway.cli(&["delete", "absent", "--ignore-not-found"]);
    assert!(ignored.status.success(), "{}", stderr(&ignored));
}

#[test]
fn delete_timeout_names_what_remains() {
    let gateway = Gateway::start();
    let output = gateway.cli(&[
        "create",
        "slow",
        "--grace-period",
        "60s",
        "--",
        "sh",
        "-c",
        "trap '' TERM; sleep 1000",
    ]);
    assert!(output.status.success());
    let output = gateway.cli(&["delete", "slow", "--timeout", "2s"]);
    assert_eq!(output.status.code(), Some(4), "a timed-out wait exits 4");
    let message = stderr(&output);
    assert!(message.contains("still present"), "{message}");
    assert!(message.contains("SIGTERM"), "{message}");
    assert!(message.contains("the deletion continues"), "{message}");

    let listed = stdout(&gateway.cli(&["list"]));
    assert!(
        listed.contains("DELETING"),
        "the timeout ended the wait, not the deletion: {listed}"
    );

    // The shortest timeout still waits for its whole second.
    let started = std::time::Instant::now();
    let output = gateway.cli(&["delete", "slow", "--timeout", "1s"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "a 1s wait returned after {:?}",
        started.elapsed()
    );

    let forced = gateway.cli(&["delete", "slow", "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
}

#[test]
fn no_wait_delete_is_accepted() {
    let gateway = Gateway::start();
    assert!(
        gateway
            .cli(&["create", "nw", "--", "sleep", "1000"])
            .status
            .success()
    );
    let output = gateway.cli(&["delete", "nw", "--no-wait"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("accepted"), "{}", stdout(&output));

    let created = gateway.cli(&["create", "kw", "-o", "name", "--", "sleep", "1000"]);
    assert_eq!(stdout(&created), "sandbox/kw\n");
    let output = gateway.cli(&["delete", "kw", "--wait=false"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("accepted"), "{}", stdout(&output));
}

#[test]
fn bad_input_is_rejected_before_any_call() {
    // No gateway runs at this address: a call would fail with exit 3, not 2.
    let unreachable = "http://127.0.0.1:9";
    let cases: [(&[&str], &str); 6] = [
        (&["create", "Bad_Name", "--", "true"], "Bad_Name"),
        (&["list", "-l", "a in (b"], "a in (b"),
        (&["delete", "x", "--timeout", "0s"], "0s"),
        (&["delete", "x", "--timeout", "2h"], "2h"),
        (
            &["create", "ok", "--label", "novalue", "--", "true"],
            "novalue",
        ),
        (&["delete", "--id", "not-a-uuid"], "not-a-uuid"),
    ];
    for (args, value) in cases {
        let output = std::process::Command::new(sandgate_binary())
            .args(args)
            .env("SANDGATE_SERVER", unreachable)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains(value),
            "{args:?}: the error must name {value:?}: {message}"
        );
    }
}

#[test]
fn unreachable_server_is_reported() {
    let output = std::process::Command::new(sandgate_binary())
        .args(["list"])
        .env("SANDGATE_SERVER", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(
        message.contains("cannot reach sandgate at http://127.0.0.1:9"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
}

#[test]
fn serve_rejects_non_loopback_listen() {
    let output = std::process::Command::new(sandgate_binary())
        .args([
            "serve",
            "--listen",
            "0.0.0.0:7878",
            "--data-dir",
            "/nonexistent-sandgate",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("0.0.0.0:7878"), "{message}");
    assert!(message.contains("loopback"), "{message}");
}

#[test]
fn delete_by_selector_removes_matches_only() {
    let gateway = Gateway::start();
    for (name, team) in [("m1", "ml"), ("m2", "ml"), ("o1", "ops")] {
        let label = format!("team={team}");
        let output = gateway.cli(&["create", name, "--label", &label, "--", "sleep", "1000"]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let output = gateway.cli(&["delete", "-l", "team=ml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), 2, "{}", stdout(&output));

    let names: Vec<String> = stdout(&gateway.cli(&["list"]))
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(names, ["o1"]);

    let none = gateway.cli(&["delete", "-l", "team=ml"]);
    assert!(none.status.success());
    assert!(
        stderr(&none).contains("No sandboxes found"),
        "{}",
        stderr(&none)
    );

    let all = gateway.cli(&["delete", "--all"]);
    assert!(all.status.success(), "{}", stderr(&all));
    let empty = gateway.cli(&["list"]);
    assert_eq!(stdout(&empty), "", "an empty list prints no table");
    assert!(stderr(&empty).contains("No sandboxes found in workspace \"default\""));
}

#[test]
fn empty_workspace_variable_means_default() {
    let gateway = Gateway::start();
    assert!(
        gateway
            .cli(&["create", "here", "--", "sleep", "1000"])
            .status
            .success()
    );
    let output = std::process::Command::new(sandgate_binary())
        .args(["list"])
        .env("SANDGATE_SERVER", gateway.url())
        .env("SANDGATE_WORKSPACE", "")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("here"), "{}", stdout(&output));
}

#[test]
fn watch_json_prints_one_object_per_event() {
    use std::time::Duration;

    let gateway = Gateway::start();
    let created = gateway.cli(&["create", "seen", "--", "sleep", "1000"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let (mut watch, events) = spawn_json_watch(&gateway.url(), &["seen"]);
    let snapshot = events_until(&events, "WATCH_EVENT_TYPE_SYNCED", Duration::from_secs(20));
    assert_eq!(snapshot[0]["type"], "WATCH_EVENT_TYPE_ADDED");
    assert_eq!(snapshot[0]["sandbox"]["name"], "seen");
    assert_eq!(snapshot[0]["snapshot"], true);

    let deleted = gateway.cli(&["delete", "seen"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let rest = events_until(&events, "WATCH_EVENT_TYPE_DELETED", Duration::from_secs(20));
    assert!(
        rest.iter()
            .any(|event| event["sandbox"]["phase"] == "SANDBOX_PHASE_DELETING"),
        "the watch shows DELETING before DELETED: {rest:?}"
    );
    let status = exit_within(&mut watch, Duration::from_secs(20));
    assert!(
        status.success(),
        "the watch ends with 0 after DELETED: {status}"
    );
}

/// Runs `sandgate watch ARGS -o json` against `server`, and returns the child and a channel of
/// its parsed stdout lines.
fn spawn_json_watch(
    server: &str,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<serde_json::Value>,
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(sandgate_binary())
        .arg("watch")
        .args(args)
        .args(["-o", "json"])
        .env("SANDGATE_SERVER", server)
        .env_remove("SANDGATE_WORKSPACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let event = serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("each line is one JSON object ({error}): {line}"));
            if sender.send(event).is_err() {
                return;
            }
        }
    });
    (child, receiver)
}

/// Waits for `child` to exit, and fails the test if it runs for longer than `timeout`.
fn exit_within(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the watch did not end within {timeout:?} of its sandbox's DELETED event");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Receives events until one of `kind` arrives, within `timeout`, and returns all of them.
fn events_until(
    receiver: &std::sync::mpsc::Receiver<serde_json::Value>,
    kind: &str,
    timeout: std::time::Duration,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + timeout;
    let mut events = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match receiver.recv_timeout(left) {
            Ok(event) => {
                let done = event["type"] == kind;
                events.push(event);
                if done {
                    return events;
                }
            }
            Err(error) => panic!("no {kind} event within {timeout:?} ({error}): got {events:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_by_name_follows_its_sandbox_across_reconnects() {
    use std::time::Duration;

    use sandgate_e2e::tcp_proxy::TcpProxy;

    let gateway = Gateway::start();
    let upstream = gateway.url().trim_start_matches("http://").parse().unwrap();
    let proxy = TcpProxy::start(upstream).await.unwrap();
    let created = gateway.cli(&["create", "gen", "--", "sleep", "1000"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let first_id = id_of(&gateway, "gen");

    let (mut watch, events) = spawn_json_watch(&format!("http://{}", proxy.address()), &["gen"]);
    events_until(&events, "WATCH_EVENT_TYPE_SYNCED", Duration::from_secs(20));

    // While the watch is cut off, the sandbox is removed and a new one takes its name.
    proxy.cut();
    let deleted = gateway.cli(&["delete", "gen"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let again = gateway.cli(&["create", "gen", "--", "sleep", "1000"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let second_id = id_of(&gateway, "gen");
    proxy.restore();

    let seen = events_until(&events, "WATCH_EVENT_TYPE_DELETED", Duration::from_secs(40));
    let last = seen.last().unwrap();
    assert_eq!(
        last["sandbox"]["id"], first_id,
        "the DELETED event is the watched sandbox's: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|event| event["sandbox"]["id"] != second_id.as_str()),
        "the watch never shows the new sandbox that took the name: {seen:?}"
    );
    let status =
        tokio::task::spawn_blocking(move || exit_within(&mut watch, Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(
        status.success(),
        "the watch ends with 0 after DELETED: {status}"
    );
}
