//! Fault tests of the Kubernetes driver that break the API server: a 20 s outage while deletions
//! wait, and a Sandbox deleted while the gateway's watches are cut off.
//!
//! The tests skip themselves when `SANDGATE_TEST_KUBECONFIG` is unset. Each one starts a cluster
//! of its own (`tests/cluster/up kube-outage`, `tests/cluster/up kube-relist`), because it stops
//! or restarts kube-apiserver.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use sandgate_e2e::api::{self, by_id, delete_request, phase};
use sandgate_e2e::cluster::{OwnCluster, Sandbox, TestCluster, read_cluster_env};
use sandgate_e2e::figures::Figures;
use sandgate_e2e::kube_gateway::{
    assert_compute_gone, create, object_name, service_account_kubeconfig, start_gateway, wait_ready,
};
use sandgate_e2e::scenarios;
use sandgate_e2e::target::{DriverKind, Target};
use sandgate_e2e::tcp_proxy::TcpProxy;
use sandgate_proto::v1 as pb;
use tonic::Code;

const LONG: Duration = Duration::from_secs(90);
const VANISHED_REASON: &str = "compute vanished without a delete through sandgate";

/// Time kube-apiserver stays stopped.
const OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_outage_during_waits() {
    if TestCluster::from_env().await.unwrap().is_none() {
        return;
    }
    let own = OwnCluster::start("kube-outage").await.unwrap();
    let target = Target::kubernetes_on(&own.cluster, "kube-outage", &[]).await;
    let mut figures = Figures::new("API server outage", target.driver());
    let mut client = target.client().await;
    // Two deletions are under way when the API server stops, two are requested during the
    // outage, one waits less than the outage lasts, and one sandbox is left alone.
    let graces = [10, 10, 1, 1, 1, 1];
    let mut ids = Vec::new();
    for (index, grace) in graces.iter().enumerate() {
        let sandbox = target
            .create(
                &mut client,
                &format!("o-{index}"),
                Duration::from_secs(*grace),
            )
            .await;
        target.wait_ready(&mut client, &sandbox.id).await;
        ids.push(sandbox.id);
    }
    let started = Instant::now();
    let waiting = client.clone();
    let spawn_wait = |id: String| {
        let mut client = waiting.clone();
        tokio::spawn(async move {
            let response = client
                .delete_sandbox(delete_request(by_id(&id), true, LONG + OUTAGE))
                .await;
            (id, response, started.elapsed())
        })
    };
    let mut waits: Vec<_> = ids[..2].iter().cloned().map(spawn_wait).collect();
    for id in &ids[..2] {
        api::wait_until(&mut client, id, LONG, "DELETING", |s| {
            phase(s) == pb::SandboxPhase::Deleting
        })
        .await;
    }

    own.apiserver("stop").await.unwrap();
    let stopped = Instant::now();
    figures.faults = 1;
    waits.extend(ids[2..4].iter().cloned().map(spawn_wait));
    let status = client
        .delete_sandbox(delete_request(by_id(&ids[4]), true, Duration::from_secs(5)))
        .await
        .expect_err("a 5 s wait cannot end while the API server is down");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    eprintln!(
        "a wait that timed out during the outage: {}",
        status.message()
    );
    assert!(
        status.message().contains("the delete cannot be issued yet"),
        "the timeout does not name the unreachable API server: {}",
        status.message()
    );
    let record = api::get(&mut client, &ids[4])
        .await
        .expect("still recorded");
    assert_eq!(phase(&record), pb::SandboxPhase::Deleting);
    // Reads are still served from the store during the outage.
    let untouched = api::get(&mut client, &ids[5])
        .await
        .expect("still recorded");
    assert_eq!(phase(&untouched), pb::SandboxPhase::Ready);

    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    let back_from = started.elapsed();
    own.apiserver("start").await.unwrap();
    eprintln!("kube-apiserver was down for {:?}", stopped.elapsed());

    for wait in waits {
        let (id, response, elapsed) = tokio::time::timeout(LONG + OUTAGE, wait)
            .await
            .expect("no wait hangs after the outage")
            .unwrap();
        let response = response
            .unwrap_or_else(|status| panic!("the wait for {id} failed: {status}"))
            .into_inner();
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32, "{id}");
        // Nothing can finish a deletion while the API server is down.
        assert!(
            elapsed >= back_from,
            "the wait for {id} returned DELETED during the outage, {elapsed:?} after the start"
        );
        target.assert_compute_gone(&id).await;
        eprintln!("the wait for {id} returned after {elapsed:?}");
        figures.waited(elapsed);
        figures.confirmed += 1;
    }
    // The deletion whose caller timed out was not lost.
    let waited = client
        .wait_sandbox_deleted(scenarios::wait_request(&ids[4]))
        .await
        .expect("the timed-out deletion completes")
        .into_inner();
    assert_eq!(waited.outcome, pb::DeleteOutcome::Deleted as i32);
    target.assert_compute_gone(&ids[4]).await;
    figures.confirmed += 1;
    let kept = target.wait_ready(&mut client, &ids[5]).await;
    assert_eq!(kept.id, ids[5]);
    figures.iterations = ids.len() as u64;
    figures.report();
}

/// Returns the index just past the last log line so far, to look only at later lines.
fn log_len(gateway: &sandgate_e2e::gateway::Gateway) -> usize {
    gateway.log_text().lines().count()
}

fn log_since(gateway: &sandgate_e2e::gateway::Gateway, from: usize) -> Vec<String> {
    gateway
        .log_text()
        .lines()
        .skip(from)
        .map(str::to_string)
        .collect()
}

// The proxy runs on the test's runtime while the harness blocks a thread to start the gateway,
// so the runtime needs more than one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relist_notices_delete_while_cut_off() {
    if TestCluster::from_env().await.unwrap().is_none() {
        return;
    }
    let own = OwnCluster::start("kube-relist").await.unwrap();
    let cluster = own.cluster.clone();
    let namespace = cluster.namespace("kube-relist").await.unwrap();
    let env = read_cluster_env(&cluster.kubeconfig).unwrap();
    let port: u16 = env["APISERVER_PORT"].parse().unwrap();
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let kubeconfig =
        service_account_kubeconfig(&cluster.kubeconfig, &namespace, Some(&proxy.url()))
            .await
            .unwrap();
    // The reconciler runs once at startup and then not for an hour, so only the watchers can
    // notice the deletion.
    let gateway = start_gateway(&kubeconfig.path, &["--reconcile-interval", "1h"], &[]).await;
    let mut client = gateway.client().await;
    let sandbox = create(&mut client, "cut-off", Duration::from_secs(1)).await;
    wait_ready(&mut client, &sandbox.id).await;
    gateway
        .wait_for_log("Re-list finished kind=Pod", Duration::from_secs(10))
        .await;
    assert!(proxy.forwarded() > 0, "the gateway does not use the proxy");

    let mark = gateway.log_mark();
    proxy.cut();
    gateway
        .wait_for_log_since(mark, "Watch failed", Duration::from_secs(30))
        .await;

    // Someone else deletes the Sandbox and its Pod while the gateway cannot see it.
    let name = object_name(&sandbox.id);
    namespace
        .api::<Sandbox>()
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap();
    namespace
        .api::<Pod>()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let gone_until = Instant::now() + LONG;
    loop {
        let sandbox_left = namespace.api::<Sandbox>().get_opt(&name).await.unwrap();
        let pods_left = namespace
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .unwrap();
        if sandbox_left.is_none() && pods_left.items.is_empty() {
            break;
        }
        assert!(
            Instant::now() < gone_until,
            "the direct delete did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A restarted API server has a new watch cache, so the watchers cannot resume from their
    // last resource version and must list again.
    own.apiserver("restart").await.unwrap();
    let record = api::get(&mut client, &sandbox.id)
        .await
        .expect("record kept");
    assert_eq!(
        phase(&record),
        pb::SandboxPhase::Ready,
        "noticed while cut off"
    );

    let restored_at = log_len(&gateway);
    proxy.restore();
    let restored = Instant::now();
    let changed = api::wait_until(
        &mut client,
        &sandbox.id,
        LONG,
        "ERROR with the vanished reason after the re-list",
        // The two watchers list again independently, so an ERROR naming the Pod that is still
        // in the view may come first.
        |s| phase(s) == pb::SandboxPhase::Error && s.phase_reason == VANISHED_REASON,
    )
    .await;
    assert_eq!(changed.phase_reason, VANISHED_REASON);
    let converged_after = restored.elapsed();
    let later = log_since(&gateway, restored_at);
    for line in later
        .iter()
        .filter(|line| line.contains("Re-list") || line.contains("changed"))
    {
        eprintln!("after the restore: {line}");
    }
    assert!(
        later
            .iter()
            .any(|line| line.contains("Re-list finished kind=Sandbox")),
        "no Sandbox re-list after the connection came back:\n{}",
        later.join("\n")
    );
    assert!(
        !later.iter().any(|line| line.contains("Reconciler pass")),
        "a reconciler pass ran, so the test does not show that the re-list noticed"
    );

    let request = delete_request(by_id(&sandbox.id), true, LONG);
    let response = client.delete_sandbox(request).await.unwrap().into_inner();
    assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
    assert_compute_gone(&namespace, &sandbox.id).await;
    let mut figures = Figures::new("watch events missed", DriverKind::Kubernetes);
    figures.iterations = 1;
    // The cut connections, and the API server restart that drops its watch cache.
    figures.faults = 2;
    figures.confirmed = 1;
    figures.waited(converged_after);
    figures.outcome("noticed by a re-list, with no reconciler pass", 1);
    figures.report();
}
