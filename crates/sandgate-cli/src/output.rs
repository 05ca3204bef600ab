//! Text output for people and scripts: aligned tables, short phase names and watch lines.

use std::time::SystemTime;

use sandgate_proto::v1::{Sandbox, SandboxPhase, WatchEvent, WatchEventType};

use crate::timefmt;

/// Spaces between table columns, as kubectl uses.
const COLUMN_GAP: usize = 3;

/// Renders rows under a header, each column padded to its widest cell. The last column is not
/// padded, so no line ends in spaces. Every line ends with a newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }

    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            let last = index + 1 == row.len();
            line.push_str(cell);
            if !last {
                let pad = widths[index] - cell.chars().count() + COLUMN_GAP;
                line.push_str(&" ".repeat(pad));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Returns a phase's short name, such as "READY", or "PHASE(9)" for one this build does not know.
pub fn phase_name(phase: i32) -> String {
    match SandboxPhase::try_from(phase) {
        Ok(known) => known
            .as_str_name()
            .trim_start_matches("SANDBOX_PHASE_")
            .to_string(),
        Err(_) => format!("PHASE({phase})"),
    }
}

fn event_name(event_type: i32) -> String {
    match WatchEventType::try_from(event_type) {
        Ok(known) => known
            .as_str_name()
            .trim_start_matches("WATCH_EVENT_TYPE_")
            .to_string(),
        Err(_) => format!("EVENT({event_type})"),
    }
}

fn age_cell(sandbox: &Sandbox, now: SystemTime) -> String {
    match &sandbox.created_at {
        Some(created_at) => timefmt::age(timefmt::elapsed(created_at, now)),
        None => "-".to_string(),
    }
}

/// Renders the table of `sandgate list`: NAME, PHASE, AGE, REASON, with WORKSPACE first when
/// `all_workspaces` is set.
pub fn list_table(sandboxes: &[Sandbox], all_workspaces: bool, now: SystemTime) -> String {
    let mut headers = vec!["NAME", "PHASE", "AGE", "REASON"];
    if all_workspaces {
        headers.insert(0, "WORKSPACE");
    }
    let rows: Vec<Vec<String>> = sandboxes
        .iter()
        .map(|sandbox| {
            let mut row = vec![
                sandbox.name.clone(),
                phase_name(sandbox.phase),
                age_cell(sandbox, now),
                sandbox.phase_reason.clone(),
            ];
            if all_workspaces {
                row.insert(0, sandbox.workspace.clone());
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// Renders the table of `sandgate get`: NAME, ID, PHASE, AGE, REASON.
pub fn get_table(sandbox: &Sandbox, now: SystemTime) -> String {
    let row = vec![
        sandbox.name.clone(),
        sandbox.id.clone(),
        phase_name(sandbox.phase),
        age_cell(sandbox, now),
        sandbox.phase_reason.clone(),
    ];
    table(&["NAME", "ID", "PHASE", "AGE", "REASON"], &[row])
}

/// Returns `sandbox/NAME`, the line that `-o name` prints for `sandbox`.
pub fn resource_name(sandbox: &Sandbox) -> String {
    format!("sandbox/{}", sandbox.name)
}

/// Renders one watch event as a line without its newline: time, event, name, phase, reason.
///
/// The name is prefixed with its workspace and a '/' when `all_workspaces` is set. A SYNCED
/// event, which carries no sandbox, prints "-" for name and phase and its revision as reason.
pub fn watch_line(time: &str, event: &WatchEvent, all_workspaces: bool) -> String {
    let kind = event_name(event.r#type);
    let (name, phase, reason) = match &event.sandbox {
        Some(sandbox) => {
            let name = if all_workspaces {
                format!("{}/{}", sandbox.workspace, sandbox.name)
            } else {
                sandbox.name.clone()
            };
            (
                name,
                phase_name(sandbox.phase),
                sandbox.phase_reason.clone(),
            )
        }
        None => (
            "-".to_string(),
            "-".to_string(),
            format!("up to date at revision {}", event.revision),
        ),
    };
    let line = format!("{time}  {kind:<8}  {name:<20}  {phase:<12}  {reason}");
    line.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use prost_types::Timestamp;

    use super::*;

    fn sandbox(workspace: &str, name: &str, phase: SandboxPhase, reason: &str) -> Sandbox {
        Sandbox {
            id: "3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14".into(),
            workspace: workspace.into(),
            name: name.into(),
            phase: phase as i32,
            phase_reason: reason.into(),
            created_at: Some(Timestamp {
                seconds: 1000,
                nanos: 0,
            }),
            ..Sandbox::default()
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1000 + 3 * 60 + 20)
    }

    #[test]
    fn table_pads_all_but_last_column() {
        let rows = vec![
            vec!["a".to_string(), "long-value".to_string(), "x".to_string()],
            vec!["bbbb".to_string(), "v".to_string(), String::new()],
        ];
        let text = table(&["ONE", "TWO", "THREE"], &rows);
        let expected = "\
ONE    TWO          THREE
a      long-value   x
bbbb   v
";
        assert_eq!(text, expected);
    }

    #[test]
    fn list_table_columns() {
        let sandboxes = [
            sandbox("default", "web", SandboxPhase::Ready, "command running"),
            sandbox("default", "batch-job", SandboxPhase::Deleting, "stopping"),
        ];
        let expected = "\
NAME        PHASE      AGE   REASON
web         READY      3m    command running
batch-job   DELETING   3m    stopping
";
        assert_eq!(list_table(&sandboxes, false, now()), expected);
    }

    #[test]
    fn list_table_all_workspaces_puts_workspace_first() {
        let sandboxes = [sandbox("team-a", "web", SandboxPhase::Exited, "")];
        let expected = "\
WORKSPACE   NAME   PHASE    AGE   REASON
team-a      web    EXITED   3m
";
        assert_eq!(list_table(&sandboxes, true, now()), expected);
    }

    #[test]
    fn list_table_empty_has_header_only() {
        assert_eq!(
            list_table(&[], false, now()),
            "NAME   PHASE   AGE   REASON\n"
        );
    }

    #[test]
    fn get_table_includes_id() {
        let text = get_table(&sandbox("default", "web", SandboxPhase::Ready, "ok"), now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME   ID                                     PHASE   AGE   REASON"
        );
        assert_eq!(
            lines[1],
            "web    3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14   READY   3m    ok"
        );
    }

    #[test]
    fn phase_names_are_short() {
        assert_eq!(
            phase_name(SandboxPhase::Provisioning as i32),
            "PROVISIONING"
        );
        assert_eq!(phase_name(SandboxPhase::Unspecified as i32), "UNSPECIFIED");
        assert_eq!(phase_name(42), "PHASE(42)");
    }

    #[test]
    fn watch_line_layout() {
        let event = WatchEvent {
            r#type: WatchEventType::Modified as i32,
            revision: 7,
            sandbox: Some(sandbox(
                "team-a",
                "web",
                SandboxPhase::Ready,
                "command running",
            )),
            snapshot: false,
        };
        assert_eq!(
            watch_line("2024-05-01T12:00:00Z", &event, true),
            "2024-05-01T12:00:00Z  MODIFIED  team-a/web            READY         command running"
        );

        let synced = WatchEvent {
            r#type: WatchEventType::Synced as i32,
            revision: 7,
            sandbox: None,
            snapshot: false,
        };
        assert_eq!(
            watch_line("2024-05-01T12:00:00Z", &synced, false),
            "2024-05-01T12:00:00Z  SYNCED    -                     -             up to date at revision 7"
        );
    }
}
