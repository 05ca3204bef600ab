//! Reliability scenarios written once for both drivers. Each one drives a [`Target`], asserts
//! what a broken gateway would violate, and returns its [`Figures`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sandgate_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Code;

use crate::api::{self, Client, by_id, by_name, delete_request, phase};
use crate::figures::{Figures, Rng, churn_duration, scale};
use crate::target::Target;

/// Bound of every wait in the scenarios.
pub const LONG: Duration = Duration::from_secs(120);

/// Builds a request to wait for the removal of `id` for up to [`LONG`].
pub fn wait_request(id: &str) -> pb::WaitSandboxDeletedRequest {
    pb::WaitSandboxDeletedRequest {
        id: id.to_string(),
        timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
    }
}

/// Waits for the removal of `id` by id and returns the response and how long it took.
async fn wait_by_id(client: &mut Client, id: &str) -> (pb::DeleteSandboxResponse, Duration) {
    let started = Instant::now();
    let response = client
        .wait_sandbox_deleted(wait_request(id))
        .await
        .unwrap_or_else(|status| panic!("wait for the removal of {id} failed: {status}"))
        .into_inner();
    assert_eq!(
        response.outcome,
        pb::DeleteOutcome::Deleted as i32,
        "wait for {id}: {response:?}"
    );
    (response, started.elapsed())
}

/// Polls until no record is PROVISIONING or DELETING, for up to [`LONG`], and returns the ones
/// that still are.
async fn unsettled(target: &Target, client: &mut Client) -> Vec<pb::Sandbox> {
    let deadline = Instant::now() + LONG;
    loop {
        let left: Vec<pb::Sandbox> = target
            .records(client)
            .await
            .into_iter()
            .filter(|record| {
                matches!(
                    phase(record),
                    pb::SandboxPhase::Provisioning | pb::SandboxPhase::Deleting
                )
            })
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls until all compute belongs to a record, for up to `bound`, and returns the ids of the
/// compute that still has none.
async fn orphans(target: &Target, client: &mut Client, bound: Duration) -> BTreeSet<String> {
    let deadline = Instant::now() + bound;
    loop {
        let recorded: BTreeSet<String> = target
            .records(client)
            .await
            .into_iter()
            .map(|record| record.id)
            .collect();
        let orphans: BTreeSet<String> = target
            .compute_ids()
            .await
            .into_iter()
            .filter(|id| !recorded.contains(id))
            .collect();
        if orphans.is_empty() || Instant::now() > deadline {
            return orphans;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes every remaining record with a wait and checks that its compute is gone. Returns the
/// number of deletions confirmed.
async fn delete_all(target: &Target, client: &mut Client, figures: &mut Figures) -> u64 {
    let records = target.records(client).await;
    for record in &records {
        let started = Instant::now();
        let response = client
            .delete_sandbox(delete_request(by_id(&record.id), true, LONG))
            .await
            .unwrap_or_else(|status| panic!("delete {} failed: {status}", record.id))
            .into_inner();
        figures.waited(started.elapsed());
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        target.assert_compute_gone(&record.id).await;
    }
    records.len() as u64
}

/// Gateway crashes: SIGKILL at random moments while sandboxes are created and deleted, with a
/// restart after each kill. The target's gateway must use a short orphan grace period. After
/// the churn, every accepted deletion finishes, the orphan grace passes and a reconciler pass
/// runs, and then no record is stuck and no compute lacks a record.
pub async fn crash_churn(target: &mut Target, seed: u64, orphan_grace: Duration) -> Figures {
    let mut figures = Figures::new("gateway crashes during churn", target.driver());
    figures.seed = Some(seed);
    let mut rng = Rng::new(seed);
    let total = 50 * scale() as usize;
    let churn = churn_duration();
    let started = Instant::now();
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut accepted: BTreeSet<String> = BTreeSet::new();
    let mut round = 0;

    while created.len() < total || started.elapsed() < churn {
        let client = target.client().await;
        let mut tasks = Vec::new();
        for index in 0..6 {
            let mut client = client.clone();
            let request = target.create_request(
                &format!("r{round}-s{index}"),
                Duration::from_secs(1 + rng.below(2)),
            );
            let delete_after = Duration::from_millis(rng.below(300));
            let delete = rng.below(3) != 0;
            tasks.push(tokio::spawn(async move {
                let Ok(response) = client.create_sandbox(request).await else {
                    return (None, false);
                };
                let id = response.into_inner().id;
                if !delete {
                    return (Some(id), false);
                }
                tokio::time::sleep(delete_after).await;
                let deleted = client
                    .delete_sandbox(delete_request(by_id(&id), false, LONG))
                    .await;
                (Some(id), deleted.is_ok())
            }));
        }
        // Each call takes tens of milliseconds, so the kill lands inside the calls.
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        target.gateway.kill();
        figures.faults += 1;
        for task in tasks {
            let (id, was_accepted) = task.await.unwrap();
            if let Some(id) = id {
                if was_accepted {
                    accepted.insert(id.clone());
                }
                created.insert(id);
            }
        }
        target.gateway.restart();
        round += 1;
    }
    figures.iterations = created.len() as u64;
    figures.outcome("deletions accepted", accepted.len() as u64);
    let mut client = target.client().await;

    // Every deletion the gateway accepted finishes, with no client action beyond a wait by id.
    for id in &accepted {
        let (_, elapsed) = wait_by_id(&mut client, id).await;
        figures.waited(elapsed);
        target.assert_compute_gone(id).await;
        figures.confirmed += 1;
    }

    // Every sandbox a client saw created is still recorded, or its removal is on record.
    for id in &created {
        if api::get(&mut client, id).await.is_none() {
            let (_, elapsed) = wait_by_id(&mut client, id).await;
            figures.waited(elapsed);
            target.assert_compute_gone(id).await;
        }
    }

    // The orphan grace passes, then one more reconciler pass runs.
    tokio::time::sleep(orphan_grace).await;
    let mark = target.gateway.log_mark();
    target
        .gateway
        .wait_for_log_since(mark, "Reconciler pass finished", Duration::from_secs(30))
        .await;
    let stuck = unsettled(target, &mut client).await;
    figures.stuck = stuck.len() as u64;
    assert!(stuck.is_empty(), "seed {seed}: records stuck: {stuck:#?}");
    // An orphan the pass found is being deleted with its grace period of at most 2 s.
    let strays = orphans(target, &mut client, Duration::from_secs(30)).await;
    figures.orphans = strays.len() as u64;
    assert!(
        strays.is_empty(),
        "seed {seed}: compute without a record: {strays:?}"
    );
    let removed = target
        .gateway
        .log_text()
        .matches("Deleting compute that has no record")
        .count();
    figures.outcome("orphans removed by the reconciler", removed as u64);

    let cleaned = delete_all(target, &mut client, &mut figures).await;
    figures.confirmed += cleaned;
    let left = target.compute_ids().await;
    assert!(left.is_empty(), "seed {seed}: compute left: {left:?}");
    figures
}

/// Deletes right after create: each sandbox is deleted with a wait a few milliseconds after its
/// create returned. Every deletion completes, and nothing appears afterwards.
pub async fn delete_right_after_create(target: &Target, seed: u64) -> Figures {
    let mut figures = Figures::new("delete a few ms after create", target.driver());
    figures.seed = Some(seed);
    let mut rng = Rng::new(seed);
    let mut client = target.client().await;
    let mut ids = Vec::new();
    for index in 0..10 * scale() {
        let sandbox = target
            .create(
                &mut client,
                &format!("early-{index}"),
                Duration::from_secs(1),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        let started = Instant::now();
        let response = client
            .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
            .await
            .unwrap_or_else(|status| panic!("delete {} failed: {status}", sandbox.id))
            .into_inner();
        figures.waited(started.elapsed());
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        target.assert_compute_gone(&sandbox.id).await;
        figures.confirmed += 1;
        ids.push(sandbox.id);
    }
    figures.iterations = ids.len() as u64;
    // A controller that was still creating the first Pod must not bring compute back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        if let Some(left) = target.compute_left(id).await {
            figures.orphans += 1;
            panic!("seed {seed}: {left} of {id} appeared after its deletion was confirmed");
        }
    }
    figures
}

/// Many waiters: `waiters` concurrent waits by id on one deletion, over several connections.
/// All return after the removal, and none before the grace period ends.
pub async fn many_waiters(target: &Target, waiters: usize) -> Figures {
    let mut figures = Figures::new("many waiters on one deletion", target.driver());
    let grace = Duration::from_secs(2);
    let mut client = target.client().await;
    let sandbox = target.create(&mut client, "crowd", grace).await;
    target.wait_ready(&mut client, &sandbox.id).await;
    let started = Instant::now();
    client
        .delete_sandbox(delete_request(by_id(&sandbox.id), false, LONG))
        .await
        .unwrap();

    let mut calls = Vec::new();
    for index in 0..waiters {
        // Spread the waiters over a few connections, as separate clients would be.
        let mut client = if index % 4 == 0 {
            target.client().await
        } else {
            client.clone()
        };
        let id = sandbox.id.clone();
        calls.push(tokio::spawn(async move {
            let response = client.wait_sandbox_deleted(wait_request(&id)).await;
            (response, started.elapsed())
        }));
    }
    for call in calls {
        let (response, elapsed) = tokio::time::timeout(LONG, call)
            .await
            .expect("no waiter hangs")
            .unwrap();
        let response = response.expect("every waiter succeeds").into_inner();
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        assert!(elapsed >= grace, "a waiter returned after {elapsed:?}");
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

    let started = Instant::now();
    let mut calls = Vec::new();
    for id in ids.clone() {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let response = client
                .delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
                .map(|response| response.into_inner());
            (response, started.elapsed())
        }));
    }
    for call in calls {
        let (response, elapsed) = tokio::time::timeout(LONG, call)
            .await
            .expect("no deletion hangs")
            .unwrap();
        let response = response.expect("every deletion succeeds");
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        target.assert_compute_gone(&response.id).await;
        figures.waited(elapsed);
        figures.confirmed += 1;
    }
    figures.iterations = count as u64;
    figures
}

/// Client cancellation: callers go away in the middle of their waits. The deletions still
/// complete.
pub async fn abandoned_waits(target: &Target, count: usize) -> Figures {
    let mut figures = Figures::new("callers cancel mid-wait", target.driver());
    let mut client = target.client().await;
    let mut ids = Vec::new();
    for index in 0..count {
        let sandbox = target
            .create(
                &mut client,
                &format!("gone-{index}"),
                Duration::from_secs(2),
            )
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
    for caller in callers {
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        figures.faults += 1;
    }

    for id in &ids {
        let (_, elapsed) = wait_by_id(&mut client, id).await;
        figures.waited(elapsed);
        target.assert_compute_gone(id).await;
        figures.confirmed += 1;
    }
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
                reads += ids.len() as u64 + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (violations, reads)
        }));
    }

    let started = Instant::now();
    let mut deletions = Vec::new();
    for id in ids.clone() {
        let mut client = client.clone();
        deletions.push(tokio::spawn(async move {
            client
                .delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
                .map(|response| (response.into_inner(), started.elapsed()))
        }));
    }
    for deletion in deletions {
        let (response, elapsed) = deletion.await.unwrap().expect("every deletion succeeds");
        target.assert_compute_gone(&response.id).await;
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

/// One generation's wait by id, as the other client saw it.
struct GenerationWait {
    id: String,
    returned_at: Instant,
    outcome: Result<i32, tonic::Status>,
    recorded_after: bool,
}

/// Same-name churn: a script deletes and at once re-creates one name `generations` times, by
/// name, alternating deletes with and without a wait. Another client waits by id for every
/// generation. Each wait returns DELETED after its own generation's delete and with that
/// generation gone; none hangs and none ends because of another generation.
pub async fn same_name_churn(target: &Target, generations: usize) -> Figures {
    let mut figures = Figures::new("same-name churn", target.driver());
    let name = "same";
    let mut script = target.client().await;
    let watcher = target.client().await;
    let (ids_tx, mut ids_rx) = mpsc::unbounded_channel::<String>();
    let waiting = tokio::spawn(async move {
        let mut calls = Vec::new();
        while let Some(id) = ids_rx.recv().await {
            let mut client = watcher.clone();
            calls.push(tokio::spawn(async move {
                let outcome = client
                    .wait_sandbox_deleted(wait_request(&id))
                    .await
                    .map(|response| response.into_inner().outcome);
                let returned_at = Instant::now();
                let recorded_after = api::get(&mut client, &id).await.is_some();
                GenerationWait {
                    id,
                    returned_at,
                    outcome,
                    recorded_after,
                }
            }));
        }
        let mut waits = Vec::new();
        for call in calls {
            waits.push(
                tokio::time::timeout(LONG + Duration::from_secs(10), call)
                    .await
                    .expect("a wait by id hangs")
                    .unwrap(),
            );
        }
        waits
    });

    let mut deleted_at: HashMap<String, Instant> = HashMap::new();
    let mut rejected = 0u64;
    let mut with_wait = 0u64;
    for generation in 0..generations {
        // Re-create at once; while the previous generation is still DELETING the name is taken.
        let sandbox = loop {
            match script
                .create_sandbox(target.create_request(name, Duration::from_secs(1)))
                .await
            {
                Ok(response) => break response.into_inner(),
                Err(status) if status.code() == Code::FailedPrecondition => {
                    rejected += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("generation {generation}: create failed: {status}"),
            }
        };
        ids_tx.send(sandbox.id.clone()).unwrap();
        let wait = generation % 2 == 0;
        deleted_at.insert(sandbox.id.clone(), Instant::now());
        let started = Instant::now();
        let response = script
            .delete_sandbox(delete_request(by_name(name), wait, LONG))
            .await
            .unwrap_or_else(|status| panic!("generation {generation}: delete failed: {status}"))
            .into_inner();
        assert_eq!(
            response.id, sandbox.id,
            "generation {generation}: the delete by name hit another generation"
        );
        if wait {
            with_wait += 1;
            figures.waited(started.elapsed());
            assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        }
    }
    drop(ids_tx);
    let waits = waiting.await.unwrap();
    assert_eq!(waits.len(), generations);
    for wait in &waits {
        let outcome = wait
            .outcome
            .as_ref()
            .unwrap_or_else(|status| panic!("wait for {} failed: {status}", wait.id));
        assert_eq!(*outcome, pb::DeleteOutcome::Deleted as i32, "{}", wait.id);
        assert!(
            wait.returned_at >= deleted_at[&wait.id],
            "the wait for {} returned before its delete was sent",
            wait.id
        );
        assert!(
            !wait.recorded_after,
            "the wait for {} returned while it was still recorded",
            wait.id
        );
        figures.waited(wait.returned_at - deleted_at[&wait.id]);
        target.assert_compute_gone(&wait.id).await;
        figures.confirmed += 1;
    }
    figures.iterations = generations as u64;
    figures.outcome("deletes with wait", with_wait);
    figures.outcome("deletes without wait", generations as u64 - with_wait);
    figures.outcome("creates refused while the name was DELETING", rejected);
    figures.outcome("waits by id that returned DELETED", waits.len() as u64);
    figures
}
