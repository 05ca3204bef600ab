//! The selection of events that `sandgate watch` prints. After a reconnect, or when the watch
//! fell behind, the gateway starts the stream over with a snapshot. The CLI turns that snapshot
//! into the changes since the events printed before. A sandbox that the snapshot lacks gets a
//! DELETED line, and an unchanged one gets none. A MODIFIED event that changes nothing the
//! line shows is left out too.

use std::collections::{HashMap, HashSet};

use sandgate_proto::v1::{Sandbox, WatchEvent, WatchEventType};

/// The sandboxes that a watch has printed so far, and the snapshot it is receiving.
#[derive(Default)]
pub struct WatchState {
    /// The last state printed of each sandbox that is not deleted, by id.
    known: HashMap<String, Sandbox>,
    /// Ids of the snapshot being received, until its SYNCED event.
    snapshot_ids: Option<HashSet<String>>,
    /// Whether a SYNCED event has arrived, after which a snapshot means a fresh start.
    synced_once: bool,
    /// Whether a change of any field is printed, not only one that the line shows.
    every_change: bool,
}

impl WatchState {
    /// Returns the state of a watch that prints a change of any field, as `-o json` does.
    pub fn every_change() -> Self {
        Self {
            every_change: true,
            ..Self::default()
        }
    }

    /// Returns whether printing `current` after `previous` would show nothing new.
    fn unchanged(&self, previous: &Sandbox, current: &Sandbox) -> bool {
        if self.every_change {
            previous == current
        } else {
            shows_same(previous, current)
        }
    }

    /// Returns the events to print for `event`, in order: none, the event itself, or, for the
    /// SYNCED event that ends a fresh snapshot, DELETED events for what the snapshot lacks
    /// before it.
    pub fn apply(&mut self, event: WatchEvent) -> Vec<WatchEvent> {
        let kind = WatchEventType::try_from(event.r#type).unwrap_or(WatchEventType::Unspecified);
        match (kind, &event.sandbox) {
            (WatchEventType::Synced, _) => self.synced(event),
            (WatchEventType::Added, Some(sandbox)) if event.snapshot => {
                let sandbox = sandbox.clone();
                self.snapshot_ids
                    .get_or_insert_default()
                    .insert(sandbox.id.clone());
                let previous = self.known.insert(sandbox.id.clone(), sandbox.clone());
                match previous {
                    _ if !self.synced_once => vec![event],
                    None => vec![event],
                    Some(previous) if self.unchanged(&previous, &sandbox) => Vec::new(),
                    Some(_) => vec![WatchEvent {
                        r#type: WatchEventType::Modified as i32,
                        snapshot: false,
                        ..event
                    }],
                }
            }
            (WatchEventType::Deleted, Some(sandbox)) => {
                self.known.remove(&sandbox.id);
                vec![event]
            }
            (WatchEventType::Modified, Some(sandbox)) => {
                let previous = self.known.insert(sandbox.id.clone(), sandbox.clone());
                if previous.is_some_and(|previous| self.unchanged(&previous, sandbox)) {
                    Vec::new()
                } else {
                    vec![event]
                }
            }
            (_, Some(sandbox)) => {
                self.known.insert(sandbox.id.clone(), sandbox.clone());
                vec![event]
            }
            (_, None) => vec![event],
        }
    }

    fn synced(&mut self, event: WatchEvent) -> Vec<WatchEvent> {
        let mut printed = Vec::new();
        // The gateway marks the SYNCED event of a snapshot, which may have been empty.
        let snapshot = self
            .snapshot_ids
            .take()
            .or(event.snapshot.then(HashSet::new));
        if let Some(ids) = snapshot
            && self.synced_once
        {
            let mut gone: Vec<Sandbox> = self
                .known
                .iter()
                .filter(|(id, _)| !ids.contains(*id))
                .map(|(_, sandbox)| sandbox.clone())
                .collect();
            gone.sort_by(|a, b| (&a.workspace, &a.name).cmp(&(&b.workspace, &b.name)));
            for sandbox in gone {
                self.known.remove(&sandbox.id);
                printed.push(WatchEvent {
                    r#type: WatchEventType::Deleted as i32,
                    revision: event.revision,
                    sandbox: Some(sandbox),
                    snapshot: false,
                });
            }
        }
        self.synced_once = true;
        printed.push(event);
        printed
    }
}

/// Returns whether a watch line of `a` and of `b` read the same.
fn shows_same(a: &Sandbox, b: &Sandbox) -> bool {
    a.workspace == b.workspace
        && a.name == b.name
        && a.phase == b.phase
        && a.phase_reason == b.phase_reason
}

#[cfg(test)]
mod tests {
    use sandgate_proto::v1::SandboxPhase;

    use super::*;

    fn sandbox(id: &str, phase: SandboxPhase, reason: &str) -> Sandbox {
        Sandbox {
            id: id.into(),
            workspace: "default".into(),
            name: format!("name-{id}"),
            phase: phase as i32,
            phase_reason: reason.into(),
            ..Sandbox::default()
        }
    }

    fn event(kind: WatchEventType, sandbox: Option<Sandbox>, snapshot: bool) -> WatchEvent {
        WatchEvent {
            r#type: kind as i32,
            revision: 7,
            sandbox,
            snapshot,
        }
    }

    fn added(id: &str, phase: SandboxPhase, reason: &str) -> WatchEvent {
        event(
            WatchEventType::Added,
            Some(sandbox(id, phase, reason)),
            true,
        )
    }

    fn synced(snapshot: bool) -> WatchEvent {
        event(WatchEventType::Synced, None, snapshot)
    }

    /// Returns each printed event as "TYPE id".
    fn printed(events: Vec<WatchEvent>) -> Vec<String> {
        events
            .iter()
            .map(|event| {
                let kind = WatchEventType::try_from(event.r#type)
                    .unwrap()
                    .as_str_name();
                let id = event.sandbox.as_ref().map_or("-", |sandbox| &sandbox.id);
                format!("{} {id}", kind.trim_start_matches("WATCH_EVENT_TYPE_"))
            })
            .collect()
    }

    fn start(state: &mut WatchState) {
        state.apply(added("a", SandboxPhase::Ready, "running"));
        state.apply(added("b", SandboxPhase::Ready, "running"));
        state.apply(synced(true));
    }

    #[test]
    fn first_snapshot_prints_everything() {
        let mut state = WatchState::default();
        let lines: Vec<String> = [
            added("a", SandboxPhase::Ready, "running"),
            added("b", SandboxPhase::Ready, "running"),
            synced(true),
        ]
        .into_iter()
        .flat_map(|event| printed(state.apply(event)))
        .collect();
        assert_eq!(lines, ["ADDED a", "ADDED b", "SYNCED -"]);
    }

    #[test]
    fn fresh_snapshot_prints_changes_only() {
        let mut state = WatchState::default();
        start(&mut state);

        assert_eq!(
            printed(state.apply(added("a", SandboxPhase::Ready, "running"))),
            Vec::<String>::new(),
            "an unchanged sandbox is printed again"
        );
        assert_eq!(
            printed(state.apply(added("c", SandboxPhase::Provisioning, "starting"))),
            ["ADDED c"]
        );
        assert_eq!(
            printed(state.apply(synced(true))),
            ["DELETED b", "SYNCED -"]
        );
    }

    #[test]
    fn changed_sandbox_in_snapshot_is_modified() {
        let mut state = WatchState::default();
        start(&mut state);
        let lines = printed(state.apply(added("a", SandboxPhase::Deleting, "stopping")));
        assert_eq!(lines, ["MODIFIED a"]);
    }

    #[test]
    fn empty_fresh_snapshot_deletes_everything() {
        let mut state = WatchState::default();
        start(&mut state);
        assert_eq!(
            printed(state.apply(synced(true))),
            ["DELETED a", "DELETED b", "SYNCED -"]
        );
    }

    #[test]
    fn replay_deletes_nothing() {
        let mut state = WatchState::default();
        start(&mut state);
        let modified = event(
            WatchEventType::Modified,
            Some(sandbox("a", SandboxPhase::Deleting, "stopping")),
            false,
        );
        assert_eq!(printed(state.apply(modified)), ["MODIFIED a"]);
        assert_eq!(printed(state.apply(synced(false))), ["SYNCED -"]);
    }

    #[test]
    fn modified_without_visible_change_is_dropped() {
        let mut state = WatchState::default();
        start(&mut state);
        let mut same = sandbox("a", SandboxPhase::Ready, "running");
        same.labels.insert("team".into(), "ml".into());
        let modified = event(WatchEventType::Modified, Some(same), false);
        assert_eq!(printed(state.apply(modified)), Vec::<String>::new());
    }

    #[test]
    fn every_change_keeps_label_change() {
        let mut state = WatchState::every_change();
        start(&mut state);
        let mut labelled = sandbox("a", SandboxPhase::Ready, "running");
        labelled.labels.insert("team".into(), "ml".into());
        let modified = event(WatchEventType::Modified, Some(labelled.clone()), false);
        assert_eq!(printed(state.apply(modified)), ["MODIFIED a"]);
        let again = event(WatchEventType::Modified, Some(labelled), false);
        assert_eq!(printed(state.apply(again)), Vec::<String>::new());
    }

    #[test]
    fn deleted_sandbox_is_not_deleted_again() {
        let mut state = WatchState::default();
        start(&mut state);
        let deleted = event(
            WatchEventType::Deleted,
            Some(sandbox("b", SandboxPhase::Deleting, "stopping")),
            false,
        );
        assert_eq!(printed(state.apply(deleted)), ["DELETED b"]);
        state.apply(added("a", SandboxPhase::Ready, "running"));
        assert_eq!(printed(state.apply(synced(true))), ["SYNCED -"]);
    }
}
