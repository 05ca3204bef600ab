//! `sandgate delete`: records every deletion first, then waits for all of them by id under one
//! deadline, and prints one result line per sandbox.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use prost::Message;
use prost_types::Timestamp;
use sandgate_core::duration;
use sandgate_proto::v1::sandbox_service_client::SandboxServiceClient;
use sandgate_proto::v1::{
    DeleteOutcome, DeleteSandboxRequest, DeleteSandboxResponse, DeletionStatus,
    ListSandboxesRequest, Sandbox, WaitSandboxDeletedRequest, WatchSandboxesRequest,
    watch_sandboxes_request,
};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::cli::DeleteArgs;
use crate::client::{
    self, EXIT_FAILED, EXIT_TIMED_OUT, EXIT_UNREACHABLE, Failure, Target, describe, effective_code,
};
use crate::commands::{self, RECONNECT_WINDOW, UNARY_TIMEOUT, proto_duration};
use crate::{output, timefmt};

/// Extra time the RPC deadline allows beyond the wait's own timeout, so that the gateway's
/// DEADLINE_EXCEEDED status, which contains what the deletion still waits for, arrives before the
/// client gives up on its own.
const RPC_DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// Shortest timeout WaitSandboxDeleted accepts.
const MIN_WAIT: Duration = duration::MIN_WAIT_TIMEOUT;

/// Time between redraws of the progress display.
const REDRAW_INTERVAL: Duration = Duration::from_millis(500);

/// Type URL of the status detail that a DEADLINE_EXCEEDED status from a wait contains.
const DELETION_STATUS_TYPE_URL: &str = "type.googleapis.com/sandgate.v1.DeletionStatus";

/// A deletion that was accepted and is waited for.
#[derive(Clone, Debug)]
struct Pending {
    /// Position of the target on the command line, for the order of result lines.
    index: usize,
    /// Quoted name, or the id when no name is known.
    label: String,
    id: String,
}

/// Last known state of one deletion in progress, for the progress display and timeout messages.
#[derive(Clone, Debug, Default)]
struct Row {
    label: String,
    phase: i32,
    phase_reason: String,
    reason_since: Option<Timestamp>,
    deletion_requested_at: Option<Timestamp>,
    /// Set once the wait for this sandbox has ended, with a short word for its result.
    done: Option<&'static str>,
}

type Rows = Arc<Mutex<Vec<Row>>>;

/// Runs `sandgate delete`.
pub async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    if args.force
        && let Some(grace) = args.grace_period.filter(|grace| !grace.is_zero())
    {
        return Err(Failure::usage(format!(
            "--force kills at once, so --grace-period {} contradicts it: drop one of them, or \
             pass --grace-period 0",
            duration::format(grace)
        )));
    }
    if args.wait == Some(false)
        && let Some(timeout) = args.timeout
    {
        return Err(Failure::usage(format!(
            "--timeout {} has no effect with --wait=false, which returns once each deletion is \
             recorded: drop one of them",
            duration::format(timeout)
        )));
    }
    let timeout = args.wait_timeout();
    let deadline = Instant::now() + timeout;
    let mut connection = client::connect(&args.client.server).await?;
    let server = connection.server.clone();

    // Each target with the label its failure lines start with: the name whenever it is known.
    let targets: Vec<(Target, String)> = if args.selector.is_some() || args.all {
        // Matching sandboxes are addressed by id, so that a sandbox created under a matching
        // name after the list is not deleted by accident.
        let request = ListSandboxesRequest {
            workspace: args.client.workspace.clone(),
            label_selector: args.selector.clone().unwrap_or_default(),
            ..Default::default()
        };
        let matching = commands::list_all(&mut connection, request).await?;
        if matching.is_empty() {
            eprintln!(
                "{}",
                commands::no_sandboxes_message(&args.client.workspace, false)
            );
            return Ok(());
        }
        matching
            .into_iter()
            .map(|sandbox| (Target::Id(sandbox.id), format!("{:?}", sandbox.name)))
            .collect()
    } else if args.ids.is_empty() {
        args.names
            .iter()
            .map(|name| {
                let target = Target::Name {
                    workspace: args.client.workspace.clone(),
                    name: name.clone(),
                };
                let label = target.label();
                (target, label)
            })
            .collect()
    } else {
        args.ids
            .iter()
            .map(|id| (Target::Id(id.clone()), id.clone()))
            .collect()
    };

    let mut results: Vec<Option<Result<String, Failure>>> = vec![None; targets.len()];
    let mut pending = Vec::new();
    let rows: Rows = Arc::default();

    for (index, (target, known_label)) in targets.iter().enumerate() {
        let request = DeleteSandboxRequest {
            target: Some(target.to_ref()),
            wait: false,
            timeout: None,
            // With force, a grace period can only be 0, which force implies.
            grace_period: args
                .grace_period
                .filter(|_| !args.force)
                .map(proto_duration),
            force: args.force,
            ignore_not_found: args.ignore_not_found,
        };
        let mut rpc_request = tonic::Request::new(request);
        rpc_request.set_timeout(UNARY_TIMEOUT);
        let response = match connection.rpc.delete_sandbox(rpc_request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound && args.ignore_not_found => {
                results[index] = Some(Ok(format!("sandbox {known_label} not found (ignored)")));
                continue;
            }
            Err(status) => {
                let mut failure = describe(&status, Some(target), &server);
                // A not-found message names the sandbox already, and the others may not.
                if effective_code(&status) != Code::NotFound {
                    failure.message = format!("sandbox {known_label}: {}", failure.message);
                }
                results[index] = Some(Err(failure));
                continue;
            }
        };
        let label = response_label(target, &response);
        let id = response.id.clone();
        let outcome = DeleteOutcome::try_from(response.outcome).unwrap_or_default();
        let line = match outcome {
            DeleteOutcome::Deleted => Ok(format!("sandbox {label} deleted (id {id})")),
            DeleteOutcome::AlreadyAbsent => Ok(format!("sandbox {label} not found (ignored)")),
            DeleteOutcome::Accepted if args.skips_wait() => {
                Ok(format!("sandbox {label} deletion accepted (id {id})"))
            }
            DeleteOutcome::Accepted => {
                rows.lock()
                    .expect("rows lock")
                    .push(row_from(&label, response.sandbox.as_ref()));
                pending.push(Pending { index, label, id });
                continue;
            }
            DeleteOutcome::Unspecified => Err(Failure::failed(format!(
                "sandgate at {server} sent no outcome for the deletion of sandbox {label}"
            ))),
        };
        results[index] = Some(line);
    }

    if !pending.is_empty() {
        let waits = pending.iter().enumerate().map(|(row, item)| {
            wait_deleted(
                connection.rpc.clone(),
                item,
                row,
                rows.clone(),
                deadline,
                timeout,
                &server,
            )
        });
        let outcomes = if std::io::stderr().is_terminal() {
            with_progress(join_all(waits), &connection.rpc, &pending, rows.clone()).await
        } else {
            join_all(waits).await
        };
        for (item, outcome) in pending.iter().zip(outcomes) {
            results[item.index] = Some(outcome);
        }
    }

    report(results, targets.len())
}

/// Prints the result lines on stdout and the failures on stderr, and returns the failure that
/// ends the command, if any.
fn report(results: Vec<Option<Result<String, Failure>>>, total: usize) -> Result<(), Failure> {
    let mut failures = Vec::new();
    for result in results.into_iter().flatten() {
        match result {
            Ok(line) => println!("{line}"),
            Err(failure) => failures.push(failure),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 if total == 1 => Err(failures.remove(0)),
        count => {
            for failure in &failures {
                eprintln!("error: {failure}");
            }
            let code = if failures.iter().all(|f| f.code == failures[0].code) {
                failures[0].code
            } else {
                EXIT_FAILED
            };
            Err(Failure {
                code,
                message: format!("{count} of {total} sandboxes are not confirmed deleted"),
            })
        }
    }
}

fn response_label(target: &Target, response: &DeleteSandboxResponse) -> String {
    let name = response
        .sandbox
        .as_ref()
        .map(|sandbox| sandbox.name.as_str())
        .or(response
            .tombstone
            .as_ref()
            .map(|tombstone| tombstone.name.as_str()))
        .filter(|name| !name.is_empty());
    match name {
        Some(name) => format!("{name:?}"),
        None => target.label(),
    }
}

fn row_from(label: &str, sandbox: Option<&Sandbox>) -> Row {
    let mut row = Row {
        label: label.to_string(),
        ..Row::default()
    };
    if let Some(sandbox) = sandbox {
        update_row(&mut row, sandbox);
    }
    row
}

fn update_row(row: &mut Row, sandbox: &Sandbox) {
    row.phase = sandbox.phase;
    row.phase_reason = sandbox.phase_reason.clone();
    row.reason_since = sandbox.reason_since;
    if sandbox.deletion_requested_at.is_some() {
        row.deletion_requested_at = sandbox.deletion_requested_at;
    }
}

/// Decodes the `DeletionStatus` detail of a DEADLINE_EXCEEDED status.
fn deletion_status(status: &Status) -> Option<DeletionStatus> {
    let details = tonic_types::Status::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|any| any.type_url == DELETION_STATUS_TYPE_URL)
        .and_then(|any| DeletionStatus::decode(any.value.as_slice()).ok())
}

/// Formats the message of a sandbox still present when the wait ended, such as
/// `sandbox "web" still present after 5m: process group still running after SIGTERM (for 4m58s)`.
fn still_present(label: &str, timeout: Duration, row: &Row, now: SystemTime) -> Failure {
    let after = duration::format(timeout);
    let message = if row.phase_reason.is_empty() {
        format!(
            "sandbox {label} still present after {after} (phase {})",
            output::phase_name(row.phase)
        )
    } else {
        let since = row
            .reason_since
            .as_ref()
            .map(|since| format!(" (for {})", timefmt::span(timefmt::elapsed(since, now))))
            .unwrap_or_default();
        format!(
            "sandbox {label} still present after {after}: {}{since}",
            row.phase_reason
        )
    };
    Failure {
        code: EXIT_TIMED_OUT,
        message,
    }
}

impl Failure {
    /// Adds that the deletion of `id` goes on after the wait ended, and how to wait again.
    fn continues(mut self, id: &str) -> Self {
        self.message.push_str(&format!(
            "; the deletion continues: run `sandgate delete --id {id}` to wait again"
        ));
        self
    }
}

/// Waits until the gateway confirms that `item` is gone, retrying by id while the gateway is
/// away for up to [`RECONNECT_WINDOW`], and never past `deadline`.
async fn wait_deleted(
    mut rpc: SandboxServiceClient<Channel>,
    item: &Pending,
    row_index: usize,
    rows: Rows,
    deadline: Instant,
    timeout: Duration,
    server: &str,
) -> Result<String, Failure> {
    let label = &item.label;
    let id = &item.id;
    let mut outage_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(250);
    let finish = |word: &'static str| {
        rows.lock().expect("rows lock")[row_index].done = Some(word);
    };
    let last_row = || rows.lock().expect("rows lock")[row_index].clone();

    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            finish("still present");
            return Err(
                still_present(label, timeout, &last_row(), SystemTime::now()).continues(id),
            );
        }
        // The gateway takes no wait shorter than MIN_WAIT, so a wait with less left than that
        // can end up to MIN_WAIT after the deadline.
        let wait = remaining.max(MIN_WAIT);
        let mut request = tonic::Request::new(WaitSandboxDeletedRequest {
            id: id.clone(),
            timeout: Some(proto_duration(wait)),
        });
        request.set_timeout(wait + RPC_DEADLINE_MARGIN);
        let attempt_started = Instant::now();
        let status = match rpc.wait_sandbox_deleted(request).await {
            Ok(response) => {
                let response = response.into_inner();
                match DeleteOutcome::try_from(response.outcome).unwrap_or_default() {
                    DeleteOutcome::Deleted | DeleteOutcome::AlreadyAbsent => {
                        finish("deleted");
                        return Ok(format!("sandbox {label} deleted (id {id})"));
                    }
                    // NOTE: WaitSandboxDeleted is expected to return only once the sandbox is
                    // gone, so any other outcome is treated as "not yet" and waited on again.
                    _ => {
                        if let Some(sandbox) = &response.sandbox {
                            update_row(&mut rows.lock().expect("rows lock")[row_index], sandbox);
                        }
                        tokio::time::sleep(backoff.min(remaining)).await;
                        continue;
                    }
                }
            }
            Err(status) => status,
        };

        match effective_code(&status) {
            Code::DeadlineExceeded | Code::Cancelled => {
                if let Some(detail) = deletion_status(&status) {
                    let mut guard = rows.lock().expect("rows lock");
                    let row = &mut guard[row_index];
                    row.phase = detail.phase;
                    row.phase_reason = detail.phase_reason;
                    row.reason_since = detail.reason_since;
                }
                finish("still present");
                return Err(
                    still_present(label, timeout, &last_row(), SystemTime::now()).continues(id),
                );
            }
            Code::Unavailable => {
                // An attempt that ran a while had reached the gateway, so a new outage begins.
                if attempt_started.elapsed() >= Duration::from_secs(1) {
                    outage_since = None;
                    backoff = Duration::from_millis(250);
                }
                let since = *outage_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RECONNECT_WINDOW {
                    finish("unknown");
                    return Err(Failure {
                        code: EXIT_UNREACHABLE,
                        message: format!(
                            "lost connection to sandgate at {server} while waiting for sandbox \
                             {label} to be deleted, and it did not come back within {}; the \
                             deletion is recorded: run `sandgate delete --id {id}` to wait again",
                            duration::format(RECONNECT_WINDOW)
                        ),
                    });
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(remaining)).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Code::NotFound => {
                finish("unknown");
                return Err(Failure::failed(format!(
                    "sandbox {label} (id {id}) is no longer known to sandgate at {server}, so its \
                     deletion cannot be confirmed"
                )));
            }
            _ => {
                finish("failed");
                return Err(describe(&status, Some(&Target::Id(id.clone())), server));
            }
        }
    }
}

/// Runs `waits` while a progress display on stderr shows each deletion's current reason and
/// elapsed time. WatchSandboxes streams by id keep the reasons current.
async fn with_progress<F>(
    waits: F,
    rpc: &SandboxServiceClient<Channel>,
    pending: &[Pending],
    rows: Rows,
) -> F::Output
where
    F: Future,
{
    let started = SystemTime::now();
    let watchers: Vec<_> = pending
        .iter()
        .enumerate()
        .map(|(row_index, item)| {
            tokio::spawn(follow(
                rpc.clone(),
                item.id.clone(),
                row_index,
                rows.clone(),
            ))
        })
        .collect();

    let mut drawn = 0;
    let redraw = async {
        loop {
            drawn = draw(&rows, drawn, started);
            tokio::time::sleep(REDRAW_INTERVAL).await;
        }
    };
    let output = tokio::select! {
        output = waits => output,
        () = redraw => unreachable!("the redraw loop never ends"),
    };

    for watcher in watchers {
        watcher.abort();
    }
    clear(drawn);
    output
}

/// Keeps one progress row current from a WatchSandboxes stream, and stops quietly on any error.
async fn follow(mut rpc: SandboxServiceClient<Channel>, id: String, row_index: usize, rows: Rows) {
    let request = WatchSandboxesRequest {
        target: Some(watch_sandboxes_request::Target::Id(id)),
        ..WatchSandboxesRequest::default()
    };
    let Ok(response) = rpc.watch_sandboxes(request).await else {
        return;
    };
    let mut stream = response.into_inner();
    while let Ok(Some(event)) = stream.message().await {
        if let Some(sandbox) = event.sandbox {
            update_row(&mut rows.lock().expect("rows lock")[row_index], &sandbox);
        }
    }
}

/// Formats one progress line.
fn progress_line(row: &Row, started: SystemTime, now: SystemTime) -> String {
    let since_request = row
        .deletion_requested_at
        .as_ref()
        .map(|at| timefmt::elapsed(at, now))
        .unwrap_or_else(|| now.duration_since(started).unwrap_or_default());
    if let Some(word) = row.done {
        return format!("sandbox {}: {word}", row.label);
    }
    let mut line = format!(
        "waiting for sandbox {} ({})",
        row.label,
        timefmt::span(since_request)
    );
    if !row.phase_reason.is_empty() {
        line.push_str(": ");
        line.push_str(&row.phase_reason);
        if let Some(since) = &row.reason_since {
            line.push_str(&format!(
                ", for {}",
                timefmt::span(timefmt::elapsed(since, now))
            ));
        }
    }
    line
}

/// Width that progress lines are cut to, so that none wraps and breaks the redraw.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.parse::<usize>().ok())
        .filter(|&columns| columns > 10)
        .unwrap_or(80)
        - 1
}

/// Redraws the progress block in place over the `drawn` lines of the previous draw, and returns
/// how many lines it drew.
fn draw(rows: &Rows, drawn: usize, started: SystemTime) -> usize {
    let now = SystemTime::now();
    let width = terminal_width();
    let lines: Vec<String> = rows
        .lock()
        .expect("rows lock")
        .iter()
        .map(|row| {
            progress_line(row, started, now)
                .chars()
                .take(width)
                .collect()
        })
        .collect();
    let mut stderr = std::io::stderr().lock();
    let mut text = String::new();
    if drawn > 0 {
        text.push_str(&format!("\x1b[{drawn}A"));
    }
    for line in &lines {
        text.push_str("\r\x1b[2K");
        text.push_str(line);
        text.push('\n');
    }
    // A failed write to the terminal only loses progress output, so it is ignored.
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
    lines.len()
}

/// Erases the progress block before the result lines are printed.
fn clear(drawn: usize) {
    if drawn == 0 {
        return;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\x1b[{drawn}A\r\x1b[J");
    let _ = stderr.flush();
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn row(reason: &str) -> Row {
        Row {
            label: "\"web\"".into(),
            phase: sandgate_proto::v1::SandboxPhase::Deleting as i32,
            phase_reason: reason.into(),
            reason_since: Some(Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            deletion_requested_at: Some(Timestamp {
                seconds: 90,
                nanos: 0,
            }),
            done: None,
        }
    }

    #[test]
    fn still_present_names_reason_and_age() {
        let now = UNIX_EPOCH + Duration::from_secs(100 + 298);
        let failure = still_present(
            "\"web\"",
            Duration::from_secs(300),
            &row("process group still running after SIGTERM"),
            now,
        );
        assert_eq!(failure.code, EXIT_TIMED_OUT);
        assert_eq!(
            failure.message,
            "sandbox \"web\" still present after 5m: process group still running after SIGTERM (for 4m58s)"
        );
    }

    #[test]
    fn still_present_without_reason_names_phase() {
        let failure = still_present("\"web\"", Duration::from_secs(1), &row(""), UNIX_EPOCH);
        assert_eq!(
            failure.message,
            "sandbox \"web\" still present after 1s (phase DELETING)"
        );
    }

    #[test]
    fn deletion_status_is_read_from_details() {
        let detail = DeletionStatus {
            id: "3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14".into(),
            phase: sandgate_proto::v1::SandboxPhase::Deleting as i32,
            phase_reason: "waiting for the supervisor to exit".into(),
            reason_since: None,
        };
        let rpc_status = tonic_types::Status {
            code: Code::DeadlineExceeded as i32,
            message: "timed out".into(),
            details: vec![prost_types::Any {
                type_url: DELETION_STATUS_TYPE_URL.into(),
                value: detail.encode_to_vec(),
            }],
        };
        let status = Status::with_details(
            Code::DeadlineExceeded,
            "timed out",
            rpc_status.encode_to_vec().into(),
        );
        assert_eq!(deletion_status(&status), Some(detail));
        assert_eq!(
            deletion_status(&Status::deadline_exceeded("no details")),
            None
        );
    }

    #[test]
    fn progress_line_shows_reason_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(102);
        let line = progress_line(&row("stopping"), UNIX_EPOCH, now);
        assert_eq!(line, "waiting for sandbox \"web\" (12s): stopping, for 2s");

        let mut done = row("stopping");
        done.done = Some("deleted");
        assert_eq!(
            progress_line(&done, UNIX_EPOCH, now),
            "sandbox \"web\": deleted"
        );
    }

    #[test]
    fn report_counts_failures() {
        let results = vec![
            Some(Ok("sandbox \"a\" deleted (id 1)".to_string())),
            Some(Err(Failure {
                code: EXIT_TIMED_OUT,
                message: "sandbox \"b\" still present after 5m".into(),
            })),
        ];
        let failure = report(results, 2).unwrap_err();
        assert_eq!(failure.code, EXIT_TIMED_OUT);
        assert_eq!(
            failure.message,
            "1 of 2 sandboxes are not confirmed deleted"
        );

        let single = vec![Some(Err(Failure::failed(
            "sandbox \"a\" not found in workspace \"default\"",
        )))];
        assert_eq!(
            report(single, 1).unwrap_err().message,
            "sandbox \"a\" not found in workspace \"default\""
        );
    }
}
