//! Load and race checks on the process driver: many waiters on one deletion, many deletions at
//! once, callers that go away mid-wait, and reads that must never go backwards.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sandgate_e2e::api::{self, by_id, create, delete_request, phase, wait_ready};
use sandgate_e2e::gateway::Gateway;
use sandgate_e2e::processes;
use sandgate_proto::v1 as pb;

const LONG: Duration = Duration::from_secs(120);

fn wait_request(id: &str) -> pb::WaitSandboxDeletedRequest {
    pb::WaitSandboxDeletedRequest {
        id: id.to_string(),
        timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_waiters_share_one_removal() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
    let sandbox = create(&mut client, "crowd", &argv, Duration::from_secs(2)).await;
    wait_ready(&mut client, &sandbox.id).await;
    let started = Instant::now();
    client
        .delete_sandbox(delete_request(by_id(&sandbox.id), false, LONG))
        .await
        .unwrap();

    let mut waiters = Vec::new();
    for index in 0..1000 {
        // Spread the waiters over a few connections, as separate clients would be.
        let mut client = if index % 4 == 0 {
            gateway.client().await
        } else {
            client.clone()
        };
        let id = sandbox.id.clone();
        waiters.push(tokio::spawn(async move {
            let response = client.wait_sandbox_deleted(wait_request(&id)).await;
            (response, started.elapsed())
        }));
    }
    for waiter in waiters {
        let (response, elapsed) = tokio::time::timeout(LONG, waiter)
            .await
            .expect("no waiter hangs")
            .unwrap();
        let response = response.expect("every waiter succeeds").into_inner();
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        assert!(
            elapsed >= Duration::from_secs(2),
            "a waiter returned after {elapsed:?}"
        );
    }
    assert!(processes::sandbox_processes(gateway.data_dir(), &sandbox.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_deletions_at_once() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let mut ids = Vec::new();
    for index in 0..200 {
        let name = format!("many-{index}");
        ids.push(
            create(
                &mut client,
                &name,
                &["sleep", "1000"],
                Duration::from_secs(1),
            )
            .await
            .id,
        );
    }
    for id in &ids {
        wait_ready(&mut client, id).await;
    }

    let mut calls = Vec::new();
    for id in ids.clone() {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            client
                .delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
                .map(|response| response.into_inner())
        }));
    }
    for call in calls {
        let response = tokio::time::timeout(LONG, call)
            .await
            .expect("no deletion hangs")
            .unwrap()
            .expect("every deletion succeeds");
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        assert!(
            processes::sandbox_processes(gateway.data_dir(), &response.id).is_empty(),
            "sandbox {} has processes after its confirmed deletion",
            response.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waits_still_complete() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
    let mut ids = Vec::new();
    for index in 0..5 {
        let name = format!("gone-{index}");
        let sandbox = create(&mut client, &name, &argv, Duration::from_secs(2)).await;
        wait_ready(&mut client, &sandbox.id).await;
        ids.push(sandbox.id);
    }

    // Each caller uses a connection of its own and goes away in the middle of its wait.
    let mut callers = Vec::new();
    for id in &ids {
        let mut own = gateway.client().await;
        let id = id.clone();
        callers.push(tokio::spawn(async move {
            own.delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &ids {
        loop {
            let record = api::get(&mut client, id).await.expect("still recorded");
            if phase(&record) == pb::SandboxPhase::Deleting {
                break;
            }
            assert!(Instant::now() < deadline, "{id} never became DELETING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for caller in callers {
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
    }

    for id in &ids {
        let response = client
            .wait_sandbox_deleted(wait_request(id))
            .await
            .expect("the deletion went on without its caller")
            .into_inner();
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        assert!(processes::sandbox_processes(gateway.data_dir(), id).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_go_backwards() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let mut ids = Vec::new();
    for index in 0..20 {
        let name = format!("mono-{index}");
        let grace = Duration::from_millis(200 + 100 * (index % 5));
        let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
        ids.push(create(&mut client, &name, &argv, grace).await.id);
    }
    for id in &ids {
        wait_ready(&mut client, id).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut pollers = Vec::new();
    for poller in 0..3 {
        let mut client = gateway.client().await;
        let ids = ids.clone();
        let stop = stop.clone();
        pollers.push(tokio::spawn(async move {
            let mut deleting: HashSet<String> = HashSet::new();
            let mut gone: HashSet<String> = HashSet::new();
            let mut violations = Vec::new();
            let mut observe = |id: &str, seen: Option<pb::SandboxPhase>, via: &str| match seen {
                None => {
                    gone.insert(id.to_string());
                }
                Some(seen) => {
                    if gone.contains(id) {
                        violations.push(format!("poller {poller}: {id} came back in {via}"));
                    }
                    if seen == pb::SandboxPhase::Deleting {
                        deleting.insert(id.to_string());
                    } else if deleting.contains(id) {
                        violations.push(format!("poller {poller}: {id} left DELETING in {via}"));
                    }
                }
            };
            while !stop.load(Ordering::SeqCst) {
                for id in &ids {
                    let seen = api::get(&mut client, id).await.map(|s| phase(&s));
                    observe(id, seen, "get");
                }
                let listed = client
                    .list_sandboxes(pb::ListSandboxesRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                let phases: HashMap<String, pb::SandboxPhase> = listed
                    .sandboxes
                    .iter()
                    .map(|s| (s.id.clone(), phase(s)))
                    .collect();
                for id in &ids {
                    observe(id, phases.get(id).copied(), "list");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            violations
        }));
    }

    let mut deletions = Vec::new();
    for id in ids.clone() {
        let mut client = client.clone();
        deletions.push(tokio::spawn(async move {
            client
                .delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
        }));
    }
    for deletion in deletions {
        deletion.await.unwrap().expect("every deletion succeeds");
    }
    // Let the pollers see the final state at least once more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for poller in pollers {
        let violations = poller.await.unwrap();
        assert!(violations.is_empty(), "{violations:#?}");
    }
}
