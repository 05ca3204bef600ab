//! Small helpers over the generated gRPC client, so tests read as the steps they take.

use std::time::Duration;

use sandgate_proto::v1 as pb;
use sandgate_proto::v1::sandbox_service_client::SandboxServiceClient;
use tonic::transport::Channel;

/// The generated client type.
pub type Client = SandboxServiceClient<Channel>;

/// Builds a create request for `argv` in the default workspace.
pub fn create_request(name: &str, argv: &[&str], grace: Duration) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        workspace: String::new(),
        name: name.to_string(),
        labels: Default::default(),
        spec: Some(pb::SandboxSpec {
            command: argv.iter().map(|s| s.to_string()).collect(),
            grace_period: Some(prost_types::Duration::try_from(grace).unwrap()),
            ..Default::default()
        }),
    }
}

/// Creates a sandbox running `argv` and returns it.
pub async fn create(
    client: &mut Client,
    name: &str,
    argv: &[&str],
    grace: Duration,
) -> pb::Sandbox {
    client
        .create_sandbox(create_request(name, argv, grace))
        .await
        .unwrap_or_else(|status| panic!("create {name} failed: {status}"))
        .into_inner()
}

/// Returns a reference by id.
pub fn by_id(id: &str) -> Option<pb::SandboxRef> {
    Some(pb::SandboxRef {
        workspace: String::new(),
        target: Some(pb::sandbox_ref::Target::Id(id.to_string())),
    })
}

/// Returns a reference by name in the default workspace.
pub fn by_name(name: &str) -> Option<pb::SandboxRef> {
    Some(pb::SandboxRef {
        workspace: String::new(),
        target: Some(pb::sandbox_ref::Target::Name(name.to_string())),
    })
}

/// Builds a delete request.
pub fn delete_request(
    target: Option<pb::SandboxRef>,
    wait: bool,
    timeout: Duration,
) -> pb::DeleteSandboxRequest {
    pb::DeleteSandboxRequest {
        target,
        wait,
        timeout: Some(prost_types::Duration::try_from(timeout).unwrap()),
        ..Default::default()
    }
}

/// Returns the sandbox with `id`, or `None` if it is NOT_FOUND.
pub async fn get(client: &mut Client, id: &str) -> Option<pb::Sandbox> {
    match client
        .get_sandbox(pb::GetSandboxRequest { target: by_id(id) })
        .await
    {
        Ok(response) => Some(response.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("get {id} failed: {status}"),
    }
}

/// Returns the phase of a sandbox message.
pub fn phase(sandbox: &pb::Sandbox) -> pb::SandboxPhase {
    pb::SandboxPhase::try_from(sandbox.phase).unwrap_or(pb::SandboxPhase::Unspecified)
}

/// Watches sandbox `id` until `predicate` holds for it, failing after `timeout`.
pub async fn wait_until(
    client: &mut Client,
    id: &str,
    timeout: Duration,
    what: &str,
    predicate: impl Fn(&pb::Sandbox) -> bool,
) -> pb::Sandbox {
    let request = pb::WatchSandboxesRequest {
        target: Some(pb::watch_sandboxes_request::Target::Id(id.to_string())),
        ..Default::default()
    };
    let mut stream = client
        .watch_sandboxes(request)
        .await
        .unwrap_or_else(|status| panic!("watch {id} failed: {status}"))
        .into_inner();
    let mut last = None;
    let waited = tokio::time::timeout(timeout, async {
        while let Some(event) = next_event(&mut stream).await {
            if let Some(sandbox) = event.sandbox {
                if predicate(&sandbox) {
                    return Some(sandbox);
                }
                last = Some(sandbox);
            }
        }
        None
    })
    .await;
    match waited {
        Ok(Some(sandbox)) => sandbox,
        Ok(None) => panic!("sandbox {id} was removed before it was {what}; last seen: {last:?}"),
        Err(_) => panic!("sandbox {id} was not {what} within {timeout:?}; last seen: {last:?}"),
    }
}

/// Waits until sandbox `id` is READY.
pub async fn wait_ready(client: &mut Client, id: &str) -> pb::Sandbox {
    wait_until(client, id, Duration::from_secs(20), "READY", |s| {
        phase(s) == pb::SandboxPhase::Ready
    })
    .await
}

/// Returns the next event of a watch stream, `None` at its end or on an error.
pub async fn next_event(stream: &mut tonic::Streaming<pb::WatchEvent>) -> Option<pb::WatchEvent> {
    stream.message().await.ok().flatten()
}
