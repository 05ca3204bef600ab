//! Lifecycle and reconciler tests over a real store and an in-process driver whose backend state
//! each test sets by hand.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sandgate_core::{
    DeleteParams, DriverDetails, LiveStatus, Observed, Phase, RemovalPath, SandboxId,
    SandboxRecord, SandboxSpec,
};
use sandgate_driver::{DeletePlan, Driver, DriverError, Found, Observation};
use sandgate_server::lifecycle::{DeleteResult, Lifecycle};
use sandgate_server::reconcile::{self, INTERRUPTED_REASON, ReconcilerConfig};
use sandgate_store::{Store, StoreOptions};
use tokio::sync::{Notify, mpsc, watch};

#[derive(Default)]
struct Backend {
    objects: HashMap<SandboxId, Found>,
    deletes: Vec<(SandboxId, DeletePlan)>,
    orphans_deleted: Vec<SandboxId>,
}

/// A driver whose backend is a map that the test edits.
#[derive(Default)]
struct FakeDriver {
    backend: Mutex<Backend>,
    /// When set, create waits for this before it returns.
    create_gate: Mutex<Option<Arc<Notify>>>,
    /// When set, delete fails with this transient error.
    delete_error: Mutex<Option<String>>,
    /// When set, the next list returns these in place of the backend, as a list read before the
    /// backend last changed.
    stale_list: Mutex<Option<Vec<Found>>>,
}

impl FakeDriver {
    fn set(&self, id: SandboxId, observed: Observed, age: Duration) {
        let found = Found {
            id,
            created_at: Some(SystemTime::now() - age),
            observed,
            details: details(id),
        };
        self.backend.lock().unwrap().objects.insert(id, found);
    }

    fn remove(&self, id: SandboxId) {
        self.backend.lock().unwrap().objects.remove(&id);
    }

    fn deletes(&self) -> Vec<(SandboxId, DeletePlan)> {
        self.backend.lock().unwrap().deletes.clone()
    }
}

fn details(id: SandboxId) -> DriverDetails {
    DriverDetails {
        driver: "fake".into(),
        attributes: BTreeMap::from([("object".to_string(), format!("fake-{}", id.simple()))]),
    }
}

fn running() -> Observed {
    Observed::Present {
        status: LiveStatus::Ready("running".into()),
        terminating: None,
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _record: &SandboxRecord) -> Result<(), DriverError> {
        Ok(())
    }

    async fn start(
        &self,
        _records: Vec<SandboxRecord>,
        _sink: mpsc::UnboundedSender<Observation>,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    async fn create(&self, record: &SandboxRecord) -> Result<DriverDetails, DriverError> {
        let gate = self.create_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.notified().await;
        }
        self.set(record.id, running(), Duration::ZERO);
        Ok(details(record.id))
    }

    async fn delete(&self, record: &SandboxRecord, plan: DeletePlan) -> Result<(), DriverError> {
        if let Some(message) = self.delete_error.lock().unwrap().clone() {
            return Err(DriverError::Transient(message));
        }
        let mut backend = self.backend.lock().unwrap();
        backend.deletes.push((record.id, plan));
        if let Some(found) = backend.objects.get_mut(&record.id)
            && let Observed::Present { terminating, .. } = &mut found.observed
        {
            *terminating = Some("object terminating".into());
        }
        Ok(())
    }

    async fn observe(&self, record: &SandboxRecord) -> Result<Observed, DriverError> {
        let backend = self.backend.lock().unwrap();
        Ok(backend
            .objects
            .get(&record.id)
            .map(|found| found.observed.clone())
            .unwrap_or(Observed::Gone { exit_code: None }))
    }

    async fn list(&self) -> Result<Vec<Found>, DriverError> {
        if let Some(stale) = self.stale_list.lock().unwrap().take() {
            return Ok(stale);
        }
        Ok(self
            .backend
            .lock()
            .unwrap()
            .objects
            .values()
            .cloned()
            .collect())
    }

    async fn delete_orphan(&self, id: SandboxId) -> Result<(), DriverError> {
        let mut backend = self.backend.lock().unwrap();
        backend.orphans_deleted.push(id);
        backend.objects.remove(&id);
        Ok(())
    }
}

struct Harness {
    lifecycle: Arc<Lifecycle>,
    driver: Arc<FakeDriver>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let driver = Arc::new(FakeDriver::default());
    let (stop, stop_signal) = watch::channel(false);
    let lifecycle = Arc::new(Lifecycle::new(store, driver.clone(), stop_signal));
    Harness {
        lifecycle,
        driver,
        _stop: stop,
        _dir: dir,
    }
}

fn config() -> ReconcilerConfig {
    ReconcilerConfig {
        interval: Duration::from_secs(60),
        orphan_grace: Duration::from_secs(120),
        tombstone_retention: Duration::from_secs(86_400),
    }
}

fn record(name: &str, age: Duration) -> SandboxRecord {
    let spec = SandboxSpec {
        command: vec!["sleep".into()],
        grace_period: Duration::from_secs(10),
        ..SandboxSpec::default()
    };
    SandboxRecord::new(
        "default".into(),
        name.into(),
        BTreeMap::new(),
        spec,
        SystemTime::now() - age,
    )
}

/// Waits until `condition` holds, checking every 10 ms, and fails after 5 s naming `what`.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const PLAIN: DeleteParams = DeleteParams {
    grace_period: None,
    force: false,
};

#[tokio::test]
async fn reconciler_completes_deletion_of_gone_compute() {
    let h = harness();
    let created = h
        .lifecycle
        .create(record("a", Duration::ZERO))
        .await
        .unwrap();
    let DeleteResult::Accepted(deleting) = h.lifecycle.delete(created.id, PLAIN).await.unwrap()
    else {
        panic!("the deletion is accepted while the object exists");
    };
    assert_eq!(deleting.phase, Phase::Deleting);

    // Once the deletion task has issued its delete and observed the result, it sleeps until the
    // kill deadline, 10 s away, so only the reconciler can notice what happens next.
    let store = h.lifecycle.store().clone();
    eventually("the deletion task observes the object terminating", || {
        store
            .get(&created.id)
            .is_some_and(|record| record.phase_reason == "object terminating")
    })
    .await;

    // The object goes away without any event reaching the gateway.
    h.driver.remove(created.id);
    let report = reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    assert_eq!(report.removed, 1);
    let tombstone = h
        .lifecycle
        .store()
        .tombstone(&created.id)
        .expect("tombstone");
    assert_eq!(tombstone.path, RemovalPath::Reconciler);
    assert!(h.lifecycle.store().get(&created.id).is_none());
}

#[tokio::test]
async fn reconciler_marks_vanished_compute_error() {
    let h = harness();
    let old = h
        .lifecycle
        .store()
        .insert(record("old", Duration::from_secs(300)))
        .await
        .unwrap();
    h.lifecycle.record_details(old.id, details(old.id)).await;

    let report = reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    assert_eq!(report.changed, 1);
    let now = h.lifecycle.store().get(&old.id).unwrap();
    assert_eq!(now.phase, Phase::Error);
    assert_eq!(now.phase_reason, sandgate_core::lifecycle::VANISHED_REASON);
}

#[tokio::test]
async fn reconciler_leaves_young_records_alone() {
    let h = harness();
    let young = h
        .lifecycle
        .store()
        .insert(record("young", Duration::from_secs(1)))
        .await
        .unwrap();
    reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    assert_eq!(
        h.lifecycle.store().get(&young.id).unwrap().phase,
        Phase::Provisioning
    );
}

#[tokio::test]
async fn reconciler_resolves_interrupted_creations() {
    let h = harness();
    let store = h.lifecycle.store();
    let found = store
        .insert(record("found", Duration::from_secs(300)))
        .await
        .unwrap();
    let lost = store
        .insert(record("lost", Duration::from_secs(300)))
        .await
        .unwrap();
    h.driver.set(found.id, running(), Duration::from_secs(290));

    reconcile::pass(&h.lifecycle, &config()).await.unwrap();

    let found = store.get(&found.id).unwrap();
    assert_eq!(found.phase, Phase::Ready);
    assert_eq!(
        found.driver,
        details(found.id),
        "the found object's details are recorded"
    );
    let lost = store.get(&lost.id).unwrap();
    assert_eq!(lost.phase, Phase::Error);
    assert_eq!(lost.phase_reason, INTERRUPTED_REASON);
}

#[tokio::test]
async fn reconciler_deletes_old_orphans_only() {
    let h = harness();
    let old = SandboxId::new_random();
    let young = SandboxId::new_random();
    h.driver.set(old, running(), Duration::from_secs(121));
    h.driver.set(young, running(), Duration::from_secs(5));

    let report = reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    assert_eq!(report.orphans_deleted, 1);
    let deleted = h.driver.backend.lock().unwrap().orphans_deleted.clone();
    assert_eq!(deleted, vec![old]);
}

/// A removal confirmed before the driver was asked to delete leaves the driver's files of a
/// finished sandbox, listed as Gone with no record.
#[tokio::test]
async fn reconciler_removes_leftovers_of_removed_sandboxes() {
    let h = harness();
    let created = h
        .lifecycle
        .create(record("done", Duration::ZERO))
        .await
        .unwrap();
    h.lifecycle.delete(created.id, PLAIN).await.unwrap();
    h.driver.remove(created.id);
    // The deletion task may confirm the removal before the pass does, so either path counts,
    // but exactly one of them.
    let report = reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    let tombstone = h
        .lifecycle
        .store()
        .tombstone(&created.id)
        .expect("the removal is confirmed");
    let by_reconciler = usize::from(tombstone.path == RemovalPath::Reconciler);
    assert_eq!(report.removed, by_reconciler, "{tombstone:?}");

    // What the driver keeps of the removed sandbox, and of one it never had a record of.
    let stranger = SandboxId::new_random();
    for id in [created.id, stranger] {
        h.driver.set(
            id,
            Observed::Gone { exit_code: Some(0) },
            Duration::from_secs(600),
        );
    }
    let report = reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    assert_eq!(
        report.orphans_deleted, 0,
        "nothing ran, so nothing is an orphan"
    );
    let cleaned = h.driver.backend.lock().unwrap().orphans_deleted.clone();
    assert_eq!(
        cleaned,
        vec![created.id],
        "only the leftovers of the removed sandbox are removed"
    );
}

#[tokio::test]
async fn reconciler_redrives_deleting_records() {
    let h = harness();
    let created = h
        .lifecycle
        .create(record("r", Duration::ZERO))
        .await
        .unwrap();
    h.lifecycle.delete(created.id, PLAIN).await.unwrap();
    eventually("the deletion task issues a delete", || {
        !h.driver.deletes().is_empty()
    })
    .await;

    let report = reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    assert_eq!(report.deletions_driven, 1);
    let record = h.lifecycle.store().get(&created.id).unwrap();
    assert_eq!(
        record.phase,
        Phase::Deleting,
        "DELETING is sticky across passes"
    );
    assert_eq!(record.phase_reason, "object terminating");
}

#[tokio::test]
async fn force_escalates_the_deletion_under_way() {
    let h = harness();
    let created = h
        .lifecycle
        .create(record("e", Duration::ZERO))
        .await
        .unwrap();
    h.lifecycle.delete(created.id, PLAIN).await.unwrap();
    let force = DeleteParams {
        grace_period: None,
        force: true,
    };
    h.lifecycle.delete(created.id, force).await.unwrap();

    eventually("force reaches the driver", || {
        h.driver.deletes().iter().any(|(_, plan)| plan.force)
    })
    .await;
    let deletion = h
        .lifecycle
        .store()
        .get(&created.id)
        .unwrap()
        .deletion
        .unwrap();
    assert!(deletion.force);
    assert!(deletion.kill_at <= SystemTime::now());
}

#[tokio::test]
async fn stale_list_does_not_overwrite_newer_state() {
    let h = harness();
    let created = h
        .lifecycle
        .create(record("g", Duration::ZERO))
        .await
        .unwrap();
    h.lifecycle
        .apply(created.id, running(), RemovalPath::Request)
        .await;
    // The list was read while the compute looked broken, but it runs now.
    let broken = Observed::Present {
        status: LiveStatus::Error("object missing".into()),
        terminating: None,
    };
    let stale = Found {
        id: created.id,
        created_at: Some(SystemTime::now()),
        observed: broken,
        details: details(created.id),
    };
    *h.driver.stale_list.lock().unwrap() = Some(vec![stale]);

    let report = reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    assert_eq!(report.changed, 0);
    let record = h.lifecycle.store().get(&created.id).unwrap();
    assert_eq!(record.phase, Phase::Ready, "{}", record.phase_reason);
}

#[tokio::test]
async fn stale_list_does_not_make_orphans() {
    let h = harness();
    let created = h
        .lifecycle
        .create(record("h", Duration::ZERO))
        .await
        .unwrap();
    h.lifecycle.delete(created.id, PLAIN).await.unwrap();
    h.driver.remove(created.id);
    let gone = Observed::Gone { exit_code: None };
    h.lifecycle
        .apply(created.id, gone, RemovalPath::Request)
        .await;
    assert!(h.lifecycle.store().get(&created.id).is_none());
    // The list was read just before the removal, so it still shows the compute.
    let stale = Found {
        id: created.id,
        created_at: Some(SystemTime::now()),
        observed: running(),
        details: details(created.id),
    };
    *h.driver.stale_list.lock().unwrap() = Some(vec![stale]);

    let report = reconcile::pass(&h.lifecycle, &config()).await.unwrap();
    assert_eq!(report.orphans_deleted, 0);
    assert!(h.driver.backend.lock().unwrap().orphans_deleted.is_empty());
}

#[tokio::test]
async fn undeliverable_delete_names_its_cause() {
    let h = harness();
    let created = h
        .lifecycle
        .create(record("f", Duration::ZERO))
        .await
        .unwrap();
    *h.driver.delete_error.lock().unwrap() = Some("connection refused".into());
    h.lifecycle.delete(created.id, PLAIN).await.unwrap();

    let store = h.lifecycle.store();
    eventually("the reason names the failed delete", || {
        store
            .get(&created.id)
            .is_some_and(|record| record.phase_reason.contains("connection refused"))
    })
    .await;
    let record = store.get(&created.id).unwrap();
    assert_eq!(record.phase, Phase::Deleting);
    assert!(
        record
            .phase_reason
            .starts_with("the delete cannot be issued yet: "),
        "{}",
        record.phase_reason
    );

    // Once the backend responds again, the retried delete goes through and the removal lands.
    *h.driver.delete_error.lock().unwrap() = None;
    eventually("the retried delete reaches the backend", || {
        !h.driver.deletes().is_empty()
    })
    .await;
    h.driver.remove(created.id);
    let gone = Observed::Gone { exit_code: None };
    h.lifecycle
        .apply(created.id, gone, RemovalPath::Request)
        .await;
    let removed = h
        .lifecycle
        .wait_removed(created.id, Duration::from_secs(5))
        .await;
    assert!(removed.is_ok(), "{removed:?}");
}

#[tokio::test]
async fn delete_during_create_waits_for_create() {
    let h = harness();
    let gate = Arc::new(Notify::new());
    *h.driver.create_gate.lock().unwrap() = Some(gate.clone());

    let lifecycle = h.lifecycle.clone();
    let creating = tokio::spawn(async move { lifecycle.create(record("c", Duration::ZERO)).await });
    let id = loop {
        if let Some(record) = h.lifecycle.store().get_by_name("default", "c") {
            break record.id;
        }
        tokio::task::yield_now().await;
    };
    h.lifecycle.delete(id, PLAIN).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        h.driver.deletes().is_empty(),
        "the delete raced the create in flight"
    );

    gate.notify_one();
    creating.await.unwrap().unwrap();
    eventually("the delete follows the create", || {
        !h.driver.deletes().is_empty()
    })
    .await;
}

#[tokio::test]
async fn waits_by_id_ignore_a_new_generation() {
    let h = harness();
    let first = h
        .lifecycle
        .create(record("g", Duration::ZERO))
        .await
        .unwrap();
    h.lifecycle.delete(first.id, PLAIN).await.unwrap();

    let lifecycle = h.lifecycle.clone();
    let waiter = tokio::spawn(async move {
        lifecycle
            .wait_removed(first.id, Duration::from_secs(10))
            .await
    });

    h.driver.remove(first.id);
    h.lifecycle
        .apply(
            first.id,
            Observed::Gone { exit_code: None },
            RemovalPath::Request,
        )
        .await;
    let second = h
        .lifecycle
        .create(record("g", Duration::ZERO))
        .await
        .unwrap();
    assert_ne!(second.id, first.id);

    let tombstone = waiter.await.unwrap().expect("the old wait completes");
    assert_eq!(tombstone.id, first.id);

    let status = h
        .lifecycle
        .wait_removed(second.id, Duration::from_secs(1))
        .await
        .expect_err("the new generation is not removed");
    assert!(status.to_string().contains("still present"), "{status}");
}
