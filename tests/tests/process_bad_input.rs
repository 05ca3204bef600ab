//! Bad input and store faults against a real gateway: every rejected request names the field,
//! and a deletion the store could not record is never acted on.

use std::time::Duration;

use sandgate_e2e::api::{self, by_id, create, delete_request, phase, wait_ready};
use sandgate_e2e::figures::Figures;
use sandgate_e2e::gateway::{Gateway, GatewayOptions};
use sandgate_e2e::processes;
use sandgate_e2e::target::DriverKind;
use sandgate_proto::v1 as pb;
use tonic::Code;

fn grace(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[tokio::test]
async fn huge_name_is_invalid_argument() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let huge = "a".repeat(100_000);
    let status = client
        .create_sandbox(api::create_request(&huge, &["true"], grace(1)))
        .await
        .expect_err("a 100,000-character name is rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(
        status.message().starts_with("name: "),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("100000 characters"),
        "{}",
        status.message()
    );
    assert!(
        status.message().len() < 500,
        "the message quotes a cut value"
    );

    let mut labelled = api::create_request("labelled", &["true"], grace(1));
    labelled.labels.insert("team".into(), "x".repeat(1 << 20));
    let status = client
        .create_sandbox(labelled)
        .await
        .expect_err("a 1 MiB label value is rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(
        status.message().starts_with("labels[team]: "),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn oversized_spec_is_invalid_argument() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    let mut request = api::create_request("big", &["sleep"], grace(1));
    request.spec.as_mut().unwrap().args = vec!["x".repeat(1 << 20)];
    let status = client
        .create_sandbox(request)
        .await
        .expect_err("a 1 MiB argument is rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(
        status.message().starts_with("spec: "),
        "{}",
        status.message()
    );
    let listed = client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .expect("list still works")
        .into_inner();
    assert!(listed.sandboxes.is_empty(), "nothing was recorded");
}

#[tokio::test]
async fn malformed_durations_are_invalid_argument() {
    let gateway = Gateway::start();
    let mut client = gateway.client().await;
    for (seconds, nanos) in [(1, -5), (1, 2_000_000_000), (-1, 0)] {
        let mut request = api::create_request("dur", &["true"], grace(1));
        request.spec.as_mut().unwrap().grace_period =
            Some(prost_types::Duration { seconds, nanos });
        let status = client
            .create_sandbox(request)
            .await
            .expect_err("a malformed duration is rejected");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{seconds}s {nanos}ns: {status}"
        );
        assert!(
            status.message().starts_with("spec.grace_period: "),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn unrecorded_deletion_is_never_acted_on() {
    let fault_dir = tempfile::tempdir().unwrap();
    let fault_file = fault_dir.path().join("store-full");
    let gateway = Gateway::start_with(GatewayOptions {
        env: vec![(
            "SANDGATE_TEST_STORE_FAULT_FILE".into(),
            fault_file.display().to_string(),
        )],
        ..Default::default()
    });
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "kept", &["sleep", "1000"], grace(1)).await;
    wait_ready(&mut client, &sandbox.id).await;
    let running = processes::sandbox_processes(gateway.data_dir(), &sandbox.id);
    assert!(!running.is_empty());

    std::fs::write(&fault_file, "").unwrap();
    let status = client
        .delete_sandbox(delete_request(
            by_id(&sandbox.id),
            true,
            Duration::from_secs(10),
        ))
        .await
        .expect_err("the deletion cannot be recorded");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("cannot record the deletion"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("nothing was changed"),
        "{}",
        status.message()
    );

    // Give a wrongly started deletion time to show, then check that none did.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let record = api::get(&mut client, &sandbox.id)
        .await
        .expect("the record stays");
    assert_eq!(
        phase(&record),
        pb::SandboxPhase::Ready,
        "no deletion was recorded"
    );
    assert!(record.deletion_requested_at.is_none());
    for pid in &running {
        assert!(
            processes::is_alive(*pid),
            "pid {pid} was signalled for an unrecorded deletion"
        );
    }

    let output = gateway.cli(&["delete", "kept"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a store failure is a failure, not an outage"
    );
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("cannot record the deletion"), "{message}");
    assert!(!message.contains("lost connection"), "{message}");

    std::fs::remove_file(&fault_file).unwrap();
    let response = client
        .delete_sandbox(delete_request(
            by_id(&sandbox.id),
            true,
            Duration::from_secs(30),
        ))
        .await
        .expect("the deletion succeeds once the store writes again")
        .into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    assert!(processes::sandbox_processes(gateway.data_dir(), &sandbox.id).is_empty());
    let mut figures = Figures::new("store cannot write", DriverKind::Process);
    figures.iterations = 1;
    figures.faults = 2;
    figures.confirmed = 1;
    figures.outcome("deletions refused and not acted on", 2);
    figures.report();
}
