use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sandgate_core::lifecycle::{self, Change, DeleteParams, DeletionDecision};
use sandgate_core::{Observed, Phase, RemovalPath, SandboxSpec};

use super::*;

fn new_record(name: &str) -> SandboxRecord {
    let spec = SandboxSpec {
        command: vec!["sleep".into(), "1".into()],
        grace_period: Duration::from_secs(1),
        ..SandboxSpec::default()
    };
    SandboxRecord::new(
        "default".into(),
        name.into(),
        BTreeMap::new(),
        spec,
        SystemTime::now(),
    )
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).expect("store opens")
}

async fn start_deletion(store: &Store, id: SandboxId) -> SandboxRecord {
    let modified = store
        .modify(id, |record| {
            let params = DeleteParams {
                grace_period: None,
                force: false,
            };
            match lifecycle::request_deletion(record, params, SystemTime::now()) {
                DeletionDecision::Started(next) | DeletionDecision::Escalated(next) => {
                    Write::Update(next)
                }
                DeletionDecision::Joined => Write::Keep,
            }
        })
        .await
        .unwrap();
    match modified {
        Modified::Updated(record) => record,
        other => panic!("expected the deletion to be written, got {other:?}"),
    }
}

async fn confirm_gone(store: &Store, id: SandboxId) -> Modified {
    store
        .modify(id, |record| {
            let observed = Observed::Gone { exit_code: None };
            match lifecycle::apply_observation(
                record,
                &observed,
                RemovalPath::Request,
                SystemTime::now(),
            ) {
                Change::Removed(tombstone) => Write::Remove(tombstone),
                Change::Updated(next) => Write::Update(next),
                Change::Unchanged => Write::Keep,
            }
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn insert_assigns_increasing_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = store.insert(new_record("a")).await.unwrap();
    let b = store.insert(new_record("b")).await.unwrap();
    assert_eq!(a.revision, 1);
    assert_eq!(b.revision, 2);
    assert_eq!(store.revision(), 2);
    assert_eq!(store.get_by_name("default", "a").unwrap().id, a.id);
}

#[tokio::test]
async fn name_taken_while_live_or_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store.insert(new_record("web")).await.unwrap();

    let error = store.insert(new_record("web")).await.unwrap_err();
    assert!(matches!(error, StoreError::NameTaken { .. }), "{error}");

    start_deletion(&store, first.id).await;
    let error = store.insert(new_record("web")).await.unwrap_err();
    let StoreError::NameTaken { holder, .. } = error else {
        panic!("expected NameTaken");
    };
    assert_eq!(holder.phase, Phase::Deleting);

    assert!(matches!(
        confirm_gone(&store, first.id).await,
        Modified::Removed(_)
    ));
    let second = store.insert(new_record("web")).await.unwrap();
    assert_ne!(second.id, first.id);
}

#[tokio::test]
async fn removal_leaves_tombstone_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, removed) = {
        let store = open(dir.path());
        let kept = store.insert(new_record("kept")).await.unwrap();
        let removed = store.insert(new_record("removed")).await.unwrap();
        let deleting = start_deletion(&store, kept.id).await;
        assert_eq!(deleting.phase, Phase::Deleting);
        start_deletion(&store, removed.id).await;
        confirm_gone(&store, removed.id).await;
        (kept, removed)
    };

    let store = open(dir.path());
    let reloaded = store.get(&kept.id).expect("record survives reopen");
    assert_eq!(
        reloaded.phase,
        Phase::Deleting,
        "DELETING survives a restart"
    );
    assert!(store.get(&removed.id).is_none());
    let tombstone = store
        .tombstone(&removed.id)
        .expect("tombstone survives reopen");
    assert_eq!(tombstone.name, "removed");
    assert_eq!(store.revision(), 5);
}

#[tokio::test]
async fn second_open_of_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .expect("second open fails");
    let message = error.to_string();
    assert!(
        message.contains("in use by another sandgate serve"),
        "{message}"
    );
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
}

#[tokio::test]
async fn injected_fault_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let record = store.insert(new_record("web")).await.unwrap();
    store.inject_write_fault(Some("disk full".into()));

    let result = store
        .modify(record.id, |record| {
            let params = DeleteParams {
                grace_period: None,
                force: false,
            };
            match lifecycle::request_deletion(record, params, SystemTime::now()) {
                DeletionDecision::Started(next) => Write::Update(next),
                _ => Write::Keep,
            }
        })
        .await;
    assert!(matches!(result, Err(StoreError::InjectedFault(_))));
    assert_eq!(store.get(&record.id).unwrap().phase, Phase::Provisioning);
    assert_eq!(store.revision(), 1);
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.get(&record.id).unwrap().phase, Phase::Provisioning);
}

#[tokio::test]
async fn page_limit_fails_write_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = Sqlite::open(&dir.path().join(DATABASE_FILE)).unwrap();
    sqlite.set_max_page_count(1).unwrap();
    let store = Store::with_persistence(Box::new(sqlite), None, StoreOptions::default()).unwrap();
    let mut record = new_record("big");
    record.spec.args = vec!["x".repeat(100_000)];
    let error = store.insert(record).await.unwrap_err();
    assert!(matches!(error, StoreError::Database(_)), "{error}");
    assert!(store.is_empty());
    assert_eq!(store.revision(), 0);
}

#[tokio::test]
async fn events_since_replays_or_expires() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        event_log_capacity: 3,
    };
    let store = Store::open(dir.path(), options).unwrap();
    for name in ["a", "b", "c", "d"] {
        store.insert(new_record(name)).await.unwrap();
    }
    let Since::Events(events) = store.events_since(2) else {
        panic!("revision 2 is within the window");
    };
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, vec![3, 4]);
    assert!(matches!(store.events_since(0), Since::Expired));
    assert!(matches!(store.events_since(1), Since::Events(_)));
    assert!(matches!(store.events_since(9), Since::Expired));
    let Since::Events(none) = store.events_since(4) else {
        panic!("the head revision has nothing after it");
    };
    assert!(none.is_empty());
}

/// Races a waiter's check-then-wait against the removal many times: every waiter must learn of
/// the removal, through the channel or the tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiter_never_misses_removal() {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = Sqlite::open(&dir.path().join(DATABASE_FILE)).unwrap();
    // Durability is not under test here, and full fsyncs would make thousands of rounds slow.
    sqlite.disable_fsync().unwrap();
    let store = Store::with_persistence(Box::new(sqlite), None, StoreOptions::default()).unwrap();

    let rounds = 3_000;
    for round in 0..rounds {
        let record = store
            .insert(new_record(&format!("r{round}")))
            .await
            .unwrap();
        start_deletion(&store, record.id).await;

        let waiter_store = store.clone();
        let id = record.id;
        let waiter = tokio::spawn(async move {
            if let Some(mut receiver) = waiter_store.subscribe(&id) {
                let state = receiver
                    .wait_for(|state| matches!(state, SandboxState::Removed(_)))
                    .await
                    .expect("the store keeps the sender while the record exists");
                return matches!(*state, SandboxState::Removed(_));
            }
            waiter_store.tombstone(&id).is_some()
        });
        let remover_store = store.clone();
        let remover = tokio::spawn(async move { confirm_gone(&remover_store, id).await });

        assert!(matches!(remover.await.unwrap(), Modified::Removed(_)));
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the waiter missed the removal and hung"))
            .unwrap();
        assert!(
            woke,
            "round {round}: the waiter found neither the removal nor the tombstone"
        );
    }
}
