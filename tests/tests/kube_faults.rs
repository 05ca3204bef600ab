//! Fault tests of the Kubernetes driver: gateway crashes at random points of creations and
//! deletions, and a Sandbox deleted while the gateway's watches are cut off.
//!
//! The tests skip themselves when `SANDGATE_TEST_KUBECONFIG` is unset. The re-list test starts
//! a cluster of its own (`tests/cluster/up kube-relist`), because it restarts kube-apiserver.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use sandgate_e2e::api::{self, by_id, delete_request, phase};
use sandgate_e2e::cluster::{OwnCluster, Sandbox, TestCluster, read_cluster_env};
use sandgate_e2e::kube_gateway::{
    assert_compute_gone, create, create_request, list_all, object_name, service_account_kubeconfig,
    start_gateway, wait_ready,
};
use sandgate_e2e::kube_proxy::TcpProxy;
use sandgate_proto::v1 as pb;

const LONG: Duration = Duration::from_secs(90);
const VANISHED_REASON: &str = "compute vanished without a delete through sandgate";

/// A small deterministic generator (SplitMix64), so that a failing seed replays the same
/// schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn seed() -> u64 {
    match std::env::var("SANDGATE_TEST_SEED") {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("SANDGATE_TEST_SEED={value:?} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(1),
    }
}

async fn wait_deleted(client: &mut api::Client, id: &str) -> pb::DeleteSandboxResponse {
    client
        .wait_sandbox_deleted(pb::WaitSandboxDeletedRequest {
            id: id.to_string(),
            timeout: Some(prost_types::Duration::try_from(LONG).unwrap()),
        })
        .await
        .unwrap_or_else(|status| panic!("wait for the deletion of {id} failed: {status}"))
        .into_inner()
}

#[tokio::test]
async fn random_crashes_converge() {
    let Some(cluster) = TestCluster::from_env().await.unwrap() else {
        return;
    };
    let namespace = cluster.namespace("kube-random-crash").await.unwrap();
    let kubeconfig = service_account_kubeconfig(&cluster.kubeconfig, &namespace, None)
        .await
        .unwrap();
    let seed = seed();
    eprintln!("random_crashes_converge: SANDGATE_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    let mut gateway = start_gateway(&kubeconfig.path, &[], &[]).await;
    let grace = Duration::from_secs(1);

    for round in 0..4 {
        // Creations and deletions run in a task of their own while the gateway is killed.
        let mut client = gateway.client().await;
        let creations = 3 + rng.below(6);
        let delete_mask = rng.next();
        let work = tokio::spawn(async move {
            for index in 0..creations {
                let name = format!("r{round}-{index}");
                let Ok(created) = client.create_sandbox(create_request(&name, grace)).await else {
                    return;
                };
                if delete_mask & (1 << index) != 0 {
                    let id = created.into_inner().id;
                    let request = delete_request(by_id(&id), false, LONG);
                    if client.delete_sandbox(request).await.is_err() {
                        return;
                    }
                }
            }
        });
        // Each create or delete call takes tens of milliseconds, so the kill lands inside the work.
        let delay = Duration::from_millis(rng.below(400));
        tokio::time::sleep(delay).await;
        eprintln!("round {round}: killing the gateway after {delay:?}");
        gateway.kill();
        let _ = work.await;
        gateway.restart();
        gateway
            .wait_for_log("Kubernetes driver connected", Duration::from_secs(20))
            .await;
    }

    // After the last restart, every record settles: none stays PROVISIONING or DELETING.
    let mut client = gateway.client().await;
    let settle_until = Instant::now() + LONG;
    loop {
        let records = list_all(&mut client).await;
        let unsettled: Vec<_> = records
            .iter()
            .filter(|record| {
                matches!(
                    phase(record),
                    pb::SandboxPhase::Provisioning | pb::SandboxPhase::Deleting
                )
            })
            .collect();
        if unsettled.is_empty() {
            break;
        }
        assert!(
            Instant::now() < settle_until,
            "seed {seed}: records did not settle: {unsettled:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every Sandbox in the namespace belongs to a record: no orphan.
    let records = list_all(&mut client).await;
    let record_objects: BTreeSet<String> = records.iter().map(|r| object_name(&r.id)).collect();
    let sandboxes = namespace.api::<Sandbox>().list(&Default::default()).await;
    for sandbox in sandboxes.unwrap().items {
        let name = sandbox.metadata.name.clone().unwrap_or_default();
        assert!(
            record_objects.contains(&name),
            "seed {seed}: Sandbox {name} has no record"
        );
    }

    // Every remaining sandbox can be deleted, and a waiter by id returns for each.
    for record in &records {
        let request = delete_request(by_id(&record.id), false, LONG);
        client.delete_sandbox(request).await.unwrap();
    }
    for record in &records {
        let waited = wait_deleted(&mut client, &record.id).await;
        assert_eq!(waited.outcome, pb::DeleteOutcome::Deleted as i32);
        assert_compute_gone(&namespace, &record.id).await;
    }
    assert!(list_all(&mut client).await.is_empty());
    let pods = namespace
        .api::<Pod>()
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        pods.items.is_empty(),
        "seed {seed}: Pods left: {}",
        pods.items.len()
    );
    let left = namespace
        .api::<Sandbox>()
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "seed {seed}: Sandboxes left: {}",
        left.items.len()
    );
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

    proxy.cut();
    gateway
        .wait_for_log("Watch failed", Duration::from_secs(30))
        .await;

    // Someone else deletes the Sandbox, and its Pod goes, while the gateway cannot see it.
    let name = object_name(&sandbox.id);
    namespace
        .api::<Sandbox>()
        .delete(&name, &DeleteParams::foreground())
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
}
