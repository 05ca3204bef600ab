//! Tests of the client commands against an in-process gRPC server that returns what the gateway returns:
//! delete-then-wait by id, a DEADLINE_EXCEEDED status with its `DeletionStatus`, NOT_FOUND,
//! list paging, and an unreachable server.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures::Stream;
use prost::Message;
use sandgate_proto::v1::sandbox_service_server::{SandboxService, SandboxServiceServer};
use sandgate_proto::v1::{
    CreateSandboxRequest, DeleteOutcome, DeleteSandboxRequest, DeleteSandboxResponse,
    DeletionStatus, GetSandboxRequest, ListSandboxesRequest, ListSandboxesResponse, Sandbox,
    SandboxPhase, WaitSandboxDeletedRequest, WatchEvent, WatchSandboxesRequest, sandbox_ref,
};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

use crate::cli::{Cli, Command};
use crate::client::{EXIT_FAILED, EXIT_TIMED_OUT, EXIT_UNREACHABLE};
use crate::{commands, delete};

const GONE_ID: &str = "00000000-0000-4000-8000-000000000001";
const STUCK_ID: &str = "00000000-0000-4000-8000-000000000002";
const FLAKY_ID: &str = "00000000-0000-4000-8000-000000000003";
const STUCK_REASON: &str = "process group still running after SIGTERM";
const FULL_MESSAGE: &str =
    "cannot record the deletion: database or disk is full; nothing was changed";

/// Requests the fake server received, as short strings such as "delete web wait=false".
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn record(&self, call: String) {
        self.calls.lock().expect("calls lock").push(call);
    }
}

fn sandbox(id: &str, name: &str) -> Sandbox {
    Sandbox {
        id: id.into(),
        workspace: "default".into(),
        name: name.into(),
        phase: SandboxPhase::Deleting as i32,
        ..Sandbox::default()
    }
}

fn now_timestamp(ago: Duration) -> prost_types::Timestamp {
    let since = SystemTime::now() - ago;
    let seconds = since
        .duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_secs() as i64;
    prost_types::Timestamp { seconds, nanos: 0 }
}

#[tonic::async_trait]
impl SandboxService for Fake {
    async fn create_sandbox(
        &self,
        _request: Request<CreateSandboxRequest>,
    ) -> Result<Response<Sandbox>, Status> {
        Err(Status::unimplemented("create is not faked"))
    }

    async fn get_sandbox(
        &self,
        _request: Request<GetSandboxRequest>,
    ) -> Result<Response<Sandbox>, Status> {
        Err(Status::not_found("no such sandbox"))
    }

    async fn list_sandboxes(
        &self,
        request: Request<ListSandboxesRequest>,
    ) -> Result<Response<ListSandboxesResponse>, Status> {
        let request = request.into_inner();
        self.record(format!("list token={:?}", request.page_token));
        if !request.label_selector.is_empty() {
            return Ok(Response::new(ListSandboxesResponse {
                sandboxes: vec![sandbox(FLAKY_ID, "picked")],
                next_page_token: String::new(),
                revision: 1,
            }));
        }
        let (name, next_page_token) = if request.page_token.is_empty() {
            ("first", "page-2")
        } else {
            ("second", "")
        };
        Ok(Response::new(ListSandboxesResponse {
            sandboxes: vec![sandbox(GONE_ID, name)],
            next_page_token: next_page_token.into(),
            revision: 1,
        }))
    }

    async fn delete_sandbox(
        &self,
        request: Request<DeleteSandboxRequest>,
    ) -> Result<Response<DeleteSandboxResponse>, Status> {
        let request = request.into_inner();
        let name = match request.target.and_then(|target| target.target) {
            Some(sandbox_ref::Target::Name(name)) => name,
            // Deletions by id, as a selector makes them, find the store full.
            Some(sandbox_ref::Target::Id(_)) => {
                return Err(Status::resource_exhausted(FULL_MESSAGE));
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unexpected target {other:?}"
                )));
            }
        };
        self.record(format!("delete {name} wait={}", request.wait));
        let id = match name.as_str() {
            "gone" => GONE_ID,
            "stuck" => STUCK_ID,
            "flaky" => FLAKY_ID,
            "full" => return Err(Status::resource_exhausted(FULL_MESSAGE)),
            _ if request.ignore_not_found => {
                return Ok(Response::new(DeleteSandboxResponse {
                    outcome: DeleteOutcome::AlreadyAbsent as i32,
                    ..DeleteSandboxResponse::default()
                }));
            }
            _ => return Err(Status::not_found(format!("sandbox {name:?} not found"))),
        };
        Ok(Response::new(DeleteSandboxResponse {
            id: id.into(),
            outcome: DeleteOutcome::Accepted as i32,
            sandbox: Some(sandbox(id, &name)),
            tombstone: None,
        }))
    }

    async fn wait_sandbox_deleted(
        &self,
        request: Request<WaitSandboxDeletedRequest>,
    ) -> Result<Response<DeleteSandboxResponse>, Status> {
        let request = request.into_inner();
        let timeout = request.timeout.map_or(0, |timeout| timeout.seconds);
        self.record(format!("wait {} timeout<={}", request.id, timeout));
        if request.id == FLAKY_ID {
            let waits = self
                .calls
                .lock()
                .expect("calls lock")
                .iter()
                .filter(|call| call.starts_with("wait "))
                .count();
            if waits == 1 {
                return Err(Status::unavailable("sandgate is shutting down"));
            }
        }
        if request.id == GONE_ID || request.id == FLAKY_ID {
            return Ok(Response::new(DeleteSandboxResponse {
                id: request.id,
                outcome: DeleteOutcome::Deleted as i32,
                ..DeleteSandboxResponse::default()
            }));
        }
        let detail = DeletionStatus {
            id: request.id,
            phase: SandboxPhase::Deleting as i32,
            phase_reason: STUCK_REASON.into(),
            reason_since: Some(now_timestamp(Duration::from_secs(10))),
        };
        let details = tonic_types::Status {
            code: Code::DeadlineExceeded as i32,
            message: "deletion not confirmed in time".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/sandgate.v1.DeletionStatus".into(),
                value: detail.encode_to_vec(),
            }],
        };
        Err(Status::with_details(
            Code::DeadlineExceeded,
            "deletion not confirmed in time",
            details.encode_to_vec().into(),
        ))
    }

    type WatchSandboxesStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

    async fn watch_sandboxes(
        &self,
        _request: Request<WatchSandboxesRequest>,
    ) -> Result<Response<Self::WatchSandboxesStream>, Status> {
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }
}

/// Starts the fake server on a free loopback port and returns its URL.
async fn start(fake: Fake) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address: SocketAddr = listener.local_addr().expect("local address");
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SandboxServiceServer::new(fake))
            .serve_with_incoming(incoming),
    );
    format!("http://{address}")
}

fn command(args: &[&str]) -> Command {
    let mut argv = vec!["sandgate"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("arguments parse").command
}

async fn run_delete(args: &[&str]) -> Result<(), crate::client::Failure> {
    let Command::Delete(args) = command(args) else {
        panic!("not a delete command");
    };
    delete::delete(args).await
}

#[tokio::test]
async fn delete_waits_by_id_after_requesting() {
    let fake = Fake::default();
    let server = start(fake.clone()).await;
    let result = run_delete(&["delete", "gone", "--server", &server, "--timeout", "30s"]).await;
    assert_eq!(result, Ok(()));
    let calls = fake.calls.lock().expect("calls lock").clone();
    assert_eq!(calls[0], "delete gone wait=false");
    assert!(
        calls[1].starts_with(&format!("wait {GONE_ID} timeout<=")),
        "{calls:?}"
    );
    let timeout: i64 = calls[1].rsplit("<=").next().unwrap().parse().unwrap();
    assert!((28..=30).contains(&timeout), "{calls:?}");
}

#[tokio::test]
async fn delete_force_with_grace_period_is_usage_error() {
    let fake = Fake::default();
    let server = start(fake.clone()).await;
    let result = run_delete(&[
        "delete",
        "gone",
        "--server",
        &server,
        "--force",
        "--grace-period",
        "5s",
    ])
    .await;
    let failure = result.expect_err("force with a grace period of 5s is rejected");
    assert_eq!(failure.code, crate::client::EXIT_USAGE);
    assert!(failure.message.contains("--grace-period 5s"), "{failure}");
    assert!(
        fake.calls.lock().expect("calls lock").is_empty(),
        "a call was sent"
    );
}

#[tokio::test]
async fn delete_retries_wait_after_unavailable() {
    let fake = Fake::default();
    let server = start(fake.clone()).await;
    let result = run_delete(&["delete", "flaky", "--server", &server]).await;
    assert_eq!(result, Ok(()));
    let calls = fake.calls.lock().expect("calls lock").clone();
    let waits: Vec<&String> = calls
        .iter()
        .filter(|call| call.starts_with("wait "))
        .collect();
    assert_eq!(waits.len(), 2, "{calls:?}");
    assert!(
        waits.iter().all(|call| call.contains(FLAKY_ID)),
        "{calls:?}"
    );
}

#[tokio::test]
async fn delete_timeout_reports_deletion_status() {
    let server = start(Fake::default()).await;
    let failure = run_delete(&["delete", "stuck", "--server", &server, "--timeout", "2s"])
        .await
        .unwrap_err();
    assert_eq!(failure.code, EXIT_TIMED_OUT);
    assert!(
        failure.message.starts_with(&format!(
            "sandbox \"stuck\" still present after 2s: {STUCK_REASON} (for "
        )),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn delete_not_found_names_workspace() {
    let server = start(Fake::default()).await;
    let failure = run_delete(&["delete", "missing", "--server", &server])
        .await
        .unwrap_err();
    assert_eq!(failure.code, EXIT_FAILED);
    assert_eq!(
        failure.message,
        "sandbox \"missing\" not found in workspace \"default\""
    );

    let ignored = run_delete(&[
        "delete",
        "missing",
        "--ignore-not-found",
        "--server",
        &server,
    ])
    .await;
    assert_eq!(ignored, Ok(()));
}

#[tokio::test]
async fn delete_mixed_results_fail_overall() {
    let fake = Fake::default();
    let server = start(fake.clone()).await;
    let failure = run_delete(&["delete", "gone", "missing", "--server", &server])
        .await
        .unwrap_err();
    assert_eq!(failure.code, EXIT_FAILED);
    assert_eq!(
        failure.message,
        "1 of 2 sandboxes are not confirmed deleted"
    );
}

#[tokio::test]
async fn delete_failure_names_sandbox() {
    let server = start(Fake::default()).await;
    let failure = run_delete(&["delete", "full", "--server", &server])
        .await
        .unwrap_err();
    assert_eq!(failure.code, EXIT_FAILED);
    assert_eq!(failure.message, format!("sandbox \"full\": {FULL_MESSAGE}"));
}

#[tokio::test]
async fn selector_delete_failure_names_sandbox() {
    let server = start(Fake::default()).await;
    let failure = run_delete(&["delete", "-l", "team=ml", "--server", &server])
        .await
        .unwrap_err();
    assert_eq!(
        failure.message,
        format!("sandbox \"picked\": {FULL_MESSAGE}"),
        "a sandbox found by the selector is named, not only its id"
    );
}

#[tokio::test]
async fn wait_false_with_timeout_is_usage_error() {
    let failure = run_delete(&[
        "delete",
        "stuck",
        "--wait=false",
        "--timeout",
        "5s",
        "--server",
        "http://127.0.0.1:9",
    ])
    .await
    .unwrap_err();
    assert_eq!(failure.code, crate::client::EXIT_USAGE);
    assert!(
        failure
            .message
            .contains("--timeout 5s has no effect with --wait=false"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn delete_no_wait_skips_waiting() {
    let fake = Fake::default();
    let server = start(fake.clone()).await;
    let result = run_delete(&["delete", "stuck", "--no-wait", "--server", &server]).await;
    assert_eq!(result, Ok(()));
    let calls = fake.calls.lock().expect("calls lock").clone();
    assert_eq!(calls, ["delete stuck wait=false"]);
}

#[tokio::test]
async fn list_follows_page_tokens() {
    let fake = Fake::default();
    let server = start(fake.clone()).await;
    let Command::List(args) = command(&["list", "--server", &server, "-o", "json"]) else {
        panic!("not a list command");
    };
    assert_eq!(commands::list(args).await, Ok(()));
    let calls = fake.calls.lock().expect("calls lock").clone();
    assert_eq!(calls, ["list token=\"\"", "list token=\"page-2\""]);
}

#[tokio::test]
async fn unreachable_server_fails_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    let server = format!("http://{address}");
    let failure = run_delete(&["delete", "web", "--server", &server])
        .await
        .unwrap_err();
    assert_eq!(failure.code, EXIT_UNREACHABLE);
    assert_eq!(
        failure.message,
        format!(
            "cannot reach sandgate at {server}: connection refused; is `sandgate serve` running?"
        )
    );
}
