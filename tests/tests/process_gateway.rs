//! End-to-end tests of `sandgate serve` on the process driver: the real binary on a free loopback
//! port, driven by the generated client and the real CLI.

use std::time::{Duration, Instant};

use sandgate_e2e::api::{self, by_id, by_name, create, delete_request, phase, wait_ready};
use sandgate_e2e::gateway::{Gateway, GatewayOptions};
use sandgate_e2e::processes;
use sandgate_proto::v1 as pb;
use tonic::Code;

const LONG: Duration = Duration::from_secs(60);

fn grace(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// Asserts that no process of sandbox `id` remains.
fn assert_no_processes(gateway: &Gateway, id: &str) {
    let left = processes::sandbox_processes(gateway.data_dir(), id);
    assert!(left.is_empty(), "sandbox {id} still has processes {left:?}");
}

#[tokio::test]
async fn create_ready_then_delete_waits() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;

    let sandbox = create(&mut client, "web", &["sleep", "1000"], grace(10)).await;
    assert_eq!(sandbox.workspace, "default");
    assert!(uuid_like(&sandbox.id), "id {} is not a UUID", sandbox.id);
    let ready = wait_ready(&mut client, &sandbox.id).await;
    assert_eq!(ready.phase_reason, "command running");
    let pids = processes::sandbox_processes(gateway.data_dir(), &sandbox.id);
    assert!(
        pids.len() >= 2,
        "expected a supervisor and a command, found {pids:?}"
    );

    let response = client
        .delete_sandbox(delete_request(by_name("web"), true, LONG))
        .await
        .expect("waiting delete succeeds")
        .into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    assert_eq!(response.id, sandbox.id);
    assert_no_processes(&gateway, &sandbox.id);
    for pid in pids {
        assert!(
            !processes::is_alive(pid),
            "pid {pid} outlived the confirmed deletion"
        );
    }
    assert!(api::get(&mut client, &sandbox.id).await.is_none());
}

#[tokio::test]
async fn no_wait_delete_shows_deleting_with_reason() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let argv = ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"];
    let sandbox = create(&mut client, "stubborn", &argv, grace(3)).await;
    wait_ready(&mut client, &sandbox.id).await;

    let started = Instant::now();
    let response = client
        .delete_sandbox(delete_request(by_name("stubborn"), false, LONG))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Accepted as i32);
    let record = response.sandbox.unwrap();
    assert_eq!(phase(&record), pb::SandboxPhase::Deleting);
    assert!(record.deletion_requested_at.is_some());

    let listed = client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let entry = listed
        .sandboxes
        .iter()
        .find(|s| s.id == sandbox.id)
        .expect("a DELETING sandbox is listed");
    assert_eq!(phase(entry), pb::SandboxPhase::Deleting);
    assert!(!entry.phase_reason.is_empty(), "DELETING needs a reason");

    let deleting = api::wait_until(&mut client, &sandbox.id, LONG, "waiting on SIGTERM", |s| {
        s.phase_reason.contains("SIGTERM")
    })
    .await;
    assert_eq!(phase(&deleting), pb::SandboxPhase::Deleting);

    let output = gateway.cli(&["list", "-o", "json"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("SANDBOX_PHASE_DELETING"),
        "list -o json: {text}"
    );

    let waited = client
        .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
            id: sandbox.id.clone(),
            timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waited.outcome, pb::DeleteOutcome::Deleted as i32);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= grace(3),
        "removed after {elapsed:?}, before the 3 s grace period"
    );
    assert!(
        elapsed < grace(3) + Duration::from_secs(15),
        "removal took {elapsed:?}"
    );
    assert_no_processes(&gateway, &sandbox.id);

    assert!(api::get(&mut client, &sandbox.id).await.is_none());
    let listed = client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sandboxes.iter().all(|s| s.id != sandbox.id));
}

#[tokio::test]
async fn setsid_descendant_is_gone_at_return() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    // The daemon leaves the command's session and process group, and survives the command.
    let argv = [
        "sh",
        "-c",
        "setsid sh -c 'trap \"\" TERM; sleep 1000' & sleep 1000",
    ];
    let sandbox = create(&mut client, "daemon", &argv, grace(2)).await;
    wait_ready(&mut client, &sandbox.id).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let daemon = loop {
        let handle = processes::handle(gateway.data_dir(), &sandbox.id).expect("handle");
        let escaped = processes::descendants(handle.pid)
            .into_iter()
            .filter_map(processes::stat)
            .find(|s| s.session != handle.pid && s.session == s.pid);
        if let Some(process) = escaped {
            break process.pid;
        }
        assert!(
            Instant::now() < deadline,
            "the setsid descendant never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let started = Instant::now();
    client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await
        .expect("waiting delete succeeds");
    let elapsed = started.elapsed();
    assert!(
        !processes::is_alive(daemon),
        "the setsid daemon {daemon} outlived the deletion"
    );
    assert!(
        elapsed >= grace(2),
        "a TERM-ignoring daemon was gone after {elapsed:?}"
    );
    assert_no_processes(&gateway, &sandbox.id);
}

#[tokio::test]
async fn exited_command_records_code() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "job", &["sh", "-c", "exit 3"], grace(1)).await;
    let exited = api::wait_until(&mut client, &sandbox.id, LONG, "EXITED", |s| {
        phase(s) == pb::SandboxPhase::Exited
    })
    .await;
    assert_eq!(exited.exit_code, Some(3));
    assert_eq!(exited.phase_reason, "command exited with status 3");

    let again = api::get(&mut client, &sandbox.id)
        .await
        .expect("EXITED stays");
    assert_eq!(phase(&again), pb::SandboxPhase::Exited);

    let response = client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
}

#[tokio::test]
async fn recreate_while_deleting_is_rejected() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
    let first = create(&mut client, "same", &argv, grace(2)).await;
    wait_ready(&mut client, &first.id).await;
    client
        .delete_sandbox(delete_request(by_id(&first.id), false, LONG))
        .await
        .unwrap();

    let status = client
        .create_sandbox(api::create_request("same", &["sleep", "1"], grace(1)))
        .await
        .expect_err("the name is still held");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    assert!(
        status.message().contains("still being deleted"),
        "{}",
        status.message()
    );
    assert!(status.message().contains(&first.id), "{}", status.message());

    client
        .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
            id: first.id.clone(),
            timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
        })
        .await
        .unwrap();
    let second = create(&mut client, "same", &["sleep", "1000"], grace(1)).await;
    assert_ne!(second.id, first.id);

    let from_tombstone = client
        .delete_sandbox(delete_request(by_id(&first.id), true, LONG))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_tombstone.outcome, pb::DeleteOutcome::Deleted as i32);
    assert_eq!(from_tombstone.id, first.id);
    assert!(from_tombstone.tombstone.is_some());
    let still = api::get(&mut client, &second.id)
        .await
        .expect("the new sandbox is untouched");
    assert_ne!(phase(&still), pb::SandboxPhase::Deleting);

    let by_old_name = client
        .get_sandbox(pb::GetSandboxRequest {
            target: by_name("same"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_old_name.id, second.id);
}

#[tokio::test]
async fn concurrent_deletes_share_one_removal() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
    let sandbox = create(&mut client, "shared", &argv, grace(2)).await;
    wait_ready(&mut client, &sandbox.id).await;

    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..50 {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let response = client
                .delete_sandbox(delete_request(by_name("shared"), true, LONG))
                .await;
            (response, Instant::now())
        }));
    }
    let mut removed_at = Vec::new();
    for call in calls {
        let (response, at) = call.await.unwrap();
        let response = response
            .expect("every concurrent delete succeeds")
            .into_inner();
        assert_eq!(response.id, sandbox.id);
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        removed_at.push(at);
    }
    for at in removed_at {
        assert!(
            at - started >= grace(2),
            "a delete returned before the grace period ended"
        );
    }
    assert_no_processes(&gateway, &sandbox.id);
}

/// Thousands of calls on one connection: with no stream limit, h2 closed the connection with
/// GOAWAY ENHANCE_YOUR_CALM once about 2,700 requests sat unread, and every call failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_waits_share_one_connection() {
    const CALLS: usize = 4000;
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
    let sandbox = create(&mut client, "crowd", &argv, grace(2)).await;
    wait_ready(&mut client, &sandbox.id).await;

    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let mut client = client.clone();
        let id = sandbox.id.clone();
        calls.push(tokio::spawn(async move {
            client
                .delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
        }));
    }
    let mut failures = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(response) => assert_eq!(
                response.into_inner().outcome,
                pb::DeleteOutcome::Deleted as i32
            ),
            Err(status) => failures.push(status),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CALLS} calls on one connection failed, the first with: {}",
        failures.len(),
        failures[0]
    );
    assert_no_processes(&gateway, &sandbox.id);
}

#[tokio::test]
async fn wait_timeout_reports_reason() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
    let sandbox = create(&mut client, "slow", &argv, grace(30)).await;
    wait_ready(&mut client, &sandbox.id).await;

    let started = Instant::now();
    let status = client
        .delete_sandbox(delete_request(
            by_id(&sandbox.id),
            true,
            Duration::from_secs(2),
        ))
        .await
        .expect_err("the wait times out");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(
        elapsed >= Duration::from_secs(2),
        "timed out after {elapsed:?}"
    );
    assert!(
        status.message().contains("still present"),
        "{}",
        status.message()
    );
    let details = sandgate_proto::deletion_status(&status).expect("DeletionStatus details");
    assert_eq!(details.id, sandbox.id);
    assert_eq!(details.phase, pb::SandboxPhase::Deleting as i32);
    assert!(!details.phase_reason.is_empty());

    // The timeout ended the wait, not the deletion: force finishes it.
    let mut forced = delete_request(by_id(&sandbox.id), true, LONG);
    forced.force = true;
    let started = Instant::now();
    let response = client.delete_sandbox(forced).await.unwrap().into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "force took {:?}",
        started.elapsed()
    );
    assert_eq!(
        response.tombstone.unwrap().path,
        pb::RemovalPath::Force as i32
    );
    assert_no_processes(&gateway, &sandbox.id);
}

#[tokio::test]
async fn timeout_out_of_range_is_invalid() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "bounds", &["sleep", "1000"], grace(1)).await;
    for timeout in [Duration::from_millis(500), Duration::from_secs(3601)] {
        let status = client
            .delete_sandbox(delete_request(by_id(&sandbox.id), true, timeout))
            .await
            .expect_err("out-of-range timeout");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("timeout:"),
            "{}",
            status.message()
        );
    }
    let unchanged = api::get(&mut client, &sandbox.id).await.unwrap();
    assert_ne!(
        phase(&unchanged),
        pb::SandboxPhase::Deleting,
        "a rejected delete acted"
    );

    let status = client
        .create_sandbox(api::create_request("Bad_Name", &["true"], grace(1)))
        .await
        .expect_err("invalid name");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("\"Bad_Name\""),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn crash_after_delete_commit_converges() {
    let mut gateway = Gateway::start_with(GatewayOptions {
        env: vec![(
            "SANDGATE_TEST_FAULT".into(),
            "abort-after-delete-commit".into(),
        )],
        ..Default::default()
    });
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "crash", &["sleep", "1000"], grace(1)).await;
    wait_ready(&mut client, &sandbox.id).await;

    let result = client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await;
    assert!(result.is_err(), "the gateway crashed during the call");
    let status = gateway.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "the fault hook aborts the gateway");
    assert!(
        !processes::sandbox_processes(gateway.data_dir(), &sandbox.id).is_empty(),
        "the crash came before any signal, so the sandbox still runs"
    );

    gateway.restart_with_env(Vec::new());
    let mut client = gateway.client().await;
    let response = client
        .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
            id: sandbox.id.clone(),
            timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
        })
        .await
        .expect("a new waiter by id returns")
        .into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    assert_no_processes(&gateway, &sandbox.id);
}

#[tokio::test]
async fn crash_after_create_commit_converges() {
    let mut gateway = Gateway::start_with(GatewayOptions {
        env: vec![(
            "SANDGATE_TEST_FAULT".into(),
            "abort-after-create-commit".into(),
        )],
        ..Default::default()
    });
    let mut client = gateway.client().await;
    let result = client
        .create_sandbox(api::create_request("half", &["sleep", "1000"], grace(1)))
        .await;
    assert!(result.is_err(), "the gateway crashed during the call");
    gateway.wait_exit(Duration::from_secs(10));

    gateway.restart_with_env(Vec::new());
    let mut client = gateway.client().await;
    let record = client
        .get_sandbox(pb::GetSandboxRequest {
            target: by_name("half"),
        })
        .await
        .expect("the committed record survives the crash")
        .into_inner();
    let settled = api::wait_until(&mut client, &record.id, LONG, "settled", |s| {
        phase(s) != pb::SandboxPhase::Provisioning
    })
    .await;
    assert_eq!(phase(&settled), pb::SandboxPhase::Error, "{settled:?}");
    assert!(
        settled.phase_reason.contains("interrupted"),
        "{}",
        settled.phase_reason
    );
    assert_no_processes(&gateway, &record.id);

    let response = client
        .delete_sandbox(delete_request(by_id(&record.id), true, LONG))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
}

#[tokio::test]
async fn sandboxes_outlive_gateway_restart() {
    let mut gateway = Gateway::start();
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "durable", &["sleep", "1000"], grace(1)).await;
    wait_ready(&mut client, &sandbox.id).await;
    let before = processes::sandbox_processes(gateway.data_dir(), &sandbox.id);

    gateway.kill();
    for pid in &before {
        assert!(processes::is_alive(*pid), "pid {pid} died with the gateway");
    }
    gateway.restart();
    let mut client = gateway.client().await;
    let after = api::get(&mut client, &sandbox.id)
        .await
        .expect("record survives");
    assert_eq!(phase(&after), pb::SandboxPhase::Ready);

    let response = client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    for pid in &before {
        assert!(
            !processes::is_alive(*pid),
            "pid {pid} outlived the deletion"
        );
    }
}

/// Returns the CPU time that process `pid` has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends with the last ')': utime is field 14 and
    // stime field 15, in clock ticks.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf takes a plain integer and has no memory effects.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// A restart with an EXITED sandbox once made its watcher start itself again in a loop. The
/// gateway then used both cores and reported new sandboxes' changes half a minute late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_exited_sandbox_stays_idle() {
    let mut gateway = Gateway::start();
    let mut client = gateway.client().await;
    let done = create(&mut client, "done", &["true"], grace(1)).await;
    api::wait_until(&mut client, &done.id, LONG, "EXITED", |s| {
        phase(s) == pb::SandboxPhase::Exited
    })
    .await;

    gateway.kill();
    let mark = gateway.log_mark();
    gateway.restart();
    gateway
        .wait_for_log_since(mark, "Reconciler pass finished", LONG)
        .await;
    let pid = gateway.pid();
    let before = cpu_time(pid);
    let started = Instant::now();
    let mut client = gateway.client().await;
    let fresh = create(&mut client, "fresh", &["sleep", "1000"], grace(1)).await;
    wait_ready(&mut client, &fresh.id).await;
    // Measure over at least 2 s, so that a busy loop shows however fast the create was.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    let used = cpu_time(pid) - before;
    let elapsed = started.elapsed();
    assert!(
        used < elapsed / 2,
        "the gateway used {used:?} of CPU in {elapsed:?} after a restart with an EXITED sandbox"
    );

    for id in [&done.id, &fresh.id] {
        let response = client
            .delete_sandbox(delete_request(by_id(id), true, LONG))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_waiters_unavailable() {
    let mut gateway = Gateway::start();
    let mut client = gateway.client().await;
    let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
    let sandbox = create(&mut client, "linger", &argv, grace(60)).await;
    wait_ready(&mut client, &sandbox.id).await;
    client
        .delete_sandbox(delete_request(by_id(&sandbox.id), false, LONG))
        .await
        .unwrap();

    let mut waiter_client = client.clone();
    let id = sandbox.id.clone();
    let waiter = tokio::spawn(async move {
        waiter_client
            .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
                id,
                timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
            })
            .await
    });
    gateway
        .wait_for_log("Waiting for removal", Duration::from_secs(10))
        .await;
    let status = gateway.terminate(Duration::from_secs(20));
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
    let answer = waiter.await.unwrap().expect_err("the waiter is answered");
    assert_eq!(answer.code(), Code::Unavailable, "{answer}");
    assert!(
        !processes::sandbox_processes(gateway.data_dir(), &sandbox.id).is_empty(),
        "sandboxes keep running after SIGTERM of the gateway"
    );
    let base = processes::cgroup_base(gateway.data_dir()).expect("cgroup2 is mounted");
    assert!(
        base.join(&sandbox.id).is_dir(),
        "a running sandbox keeps its cgroup after the gateway stops"
    );
}

#[tokio::test]
async fn stopped_gateway_leaves_no_empty_cgroup() {
    let mut gateway = Gateway::start();
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "brief", &["sleep", "1000"], grace(1)).await;
    client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await
        .unwrap();
    let base = processes::cgroup_base(gateway.data_dir()).expect("cgroup2 is mounted");
    assert!(base.is_dir(), "the driver made {}", base.display());

    let status = gateway.terminate(Duration::from_secs(20));
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
    assert!(
        !base.exists(),
        "{} is left after the gateway stopped with no sandbox",
        base.display()
    );
}

#[tokio::test]
async fn second_serve_on_same_dir_fails() {
    let gateway = Gateway::start();
    let output = std::process::Command::new(sandgate_e2e::gateway::sandgate_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(gateway.data_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another sandgate serve"),
        "{stderr}"
    );
    assert!(stderr.contains(&gateway.pid().to_string()), "{stderr}");
}

#[tokio::test]
async fn watch_streams_lifecycle_events() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let existing = create(&mut client, "before", &["sleep", "1000"], grace(1)).await;

    let mut stream = client
        .watch_sandboxes(pb::WatchSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = api::next_event(&mut stream).await.expect("snapshot event");
    assert_eq!(first.r#type, pb::WatchEventType::Added as i32);
    assert!(first.snapshot);
    assert_eq!(first.sandbox.unwrap().id, existing.id);
    let synced = api::next_event(&mut stream).await.expect("synced event");
    assert_eq!(synced.r#type, pb::WatchEventType::Synced as i32);
    assert!(
        synced.snapshot,
        "the SYNCED event that ends a snapshot is not marked"
    );

    let sandbox = create(&mut client, "during", &["sleep", "1000"], grace(1)).await;
    client
        .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
        .await
        .unwrap();

    let mut kinds = Vec::new();
    let mut last_revision = synced.revision;
    while let Some(event) = tokio::time::timeout(LONG, api::next_event(&mut stream))
        .await
        .expect("events arrive")
    {
        assert!(event.revision > last_revision, "revisions increase");
        last_revision = event.revision;
        let target = event.sandbox.as_ref().unwrap();
        if target.id != sandbox.id {
            continue;
        }
        kinds.push(event.r#type);
        if event.r#type == pb::WatchEventType::Deleted as i32 {
            assert_eq!(
                target.phase_reason, "removal confirmed",
                "a live DELETED event reads as one from a tombstone"
            );
            break;
        }
    }
    assert_eq!(kinds.first(), Some(&(pb::WatchEventType::Added as i32)));
    assert!(kinds.contains(&(pb::WatchEventType::Modified as i32)));
    assert_eq!(kinds.last(), Some(&(pb::WatchEventType::Deleted as i32)));

    // A watch of a tombstoned id sends DELETED at once and ends.
    let mut tombstoned = client
        .watch_sandboxes(pb::WatchSandboxesRequest {
            target: Some(pb::watch_sandboxes_request::Target::Id(sandbox.id.clone())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let event = api::next_event(&mut tombstoned).await.expect("DELETED");
    assert_eq!(event.r#type, pb::WatchEventType::Deleted as i32);
    assert_eq!(event.sandbox.unwrap().phase_reason, "removal confirmed");
    assert!(
        api::next_event(&mut tombstoned).await.is_none(),
        "the stream ends"
    );

    // Resuming from a revision in the window replays only what came after it.
    let mut resumed = client
        .watch_sandboxes(pb::WatchSandboxesRequest {
            resume_revision: synced.revision,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let replayed = api::next_event(&mut resumed).await.expect("replayed event");
    assert!(!replayed.snapshot);
    assert_eq!(replayed.sandbox.unwrap().id, sandbox.id);
    let replay_synced = loop {
        let event = api::next_event(&mut resumed).await.expect("replay ends");
        if event.r#type == pb::WatchEventType::Synced as i32 {
            break event;
        }
    };
    assert!(
        !replay_synced.snapshot,
        "the SYNCED event of a replay is marked as a snapshot"
    );

    let unknown = client
        .watch_sandboxes(pb::WatchSandboxesRequest {
            target: Some(pb::watch_sandboxes_request::Target::Name("nobody".into())),
            ..Default::default()
        })
        .await
        .expect_err("unknown name");
    assert_eq!(unknown.code(), Code::NotFound);
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().nth(14) == Some('4')
}
