//! The proto3 JSON mapping of sandboxes for `-o json`, written by hand with serde_json.
//!
//! Field names are lowerCamelCase, enums are their value names, timestamps are RFC 3339 in UTC,
//! durations are strings such as "10s", uint64 values are strings and int32 values are numbers.
//! Fields at their default value are omitted, as the mapping does by default, except that a set
//! `exitCode` is written even when it is 0. Object keys come out sorted alphabetically.

use std::collections::HashMap;

use sandgate_proto::v1::{
    DriverDetails, Sandbox, SandboxPhase, SandboxSpec, WatchEvent, WatchEventType,
};
use serde_json::{Map, Value};

use crate::timefmt;

/// Maps a sandbox to its proto3 JSON object.
pub fn sandbox(sandbox: &Sandbox) -> Value {
    let mut object = Map::new();
    put_string(&mut object, "id", &sandbox.id);
    put_string(&mut object, "workspace", &sandbox.workspace);
    put_string(&mut object, "name", &sandbox.name);
    put_map(&mut object, "labels", &sandbox.labels);

    if let Some(spec_value) = &sandbox.spec {
        object.insert("spec".into(), spec(spec_value));
    }
    if sandbox.phase != 0 {
        object.insert("phase".into(), phase(sandbox.phase));
    }
    put_string(&mut object, "phaseReason", &sandbox.phase_reason);

    let timestamps = [
        ("reasonSince", &sandbox.reason_since),
        ("createdAt", &sandbox.created_at),
        ("deletionRequestedAt", &sandbox.deletion_requested_at),
        ("killAt", &sandbox.kill_at),
    ];
    for (key, timestamp) in timestamps {
        if let Some(timestamp) = timestamp {
            object.insert(key.into(), Value::String(timefmt::rfc3339(timestamp)));
        }
    }

    if let Some(exit_code) = sandbox.exit_code {
        object.insert("exitCode".into(), Value::from(exit_code));
    }
    if let Some(details) = &sandbox.driver {
        object.insert("driver".into(), driver(details));
    }
    if sandbox.revision != 0 {
        object.insert(
            "revision".into(),
            Value::String(sandbox.revision.to_string()),
        );
    }
    Value::Object(object)
}

/// Maps a list of sandboxes to a JSON array.
pub fn sandboxes(sandboxes: &[Sandbox]) -> Value {
    Value::Array(sandboxes.iter().map(sandbox).collect())
}

/// Maps a watch event to its proto3 JSON object, such as
/// `{"revision":"17","sandbox":{...},"type":"WATCH_EVENT_TYPE_MODIFIED"}`.
pub fn watch_event(event: &WatchEvent) -> Value {
    let mut object = Map::new();
    let name = WatchEventType::try_from(event.r#type)
        .ok()
        .map(|known| known.as_str_name());
    object.insert("type".into(), enum_value(name, event.r#type));
    if event.revision != 0 {
        object.insert("revision".into(), Value::String(event.revision.to_string()));
    }
    if let Some(sandbox_value) = &event.sandbox {
        object.insert("sandbox".into(), sandbox(sandbox_value));
    }
    if event.snapshot {
        object.insert("snapshot".into(), Value::Bool(true));
    }
    Value::Object(object)
}

fn spec(spec: &SandboxSpec) -> Value {
    let mut object = Map::new();
    put_strings(&mut object, "command", &spec.command);
    put_strings(&mut object, "args", &spec.args);
    put_map(&mut object, "env", &spec.env);
    if let Some(grace_period) = &spec.grace_period {
        object.insert(
            "gracePeriod".into(),
            Value::String(timefmt::json_duration(grace_period)),
        );
    }
    put_string(&mut object, "image", &spec.image);
    Value::Object(object)
}

fn driver(details: &DriverDetails) -> Value {
    let mut object = Map::new();
    put_string(&mut object, "driver", &details.driver);
    put_map(&mut object, "attributes", &details.attributes);
    Value::Object(object)
}

/// Returns a phase as its name, or as its number when this build does not define it.
fn phase(value: i32) -> Value {
    let name = SandboxPhase::try_from(value)
        .ok()
        .map(|known| known.as_str_name());
    enum_value(name, value)
}

/// Returns an enum value as its `name` when this build defines it, else as its number, as the
/// proto3 JSON mapping allows.
fn enum_value(name: Option<&str>, number: i32) -> Value {
    match name {
        Some(name) => Value::String(name.to_string()),
        None => Value::from(number),
    }
}

fn put_string(object: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        object.insert(key.into(), Value::String(value.to_string()));
    }
}

fn put_strings(object: &mut Map<String, Value>, key: &str, values: &[String]) {
    if !values.is_empty() {
        let array = values.iter().cloned().map(Value::String).collect();
        object.insert(key.into(), Value::Array(array));
    }
}

fn put_map(object: &mut Map<String, Value>, key: &str, map: &HashMap<String, String>) {
    if !map.is_empty() {
        let entries = map
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        object.insert(key.into(), Value::Object(entries));
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use serde_json::json;

    use super::*;

    fn full_sandbox() -> Sandbox {
        Sandbox {
            id: "3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14".into(),
            workspace: "default".into(),
            name: "web".into(),
            labels: HashMap::from([("team".into(), "ml".into())]),
            spec: Some(SandboxSpec {
                command: vec!["sleep".into()],
                args: vec!["60".into()],
                env: HashMap::from([("MODE".into(), "fast".into())]),
                grace_period: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                image: String::new(),
            }),
            phase: SandboxPhase::Ready as i32,
            phase_reason: "command running".into(),
            reason_since: Some(Timestamp {
                seconds: 1_714_564_805,
                nanos: 250_000_000,
            }),
            created_at: Some(Timestamp {
                seconds: 1_714_564_800,
                nanos: 0,
            }),
            deletion_requested_at: None,
            kill_at: None,
            exit_code: Some(0),
            driver: Some(DriverDetails {
                driver: "process".into(),
                attributes: HashMap::from([("pid".into(), "4242".into())]),
            }),
            revision: 17,
        }
    }

    #[test]
    fn sandbox_json_uses_proto3_mapping() {
        let expected = json!({
            "id": "3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14",
            "workspace": "default",
            "name": "web",
            "labels": {"team": "ml"},
            "spec": {
                "command": ["sleep"],
                "args": ["60"],
                "env": {"MODE": "fast"},
                "gracePeriod": "10s"
            },
            "phase": "SANDBOX_PHASE_READY",
            "phaseReason": "command running",
            "reasonSince": "2024-05-01T12:00:05.250Z",
            "createdAt": "2024-05-01T12:00:00Z",
            "exitCode": 0,
            "driver": {"driver": "process", "attributes": {"pid": "4242"}},
            "revision": "17"
        });
        assert_eq!(sandbox(&full_sandbox()), expected);
    }

    #[test]
    fn sandbox_json_omits_defaults() {
        let empty = sandbox(&Sandbox::default());
        assert_eq!(empty, json!({}));

        let mut deleting = full_sandbox();
        deleting.phase = SandboxPhase::Deleting as i32;
        deleting.exit_code = None;
        deleting.deletion_requested_at = Some(Timestamp {
            seconds: 1_714_564_860,
            nanos: 0,
        });
        let value = sandbox(&deleting);
        assert_eq!(value["phase"], "SANDBOX_PHASE_DELETING");
        assert_eq!(value["deletionRequestedAt"], "2024-05-01T12:01:00Z");
        assert!(value.get("exitCode").is_none());
        assert!(value["spec"].get("image").is_none());
    }

    #[test]
    fn unknown_phase_is_a_number() {
        let value = sandbox(&Sandbox {
            phase: 99,
            ..Sandbox::default()
        });
        assert_eq!(value["phase"], 99);
    }

    #[test]
    fn sandboxes_json_is_an_array() {
        let value = sandboxes(&[full_sandbox(), Sandbox::default()]);
        assert_eq!(value.as_array().map(Vec::len), Some(2));
        assert_eq!(sandboxes(&[]), json!([]));
    }

    #[test]
    fn watch_event_uses_proto3_names() {
        let event = WatchEvent {
            r#type: WatchEventType::Added as i32,
            revision: 17,
            sandbox: Some(Sandbox {
                name: "web".into(),
                ..Sandbox::default()
            }),
            snapshot: true,
        };
        assert_eq!(
            watch_event(&event).to_string(),
            r#"{"revision":"17","sandbox":{"name":"web"},"snapshot":true,"type":"WATCH_EVENT_TYPE_ADDED"}"#
        );
        let synced = WatchEvent {
            r#type: WatchEventType::Synced as i32,
            revision: 18,
            sandbox: None,
            snapshot: false,
        };
        assert_eq!(
            watch_event(&synced).to_string(),
            r#"{"revision":"18","type":"WATCH_EVENT_TYPE_SYNCED"}"#
        );
    }
}
