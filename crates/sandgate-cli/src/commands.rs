//! The client commands `create`, `get`, `list` and `watch`.

use std::time::{Duration, SystemTime};

use sandgate_core::duration::{self, DEFAULT_WAIT_TIMEOUT};
use sandgate_proto::v1::{
    CreateSandboxRequest, GetSandboxRequest, ListSandboxesRequest, Sandbox, SandboxPhase,
    SandboxSpec, WatchEventType, WatchSandboxesRequest, watch_sandboxes_request,
};
use tokio::time::Instant;

use crate::cli::{
    CreateArgs, GetArgs, ListArgs, OutputFormat, WatchArgs, WatchFormat, collect_pairs,
};
use crate::client::{
    self, EXIT_TIMED_OUT, EXIT_UNREACHABLE, Failure, Target, describe, is_unavailable,
};
use crate::watching::WatchState;
use crate::{json, output, timefmt};

/// Maximum time a unary call such as create, get or one page of list may take.
pub const UNARY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client keeps retrying after the gateway went away during a wait or a watch.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// Wraps a message in a request with the unary timeout.
fn unary<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(UNARY_TIMEOUT);
    request
}

fn print_json(value: &serde_json::Value) {
    println!("{value:#}");
}

/// Runs `sandgate create`.
pub async fn create(args: CreateArgs) -> Result<(), Failure> {
    let labels = collect_pairs("label", &args.labels).map_err(Failure::usage)?;
    let env = collect_pairs("environment variable", &args.env).map_err(Failure::usage)?;
    // Without a command, an image runs its own entrypoint.
    let (command, command_args) = match args.command.split_first() {
        Some((program, program_args)) => (vec![program.clone()], program_args.to_vec()),
        None if args.image.is_some() => (Vec::new(), Vec::new()),
        None => {
            return Err(Failure::usage(
                "missing command: give the program to run after `--`, such as `-- sleep 60`",
            ));
        }
    };
    let wait_timeout = args.timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT);

    let spec = SandboxSpec {
        command,
        args: command_args,
        env: env.into_iter().collect(),
        grace_period: args.grace_period.map(proto_duration),
        image: args.image.unwrap_or_default(),
    };
    let request = CreateSandboxRequest {
        workspace: args.client.workspace.clone(),
        name: args.name.clone(),
        labels: labels.into_iter().collect(),
        spec: Some(spec),
    };
    let target = Target::Name {
        workspace: args.client.workspace.clone(),
        name: args.name.clone(),
    };

    let mut connection = client::connect(&args.client.server).await?;
    let created = connection
        .rpc
        .create_sandbox(unary(request))
        .await
        .map_err(|status| describe(&status, Some(&target), &connection.server))?
        .into_inner();
    // The created line and the name come at once, so that a failed wait still leaves on stdout
    // the name of the sandbox that exists.
    match args.output {
        OutputFormat::Table => println!("sandbox {:?} created (id {})", created.name, created.id),
        OutputFormat::Name => println!("{}", output::resource_name(&created)),
        OutputFormat::Json => {}
    }
    if !args.wait_ready {
        if args.output == OutputFormat::Json {
            print_json(&json::sandbox(&created));
        }
        return Ok(());
    }

    let ready = wait_ready(&mut connection, created, wait_timeout).await?;
    match args.output {
        OutputFormat::Table => println!("sandbox {:?} is ready (id {})", ready.name, ready.id),
        OutputFormat::Json => print_json(&json::sandbox(&ready)),
        OutputFormat::Name => {}
    }
    Ok(())
}

/// Converts a duration to its protobuf form.
pub fn proto_duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: value.as_secs() as i64,
        nanos: value.subsec_nanos() as i32,
    }
}

/// Checks whether a sandbox's phase ends a wait for READY: `Ok(true)` once READY, an error for a
/// phase it cannot leave towards READY.
fn ready_check(sandbox: &Sandbox) -> Result<bool, Failure> {
    let name = &sandbox.name;
    let reason = &sandbox.phase_reason;
    match SandboxPhase::try_from(sandbox.phase) {
        Ok(SandboxPhase::Ready) => Ok(true),
        Ok(SandboxPhase::Error) => Err(Failure::failed(format!(
            "sandbox {name:?} failed before it was ready: {reason}"
        ))),
        Ok(SandboxPhase::Exited) => Err(Failure::failed(format!(
            "sandbox {name:?} exited before it was ready: {reason}"
        ))),
        Ok(SandboxPhase::Deleting) => Err(Failure::failed(format!(
            "sandbox {name:?} is being deleted, so it will not become ready"
        ))),
        _ => Ok(false),
    }
}

/// Waits until the sandbox is READY, following it by id with WatchSandboxes.
async fn wait_ready(
    connection: &mut client::Client,
    created: Sandbox,
    timeout: Duration,
) -> Result<Sandbox, Failure> {
    let deadline = Instant::now() + timeout;
    // ERROR can recover (a Kubernetes condition that clears), so the wait gives it ERROR_SETTLE.
    let mut error_until = is_error(&created).then(|| Instant::now() + ERROR_SETTLE);
    if error_until.is_none() && ready_check(&created)? {
        return Ok(created);
    }
    let name = created.name.clone();
    let target = Target::Id(created.id.clone());
    let server = connection.server.clone();
    let request = WatchSandboxesRequest {
        target: Some(watch_sandboxes_request::Target::Id(created.id.clone())),
        ..WatchSandboxesRequest::default()
    };

    let mut last = created;
    let not_ready = |last: &Sandbox| Failure {
        code: EXIT_TIMED_OUT,
        message: format!(
            "sandbox {name:?} is not ready after {}: it is {} ({})",
            duration::format(timeout),
            output::phase_name(last.phase),
            last.phase_reason
        ),
    };
    let opened = tokio::time::timeout_at(deadline, connection.rpc.watch_sandboxes(request)).await;
    let mut stream = match opened {
        Err(_) => return Err(not_ready(&last)),
        Ok(Err(status)) => return Err(describe(&status, Some(&target), &server)),
        Ok(Ok(response)) => response.into_inner(),
    };
    loop {
        let until = error_until.map_or(deadline, |error_until| error_until.min(deadline));
        let event = match tokio::time::timeout_at(until, stream.message()).await {
            Err(_) if error_until.is_some() && Instant::now() < deadline => {
                return Err(ready_check(&last).err().unwrap_or_else(|| not_ready(&last)));
            }
            Err(_) => return Err(not_ready(&last)),
            Ok(Err(status)) => return Err(describe(&status, Some(&target), &server)),
            Ok(Ok(None)) => {
                return Err(Failure {
                    code: EXIT_UNREACHABLE,
                    message: format!(
                        "the watch of sandbox {name:?} ended before it was ready: run `sandgate get {name}` to see its state"
                    ),
                });
            }
            Ok(Ok(Some(event))) => event,
        };
        if event.r#type == WatchEventType::Deleted as i32 {
            return Err(Failure::failed(format!(
                "sandbox {name:?} was deleted before it was ready"
            )));
        }
        if let Some(sandbox) = event.sandbox {
            if is_error(&sandbox) {
                error_until.get_or_insert_with(|| Instant::now() + ERROR_SETTLE);
                last = sandbox;
                continue;
            }
            error_until = None;
            if ready_check(&sandbox)? {
                return Ok(sandbox);
            }
            last = sandbox;
        }
    }
}

/// Time a wait for READY keeps waiting on an ERROR sandbox before it gives up.
const ERROR_SETTLE: Duration = Duration::from_secs(5);

fn is_error(sandbox: &Sandbox) -> bool {
    sandbox.phase == SandboxPhase::Error as i32
}

/// Runs `sandgate get`.
pub async fn get(args: GetArgs) -> Result<(), Failure> {
    let target = match (&args.id, &args.name) {
        (Some(id), _) => Target::Id(id.clone()),
        (None, Some(name)) => Target::Name {
            workspace: args.client.workspace.clone(),
            name: name.clone(),
        },
        (None, None) => return Err(Failure::usage("missing sandbox: give a NAME or --id ID")),
    };
    let mut connection = client::connect(&args.client.server).await?;
    let request = GetSandboxRequest {
        target: Some(target.to_ref()),
    };
    let sandbox = connection
        .rpc
        .get_sandbox(unary(request))
        .await
        .map_err(|status| describe(&status, Some(&target), &connection.server))?
        .into_inner();
    match args.output {
        OutputFormat::Table => print!("{}", output::get_table(&sandbox, SystemTime::now())),
        OutputFormat::Json => print_json(&json::sandbox(&sandbox)),
        OutputFormat::Name => println!("{}", output::resource_name(&sandbox)),
    }
    Ok(())
}

/// Returns every sandbox that `request` matches, following `next_page_token` to the last page.
///
/// # Errors
/// Returns the [`Failure`] of the first page that fails.
pub async fn list_all(
    connection: &mut client::Client,
    mut request: ListSandboxesRequest,
) -> Result<Vec<Sandbox>, Failure> {
    let mut sandboxes = Vec::new();
    loop {
        let page = connection
            .rpc
            .list_sandboxes(unary(request.clone()))
            .await
            .map_err(|status| describe(&status, None, &connection.server))?
            .into_inner();
        sandboxes.extend(page.sandboxes);
        if page.next_page_token.is_empty() {
            return Ok(sandboxes);
        }
        request.page_token = page.next_page_token;
    }
}

/// Returns the line printed, as kubectl does, when nothing matches.
pub fn no_sandboxes_message(workspace: &str, all_workspaces: bool) -> String {
    if all_workspaces {
        "No sandboxes found.".to_string()
    } else {
        format!("No sandboxes found in workspace {workspace:?}.")
    }
}

/// Runs `sandgate list`, following `next_page_token` until the last page.
pub async fn list(args: ListArgs) -> Result<(), Failure> {
    let mut connection = client::connect(&args.client.server).await?;
    let request = ListSandboxesRequest {
        workspace: args.client.workspace.clone(),
        all_workspaces: args.all_workspaces,
        label_selector: args.selector.clone().unwrap_or_default(),
        phases: args.phases.iter().map(|p| p.to_proto() as i32).collect(),
        page_size: 0,
        page_token: String::new(),
    };
    let sandboxes = list_all(&mut connection, request).await?;
    if sandboxes.is_empty() && args.output != OutputFormat::Json {
        eprintln!(
            "{}",
            no_sandboxes_message(&args.client.workspace, args.all_workspaces)
        );
        return Ok(());
    }
    match args.output {
        OutputFormat::Table => print!(
            "{}",
            output::list_table(&sandboxes, args.all_workspaces, SystemTime::now())
        ),
        OutputFormat::Json => print_json(&json::sandboxes(&sandboxes)),
        OutputFormat::Name => {
            for sandbox in &sandboxes {
                println!("{}", output::resource_name(sandbox));
            }
        }
    }
    Ok(())
}

/// Runs `sandgate watch`. After the gateway goes away it reconnects, resuming after the last
/// revision seen, for up to [`RECONNECT_WINDOW`].
pub async fn watch(args: WatchArgs) -> Result<(), Failure> {
    let mut connection = client::connect(&args.client.server).await?;
    let server = connection.server.clone();
    let (mut target, described) = match (&args.id, &args.name) {
        (Some(id), _) => (
            Some(watch_sandboxes_request::Target::Id(id.clone())),
            Some(Target::Id(id.clone())),
        ),
        (None, Some(name)) => (
            Some(watch_sandboxes_request::Target::Name(name.clone())),
            Some(Target::Name {
                workspace: args.client.workspace.clone(),
                name: name.clone(),
            }),
        ),
        (None, None) => (None, None),
    };
    // A watch by name follows the sandbox that had the name when it started: it reconnects by
    // that sandbox's id, which reports its removal even after the record is gone, and ignores a
    // new sandbox that took the name meanwhile.
    let mut resume_revision = args.resume_revision.unwrap_or(0);
    let mut state = match args.output {
        WatchFormat::Text => WatchState::default(),
        WatchFormat::Json => WatchState::every_change(),
    };
    let mut outage_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(250);

    loop {
        let request = WatchSandboxesRequest {
            workspace: args.client.workspace.clone(),
            all_workspaces: args.all_workspaces,
            target: target.clone(),
            resume_revision,
        };
        let lost = match connection.rpc.watch_sandboxes(request).await {
            Err(status) if is_unavailable(&status) => status,
            Err(status) => return Err(describe(&status, described.as_ref(), &server)),
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            outage_since = None;
                            backoff = Duration::from_millis(250);
                            resume_revision = resume_revision.max(event.revision);
                            if let (Some(watch_sandboxes_request::Target::Name(_)), Some(sandbox)) =
                                (&target, &event.sandbox)
                            {
                                target =
                                    Some(watch_sandboxes_request::Target::Id(sandbox.id.clone()));
                            }
                            for event in state.apply(event) {
                                match args.output {
                                    WatchFormat::Text => println!(
                                        "{}",
                                        output::watch_line(
                                            &timefmt::now_rfc3339(),
                                            &event,
                                            args.all_workspaces,
                                        )
                                    ),
                                    WatchFormat::Json => println!("{}", json::watch_event(&event)),
                                }
                                if target.is_some()
                                    && event.r#type == WatchEventType::Deleted as i32
                                {
                                    return Ok(());
                                }
                            }
                        }
                        Ok(None) if target.is_some() => return Ok(()),
                        Ok(None) => {
                            return Err(Failure {
                                code: EXIT_UNREACHABLE,
                                message: format!("sandgate at {server} ended the watch stream"),
                            });
                        }
                        Err(status) if is_unavailable(&status) => break status,
                        Err(status) => {
                            return Err(describe(&status, described.as_ref(), &server));
                        }
                    }
                }
            }
        };

        let first_failure = outage_since.is_none();
        let since = *outage_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= RECONNECT_WINDOW {
            return Err(Failure {
                code: EXIT_UNREACHABLE,
                message: format!(
                    "lost connection to sandgate at {server} and it did not come back within {}: {}",
                    duration::format(RECONNECT_WINDOW),
                    client::lost_cause(&lost)
                ),
            });
        }
        if first_failure {
            eprintln!(
                "warning: lost connection to sandgate at {server} ({}); reconnecting for up to {}",
                client::lost_cause(&lost),
                duration::format(RECONNECT_WINDOW)
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
