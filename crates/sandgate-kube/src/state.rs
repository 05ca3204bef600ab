//! State shared by the driver and its watchers: the API handles, the in-memory view that the
//! watchers keep, fresh reads of one sandbox's objects, and sending observations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use sandgate_core::{DriverDetails, LiveStatus, Observed, SandboxId, SandboxRecord};
use sandgate_driver::{DriverError, Observation};
use tokio::sync::mpsc;
use tracing::debug;

use crate::errors::{driver_error, is_not_found};
use crate::objects::{self, Sandbox, id_selector, is_owned_by, object_name};
use crate::observe::{self, Snapshot};

/// Attribute keys of the driver details recorded for each sandbox.
pub const NAMESPACE_ATTRIBUTE: &str = "namespace";
/// Attribute with the object name of the Sandbox and its Pod.
pub const NAME_ATTRIBUTE: &str = "name";
/// Attribute with the Sandbox's UID.
pub const UID_ATTRIBUTE: &str = "uid";

/// Objects of the instance as the watchers last saw them, by sandbox id.
#[derive(Default)]
pub struct View {
    /// Sandboxes by the id in their labels.
    pub sandboxes: HashMap<SandboxId, Sandbox>,
    /// Pods by the id in their labels, then by Pod name.
    pub pods: HashMap<SandboxId, BTreeMap<String, Pod>>,
    /// UID of the Pod last seen running for each sandbox.
    pub running_pods: HashMap<SandboxId, String>,
    /// Ids of the records the server holds, from startup and from every create, so that a
    /// re-list that lacks them reports them.
    pub known: HashSet<SandboxId>,
    /// Ids for which some read or event has shown a Pod.
    pub pod_seen: HashSet<SandboxId>,
    /// Whether the Sandbox watcher has finished its first list.
    pub sandboxes_listed: bool,
    /// Whether the Pod watcher has finished its first list.
    pub pods_listed: bool,
    /// Ids whose observation waits until both watchers have finished their first list.
    pub deferred: HashSet<SandboxId>,
}

impl View {
    /// Returns whether both watchers have finished their first list, so that the view contains
    /// every object of both kinds. Before that, a Sandbox listed without its Pod would read as
    /// a Pod deleted outside sandgate.
    pub fn is_synced(&self) -> bool {
        self.sandboxes_listed && self.pods_listed
    }
}

/// Time a removal of a sandbox that never showed a Pod is re-checked after. The controller may
/// still be creating its first Pod from a reconcile that began before the Sandbox was deleted,
/// and the API server then accepts the Pod after the Sandbox is gone. An estimate: such a
/// reconcile works from the controller's cache, which trails the API server by well under 2 s
/// on a healthy cluster.
pub const FIRST_POD_SETTLE: Duration = Duration::from_secs(2);

/// Reason of a DELETING record while its removal waits out [`FIRST_POD_SETTLE`]. The record
/// keeps when the reason was set, so a gateway that restarts meanwhile does not start the
/// wait over, and one that crashes again within every 2 s still completes the removal.
pub const FIRST_POD_CHECK_REASON: &str =
    "the Sandbox is gone; checking that no late first Pod appears";

/// Returns how much longer a removal of `record`'s sandbox that never showed a Pod must wait
/// at `now` before a read may confirm it: all of [`FIRST_POD_SETTLE`], less the time for which
/// the record has shown [`FIRST_POD_CHECK_REASON`].
pub fn first_pod_wait(record: Option<&SandboxRecord>, now: SystemTime) -> Duration {
    let waited = record
        .filter(|record| record.is_deleting() && record.phase_reason == FIRST_POD_CHECK_REASON)
        .and_then(|record| now.duration_since(record.reason_since).ok())
        .unwrap_or_default();
    FIRST_POD_SETTLE.saturating_sub(waited)
}

/// State shared by the driver and its watchers.
pub struct Shared {
    /// Namespace of every object.
    pub namespace: String,
    /// Value of the instance label.
    pub instance: String,
    /// Sandboxes in the namespace.
    pub sandboxes: Api<Sandbox>,
    /// Pods in the namespace.
    pub pods: Api<Pod>,
    /// The watchers' view.
    pub view: Mutex<View>,
    /// Channel for observations, set once the server has started the driver.
    pub sink: Mutex<Option<mpsc::UnboundedSender<Observation>>>,
}

/// Objects of one sandbox, read fresh from the API server.
pub struct Fresh {
    /// The Sandbox, if one with the expected UID exists.
    pub sandbox: Option<Sandbox>,
    /// Pods carrying the id label, and the Pod named after the Sandbox if it is owned by it.
    pub pods: Vec<Pod>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Locks the view.
    pub fn view(&self) -> MutexGuard<'_, View> {
        lock(&self.view)
    }

    /// Returns the driver details of an existing Sandbox.
    pub fn details(&self, sandbox: &Sandbox) -> DriverDetails {
        DriverDetails {
            driver: crate::DRIVER_NAME.to_string(),
            attributes: BTreeMap::from([
                (NAMESPACE_ATTRIBUTE.to_string(), self.namespace.clone()),
                (NAME_ATTRIBUTE.to_string(), sandbox.name_any()),
                (
                    UID_ATTRIBUTE.to_string(),
                    sandbox.metadata.uid.clone().unwrap_or_default(),
                ),
            ]),
        }
    }

    /// Finds the Sandbox of `id` by its id label. With `uid`, only that object counts.
    ///
    /// # Errors
    /// Returns the classified API error when the list fails.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn find_sandbox(
        &self,
        id: &SandboxId,
        uid: Option<&str>,
    ) -> Result<Option<Sandbox>, DriverError> {
        let params = ListParams::default().labels(&id_selector(&self.instance, id));
        let list = self
            .sandboxes
            .list(&params)
            .await
            .map_err(|error| driver_error("listing the sandbox's Sandbox", error))?;
        Ok(list
            .items
            .into_iter()
            .find(|sandbox| uid.is_none_or(|uid| sandbox.metadata.uid.as_deref() == Some(uid))))
    }

    /// Reads the objects of `id` fresh: the Sandbox by id label (with `uid` if recorded), the
    /// Pods by id label, and the Pod named after the Sandbox if a known Sandbox UID owns it.
    ///
    /// # Errors
    /// Returns the classified API error of the first read that fails.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn read_fresh(
        &self,
        id: &SandboxId,
        uid: Option<&str>,
    ) -> Result<Fresh, DriverError> {
        let sandbox = self.find_sandbox(id, uid).await?;
        let params = ListParams::default().labels(&id_selector(&self.instance, id));
        let mut pods = self
            .pods
            .list(&params)
            .await
            .map_err(|error| driver_error("listing the sandbox's Pods", error))?
            .items;

        let owner_uid = uid.map(str::to_string).or_else(|| {
            sandbox
                .as_ref()
                .and_then(|sandbox| sandbox.metadata.uid.clone())
        });
        let name = object_name(id);
        if let Some(owner_uid) = owner_uid
            && !pods.iter().any(|pod| pod.name_any() == name)
        {
            match self.pods.get(&name).await {
                Ok(pod) if is_owned_by(&pod, &owner_uid) => pods.push(pod),
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(driver_error("reading the sandbox's Pod", error)),
            }
        }
        Ok(Fresh { sandbox, pods })
    }

    /// Derives the observation of `id` from `sandbox` and `pods`, remembering the Pod that runs
    /// so that a later replacement is reported as such.
    pub fn derive(&self, id: &SandboxId, sandbox: Option<&Sandbox>, pods: &[Pod]) -> Observed {
        let mut view = self.view();
        if !pods.is_empty() {
            view.pod_seen.insert(*id);
        }
        let observed = observe::derive(Snapshot {
            sandbox,
            pods,
            running_pod_uid: view.running_pods.get(id).map(String::as_str),
        });
        match &observed {
            Observed::Present {
                status: LiveStatus::Ready(_),
                ..
            } => {
                if let Some(uid) =
                    observe::current_pod(pods).and_then(|pod| pod.metadata.uid.clone())
                {
                    view.running_pods.insert(*id, uid);
                }
            }
            Observed::Gone { .. } => {
                view.running_pods.remove(id);
            }
            Observed::Present { .. } => {}
        }
        observed
    }

    /// Reads `id` fresh and derives its observation. A removal of a sandbox that never showed a
    /// Pod is confirmed only by a read [`FIRST_POD_SETTLE`] after the removal was first seen, so
    /// that a first Pod created just after the Sandbox's removal is not missed. With `record`
    /// DELETING, the start of that wait is recorded through the sink with
    /// [`FIRST_POD_CHECK_REASON`], and a wait that an earlier gateway began counts.
    ///
    /// # Errors
    /// Returns the error of a failed read.
    ///
    /// # Cancel safety
    /// Cancel safe: it reads, and at most sends the observation that starts the wait.
    pub async fn observe_fresh(
        &self,
        id: &SandboxId,
        uid: Option<&str>,
        record: Option<&SandboxRecord>,
    ) -> Result<Observed, DriverError> {
        let fresh = self.read_fresh(id, uid).await?;
        let observed = self.derive(id, fresh.sandbox.as_ref(), &fresh.pods);
        let pod_seen = self.view().pod_seen.contains(id);
        if !matches!(observed, Observed::Gone { .. }) || pod_seen {
            return Ok(observed);
        }
        let wait = first_pod_wait(record, SystemTime::now());
        if wait.is_zero() {
            // This read came at least the settle time after the removal was first seen.
            return Ok(observed);
        }
        if wait == FIRST_POD_SETTLE && record.is_some_and(SandboxRecord::is_deleting) {
            self.send(
                *id,
                Observed::Present {
                    status: LiveStatus::Unknown(String::new()),
                    terminating: Some(FIRST_POD_CHECK_REASON.to_string()),
                },
            );
        }
        tokio::time::sleep(wait).await;
        let fresh = self.read_fresh(id, uid).await?;
        Ok(self.derive(id, fresh.sandbox.as_ref(), &fresh.pods))
    }

    /// Derives the observation of `id` from the watchers' view.
    pub fn derive_cached(&self, id: &SandboxId) -> Observed {
        let (sandbox, pods) = {
            let view = self.view();
            let sandbox = view.sandboxes.get(id).cloned();
            let pods: Vec<Pod> = view
                .pods
                .get(id)
                .map(|pods| pods.values().cloned().collect())
                .unwrap_or_default();
            (sandbox, pods)
        };
        self.derive(id, sandbox.as_ref(), &pods)
    }

    /// Sends `observed` for `id`, if the server has started the driver.
    pub fn send(&self, id: SandboxId, observed: Observed) {
        if let Some(sink) = lock(&self.sink).as_ref() {
            let _ = sink.send(Observation { id, observed });
        }
    }

    /// Sends an observation of `id` derived from the view. Until both watchers have finished
    /// their first list, it only remembers `id`, and the watcher that finishes last notifies
    /// it then. When the view lacks the Sandbox, the objects are read fresh first, because one
    /// watcher may lag behind the other. A Pod created
    /// just before the Sandbox's deletion may not be in the view yet. A new Sandbox's Pod may
    /// arrive before the Sandbox itself, and the view alone would take that for a Sandbox
    /// deleted outside sandgate.
    pub fn notify(self: &Arc<Self>, id: SandboxId) {
        let sandbox_seen = {
            let mut view = self.view();
            if !view.is_synced() {
                view.deferred.insert(id);
                return;
            }
            view.sandboxes.contains_key(&id)
        };
        if sandbox_seen {
            let observed = self.derive_cached(&id);
            self.send(id, observed);
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            match shared.observe_fresh(&id, None, None).await {
                Ok(fresh) => {
                    // If the Sandbox watcher caught up during the read, its view is at least as
                    // new as the read, and later events will follow it.
                    let observed = if shared.view().sandboxes.contains_key(&id) {
                        shared.derive_cached(&id)
                    } else {
                        fresh
                    };
                    shared.send(id, observed);
                }
                Err(error) => {
                    debug!(sandbox_id = %id, %error, "Reading a sandbox fresh failed; the reconciler retries")
                }
            }
        });
    }

    /// Returns the sandbox id an object of this instance is labelled with.
    pub fn id_of<K: ResourceExt>(&self, object: &K) -> Option<SandboxId> {
        objects::labelled_id(object)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sandgate_core::{Phase, SandboxSpec};

    use super::*;

    fn record(phase: Phase, reason: &str, reason_since: SystemTime) -> SandboxRecord {
        let mut record = SandboxRecord::new(
            "default".to_string(),
            "agent".to_string(),
            BTreeMap::new(),
            SandboxSpec::default(),
            reason_since,
        );
        record.phase = phase;
        record.phase_reason = reason.to_string();
        record.reason_since = reason_since;
        record
    }

    #[test]
    fn first_pod_wait_is_whole_without_record() {
        assert_eq!(first_pod_wait(None, SystemTime::now()), FIRST_POD_SETTLE);
    }

    #[test]
    fn first_pod_wait_counts_recorded_check() {
        let now = SystemTime::now();
        let started = now - Duration::from_millis(500);
        let deleting = record(Phase::Deleting, FIRST_POD_CHECK_REASON, started);
        assert_eq!(
            first_pod_wait(Some(&deleting), now),
            FIRST_POD_SETTLE - Duration::from_millis(500)
        );
        let long_ago = record(
            Phase::Deleting,
            FIRST_POD_CHECK_REASON,
            now - FIRST_POD_SETTLE,
        );
        assert_eq!(first_pod_wait(Some(&long_ago), now), Duration::ZERO);
    }

    #[test]
    fn first_pod_wait_ignores_other_reasons_and_phases() {
        let now = SystemTime::now();
        let long_ago = now - Duration::from_secs(60);
        let other_reason = record(
            Phase::Deleting,
            "waiting for the garbage collector",
            long_ago,
        );
        assert_eq!(first_pod_wait(Some(&other_reason), now), FIRST_POD_SETTLE);
        let live = record(Phase::Ready, FIRST_POD_CHECK_REASON, long_ago);
        assert_eq!(first_pod_wait(Some(&live), now), FIRST_POD_SETTLE);
    }

    #[test]
    fn first_pod_wait_after_clock_step_back() {
        let now = SystemTime::now();
        let future = record(
            Phase::Deleting,
            FIRST_POD_CHECK_REASON,
            now + Duration::from_secs(5),
        );
        assert_eq!(first_pod_wait(Some(&future), now), FIRST_POD_SETTLE);
    }
}
