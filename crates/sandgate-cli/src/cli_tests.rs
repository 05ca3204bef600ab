//! Tests of argument parsing: every bad input is rejected before any call, with a message that
//! names the value.

use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::{Cli, Command, DriverKind, OutputFormat, PhaseArg, collect_pairs};

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    let mut argv = vec!["sandgate"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|cli| cli.command)
}

/// Returns the one-line message that `main` prints for an invalid value.
fn rejection(args: &[&str]) -> String {
    let error = parse(args).expect_err("arguments should be rejected");
    assert_eq!(error.kind(), ErrorKind::ValueValidation, "{error}");
    error
        .render()
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn create_maps_command_and_args() {
    let Ok(Command::Create(args)) = parse(&[
        "create",
        "web",
        "--label",
        "team=ml",
        "--env",
        "A=b=c",
        "--grace-period",
        "3s",
        "--",
        "sleep",
        "60",
        "--flag",
    ]) else {
        panic!("create should parse");
    };
    assert_eq!(args.name, "web");
    assert_eq!(args.command, ["sleep", "60", "--flag"]);
    assert_eq!(args.labels, [("team".to_string(), "ml".to_string())]);
    assert_eq!(args.env, [("A".to_string(), "b=c".to_string())]);
    assert_eq!(args.grace_period, Some(Duration::from_secs(3)));
    assert_eq!(args.output, OutputFormat::Table);
    assert_eq!(args.client.workspace, "default");
    assert_eq!(args.client.server, "http://127.0.0.1:7878");
}

#[test]
fn create_rejects_bad_name() {
    let message = rejection(&["create", "Web_1", "--", "true"]);
    assert!(message.contains("\"Web_1\""), "{message}");
    assert!(message.contains("lowercase"), "{message}");
}

#[test]
fn create_rejects_malformed_pairs() {
    let label = rejection(&["create", "web", "--label", "team", "--", "true"]);
    assert!(label.contains("\"team\""), "{label}");
    assert!(label.contains("KEY=VALUE"), "{label}");

    let bad_key = rejection(&["create", "web", "--label=-team=ml", "--", "true"]);
    assert!(bad_key.contains("\"-team\""), "{bad_key}");

    let env = rejection(&["create", "web", "--env", "NOVALUE", "--", "true"]);
    assert!(env.contains("\"NOVALUE\""), "{env}");
    assert!(env.contains("NAME=VALUE"), "{env}");
}

#[test]
fn create_requires_command_after_separator() {
    let error = parse(&["create", "web"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    let error = parse(&["create", "web", "sleep"]).unwrap_err();
    assert_ne!(error.kind(), ErrorKind::ValueValidation);
}

#[test]
fn create_timeout_requires_wait_ready() {
    let error = parse(&["create", "web", "--timeout", "5s", "--", "true"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    assert!(
        parse(&[
            "create",
            "web",
            "--wait-ready",
            "--timeout",
            "5s",
            "--",
            "true"
        ])
        .is_ok()
    );
}

#[test]
fn duplicate_pairs_are_rejected() {
    let pairs = [
        ("team".to_string(), "a".to_string()),
        ("team".to_string(), "b".to_string()),
    ];
    let error = collect_pairs("label", &pairs).unwrap_err();
    assert!(error.contains("\"team\""), "{error}");
}

#[test]
fn list_rejects_bad_selector() {
    let message = rejection(&["list", "-l", "env in (prod"]);
    assert!(message.contains("\"env in (prod\""), "{message}");
}

#[test]
fn list_parses_phases_and_all_workspaces() {
    let Ok(Command::List(args)) = parse(&["list", "-A", "--phase", "ready", "--phase", "DELETING"])
    else {
        panic!("list should parse");
    };
    assert!(args.all_workspaces);
    assert_eq!(args.phases, [PhaseArg::Ready, PhaseArg::Deleting]);
    let error = parse(&["list", "--phase", "running"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidValue);
}

#[test]
fn delete_timeout_out_of_range_names_value() {
    let zero = rejection(&["delete", "web", "--timeout", "0s"]);
    assert!(zero.contains("timeout 0s is out of range"), "{zero}");
    assert!(zero.contains("1s to 1h"), "{zero}");

    let two_hours = rejection(&["delete", "web", "--timeout", "2h"]);
    assert!(
        two_hours.contains("timeout 2h is out of range"),
        "{two_hours}"
    );

    let bare = rejection(&["delete", "web", "--timeout", "30"]);
    assert!(bare.contains("\"30\""), "{bare}");
    assert!(bare.contains("missing unit"), "{bare}");
}

#[test]
fn delete_defaults() {
    let Ok(Command::Delete(args)) = parse(&["delete", "a", "b"]) else {
        panic!("delete should parse");
    };
    assert_eq!(args.names, ["a", "b"]);
    assert_eq!(args.timeout, None);
    assert_eq!(args.wait_timeout(), Duration::from_secs(300));
    assert!(!args.no_wait);
    assert!(!args.skips_wait());
    assert!(!args.force);
}

#[test]
fn delete_wait_takes_kubectl_forms() {
    let cases: [(&[&str], bool); 6] = [
        (&["delete", "a", "--wait"], false),
        (&["delete", "a", "--wait=true"], false),
        (&["delete", "a", "--wait=false"], true),
        (&["delete", "a", "--wait=0"], true),
        (&["delete", "a", "--wait=False"], true),
        (&["delete", "a", "--no-wait"], true),
    ];
    for (argv, skips) in cases {
        let Ok(Command::Delete(args)) = parse(argv) else {
            panic!("{argv:?} should parse");
        };
        assert_eq!(args.skips_wait(), skips, "{argv:?}");
    }
    let both = parse(&["delete", "a", "--wait=true", "--no-wait"]).unwrap_err();
    assert_eq!(both.kind(), ErrorKind::ArgumentConflict);
    let maybe = rejection(&["delete", "a", "--wait=maybe"]);
    assert!(maybe.contains("invalid boolean \"maybe\""), "{maybe}");
}

#[test]
fn names_take_the_sandbox_prefix() {
    let Ok(Command::Delete(args)) = parse(&["delete", "sandbox/a", "b"]) else {
        panic!("delete sandbox/a should parse");
    };
    assert_eq!(args.names, ["a", "b"]);
    let Ok(Command::Get(args)) = parse(&["get", "sandbox/web"]) else {
        panic!("get sandbox/web should parse");
    };
    assert_eq!(args.name.as_deref(), Some("web"));
    let other = rejection(&["get", "pod/web"]);
    assert!(other.contains("\"pod/web\""), "{other}");
    assert!(parse(&["create", "sandbox/web", "--", "true"]).is_err());
}

#[test]
fn delete_targets_are_names_or_ids() {
    let id = "3f2a7c1e-9b4d-4e21-8a6f-0c5d2e9b7a14";
    let Ok(Command::Delete(args)) = parse(&["delete", "--id", id]) else {
        panic!("delete --id should parse");
    };
    assert_eq!(args.ids, [id]);

    assert!(parse(&["delete"]).is_err());
    let both = parse(&["delete", "web", "--id", id]).unwrap_err();
    assert_eq!(both.kind(), ErrorKind::ArgumentConflict);

    let bad_id = rejection(&["delete", "--id", "nope"]);
    assert!(bad_id.contains("\"nope\""), "{bad_id}");
}

#[test]
fn delete_conflicting_flags() {
    let no_wait = parse(&["delete", "web", "--no-wait", "--timeout", "5s"]).unwrap_err();
    assert_eq!(no_wait.kind(), ErrorKind::ArgumentConflict);
    let grace = rejection(&["delete", "web", "--grace-period", "2h"]);
    assert!(grace.contains("grace period 2h is too long"), "{grace}");
    let seconds = rejection(&["delete", "web", "--grace-period", "3601"]);
    assert!(
        seconds.contains("grace period 1h 1s is too long"),
        "{seconds}"
    );
}

#[test]
fn grace_period_takes_bare_seconds() {
    let Ok(Command::Delete(args)) = parse(&["delete", "web", "--grace-period", "30"]) else {
        panic!("delete should parse");
    };
    assert_eq!(args.grace_period, Some(Duration::from_secs(30)));
    let Ok(Command::Delete(args)) = parse(&["delete", "web", "--force", "--grace-period", "0"])
    else {
        panic!("kubectl's --force --grace-period 0 should parse");
    };
    assert!(args.force);
    assert_eq!(args.grace_period, Some(Duration::ZERO));
    let negative = rejection(&["delete", "web", "--grace-period=-1"]);
    assert!(negative.contains("\"-1\""), "{negative}");
}

#[test]
fn client_options_are_checked() {
    let workspace = rejection(&["list", "-w", "Team"]);
    assert!(workspace.contains("\"Team\""), "{workspace}");

    let server = rejection(&["list", "--server", "127.0.0.1:7878"]);
    assert!(server.contains("\"127.0.0.1:7878\""), "{server}");
    assert!(server.contains("http://"), "{server}");

    let Ok(Command::List(args)) = parse(&["list", "--server", "http://[::1]:9000/"]) else {
        panic!("list should parse");
    };
    assert_eq!(args.client.server, "http://[::1]:9000");
}

#[test]
fn serve_defaults() {
    let Ok(Command::Serve(args)) = parse(&["serve"]) else {
        panic!("serve should parse");
    };
    assert_eq!(args.listen.to_string(), "127.0.0.1:7878");
    assert_eq!(args.driver, DriverKind::Process);
    assert_eq!(args.reconcile_interval, Duration::from_secs(60));
    assert_eq!(args.tombstone_retention, Duration::from_secs(24 * 3600));
    assert_eq!(args.orphan_grace, Duration::from_secs(120));
    assert!(args.data_dir.is_none());
}

#[test]
fn serve_rejects_non_loopback_listen() {
    let message = rejection(&["serve", "--listen", "0.0.0.0:7878"]);
    assert!(
        message.contains("loopback address such as 127.0.0.1:7878"),
        "{message}"
    );
    assert!(
        message.contains("does not authenticate callers"),
        "{message}"
    );
    let hostname = rejection(&["serve", "--listen", "localhost:7878"]);
    assert!(hostname.contains("\"localhost:7878\""), "{hostname}");
    assert!(parse(&["serve", "--listen", "[::1]:7000"]).is_ok());
}

#[test]
fn serve_rejects_short_reconcile_interval() {
    let message = rejection(&["serve", "--reconcile-interval", "500ms"]);
    assert!(message.contains("500ms"), "{message}");
    assert!(message.contains("at least 1s"), "{message}");
    assert!(parse(&["serve", "--reconcile-interval", "1s"]).is_ok());
}

#[test]
fn serve_driver_rejects_unknown() {
    let error = parse(&["serve", "--driver", "docker"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidValue);
}

#[test]
fn serve_kubernetes_flags() {
    let Ok(Command::Serve(args)) = parse(&[
        "serve",
        "--driver",
        "kubernetes",
        "--kubeconfig",
        "/etc/sandgate/kubeconfig",
        "--namespace",
        "agents",
        "--instance",
        "blue",
    ]) else {
        panic!("serve should parse");
    };
    assert_eq!(args.driver, DriverKind::Kubernetes);
    assert_eq!(
        args.kubeconfig.as_deref(),
        Some(std::path::Path::new("/etc/sandgate/kubeconfig"))
    );
    assert_eq!(args.namespace.as_deref(), Some("agents"));
    assert_eq!(args.instance, "blue");
}

#[test]
fn serve_kubernetes_defaults() {
    let Ok(Command::Serve(args)) = parse(&["serve", "--driver", "kubernetes"]) else {
        panic!("serve should parse");
    };
    assert!(args.kubeconfig.is_none());
    assert!(args.namespace.is_none());
    assert_eq!(args.instance, "default");
}

#[test]
fn serve_rejects_bad_namespace_and_instance() {
    assert!(parse(&["serve", "--namespace", "Not_A_Label"]).is_err());
    assert!(parse(&["serve", "--instance", ""]).is_err());
    assert!(parse(&["serve", "--instance", "has space"]).is_err());
}

#[test]
fn serve_last_flag_wins() {
    let Ok(Command::Serve(args)) = parse(&[
        "serve",
        "--reconcile-interval",
        "1s",
        "--reconcile-interval",
        "1h",
    ]) else {
        panic!("serve should parse a repeated flag");
    };
    assert_eq!(args.reconcile_interval, Duration::from_secs(3600));
}

#[test]
fn create_image_without_command() {
    let Ok(Command::Create(args)) = parse(&["create", "web", "--image", "python:3.13"]) else {
        panic!("create with --image and no command should parse");
    };
    assert!(args.command.is_empty());
    assert_eq!(args.image.as_deref(), Some("python:3.13"));
}

#[test]
fn supervise_passes_raw_args() {
    let Ok(Command::Supervise { args }) = parse(&["supervise", "/tmp/box", "--help", "-x"]) else {
        panic!("supervise should parse");
    };
    assert_eq!(args, ["/tmp/box", "--help", "-x"]);
}

#[test]
fn watch_target_conflicts() {
    let error = parse(&["watch", "web", "-A"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    let Ok(Command::Watch(args)) = parse(&["watch", "--resume-revision", "12"]) else {
        panic!("watch should parse");
    };
    assert_eq!(args.resume_revision, Some(12));
}

#[test]
fn help_lists_exit_codes_and_hides_supervise() {
    let error = parse(&["--help"]).unwrap_err();
    let help = error.render().to_string();
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(!help.contains("supervise"), "{help}");
}
