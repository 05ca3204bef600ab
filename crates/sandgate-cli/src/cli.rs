//! Command-line arguments of `sandgate`, and the value parsers that reject bad input before any
//! call reaches the gateway.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use sandgate_core::labels::Selector;
use sandgate_core::{SandboxId, duration, labels, validate};
use sandgate_proto::v1::SandboxPhase;

/// Gateway address used when neither `--server` nor `SANDGATE_SERVER` is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

const LONG_ABOUT: &str = "\
sandgate creates, lists, watches and deletes sandboxes for AI agents.

`sandgate serve` runs the gateway. The other commands are clients of a running gateway: they
take --server (or SANDGATE_SERVER) and -w/--workspace (or SANDGATE_WORKSPACE).";

const EXIT_CODES: &str = "\
Exit codes:
  0  success: every sandbox named was created, found, or confirmed deleted
     (with --no-wait, its deletion was accepted)
  1  the request failed: the gateway rejected it, a sandbox was not found, a sandbox entered
     ERROR or EXITED while waiting for READY, or a deletion could not be confirmed
  2  invalid arguments, rejected before any call
  3  the gateway could not be reached, or the connection was lost and did not come back
  4  a wait timed out: a sandbox was still present, or not yet READY";

/// The `sandgate` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sandgate",
    version,
    about = "Create, list, watch and delete sandboxes for AI agents",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES,
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `sandgate`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway on a loopback address.
    Serve(ServeArgs),
    /// Create a sandbox that runs COMMAND.
    Create(CreateArgs),
    /// Show one sandbox.
    Get(GetArgs),
    /// List sandboxes.
    List(ListArgs),
    /// Delete sandboxes and, by default, wait until their compute is gone.
    Delete(DeleteArgs),
    /// Print one line per change of sandboxes, after a snapshot of the current ones.
    Watch(WatchArgs),
    /// Run a sandbox supervisor. The process driver starts it, users do not.
    #[command(hide = true, disable_help_flag = true)]
    Supervise {
        /// Arguments handed to the supervisor unchanged.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_parser = clap::value_parser!(OsString)
        )]
        args: Vec<OsString>,
    },
}

/// Backends that `sandgate serve` can run sandboxes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DriverKind {
    /// Each sandbox runs as local processes under its own supervisor.
    Process,
    /// Each sandbox is an agent-sandbox Sandbox (agents.x-k8s.io/v1beta1) and its Pod.
    Kubernetes,
}

/// Arguments of `sandgate serve`. A flag given twice takes its last value, so that a wrapper can
/// override a default it passes.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// Address and port to listen on. Only loopback addresses are accepted.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Directory of the store and of the sandboxes' files
    /// [default: $XDG_STATE_HOME/sandgate or ~/.local/state/sandgate].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Backend that runs the sandboxes.
    #[arg(long, value_enum, default_value_t = DriverKind::Process)]
    pub driver: DriverKind,

    /// Time between reconciler passes, at least 1s.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_reconcile_interval)]
    pub reconcile_interval: Duration,

    /// How long the record of a removed sandbox is kept.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub tombstone_retention: Duration,

    /// Age after which backend objects that have no sandbox record are deleted.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub orphan_grace: Duration,

    /// Kubeconfig of the cluster, for --driver kubernetes
    /// [default: $KUBECONFIG, then ~/.kube/config, then the in-cluster ServiceAccount].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the Sandboxes, for --driver kubernetes
    /// [default: the kubeconfig context's namespace, else "default"].
    #[arg(long, value_name = "NAME", value_parser = parse_namespace)]
    pub namespace: Option<String>,

    /// Value of the sandgate.dev/instance label on every object this gateway creates, for
    /// --driver kubernetes. Gateways with different instances can share a namespace.
    #[arg(long, value_name = "NAME", default_value = "default", value_parser = parse_instance)]
    pub instance: String,
}

/// Options shared by every client command.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// URL of the gateway.
    #[arg(long, value_name = "URL", env = "SANDGATE_SERVER", default_value = DEFAULT_SERVER, value_parser = parse_server)]
    pub server: String,

    /// Workspace of the sandboxes named.
    #[arg(short = 'w', long, value_name = "NAME", env = "SANDGATE_WORKSPACE", default_value = "default", value_parser = parse_workspace)]
    pub workspace: String,
}

/// Output formats of `create`, `get` and `list`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The proto3 JSON mapping: one object, or an array for `list`.
    Json,
    /// One `sandbox/NAME` line per sandbox, as kubectl's `-o name` prints.
    Name,
}

/// Output formats of `watch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum WatchFormat {
    /// One line per event for people: time, event, name, phase and reason.
    #[default]
    Text,
    /// One proto3 JSON object per line for each event, printed for a change of any field.
    Json,
}

/// Arguments of `sandgate create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the sandbox, unique in its workspace.
    #[arg(value_parser = parse_name)]
    pub name: String,

    /// Label to set, as KEY=VALUE. Repeat for more labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Environment variable of the command, as NAME=VALUE. Repeat for more variables.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Time between the stop signal and the forced kill when the sandbox is deleted [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_grace_period)]
    pub grace_period: Option<Duration>,

    /// Container image. Only drivers that run containers accept it, and the kubernetes driver
    /// requires it.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// Wait until the sandbox is READY.
    #[arg(long)]
    pub wait_ready: bool,

    /// How long --wait-ready waits, from 1s to 1h [default: 5m].
    #[arg(long, value_name = "DURATION", requires = "wait_ready", value_parser = parse_wait_timeout)]
    pub timeout: Option<Duration>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,

    /// Program to run and its arguments, after `--`. Optional with --image, which then runs the
    /// image's entrypoint.
    #[arg(last = true, required_unless_present = "image", value_name = "COMMAND")]
    pub command: Vec<String>,

    /// Gateway and workspace.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `sandgate get`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["name", "id"])))]
pub struct GetArgs {
    /// Name of the sandbox.
    #[arg(value_parser = parse_name_ref)]
    pub name: Option<String>,

    /// Id of the sandbox, in place of its name.
    #[arg(long, value_parser = parse_id)]
    pub id: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,

    /// Gateway and workspace.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Sandbox phases as `--phase` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    /// The compute is being started.
    Provisioning,
    /// The command runs.
    Ready,
    /// The command ended on its own.
    Exited,
    /// The sandbox could not be started or kept running.
    Error,
    /// The driver cannot observe the sandbox.
    Unknown,
    /// A deletion is in progress.
    Deleting,
}

impl PhaseArg {
    /// Returns the API's phase.
    pub fn to_proto(self) -> SandboxPhase {
        match self {
            Self::Provisioning => SandboxPhase::Provisioning,
            Self::Ready => SandboxPhase::Ready,
            Self::Exited => SandboxPhase::Exited,
            Self::Error => SandboxPhase::Error,
            Self::Unknown => SandboxPhase::Unknown,
            Self::Deleting => SandboxPhase::Deleting,
        }
    }
}

/// Arguments of `sandgate list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Label selector, such as 'team=ml,tier!=batch' or 'env in (prod,staging)'.
    #[arg(short = 'l', long, value_name = "SELECTOR", value_parser = parse_selector)]
    pub selector: Option<String>,

    /// List the sandboxes of every workspace.
    #[arg(short = 'A', long)]
    pub all_workspaces: bool,

    /// List only sandboxes in this phase. Repeat for more phases.
    #[arg(long = "phase", value_enum, ignore_case = true)]
    pub phases: Vec<PhaseArg>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,

    /// Gateway and workspace.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `sandgate delete`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("targets").required(true).args(["names", "ids", "selector", "all"])))]
pub struct DeleteArgs {
    /// Names of the sandboxes.
    #[arg(value_name = "NAME", value_parser = parse_name_ref, conflicts_with_all = ["ids", "selector", "all"])]
    pub names: Vec<String>,

    /// Id of a sandbox to delete, in place of names. Repeat for more ids.
    #[arg(long = "id", value_name = "ID", value_parser = parse_id, conflicts_with_all = ["selector", "all"])]
    pub ids: Vec<String>,

    /// Delete every sandbox of the workspace that matches this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR", value_parser = parse_selector, conflicts_with = "all")]
    pub selector: Option<String>,

    /// Delete every sandbox of the workspace.
    #[arg(long)]
    pub all: bool,

    /// Return once each deletion is recorded, without waiting for the compute to be gone.
    #[arg(long)]
    pub no_wait: bool,

    /// Wait for the compute to be gone (the default). `--wait=false` is kubectl's form of
    /// `--no-wait`.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool,
        conflicts_with = "no_wait"
    )]
    pub wait: Option<bool>,

    /// How long to wait for every sandbox to be gone, from 1s to 1h [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_wait_timeout, conflicts_with = "no_wait")]
    pub timeout: Option<Duration>,

    /// Time between the stop signal and the forced kill, such as 30s, or 30 for seconds. It
    /// replaces the sandbox's own, and can only shorten a deletion already under way.
    #[arg(long, value_name = "DURATION", value_parser = parse_grace_period)]
    pub grace_period: Option<Duration>,

    /// Kill at once, with no grace period. Takes --grace-period 0 too, as kubectl does.
    #[arg(long)]
    pub force: bool,

    /// Report a sandbox that does not exist as ignored instead of failing.
    #[arg(long)]
    pub ignore_not_found: bool,

    /// Gateway and workspace.
    #[command(flatten)]
    pub client: ClientArgs,
}

impl DeleteArgs {
    /// Returns whether the command returns once each deletion is recorded.
    pub fn skips_wait(&self) -> bool {
        self.no_wait || self.wait == Some(false)
    }

    /// Returns how long the command waits for every sandbox to be gone.
    pub fn wait_timeout(&self) -> Duration {
        self.timeout.unwrap_or(duration::DEFAULT_WAIT_TIMEOUT)
    }
}

/// Arguments of `sandgate watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch only the sandbox with this name. The command ends after its deletion.
    #[arg(value_parser = parse_name_ref, conflicts_with_all = ["id", "all_workspaces"])]
    pub name: Option<String>,

    /// Watch only the sandbox with this id. The command ends after its deletion.
    #[arg(long, value_parser = parse_id, conflicts_with = "all_workspaces")]
    pub id: Option<String>,

    /// Watch the sandboxes of every workspace.
    #[arg(short = 'A', long)]
    pub all_workspaces: bool,

    /// Start after this store revision instead of with a snapshot.
    #[arg(long, value_name = "N")]
    pub resume_revision: Option<u64>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: WatchFormat,

    /// Gateway and workspace.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Parses a duration such as 500ms, 30s or 5m.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    duration::parse(value)
}

/// Parses the timeout of a wait, from 1s to 1h inclusive.
pub fn parse_wait_timeout(value: &str) -> Result<Duration, String> {
    let parsed = duration::parse(value)?;
    duration::wait_timeout("timeout", Some(parsed)).map_err(|error| error.message)
}

/// Parses a grace period of at most 1h. A number without a unit is seconds, as in kubectl.
pub fn parse_grace_period(value: &str) -> Result<Duration, String> {
    let parsed = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => duration::parse(value).map_err(|_| {
            format!(
                "invalid grace period {value:?}: use whole seconds such as 30, or a duration \
                 such as 500ms, 30s or 5m"
            )
        })?,
    };
    duration::grace_period("grace period", parsed).map_err(|error| error.message)
}

/// Parses the reconciler interval, at least 1s.
pub fn parse_reconcile_interval(value: &str) -> Result<Duration, String> {
    let parsed = duration::parse(value)?;
    if parsed < Duration::from_secs(1) {
        return Err(format!(
            "reconcile interval {} is too short: use at least 1s",
            duration::format(parsed)
        ));
    }
    Ok(parsed)
}

/// Parses a listen address and rejects any that is not loopback.
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = value.parse().map_err(|_| {
        format!(
            "invalid listen address {value:?}: use an IP address and port such as 127.0.0.1:7878"
        )
    })?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "listen address {value:?} is not loopback: sandgate runs any command it is given and \
             does not authenticate callers yet: listen on a loopback address such as 127.0.0.1:7878"
        ));
    }
    Ok(address)
}

/// Parses a gateway URL of the form http://HOST:PORT.
pub fn parse_server(value: &str) -> Result<String, String> {
    let invalid =
        || format!("invalid server URL {value:?}: use http://HOST:PORT such as {DEFAULT_SERVER}");
    let uri: tonic::codegen::http::Uri = value.parse().map_err(|_| invalid())?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(invalid());
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// Parses a workspace name, a DNS-1123 label.
pub fn parse_workspace(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("workspace is required: use 1 to 63 lowercase letters, digits or '-'".into());
    }
    validate::workspace("workspace", value).map_err(|error| error.message)
}

/// Parses a Kubernetes namespace name, a DNS-1123 label.
pub fn parse_namespace(value: &str) -> Result<String, String> {
    validate::workspace("namespace", value).map_err(|error| error.message)
}

/// Parses a gateway instance, which must be a valid Kubernetes label value of 1 to 63
/// characters.
pub fn parse_instance(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("instance is required: use 1 to 63 letters, digits, '-', '_' or '.'".into());
    }
    let single = BTreeMap::from([("sandgate.dev/instance".to_string(), value.to_string())]);
    labels::validate("instance", &single).map_err(|error| error.message)?;
    Ok(value.to_string())
}

/// Parses a sandbox name, a DNS-1123 label.
pub fn parse_name(value: &str) -> Result<String, String> {
    validate::name("name", value).map_err(|error| error.message)?;
    Ok(value.to_string())
}

/// Parses the name of an existing sandbox, which may carry the `sandbox/` prefix that `-o name`
/// prints, as kubectl takes `TYPE/NAME`.
pub fn parse_name_ref(value: &str) -> Result<String, String> {
    parse_name(value.strip_prefix("sandbox/").unwrap_or(value))
}

/// Parses a boolean in the forms kubectl takes: 1, t, T, TRUE, true, True, and their false
/// counterparts 0, f, F, FALSE, false, False.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {value:?}: use true or false")),
    }
}

/// Parses a sandbox id, a UUID, and returns it in its hyphenated form.
pub fn parse_id(value: &str) -> Result<String, String> {
    SandboxId::parse_field("id", value)
        .map(|id| id.to_string())
        .map_err(|error| error.message)
}

/// Parses a label selector and returns its text unchanged for the gateway.
pub fn parse_selector(value: &str) -> Result<String, String> {
    Selector::parse("selector", value).map_err(|error| error.message)?;
    Ok(value.to_string())
}

/// Parses a label KEY=VALUE and checks both against the Kubernetes label rules.
pub fn parse_label(value: &str) -> Result<(String, String), String> {
    let (key, label_value) = value
        .split_once('=')
        .ok_or_else(|| format!("invalid label {value:?}: use KEY=VALUE, such as team=ml"))?;
    let single = BTreeMap::from([(key.to_string(), label_value.to_string())]);
    labels::validate("label", &single).map_err(|error| error.message)?;
    Ok((key.to_string(), label_value.to_string()))
}

/// Parses an environment variable NAME=VALUE. The value may contain '='.
pub fn parse_env(value: &str) -> Result<(String, String), String> {
    let (name, env_value) = value.split_once('=').ok_or_else(|| {
        format!("invalid environment variable {value:?}: use NAME=VALUE, such as LOG_LEVEL=debug")
    })?;
    let single = BTreeMap::from([(name.to_string(), env_value.to_string())]);
    validate::env("env", &single).map_err(|error| error.message)?;
    Ok((name.to_string(), env_value.to_string()))
}

/// Collects KEY=VALUE pairs into a map, rejecting a key given twice.
///
/// # Errors
/// Returns a message naming the repeated key and the option it came from.
pub fn collect_pairs(
    option: &str,
    pairs: &[(String, String)],
) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(format!(
                "{option} {key:?} is given more than once: give each key once"
            ));
        }
    }
    Ok(map)
}
