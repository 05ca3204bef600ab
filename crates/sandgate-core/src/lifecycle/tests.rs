use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::record::SandboxSpec;

fn epoch(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn record() -> SandboxRecord {
    let spec = SandboxSpec {
        command: vec!["sleep".into(), "100".into()],
        grace_period: Duration::from_secs(10),
        ..SandboxSpec::default()
    };
    SandboxRecord::new(
        "default".into(),
        "web".into(),
        BTreeMap::new(),
        spec,
        epoch(0),
    )
}

fn present(status: LiveStatus) -> Observed {
    Observed::Present {
        status,
        terminating: None,
    }
}

fn updated(change: Change) -> SandboxRecord {
    match change {
        Change::Updated(record) => record,
        other => panic!("expected an updated record, got {other:?}"),
    }
}

fn started(decision: DeletionDecision) -> SandboxRecord {
    match decision {
        DeletionDecision::Started(record) => record,
        other => panic!("expected a started deletion, got {other:?}"),
    }
}

#[test]
fn live_phases_follow_observations() {
    let rec = record();
    let ready = updated(apply_observation(
        &rec,
        &present(LiveStatus::Ready("command running".into())),
        RemovalPath::Request,
        epoch(1),
    ));
    assert_eq!(ready.phase, Phase::Ready);
    assert_eq!(ready.phase_reason, "command running");
    assert_eq!(ready.reason_since, epoch(1));

    let error = updated(apply_observation(
        &ready,
        &present(LiveStatus::Error("ReconcilerError: boom".into())),
        RemovalPath::Request,
        epoch(2),
    ));
    assert_eq!(error.phase, Phase::Error);

    let recovered = updated(apply_observation(
        &error,
        &present(LiveStatus::Ready("command running".into())),
        RemovalPath::Request,
        epoch(3),
    ));
    assert_eq!(recovered.phase, Phase::Ready);
}

#[test]
fn same_observation_changes_nothing() {
    let rec = record();
    let observed = present(LiveStatus::Ready("command running".into()));
    let ready = updated(apply_observation(
        &rec,
        &observed,
        RemovalPath::Request,
        epoch(1),
    ));
    let again = apply_observation(&ready, &observed, RemovalPath::Request, epoch(9));
    assert_eq!(again, Change::Unchanged);
}

#[test]
fn exit_records_code_and_stays() {
    let rec = record();
    let exited = updated(apply_observation(
        &rec,
        &Observed::Gone { exit_code: Some(3) },
        RemovalPath::Request,
        epoch(1),
    ));
    assert_eq!(exited.phase, Phase::Exited);
    assert_eq!(exited.exit_code, Some(3));
    assert_eq!(exited.phase_reason, "command exited with status 3");

    let later = apply_observation(
        &exited,
        &Observed::Gone { exit_code: None },
        RemovalPath::Request,
        epoch(2),
    );
    assert_eq!(later, Change::Unchanged);
}

#[test]
fn vanished_compute_is_error() {
    let rec = record();
    let gone = updated(apply_observation(
        &rec,
        &Observed::Gone { exit_code: None },
        RemovalPath::Request,
        epoch(1),
    ));
    assert_eq!(gone.phase, Phase::Error);
    assert_eq!(gone.phase_reason, VANISHED_REASON);
}

#[test]
fn deleting_is_sticky() {
    let rec = started(request_deletion(
        &record(),
        DeleteParams {
            grace_period: None,
            force: false,
        },
        epoch(5),
    ));
    assert_eq!(rec.phase, Phase::Deleting);
    let deletion = rec.deletion.clone().unwrap();
    assert_eq!(deletion.requested_at, epoch(5));
    assert_eq!(deletion.kill_at, epoch(15));

    for status in [
        LiveStatus::Ready("x".into()),
        LiveStatus::Error("x".into()),
        LiveStatus::Provisioning("x".into()),
        LiveStatus::Unknown("x".into()),
        LiveStatus::Exited(0),
    ] {
        let change = apply_observation(&rec, &present(status), RemovalPath::Request, epoch(6));
        match change {
            Change::Unchanged => {}
            Change::Updated(next) => assert_eq!(next.phase, Phase::Deleting),
            Change::Removed(_) => panic!("a present observation removed the record"),
        }
    }
    assert!(check_transition(&rec, Phase::Ready).is_err());
}

#[test]
fn deleting_reason_follows_driver() {
    let rec = started(request_deletion(
        &record(),
        DeleteParams {
            grace_period: None,
            force: false,
        },
        epoch(5),
    ));
    let observed = Observed::Present {
        status: LiveStatus::Ready("command running".into()),
        terminating: Some("process group still running after SIGTERM".into()),
    };
    let next = updated(apply_observation(
        &rec,
        &observed,
        RemovalPath::Request,
        epoch(6),
    ));
    assert_eq!(next.phase, Phase::Deleting);
    assert_eq!(
        next.phase_reason,
        "process group still running after SIGTERM"
    );
    assert_eq!(next.reason_since, epoch(6));

    let same = apply_observation(&next, &observed, RemovalPath::Request, epoch(8));
    assert_eq!(
        same,
        Change::Unchanged,
        "a repeated reason must not move reason_since"
    );
}

#[test]
fn gone_removes_deleting_record() {
    let rec = started(request_deletion(
        &record(),
        DeleteParams {
            grace_period: None,
            force: false,
        },
        epoch(5),
    ));
    let change = apply_observation(
        &rec,
        &Observed::Gone { exit_code: None },
        RemovalPath::Reconciler,
        epoch(7),
    );
    let Change::Removed(tombstone) = change else {
        panic!("expected removal, got {change:?}");
    };
    assert_eq!(tombstone.id, rec.id);
    assert_eq!(tombstone.deletion_requested_at, epoch(5));
    assert_eq!(tombstone.deleted_at, epoch(7));
    assert_eq!(tombstone.path, RemovalPath::Reconciler);
}

#[test]
fn removal_of_live_record_is_rejected() {
    let error = confirm_removal(&record(), RemovalPath::Request, epoch(1)).unwrap_err();
    assert!(matches!(error, TransitionError::RemovedWhileLive { .. }));
}

#[test]
fn second_delete_escalates_never_slows() {
    let params = |grace: u64, force: bool| DeleteParams {
        grace_period: Some(Duration::from_secs(grace)),
        force,
    };
    let rec = started(request_deletion(&record(), params(30, false), epoch(0)));
    assert_eq!(rec.deletion.as_ref().unwrap().kill_at, epoch(30));

    assert_eq!(
        request_deletion(&rec, params(60, false), epoch(1)),
        DeletionDecision::Joined
    );
    assert_eq!(
        request_deletion(&rec, params(29, false), epoch(1)),
        DeletionDecision::Joined,
        "epoch 1 + 29 s is not earlier than epoch 30"
    );

    let DeletionDecision::Escalated(faster) = request_deletion(&rec, params(5, false), epoch(1))
    else {
        panic!("a shorter grace period must escalate");
    };
    let deletion = faster.deletion.clone().unwrap();
    assert_eq!(deletion.kill_at, epoch(6));
    assert_eq!(deletion.requested_at, epoch(0));
    assert!(!deletion.force);

    let DeletionDecision::Escalated(forced) = request_deletion(&faster, params(99, true), epoch(2))
    else {
        panic!("force must escalate");
    };
    let deletion = forced.deletion.clone().unwrap();
    assert_eq!(deletion.kill_at, epoch(2));
    assert!(deletion.force);

    let tombstone = confirm_removal(&forced, RemovalPath::Request, epoch(3)).unwrap();
    assert_eq!(tombstone.path, RemovalPath::Force);
}

// ===== property test against a model =====

#[derive(Clone, Debug)]
enum Op {
    Observe(Observed),
    Delete { grace: Option<u64>, force: bool },
    Tick(u64),
}

fn status_strategy() -> impl Strategy<Value = LiveStatus> {
    prop_oneof![
        "[a-c]{1,2}".prop_map(LiveStatus::Provisioning),
        "[a-c]{1,2}".prop_map(LiveStatus::Ready),
        (-9i32..4).prop_map(LiveStatus::Exited),
        "[a-c]{1,2}".prop_map(LiveStatus::Error),
        "[a-c]{1,2}".prop_map(LiveStatus::Unknown),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (status_strategy(), proptest::option::of("[x-z]{1,2}"))
            .prop_map(|(status, terminating)| Op::Observe(Observed::Present { status, terminating })),
        1 => proptest::option::of(-3i32..3)
            .prop_map(|exit_code| Op::Observe(Observed::Gone { exit_code })),
        2 => (proptest::option::of(0u64..40), any::<bool>())
            .prop_map(|(grace, force)| Op::Delete { grace, force }),
        2 => (0u64..20).prop_map(Op::Tick),
    ]
}

proptest! {
    #[test]
    fn operations_keep_invariants(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        let mut now = 100u64;
        let mut current = Some(record());
        let mut was_deleting = false;
        let mut requested_at: Option<SystemTime> = None;
        let mut kill_at: Option<SystemTime> = None;

        for op in ops {
            let Some(rec) = current.clone() else {
                // Removed records never come back: nothing can be applied to them.
                break;
            };
            match op {
                Op::Tick(secs) => now += secs,
                Op::Delete { grace, force } => {
                    let params = DeleteParams {
                        grace_period: grace.map(Duration::from_secs),
                        force,
                    };
                    match request_deletion(&rec, params, epoch(now)) {
                        DeletionDecision::Started(next) => {
                            prop_assert!(!was_deleting, "a DELETING record started again");
                            current = Some(next);
                        }
                        DeletionDecision::Escalated(next) => {
                            prop_assert!(was_deleting);
                            let old = kill_at.unwrap();
                            let new = next.deletion.as_ref().unwrap().kill_at;
                            prop_assert!(new <= old, "kill_at moved later");
                            current = Some(next);
                        }
                        DeletionDecision::Joined => prop_assert!(was_deleting),
                    }
                }
                Op::Observe(observed) => {
                    match apply_observation(&rec, &observed, RemovalPath::Request, epoch(now)) {
                        Change::Unchanged => {}
                        Change::Updated(next) => {
                            if next.phase_reason == rec.phase_reason {
                                prop_assert_eq!(next.reason_since, rec.reason_since);
                            } else {
                                prop_assert_eq!(next.reason_since, epoch(now));
                            }
                            current = Some(next);
                        }
                        Change::Removed(tombstone) => {
                            prop_assert!(was_deleting, "a live record was removed");
                            let removed_by_gone = matches!(observed, Observed::Gone { .. });
                            prop_assert!(removed_by_gone, "only a Gone observation removes");
                            prop_assert_eq!(Some(tombstone.deletion_requested_at), requested_at);
                            current = None;
                        }
                    }
                }
            }

            if let Some(rec) = &current {
                if was_deleting {
                    prop_assert_eq!(rec.phase, Phase::Deleting, "DELETING was left");
                }
                if rec.phase == Phase::Deleting {
                    let deletion = rec.deletion.as_ref().unwrap();
                    if let Some(first) = requested_at {
                        prop_assert_eq!(deletion.requested_at, first);
                    }
                    if let Some(previous) = kill_at {
                        prop_assert!(deletion.kill_at <= previous);
                    }
                    was_deleting = true;
                    requested_at = Some(deletion.requested_at);
                    kill_at = Some(deletion.kill_at);
                } else {
                    prop_assert!(rec.deletion.is_none());
                }
            }
        }
    }
}
