//! Crash recovery on the process driver: the gateway is killed with SIGKILL at random moments
//! while sandboxes are created and deleted, then restarted. After the churn the state must
//! converge with no client action: every accepted deletion completes, nothing is stuck in
//! DELETING, and no process runs without a record.
//!
//! The random moments come from a seed that the test prints; set `SANDGATE_TEST_SEED` to replay
//! a run, and `SANDGATE_TEST_CRASH_ROUNDS` for more rounds.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sandgate_e2e::api::{self, by_id, delete_request};
use sandgate_e2e::gateway::Gateway;
use sandgate_e2e::processes;
use sandgate_proto::v1 as pb;
use tonic::Code;

/// A small deterministic generator (xorshift64*), so a seed replays the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn seed() -> u64 {
    match std::env::var("SANDGATE_TEST_SEED") {
        Ok(text) => text
            .parse()
            .expect("SANDGATE_TEST_SEED must be an unsigned integer"),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            nanos | 1
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_crashes_converge() {
    let seed = seed();
    eprintln!("random_crashes_converge: SANDGATE_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    let rounds: usize = std::env::var("SANDGATE_TEST_CRASH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(4);

    let mut gateway = Gateway::start();
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut accepted: BTreeSet<String> = BTreeSet::new();

    for round in 0..rounds {
        let client = gateway.client().await;
        let mut tasks = Vec::new();
        for index in 0..6 {
            let mut client = client.clone();
            let name = format!("r{round}-s{index}");
            let delete_after = Duration::from_millis(rng.below(300));
            let grace = Duration::from_secs(1 + rng.below(2));
            tasks.push(tokio::spawn(async move {
                let argv = ["sh", "-c", "trap '' TERM; sleep 1000"];
                let mut outcome = (None, false);
                let Ok(response) = client
                    .create_sandbox(api::create_request(&name, &argv, grace))
                    .await
                else {
                    return outcome;
                };
                let id = response.into_inner().id;
                outcome.0 = Some(id.clone());
                tokio::time::sleep(delete_after).await;
                let deleted = client
                    .delete_sandbox(delete_request(by_id(&id), false, Duration::from_secs(60)))
                    .await;
                outcome.1 = deleted.is_ok();
                outcome
            }));
        }

        // Kill the gateway somewhere in the middle of the creations and deletions.
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        gateway.kill();
        for task in tasks {
            let (id, was_accepted) = task.await.unwrap();
            if let Some(id) = id {
                if was_accepted {
                    accepted.insert(id.clone());
                }
                created.insert(id);
            }
        }
        gateway.restart();
    }

    eprintln!(
        "random_crashes_converge: {rounds} crashes, {} sandboxes created, {} deletions accepted",
        created.len(),
        accepted.len()
    );
    let mut client = gateway.client().await;

    // Every deletion the gateway accepted finishes, with no client action beyond a wait by id.
    for id in &accepted {
        let response = client
            .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
                id: id.clone(),
                timeout: Some(prost_types::Duration::try_from(Duration::from_secs(60)).unwrap()),
            })
            .await
            .unwrap_or_else(|status| panic!("seed {seed}: accepted deletion of {id}: {status}"))
            .into_inner();
        assert_eq!(
            response.outcome,
            pb::DeleteOutcome::Deleted as i32,
            "seed {seed}: {id}"
        );
    }

    // No record stays in DELETING: each one the crashes left behind completes.
    let listed = client
        .list_sandboxes(pb::ListSandboxesRequest {
            all_workspaces: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for sandbox in &listed.sandboxes {
        if api::phase(sandbox) != pb::SandboxPhase::Deleting {
            continue;
        }
        let response = client
            .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
                id: sandbox.id.clone(),
                timeout: Some(prost_types::Duration::try_from(Duration::from_secs(60)).unwrap()),
            })
            .await
            .unwrap_or_else(|status| {
                panic!("seed {seed}: {} stuck DELETING: {status}", sandbox.id)
            });
        assert_eq!(
            response.into_inner().outcome,
            pb::DeleteOutcome::Deleted as i32
        );
    }

    // Nothing runs without a record: every sandbox directory with live processes belongs to a
    // record that still exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut strays = Vec::new();
        for entry in std::fs::read_dir(gateway.data_dir().join("sandboxes"))
            .unwrap()
            .flatten()
        {
            let id = entry.file_name().to_string_lossy().to_string();
            if processes::sandbox_processes(gateway.data_dir(), &id).is_empty() {
                continue;
            }
            let status = client
                .get_sandbox(pb::GetSandboxRequest { target: by_id(&id) })
                .await;
            if matches!(&status, Err(status) if status.code() == Code::NotFound) {
                strays.push(id);
            }
        }
        if strays.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: processes run without a record: {strays:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every sandbox the clients saw created is either still recorded or tombstoned.
    for id in &created {
        let known = api::get(&mut client, id).await.is_some();
        if known {
            continue;
        }
        let response = client
            .delete_sandbox(delete_request(by_id(id), false, Duration::from_secs(60)))
            .await
            .unwrap_or_else(|status| {
                panic!("seed {seed}: {id} vanished without a tombstone: {status}")
            })
            .into_inner();
        assert_eq!(
            response.outcome,
            pb::DeleteOutcome::Deleted as i32,
            "seed {seed}: {id}"
        );
    }
}
