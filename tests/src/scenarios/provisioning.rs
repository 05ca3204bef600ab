//! Deletes that race the start of a sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::watcher;
use sandgate_proto::v1 as pb;

use super::LONG;
use crate::api::{by_id, delete_request};
use crate::figures::{Figures, Rng, scale};
use crate::target::{ID_LABEL, Target};

/// Deletes right after create: each sandbox is deleted with a wait a few milliseconds after its
/// create returned. Every deletion completes, and nothing appears afterwards.
pub async fn delete_right_after_create(target: &Target, seed: u64) -> Figures {
    let mut figures = Figures::new("delete a few ms after create", target.driver());
    figures.seed = Some(seed);
    let mut rng = Rng::new(seed);
    let mut client = target.client().await;
    // On Kubernetes, a watch records every Pod of the scenario, so that a Pod created after its
    // sandbox was confirmed deleted is seen even if the garbage collector removes it at once.
    let pods_seen = target
        .namespace()
        .map(|namespace| record_pods(namespace.api::<Pod>()));
    let mut confirmed_at = HashMap::new();
    let mut ids = Vec::new();
    for index in 0..10 * scale() {
        let sandbox = target
            .create(
                &mut client,
                &format!("early-{index}"),
                Duration::from_secs(1),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        let started = Instant::now();
        let response = client
            .delete_sandbox(delete_request(by_id(&sandbox.id), true, LONG))
            .await
            .unwrap_or_else(|status| panic!("delete {} failed: {status}", sandbox.id))
            .into_inner();
        figures.waited(started.elapsed());
        assert_eq!(response.outcome, pb::DeleteOutcome::Deleted as i32);
        confirmed_at.insert(sandbox.id.clone(), SystemTime::now());
        target.assert_compute_gone(&sandbox.id).await;
        figures.confirmed += 1;
        ids.push(sandbox.id);
    }
    figures.iterations = ids.len() as u64;
    // A controller that was still creating the first Pod must not bring compute back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        if let Some(left) = target.compute_left(id).await {
            figures.orphans += 1;
            panic!("seed {seed}: {left} of {id} appeared after its deletion was confirmed");
        }
    }
    if let Some((recorder, pods)) = pods_seen {
        recorder.abort();
        // creationTimestamp has whole seconds, so only a Pod created in a later second than the
        // confirmation is certainly late.
        let late: Vec<String> = pods
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, created)| {
                confirmed_at.get(id).is_some_and(|confirmed| {
                    let whole = confirmed.duration_since(UNIX_EPOCH).unwrap().as_secs();
                    created.duration_since(UNIX_EPOCH).unwrap().as_secs() > whole
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        assert!(
            late.is_empty(),
            "seed {seed}: Pods were created after their sandbox was confirmed deleted: {late:?}"
        );
    }
    figures
}

/// Pods seen by [`record_pods`]: the sandbox id label and the creation time of each.
type SeenPods = Arc<Mutex<Vec<(String, SystemTime)>>>;

/// Watches the Pods with the sandbox id label in the background, recording every one seen.
fn record_pods(pods: kube::Api<Pod>) -> (tokio::task::JoinHandle<()>, SeenPods) {
    let seen: SeenPods = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let config = watcher::Config::default().labels(ID_LABEL);
        let mut events = watcher::watcher(pods, config).boxed();
        while let Some(event) = events.next().await {
            let (Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod))) = event
            else {
                continue;
            };
            let id = pod.labels().get(ID_LABEL).cloned().unwrap_or_default();
            if let Some(created) = pod.metadata.creation_timestamp.as_ref() {
                let created = UNIX_EPOCH + Duration::from_secs(created.0.as_second() as u64);
                record.lock().unwrap().push((id, created));
            }
        }
    });
    (task, seen)
}
