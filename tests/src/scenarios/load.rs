//! Load on one deletion or many: waiters, concurrent deletions, cancelled callers, and reads
//! during teardown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sandgate_proto::v1 as pb;

use super::{LONG, wait_by_id, wait_request};
use crate::api::{self, by_id, delete_request, phase};
use crate::figures::Figures;
use crate::target::Target;

/// Many waiters: `waiters` concurrent waits by id on one deletion, over several connections.
/// All return after the removal, and none before the grace period ends.
pub async fn many_waiters(target: &Target, waiters: usize) -> Figures {
    let mut figures = Figures::new("many waiters on one deletion", target.driver());
    // Long enough that every waiter is sent while the deletion is still under way.
    let grace = Duration::from_secs(5);
    let mut client = target.client().await;
    let sandbox = target.create(&mut client, "crowd", grace).await;
    target.wait_ready(&mut client, &sandbox.id).await;
    // One connection per 4 waiters, opened before the delete, as separate clients would be.
    let mut connections = Vec::new();
    for _ in 0..waiters.div_ceil(4) {
        connections.push(target.client().await);
    }
    let started = Instant::now();
    client
        .delete_sandbox(delete_request(by_id(&sandbox.id), false, LONG))
        .await
        .unwrap();

    let mut calls = Vec::new();
    for index in 0..waiters {
        let mut client = connections[index / 4].clone();
        let id = sandbox.id.clone();
        // Some waiters check the compute as soon as they return.
        let probe = (index % 50 == 0).then(|| target.probe());
        calls.push(tokio::spawn(async move {
            let response = client.wait_sandbox_deleted(wait_request(&id)).await;
            let elapsed = started.elapsed();
            let left = match probe {
                Some(probe) => probe.compute_left(&id).await,
                None => None,
            };
            (response, elapsed, left)
        }));
    }
    let sent = started.elapsed();
    let record = api::get(&mut client, &sandbox.id).await;
    assert!(
        record.is_some_and(|record| phase(&record) == pb::SandboxPhase::Deleting),
        "the deletion ended before the {waiters} waits were sent ({sent:?})"
    );
    for call in calls {
        let (response, elapsed, left) = tokio::time::timeout(LONG, call)
            .await
            .expect("no waiter hangs")
            .unwrap();
        let response = response.expect("every waiter succeeds").into_inner();
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        assert!(elapsed >= grace, "a waiter returned after {elapsed:?}");
        assert_eq!(left, None, "a waiter returned while compute was left");
        figures.waited(elapsed);
    }
    target.assert_compute_gone(&sandbox.id).await;
    figures.iterations = waiters as u64;
    figures.confirmed = 1;
    figures
}

/// Many deletions at once: `count` sandboxes deleted with a wait concurrently. Every call
/// returns, and each one's compute is gone at its return.
pub async fn many_deletions(target: &Target, count: usize) -> Figures {
    let mut figures = Figures::new("many deletions at once", target.driver());
    let mut client = target.client().await;
    let mut ids = Vec::new();
    for index in 0..count {
        let sandbox = target
            .create(
                &mut client,
                &format!("many-{index}"),
                Duration::from_secs(1),
            )
            .await;
        ids.push(sandbox.id);
    }
    for id in &ids {
        target.wait_ready(&mut client, id).await;
    }

    let mut calls = Vec::new();
    for id in ids.clone() {
        let mut client = client.clone();
        let probe = target.probe();
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
                .map(|response| response.into_inner());
            let elapsed = started.elapsed();
            (id.clone(), response, elapsed, probe.compute_left(&id).await)
        }));
    }
    for call in calls {
        let (id, response, elapsed, left) = tokio::time::timeout(LONG, call)
            .await
            .expect("no deletion hangs")
            .unwrap();
        let response = response.expect("every deletion succeeds");
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        assert_eq!(
            left, None,
            "{id} was confirmed deleted while compute was left"
        );
        assert!(
            elapsed >= Duration::from_secs(1),
            "{id} was confirmed deleted after {elapsed:?}, within its 1 s grace period"
        );
        figures.waited(elapsed);
        figures.confirmed += 1;
    }
    figures.iterations = count as u64;
    figures
}

/// Client cancellation: callers go away in the middle of their waits. The deletions still
/// complete within their grace period plus 20 s. The target's gateway should run with a long
/// reconciler interval, so that only the deletion tasks can finish the deletions.
pub async fn abandoned_waits(target: &Target, count: usize) -> Figures {
    let mut figures = Figures::new("callers cancel mid-wait", target.driver());
    let grace = Duration::from_secs(5);
    let mut client = target.client().await;
    let mut ids = Vec::new();
    for index in 0..count {
        let sandbox = target
            .create(&mut client, &format!("gone-{index}"), grace)
            .await;
        target.wait_ready(&mut client, &sandbox.id).await;
        ids.push(sandbox.id);
    }

    // Each caller uses a connection of its own and goes away in the middle of its wait.
    let mut callers = Vec::new();
    for id in &ids {
        let mut own = target.client().await;
        let id = id.clone();
        callers.push(tokio::spawn(async move {
            own.delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
        }));
    }
    for id in &ids {
        api::wait_until(&mut client, id, LONG, "DELETING", |sandbox| {
            phase(sandbox) == pb::SandboxPhase::Deleting
        })
        .await;
    }
    let cancelled_at = Instant::now();
    for caller in callers {
        caller.abort();
        let ended = caller.await;
        assert!(
            ended.as_ref().is_err_and(|error| error.is_cancelled()),
            "a caller returned before it was cancelled: {ended:?}"
        );
        figures.faults += 1;
    }

    for id in &ids {
        let (_, elapsed) = wait_by_id(&mut client, id).await;
        figures.waited(elapsed);
        target.assert_compute_gone(id).await;
        figures.confirmed += 1;
    }
    let took = cancelled_at.elapsed();
    assert!(
        took < grace + Duration::from_secs(20),
        "the abandoned deletions took {took:?} after their callers went away"
    );
    figures.iterations = count as u64;
    figures
}

/// Monotonic reads: while `count` sandboxes are torn down, several clients poll get and list
/// every 50 ms. No sandbox leaves DELETING for another phase, and none comes back after it was
/// reported gone.
pub async fn monotonic_reads(target: &Target, count: usize) -> Figures {
    let mut figures = Figures::new("reads during teardown", target.driver());
    let mut client = target.client().await;
    let mut ids = Vec::new();
    for index in 0..count {
        let grace = Duration::from_millis(1000 + 500 * (index as u64 % 3));
        ids.push(
            target
                .create(&mut client, &format!("mono-{index}"), grace)
                .await
                .id,
        );
    }
    for id in &ids {
        target.wait_ready(&mut client, id).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut pollers = Vec::new();
    for poller in 0..3 {
        let mut client = target.client().await;
        let ids = ids.clone();
        let stop = stop.clone();
        pollers.push(tokio::spawn(async move {
            let mut deleting: HashSet<String> = HashSet::new();
            let mut gone: HashSet<String> = HashSet::new();
            let mut violations = Vec::new();
            let mut reads = 0u64;
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
                        violations.push(format!(
                            "poller {poller}: {id} left DELETING for {seen:?} in {via}"
                        ));
                    }
                }
            };
            while !stop.load(Ordering::SeqCst) {
                for id in &ids {
                    let seen = api::get(&mut client, id).await.map(|s| phase(&s));
                    observe(id, seen, "get");
                }
                let listed = client
                    .list_sandboxes(pb::ListSandboxesRequest {
                        page_size: 1000,
                        ..Default::default()
                    })
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
                reads += ids.len() as u64 + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (violations, reads)
        }));
    }

    let mut deletions = Vec::new();
    for id in ids.clone() {
        let mut client = client.clone();
        let probe = target.probe();
        deletions.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await;
            let elapsed = started.elapsed();
            (id.clone(), response, elapsed, probe.compute_left(&id).await)
        }));
    }
    for (index, deletion) in deletions.into_iter().enumerate() {
        let (id, response, elapsed, left) = tokio::time::timeout(LONG, deletion)
            .await
            .expect("no deletion hangs")
            .unwrap();
        response.expect("every deletion succeeds");
        assert_eq!(
            left, None,
            "{id} was confirmed deleted while compute was left"
        );
        let grace = Duration::from_millis(1000 + 500 * (index as u64 % 3));
        assert!(
            elapsed >= grace,
            "{id} was confirmed deleted after {elapsed:?}, within its grace period {grace:?}"
        );
        figures.waited(elapsed);
        figures.confirmed += 1;
    }
    // Let the pollers read the final state at least once more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for poller in pollers {
        let (violations, done) = poller.await.unwrap();
        assert!(violations.is_empty(), "{violations:#?}");
        reads += done;
    }
    figures.iterations = count as u64;
    figures.outcome("reads", reads);
    figures
}
