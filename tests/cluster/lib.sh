# Shared settings and helpers for the scripts in tests/cluster/. Sourced, never run.
# shellcheck shell=bash
# The scripts set $state to the state directory of the cluster they work on before they call the
# process functions below.
# shellcheck disable=SC2154

cluster_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/cluster/versions.env
source "$cluster_dir/versions.env"

cache_root="${SANDGATE_CACHE:-$HOME/.cache/sandgate}"
state_root="${SANDGATE_CLUSTER_ROOT:-/tmp/sandgate-cluster}"

kubernetes_bin="$cache_root/bin/kubernetes-$KUBERNETES_VERSION"
etcd_bin="$cache_root/bin/etcd-$ETCD_VERSION"
kwok_bin="$cache_root/bin/kwok-$KWOK_VERSION"
agent_sandbox_bin="$cache_root/bin/agent-sandbox-$AGENT_SANDBOX_VERSION"
agent_sandbox_crds="$cache_root/crds/agent-sandbox-$AGENT_SANDBOX_VERSION"

# Writes a progress line to stderr, so stdout stays free for results.
log() {
  echo "[$(date +%H:%M:%S)] $*" >&2
}

die() {
  echo "error: $*" >&2
  exit 1
}

# Checks that a cluster name is safe to use as a directory name.
validate_cluster_name() {
  [[ "$1" =~ ^[a-z0-9][a-z0-9-]{0,40}$ ]] ||
    die "invalid cluster name '$1': use 1 to 41 lowercase letters, digits or '-', starting with a letter or digit"
}

# True when every built binary and the CRD copy of the pinned versions are in the cache.
all_built() {
  local f
  for f in "$kubernetes_bin/kube-apiserver" "$kubernetes_bin/kube-controller-manager" \
    "$kubernetes_bin/kube-scheduler" "$kubernetes_bin/kubectl" "$etcd_bin/etcd" "$kwok_bin/kwok" \
    "$agent_sandbox_bin/agent-sandbox-controller" "$agent_sandbox_crds/.complete"; do
    [[ -e "$f" ]] || return 1
  done
}

# Prints the state directory of cluster $1.
cluster_state_dir() {
  echo "$state_root/$1"
}

# Process management. Each component runs in its own session (setsid), with stdin from /dev/null
# and output to logs/NAME.log, so it outlives the shell that started it. run/NAME.pid contains its
# pid, and run/NAME.args its binary and arguments (NUL-separated), so that
# `start_recorded_component` can start it again with the same command line. File descriptors 8 and
# 9 carry the scripts' flock locks, so they are closed for components, which would otherwise keep
# the locks held for as long as they run.

# Starts component $1 of the cluster whose state dir is $state (set by the calling script), as binary
# $2 with arguments $3...
start_component() {
  local name="$1"
  shift
  mkdir -p "$state/run" "$state/logs"
  printf '%s\0' "$@" >"$state/run/$name.args"
  start_recorded_component "$name"
}

# Starts component $1 again from its recorded command line.
start_recorded_component() {
  local name="$1"
  local args_file="$state/run/$name.args" pid_file="$state/run/$name.pid"
  [[ -f "$args_file" ]] || die "no recorded command line for $name in $args_file; start the cluster with tests/cluster/up"
  local -a cmd
  mapfile -d '' cmd <"$args_file"
  rm -f "$pid_file"
  echo "--- $(date -u +%FT%TZ) starting ${cmd[*]}" >>"$state/logs/$name.log"
  # The inner shell writes its own pid and then execs the component, so the pid stays the
  # component's. The proxy variables are removed so that no component sends loopback traffic
  # through a proxy.
  # shellcheck disable=SC2016
  env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY \
    NO_PROXY=127.0.0.1,localhost \
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pid_file" "${cmd[@]}" \
    </dev/null >>"$state/logs/$name.log" 2>&1 8>&- 9>&- &
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s "$pid_file" ]] && break
    sleep 0.05
  done
  [[ -s "$pid_file" ]] || die "$name did not start; see $state/logs/$name.log"
}

# Prints the pid of component $1 when that pid still runs the recorded binary, else nothing.
component_pid() {
  local name="$1"
  local pid_file="$state/run/$name.pid" args_file="$state/run/$name.args"
  [[ -s "$pid_file" && -f "$args_file" ]] || return 0
  local pid binary exe
  pid="$(<"$pid_file")"
  binary="$(head -z -n 1 "$args_file" | tr -d '\0')"
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  # A binary replaced on disk after the start shows up with a " (deleted)" suffix.
  exe="${exe% (deleted)}"
  if [[ "$exe" == "$binary" ]]; then
    echo "$pid"
  fi
}

# True while process $1 exists and is not a zombie. A component's parent is whatever reaped the
# starting shell, which may be slow to collect exited children.
process_alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # The state is the first field after the parenthesised command name.
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

# Stops component $1: SIGTERM, then SIGKILL after 15 s. Does nothing when it is not running.
stop_component() {
  local name="$1"
  local pid
  pid="$(component_pid "$name")"
  if [[ -z "$pid" ]]; then
    rm -f "$state/run/$name.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 150; i++)); do
    process_alive "$pid" || break
    sleep 0.1
  done
  if process_alive "$pid"; then
    log "$name (pid $pid) did not exit 15 s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      process_alive "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$state/run/$name.pid"
  log "stopped $name (pid $pid)"
}

# Waits up to $2 seconds until the command $3... succeeds, failing early when component $1 exits.
wait_until() {
  local name="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    if [[ -z "$(component_pid "$name")" ]]; then
      tail -n 30 "$state/logs/$name.log" >&2 || true
      die "$name exited before it became ready; its log is $state/logs/$name.log (last lines above)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$state/logs/$name.log" >&2 || true
      die "$name was not ready after $timeout s; its log is $state/logs/$name.log (last lines above)"
    fi
    sleep 0.2
  done
}

# Loads the cluster's env file (ports, paths) into the shell.
load_cluster_env() {
  [[ -f "$state/cluster.env" ]] || die "no cluster state in $state; start it with tests/cluster/up $(basename "$state")"
  # shellcheck source=/dev/null
  source "$state/cluster.env"
}

apiserver_ready() {
  curl --noproxy '*' -fsS --max-time 2 --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" \
    --key "$state/pki/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -qx ok
}

# Writes the env file that tests read: ports, pids and paths of the cluster in $state.
write_cluster_env() {
  local pid_lines="" name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok agent-sandbox-controller; do
    pid_lines+="PID_${name//-/_}=$(component_pid "$name")"$'\n'
  done
  cat >"$state/cluster.env.tmp" <<ENV
# Written by tests/cluster/up; sourced by tests/cluster/* and read by tests/src/cluster.rs.
CLUSTER_NAME=$CLUSTER_NAME
KUBECONFIG=$state/admin.kubeconfig
APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
APISERVER_PORT=$APISERVER_PORT
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
CONTROLLER_MANAGER_PORT=$CONTROLLER_MANAGER_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
ETCD_DATA_DIR=$ETCD_DATA_DIR
KWOK_NODE_NAME=$KWOK_NODE_NAME
KUBECTL=$kubernetes_bin/kubectl
KUBERNETES_VERSION=$KUBERNETES_VERSION
ETCD_VERSION=$ETCD_VERSION
KWOK_VERSION=$KWOK_VERSION
AGENT_SANDBOX_VERSION=$AGENT_SANDBOX_VERSION
${pid_lines%$'\n'}
ENV
  mv "$state/cluster.env.tmp" "$state/cluster.env"
}
