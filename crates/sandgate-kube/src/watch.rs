//! The watchers on Sandboxes and on Pods of this gateway instance. Each one keeps its part of
//! the shared view and sends an observation for every sandbox whose state may have changed.
//!
//! A watcher that lost its connection resumes from its last resource version when kube-apiserver
//! still has it, and otherwise lists again. After a re-list (`Init` … `InitDone`), every object
//! missing from the new list is treated as deleted, so the driver never depends on Delete events
//! alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use sandgate_core::SandboxId;
use tracing::{info, warn};

use crate::objects::{Sandbox, instance_selector};
use crate::state::{Shared, View};

/// A kind of object that the driver watches, and where the view keeps it.
trait Watched: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static {
    const KIND: &'static str;

    /// Replaces every object of this kind in the view with `objects`, returning the ids whose
    /// objects were there before or are there now.
    fn replace_all(view: &mut View, objects: HashMap<SandboxId, Vec<Self>>) -> HashSet<SandboxId>;
    fn upsert(view: &mut View, id: SandboxId, object: Self);
    fn remove(view: &mut View, id: SandboxId, object: &Self);
    /// Records that the watcher of this kind has finished its first list.
    fn mark_listed(view: &mut View);
}

impl Watched for Sandbox {
    const KIND: &'static str = "Sandbox";

    fn replace_all(view: &mut View, objects: HashMap<SandboxId, Vec<Self>>) -> HashSet<SandboxId> {
        let mut affected: HashSet<SandboxId> = view.sandboxes.keys().copied().collect();
        affected.extend(objects.keys().copied());
        view.sandboxes = objects
            .into_iter()
            .filter_map(|(id, mut list)| list.pop().map(|sandbox| (id, sandbox)))
            .collect();
        affected
    }

    fn upsert(view: &mut View, id: SandboxId, object: Self) {
        view.sandboxes.insert(id, object);
    }

    fn mark_listed(view: &mut View) {
        view.sandboxes_listed = true;
    }

    fn remove(view: &mut View, id: SandboxId, object: &Self) {
        let same = view
            .sandboxes
            .get(&id)
            .is_some_and(|held| held.metadata.uid == object.metadata.uid);
        if same {
            view.sandboxes.remove(&id);
        }
    }
}

impl Watched for Pod {
    const KIND: &'static str = "Pod";

    fn replace_all(view: &mut View, objects: HashMap<SandboxId, Vec<Self>>) -> HashSet<SandboxId> {
        let mut affected: HashSet<SandboxId> = view.pods.keys().copied().collect();
        affected.extend(objects.keys().copied());
        view.pods = objects
            .into_iter()
            .map(|(id, pods)| {
                let by_name: BTreeMap<String, Pod> =
                    pods.into_iter().map(|pod| (pod.name_any(), pod)).collect();
                (id, by_name)
            })
            .collect();
        affected
    }

    fn upsert(view: &mut View, id: SandboxId, object: Self) {
        view.pods
            .entry(id)
            .or_default()
            .insert(object.name_any(), object);
    }

    fn mark_listed(view: &mut View) {
        view.pods_listed = true;
    }

    fn remove(view: &mut View, id: SandboxId, object: &Self) {
        if let Some(pods) = view.pods.get_mut(&id) {
            pods.remove(&object.name_any());
            if pods.is_empty() {
                view.pods.remove(&id);
            }
        }
    }
}

/// Cap of the pause between two attempts to list and watch again. The jitter adds up to as much
/// again, so attempts are at most 10 s apart. kube-runtime's default cap is 30 s, which after an
/// API server outage leaves the view stale for that long while deletions wait on it. 5 s is
/// still kind to an API server that struggles, with the jitter spreading the retries.
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(WATCH_BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// Starts both watchers. They run until the process exits.
pub fn spawn_watchers(shared: &Arc<Shared>) {
    tokio::spawn(run::<Sandbox>(shared.clone(), shared.sandboxes.clone()));
    tokio::spawn(run::<Pod>(shared.clone(), shared.pods.clone()));
}

async fn run<K>(shared: Arc<Shared>, api: kube::Api<K>)
where
    K: Watched + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let config = watcher::Config::default().labels(&instance_selector(&shared.instance));
    let mut stream = watcher::watcher(api, config)
        .backoff(watch_backoff())
        .boxed();
    let mut buffer: Option<HashMap<SandboxId, Vec<K>>> = None;
    let mut first_list = true;
    let mut failures: u64 = 0;

    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                failures += 1;
                // Backoff spaces the retries; log the first failures, then every 20th.
                if failures <= 3 || failures.is_multiple_of(20) {
                    warn!(kind = %K::KIND, failures, %error, "Watch failed; retrying with backoff");
                }
                continue;
            }
        };
        failures = 0;
        match event {
            Event::Init => buffer = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some(id) = shared.id_of(&object) {
                    buffer
                        .get_or_insert_default()
                        .entry(id)
                        .or_default()
                        .push(object);
                }
            }
            Event::InitDone => {
                let listed = buffer.take().unwrap_or_default();
                let count: usize = listed.values().map(Vec::len).sum();
                let affected = {
                    let mut view = shared.view();
                    let mut affected = K::replace_all(&mut view, listed);
                    if first_list {
                        affected.extend(view.known.iter().copied());
                        K::mark_listed(&mut view);
                    }
                    if view.is_synced() {
                        affected.extend(view.deferred.drain());
                    }
                    affected
                };
                first_list = false;
                info!(kind = %K::KIND, objects = count, "Re-list finished");
                for id in affected {
                    shared.notify(id);
                }
            }
            Event::Apply(object) => {
                if let Some(id) = shared.id_of(&object) {
                    K::upsert(&mut shared.view(), id, object);
                    shared.notify(id);
                }
            }
            Event::Delete(object) => {
                if let Some(id) = shared.id_of(&object) {
                    K::remove(&mut shared.view(), id, &object);
                    shared.notify(id);
                }
            }
        }
    }
}
