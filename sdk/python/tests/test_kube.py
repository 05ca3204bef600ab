"""Tests of the blocking client against a gateway on the Kubernetes driver.

They need the local cluster of tests/cluster/up: set SANDGATE_TEST_KUBECONFIG to the admin
kubeconfig it prints. The module starts one `sandgate serve --driver kubernetes` in a fresh
namespace, as the `sandgate` ServiceAccount of deploy/rbac.yaml with only that account's
token, so a permission missing from the manifest fails these tests. On the kwok node of that
cluster a Pod stays Terminating for its grace period, and never exits on its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import sandgate
from kube_support import (
    KUBECONFIG_VARIABLE,
    SANDBOX_RESOURCE,
    SLEEP_FOREVER,
    TEST_IMAGE,
    TestNamespace,
    admin_kubeconfig,
    object_name,
)
from sandgate import DeleteOutcome, Phase
from support import EVENT_TIMEOUT, START_TIMEOUT, Gateway, elapsed_since, wait_until

pytestmark = pytest.mark.skipif(
    admin_kubeconfig() is None,
    reason=f"{KUBECONFIG_VARIABLE} is not set: start a cluster with tests/cluster/up and set "
    "it to the kubeconfig path that it prints",
)

DRIVER_CONNECTED = "Kubernetes driver connected"
# Timeout of every wait for a deletion that should end after a grace period of a few seconds.
DELETE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def kube_namespace() -> Iterator[TestNamespace]:
    """A fresh namespace with deploy/rbac.yaml applied, deleted at the end of the module."""
    kubeconfig = admin_kubeconfig()
    assert kubeconfig is not None
    namespace = TestNamespace(kubeconfig, "sdk-python")
    try:
        namespace.create()
        yield namespace
    finally:
        namespace.delete()
        # A Pod whose test failed may have a long grace period. Deleting the namespace first
        # keeps the controller from re-creating the Pods that this deletes.
        namespace.force_delete_pods()


@pytest.fixture(scope="module")
def kube_gateway(
    kube_namespace: TestNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway on the Kubernetes driver in the module's namespace, stopped at the end."""
    directory = tmp_path_factory.mktemp("kube-gateway")
    kubeconfig = directory / "gateway.kubeconfig"
    kube_namespace.write_gateway_kubeconfig(kubeconfig)
    gateway = Gateway(
        directory / "data",
        directory / "serve.log",
        [
            "--driver",
            "kubernetes",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            kube_namespace.name,
            "--reconcile-interval",
            "1s",
        ],
    )
    gateway.start()
    try:
        wait_until(
            lambda: DRIVER_CONNECTED in log_text(gateway.log_path),
            START_TIMEOUT,
            f"the gateway did not log '{DRIVER_CONNECTED}'. Log:\n{gateway.log_tail()}",
        )
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def kube_client(
    request: pytest.FixtureRequest, kube_gateway: Gateway, kube_namespace: TestNamespace
) -> Iterator[sandgate.Client]:
    """A blocking client of the module's gateway. A failed test prints the log and objects."""
    with sandgate.Client(kube_gateway.address) as client:
        yield client
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"--- sandgate serve log ({kube_gateway.log_path}) ---\n{kube_gateway.log_tail()}")
        print(f"--- namespace {kube_namespace.name} ---\n{kube_namespace.describe_objects()}")


def log_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def both_objects(sandbox_id: str) -> list[str]:
    """Return the Pod and Sandbox of a running sandbox, as TestNamespace.compute_left lists them."""
    name = object_name(sandbox_id)
    return [f"pod/{name}", f"{SANDBOX_RESOURCE}/{name}"]


def create(client: sandgate.Client, name: str, grace_period: float) -> sandgate.Sandbox:
    """Create an image sandbox and wait until it is READY."""
    # The tests do not retry: a new sandbox that passes through ERROR on its way to READY is a
    # driver bug for them to catch.
    return client.create(
        name, SLEEP_FOREVER, image=TEST_IMAGE, grace_period=grace_period, wait_ready=True
    )


def test_context_manager_deletes_on_exit(
    kube_client: sandgate.Client, kube_namespace: TestNamespace
) -> None:
    with kube_client.sandbox("scoped", SLEEP_FOREVER, image=TEST_IMAGE, grace_period=2) as sandbox:
        assert sandbox.phase == Phase.READY
        assert kube_namespace.compute_left(sandbox.id) == both_objects(sandbox.id)
    assert kube_namespace.compute_left(sandbox.id) == []
    with pytest.raises(sandgate.SandboxNotFound):
        kube_client.get(id=sandbox.id)


def test_context_manager_deletes_when_body_raises(
    kube_client: sandgate.Client, kube_namespace: TestNamespace
) -> None:
    with pytest.raises(RuntimeError, match="body failed"):
        with kube_client.sandbox(
            "failing", SLEEP_FOREVER, image=TEST_IMAGE, grace_period=2
        ) as sandbox:
            assert kube_namespace.compute_left(sandbox.id) == both_objects(sandbox.id)
            start = time.monotonic()
            raise RuntimeError("body failed")
    elapsed = elapsed_since(start)
    assert kube_namespace.compute_left(sandbox.id) == []
    assert elapsed >= 1.9, f"the exit returned after {elapsed:.2f} s, before the grace period"
    with pytest.raises(sandgate.SandboxNotFound):
        kube_client.get(id=sandbox.id)


def test_delete_waits_until_pod_gone(
    kube_client: sandgate.Client, kube_namespace: TestNamespace
) -> None:
    sandbox = create(kube_client, "waited", grace_period=2)
    assert kube_namespace.compute_left(sandbox.id) == both_objects(sandbox.id)

    start = time.monotonic()
    result = kube_client.delete(id=sandbox.id, timeout=DELETE_TIMEOUT)
    elapsed = elapsed_since(start)
    # Checked first, so that the Pod has had no time to go after the delete returned.
    assert kube_namespace.compute_left(sandbox.id) == []

    assert result.outcome == DeleteOutcome.DELETED
    assert result.id == sandbox.id
    assert result.deleted_at is not None
    assert elapsed >= 1.9, f"the delete returned after {elapsed:.2f} s, before the grace period"


def test_delete_timeout_raises_deletion_timeout(
    kube_client: sandgate.Client, kube_namespace: TestNamespace
) -> None:
    sandbox = create(kube_client, "slow", grace_period=30)
    removed = False
    try:
        start = time.monotonic()
        with pytest.raises(sandgate.DeletionTimeout) as caught:
            kube_client.delete(id=sandbox.id, timeout=2)
        elapsed = elapsed_since(start)

        error = caught.value
        assert error.id == sandbox.id
        assert error.phase == Phase.DELETING
        assert error.reason, "the timeout carries no reason from the gateway"
        assert error.reason in str(error)
        assert error.reason_since is not None
        assert elapsed < 5, f"a 2 s wait raised after {elapsed:.2f} s"

        # The timeout ended the wait, not the deletion: the Pod is still Terminating.
        assert kube_namespace.exists("pod", object_name(sandbox.id))
        assert kube_client.get(id=sandbox.id).phase == Phase.DELETING

        start = time.monotonic()
        forced = kube_client.delete(id=sandbox.id, force=True, timeout=DELETE_TIMEOUT)
        elapsed = elapsed_since(start)
        assert kube_namespace.compute_left(sandbox.id) == []
        removed = True
        assert forced.outcome == DeleteOutcome.DELETED
        assert elapsed < 10, f"a forced delete of a 30 s grace period took {elapsed:.2f} s"
    finally:
        if not removed:
            with contextlib.suppress(sandgate.SandgateError):
                kube_client.delete(id=sandbox.id, force=True, timeout=DELETE_TIMEOUT)


def test_wait_deleted_ignores_reused_name(
    kube_client: sandgate.Client, kube_namespace: TestNamespace
) -> None:
    old = create(kube_client, "reused", grace_period=2)
    assert kube_client.delete("reused", wait=False).outcome == DeleteOutcome.ACCEPTED

    # While the old sandbox is deleting, its name is held.
    with pytest.raises(sandgate.SandboxStillDeleting) as caught:
        kube_client.create("reused", SLEEP_FOREVER, image=TEST_IMAGE)
    assert caught.value.sandbox_id == old.id

    assert kube_client.wait_deleted(old.id, timeout=DELETE_TIMEOUT).outcome == DeleteOutcome.DELETED
    assert kube_namespace.compute_left(old.id) == []

    new = create(kube_client, "reused", grace_period=2)
    assert new.id != old.id
    assert object_name(new.id) != object_name(old.id)

    # A wait on the old id returns from its removal record, while the new sandbox runs on.
    start = time.monotonic()
    assert kube_client.wait_deleted(old.id, timeout=5).outcome == DeleteOutcome.DELETED
    assert elapsed_since(start) < 2
    assert kube_client.get("reused").phase == Phase.READY
    assert kube_namespace.compute_left(new.id) == both_objects(new.id)

    # A wait on the new id is not satisfied by the old removal.
    with pytest.raises(sandgate.DeletionTimeout) as timeout:
        kube_client.wait_deleted(new.id, timeout=1)
    assert timeout.value.id == new.id
    assert timeout.value.phase == Phase.READY

    assert kube_client.delete(id=new.id, timeout=DELETE_TIMEOUT).outcome == DeleteOutcome.DELETED
    assert kube_namespace.compute_left(new.id) == []


def test_concurrent_delete_joins_first(
    kube_client: sandgate.Client, kube_namespace: TestNamespace
) -> None:
    sandbox = create(kube_client, "shared", grace_period=3)

    events = kube_client.watch(id=sandbox.id, timeout=EVENT_TIMEOUT)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(kube_client.delete, id=sandbox.id, timeout=DELETE_TIMEOUT)
        for event in events:
            if event.sandbox is not None and event.sandbox.phase == Phase.DELETING:
                break
        second = pool.submit(kube_client.delete, "shared", timeout=DELETE_TIMEOUT)
        first_result = first.result(timeout=60)
        second_result = second.result(timeout=60)
    events.close()
    assert kube_namespace.compute_left(sandbox.id) == []

    assert first_result.outcome == DeleteOutcome.DELETED
    assert second_result.outcome == DeleteOutcome.DELETED
    assert first_result.id == sandbox.id
    assert second_result.id == sandbox.id
    # Both calls report the one removal of the one deletion.
    assert first_result.deleted_at is not None
    assert first_result.deleted_at == second_result.deleted_at
    assert first_result.sandbox is not None
    assert second_result.sandbox is not None
    assert first_result.sandbox.deletion_requested_at == second_result.sandbox.deletion_requested_at
