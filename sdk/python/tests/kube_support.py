"""A test namespace on the local Kubernetes cluster, and kubectl checks on its objects.

SANDGATE_TEST_KUBECONFIG is the admin kubeconfig of a cluster started by `tests/cluster/up`.
kubectl is SANDGATE_TEST_KUBECTL, else the KUBECTL entry of the cluster.env file beside the
kubeconfig, else `kubectl` from PATH. Every kubectl call passes --kubeconfig, so nothing falls
back to ~/.kube/config or to an in-cluster ServiceAccount.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

KUBECONFIG_VARIABLE = "SANDGATE_TEST_KUBECONFIG"
# Any image name works, because the kwok fake kubelet never pulls or runs it.
TEST_IMAGE = "example.com/agent:1"
# The container's command. It never runs on kwok, but a real kubelet would keep it running.
SLEEP_FOREVER = ["sleep", "infinity"]
# Name of the ServiceAccount, Role and RoleBinding in deploy/rbac.yaml.
RBAC_NAME = "sandgate"
# Label of every namespace the tests create, so that leftovers can be found and deleted.
TEST_NAMESPACE_LABEL = "sandgate.dev/test-namespace"
SANDBOX_RESOURCE = "sandboxes.agents.x-k8s.io"
KUBECTL_TIMEOUT = 30.0


def admin_kubeconfig() -> Path | None:
    """Return the admin kubeconfig from SANDGATE_TEST_KUBECONFIG, or None when it is unset."""
    configured = os.environ.get(KUBECONFIG_VARIABLE)
    return Path(configured) if configured else None


def read_cluster_env(kubeconfig: Path) -> dict[str, str]:
    """Return the KEY=value entries of the cluster.env file beside the kubeconfig, if any."""
    try:
        text = kubeconfig.with_name("cluster.env").read_text()
    except FileNotFoundError:
        return {}
    entries = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        entries[key] = value
    return entries


def kubectl_binary(kubeconfig: Path) -> str:
    """Return kubectl: SANDGATE_TEST_KUBECTL, else cluster.env's KUBECTL, else from PATH."""
    configured = os.environ.get("SANDGATE_TEST_KUBECTL")
    if configured:
        return configured
    return read_cluster_env(kubeconfig).get("KUBECTL", "kubectl")


def object_name(sandbox_id: str) -> str:
    """Return the name of the Sandbox and Pod of a sandbox: "sbx-" and the id's hex digits."""
    return "sbx-" + sandbox_id.replace("-", "")


def check_loopback_server(server: str) -> None:
    """Raise ValueError unless the API server URL points at a loopback address."""
    host = urlsplit(server).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"API server {server} of {KUBECONFIG_VARIABLE} is not a loopback address: the "
            "tests run only against the local cluster of tests/cluster/up"
        )


class TestNamespace:
    """A namespace of the test cluster with the RBAC of deploy/rbac.yaml applied in it."""

    # Tells pytest that this class contains no tests, although its name starts with "Test".
    __test__ = False

    def __init__(self, kubeconfig: Path, prefix: str) -> None:
        if not kubeconfig.is_file():
            raise FileNotFoundError(
                f"{KUBECONFIG_VARIABLE}={kubeconfig} is not a file: start the cluster with "
                "`tests/cluster/up` and pass the path it prints last"
            )
        self.kubeconfig = kubeconfig
        self.kubectl_path = kubectl_binary(kubeconfig)
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.created = False

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl with the admin kubeconfig in this namespace."""
        command = [
            self.kubectl_path,
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            self.name,
            *args,
        ]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command)}` failed with exit status {result.returncode}: "
                f"{result.stderr.strip()}"
            )
        return result

    def create(self) -> None:
        """Create the namespace, labelled as a test namespace, and apply deploy/rbac.yaml."""
        self.kubectl("create", "namespace", self.name)
        self.created = True
        self.kubectl("label", "namespace", self.name, f"{TEST_NAMESPACE_LABEL}=true")
        rbac = Path(__file__).resolve().parents[3] / "deploy" / "rbac.yaml"
        self.kubectl("apply", "-f", str(rbac))

    def delete(self) -> None:
        """Delete the namespace without waiting for its objects to go."""
        if self.created:
            self.kubectl("delete", "namespace", self.name, "--wait=false", check=False)
            self.created = False

    def write_gateway_kubeconfig(self, path: Path) -> None:
        """Write a kubeconfig that contains only a token of the `sandgate` ServiceAccount.

        The cluster's server and CA come from the admin kubeconfig. The token is valid for 2 h.
        """
        config = json.loads(self.kubectl("config", "view", "--raw", "--output", "json").stdout)
        cluster = config["clusters"][0]["cluster"]
        check_loopback_server(cluster["server"])
        token = self.kubectl("create", "token", RBAC_NAME, "--duration", "2h").stdout.strip()
        gateway_config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": cluster["server"],
                        "certificate-authority-data": cluster["certificate-authority-data"],
                    },
                }
            ],
            "users": [{"name": RBAC_NAME, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "gateway",
                    "context": {"cluster": "test", "user": RBAC_NAME, "namespace": self.name},
                }
            ],
            "current-context": "gateway",
        }
        # JSON is valid YAML, so kubeconfig readers accept this file.
        path.write_text(json.dumps(gateway_config, indent=2))
        path.chmod(0o600)

    def exists(self, resource: str, name: str) -> bool:
        """Tell whether a GET of the object returns it. Any error other than NotFound raises."""
        result = self.kubectl("get", resource, name, "--output", "name", check=False)
        if result.returncode == 0:
            return True
        if "(NotFound)" in result.stderr:
            return False
        raise RuntimeError(f"kubectl get {resource} {name} failed: {result.stderr.strip()}")

    def compute_left(self, sandbox_id: str) -> list[str]:
        """Return which of the sandbox's Pod and Sandbox objects a GET still finds."""
        name = object_name(sandbox_id)
        return [
            f"{resource}/{name}"
            for resource in ("pod", SANDBOX_RESOURCE)
            if self.exists(resource, name)
        ]

    def force_delete_pods(self) -> None:
        """Delete every Pod of the namespace with grace period 0, without waiting."""
        self.kubectl(
            "delete", "pods", "--all", "--grace-period=0", "--force", "--wait=false", check=False
        )

    def describe_objects(self) -> str:
        """Return a listing of the namespace's Sandboxes, Pods and events, for a failed test."""
        result = self.kubectl(
            "get", f"{SANDBOX_RESOURCE},pods,events", "--output", "wide", check=False
        )
        return result.stdout + result.stderr
