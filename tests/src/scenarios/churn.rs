//! Churn under faults: gateway crashes while sandboxes come and go, and one name deleted and
//! re-created in a tight loop.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sandgate_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::Code;

use super::{LONG, wait_by_id, wait_request};
use crate::api::{self, Client, by_id, by_name, delete_request, phase};
use crate::figures::{Figures, Rng, churn_duration, scale};
use crate::target::{Probe, Target};

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
    let mut calls = Vec::new();
    for record in &records {
        let mut client = client.clone();
        let probe = target.probe();
        let id = record.id.clone();
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .delete_sandbox(delete_request(by_id(&id), true, LONG))
                .await
                .unwrap_or_else(|status| panic!("delete {id} failed: {status}"))
                .into_inner();
            let elapsed = started.elapsed();
            assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32, "{id}");
            probe.assert_compute_gone(&id).await;
            elapsed
        }));
    }
    for call in calls {
        figures.waited(call.await.unwrap());
    }
    records.len() as u64
}

/// How many sandboxes the crash churn keeps at a time, about.
const POPULATION: usize = 50;

/// Deletes `id` without a wait, and has `confirmer` follow the deletion if the gateway accepted
/// it. Returns whether it did, or `false` if the call failed because the gateway was killed
/// under it.
async fn delete_unless_killed(client: &mut Client, id: &str, confirmer: &Confirmer) -> bool {
    match client
        .delete_sandbox(delete_request(by_id(id), false, LONG))
        .await
    {
        Ok(_) => {
            confirmer.follow(id);
            true
        }
        Err(status) if killed(&status) => false,
        Err(status) => panic!("delete {id} failed, not because of a kill: {status}"),
    }
}

/// Starts a [`confirm_removal`] task for each accepted deletion of the crash churn.
#[derive(Clone)]
struct Confirmer {
    url: watch::Receiver<String>,
    probe: Probe,
    tasks: mpsc::UnboundedSender<JoinHandle<Completion>>,
}

impl Confirmer {
    /// Follows the deletion of `id`, which the gateway has just accepted.
    fn follow(&self, id: &str) {
        let task = tokio::spawn(confirm_removal(
            id.to_string(),
            Instant::now(),
            self.url.clone(),
            self.probe.clone(),
        ));
        self.tasks
            .send(task)
            .expect("the churn collects the confirmations until it ends");
    }
}

/// One accepted deletion of the crash churn, as the task that waited for it by id saw it end.
struct Completion {
    id: String,
    /// Time from the accepted delete to the return of the wait that saw the removal.
    latency: Duration,
    /// What of the compute the probe found right after that return, which must be nothing.
    compute_left: Option<String>,
}

/// Waits by id for the removal of `id` across gateway kills, and checks its compute as soon as
/// a wait returns DELETED. `url` names the gateway that runs now; a wait cut by a kill is sent
/// again once the restarted gateway's address is published.
async fn confirm_removal(
    id: String,
    accepted_at: Instant,
    mut url: watch::Receiver<String>,
    probe: Probe,
) -> Completion {
    loop {
        let address = url.borrow_and_update().clone();
        let result = match Client::connect(address).await {
            Ok(mut client) => client
                .wait_sandbox_deleted(wait_request(&id))
                .await
                .map(tonic::Response::into_inner),
            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
        };
        match result {
            Ok(response) => {
                assert_eq!(
                    response.outcome,
                    pb::DeleteOutcome::Deleted as i32,
                    "wait for {id}: {response:?}"
                );
                let compute_left = probe.compute_left(&id).await;
                return Completion {
                    id,
                    latency: accepted_at.elapsed(),
                    compute_left,
                };
            }
            Err(status) if killed(&status) => {
                // The next address comes with the restart. If this one already was the
                // restarted gateway's, try it again after a second.
                let _ = tokio::time::timeout(Duration::from_secs(1), url.changed()).await;
            }
            Err(status) => {
                panic!("wait for the removal of {id} failed, not because of a kill: {status}")
            }
        }
    }
}

/// Returns whether a failed call may be the effect of killing the gateway under it.
fn killed(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
    )
}

/// Returns the last `count` lines of `text`.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Returns the value of `key=value` in a log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split_whitespace().next()
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
    // The last round in which some create returned. A kill can land before any create of a
    // round does, so the window in which the kill lands doubles after each such round, up to
    // 6.4 s. A loaded machine then still makes progress.
    let mut last_progress = 0;
    let mut kill_window_ms = 400;
    let (url, url_updates) = watch::channel(target.gateway.url());
    let (confirmations, mut followed) = mpsc::unbounded_channel();
    let confirmer = Confirmer {
        url: url_updates,
        probe: target.probe(),
        tasks: confirmations,
    };

    while created.len() < total || started.elapsed() < churn {
        assert!(
            round - last_progress < 20,
            "seed {seed}: no create returned in 20 rounds; the gateway log ends with:\n{}",
            last_lines(&target.gateway.log_text(), 40)
        );
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
            let confirmer = confirmer.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(response) = client.create_sandbox(request).await else {
                    return (None, false);
                };
                let id = response.into_inner().id;
                if !delete {
                    return (Some(id), false);
                }
                tokio::time::sleep(delete_after).await;
                let accepted = delete_unless_killed(&mut client, &id, &confirmer).await;
                (Some(id), accepted)
            }));
        }
        // A third of the new sandboxes is kept, and kills interrupt some deletions, so older
        // sandboxes are deleted too: the churn keeps about `POPULATION` of them.
        let undeleted: Vec<&String> = created.difference(&accepted).collect();
        for _ in 0..undeleted.len().saturating_sub(POPULATION).min(6) {
            let id = undeleted[rng.below(undeleted.len() as u64) as usize].clone();
            let mut client = client.clone();
            let delete_after = Duration::from_millis(rng.below(300));
            let confirmer = confirmer.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delete_after).await;
                let accepted = delete_unless_killed(&mut client, &id, &confirmer).await;
                (Some(id), accepted)
            }));
        }
        // Each call takes tens of milliseconds, so the kill lands inside the calls.
        tokio::time::sleep(Duration::from_millis(rng.below(kill_window_ms))).await;
        target.gateway.kill();
        figures.faults += 1;
        for task in tasks {
            let (id, was_accepted) = task.await.unwrap();
            if let Some(id) = id {
                if !created.contains(&id) {
                    last_progress = round;
                }
                if was_accepted {
                    accepted.insert(id.clone());
                }
                created.insert(id);
            }
        }
        target.gateway.restart();
        url.send_replace(target.gateway.url());
        kill_window_ms = if last_progress == round {
            400
        } else {
            (kill_window_ms * 2).min(6400)
        };
        round += 1;
    }
    figures.iterations = created.len() as u64;
    figures.outcome("deletions accepted", accepted.len() as u64);
    assert!(
        !accepted.is_empty(),
        "seed {seed}: no deletion was accepted in {round} rounds, so none could be checked"
    );
    let mut client = target.client().await;

    // Every deletion the gateway accepted finishes, with no client action beyond a wait by id,
    // and its compute was gone when that wait returned.
    drop(confirmer);
    let mut latencies = Vec::new();
    while let Some(task) = followed.recv().await {
        let completion = tokio::time::timeout(LONG, task)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: a wait by id hangs"))
            .unwrap();
        assert_eq!(
            completion.compute_left, None,
            "seed {seed}: the removal of {} was confirmed, but compute was left then",
            completion.id
        );
        latencies.push(completion.latency);
        figures.confirmed += 1;
    }
    latencies.sort();
    let millis =
        |latency: Option<&Duration>| latency.map_or(0, |latency| latency.as_millis() as u64);
    figures.outcome(
        "median ms from an accepted delete to its confirmed removal",
        millis(latencies.get(latencies.len() / 2)),
    );
    figures.outcome(
        "max ms from an accepted delete to its confirmed removal",
        millis(latencies.last()),
    );

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
    // Compute of a removed record would break the promise. Only compute whose create never
    // reached the store may turn up without a record.
    let log = target.gateway.log_text();
    let mut untracked = BTreeSet::new();
    let mut after_removal = BTreeSet::new();
    for line in log
        .lines()
        .filter(|line| line.contains("Deleting compute that has no record"))
    {
        let id = log_field(line, "sandbox_id")
            .unwrap_or_default()
            .to_string();
        if log_field(line, "tombstoned") == Some("true") {
            after_removal.insert(id);
        } else {
            untracked.insert(id);
        }
    }
    figures.outcome("orphans removed by the reconciler", untracked.len() as u64);
    assert!(
        after_removal.is_empty(),
        "seed {seed}: compute of removed sandboxes was found later: {after_removal:?}"
    );

    let cleaned = delete_all(target, &mut client, &mut figures).await;
    figures.confirmed += cleaned;
    let left = target.compute_ids().await;
    assert!(left.is_empty(), "seed {seed}: compute left: {left:?}");
    figures
}

/// One generation's wait by id, as the other client saw it.
struct GenerationWait {
    id: String,
    returned_at: Instant,
    outcome: Result<i32, tonic::Status>,
    recorded_after: bool,
    compute_left: Option<String>,
}

/// Same-name churn: a script deletes and at once re-creates one name `generations` times, by
/// name, alternating deletes with and without a wait. Another client waits by id for every
/// generation. Each wait returns DELETED after its own generation's delete, with that
/// generation's record and compute gone. No wait hangs, and none ends because of another
/// generation.
pub async fn same_name_churn(target: &Target, generations: usize) -> Figures {
    let mut figures = Figures::new("same-name churn", target.driver());
    let name = "same";
    let mut script = target.client().await;
    let watcher = target.client().await;
    let probe = target.probe();
    let (ids_tx, mut ids_rx) = mpsc::unbounded_channel::<String>();
    let waiting = tokio::spawn(async move {
        let mut calls = Vec::new();
        while let Some(id) = ids_rx.recv().await {
            let mut client = watcher.clone();
            let probe = probe.clone();
            calls.push(tokio::spawn(async move {
                let outcome = client
                    .wait_sandbox_deleted(wait_request(&id))
                    .await
                    .map(|response| response.into_inner().outcome);
                let returned_at = Instant::now();
                let compute_left = probe.compute_left(&id).await;
                let recorded_after = api::get(&mut client, &id).await.is_some();
                GenerationWait {
                    id,
                    returned_at,
                    outcome,
                    recorded_after,
                    compute_left,
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
    let mut previous_waited = false;
    for generation in 0..generations {
        // Re-create at once. While the previous generation is still DELETING the name is taken,
        // but never after a delete with wait returned.
        let deadline = Instant::now() + LONG;
        let sandbox = loop {
            match script
                .create_sandbox(target.create_request(name, Duration::from_secs(1)))
                .await
            {
                Ok(response) => break response.into_inner(),
                Err(status) if status.code() == Code::FailedPrecondition => {
                    assert!(
                        !previous_waited,
                        "generation {generation}: the name is still taken after the previous \
                         generation's delete with wait returned: {status}"
                    );
                    assert!(
                        Instant::now() < deadline,
                        "generation {generation}: the name was still taken after {LONG:?}: \
                         {status}"
                    );
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
            target.assert_compute_gone(&sandbox.id).await;
        }
        previous_waited = wait;
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
        assert_eq!(
            wait.compute_left, None,
            "the wait for {} returned while compute was left",
            wait.id
        );
        figures.waited(wait.returned_at - deleted_at[&wait.id]);
        figures.confirmed += 1;
    }
    figures.iterations = generations as u64;
    figures.outcome("deletes with wait", with_wait);
    figures.outcome("deletes without wait", generations as u64 - with_wait);
    figures.outcome(
        "create attempts refused while the name was DELETING",
        rejected,
    );
    figures
}
