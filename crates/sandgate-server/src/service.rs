//! The `sandgate.v1.SandboxService` gRPC service: validate, then act.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use sandgate_core::duration;
use sandgate_core::labels::Selector;
use sandgate_core::validate::{self, ValidationError};
use sandgate_core::{DeleteParams, SandboxRecord};
use sandgate_proto::v1 as pb;
use sandgate_proto::v1::sandbox_service_server::SandboxService;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span};

use crate::convert::{self, Target};
use crate::error::ApiError;
use crate::lifecycle::{DeleteResult, Lifecycle};
use crate::watch;

/// Default and maximum page sizes of ListSandboxes.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
/// Encoded size after which a page ends early.
const PAGE_BYTES: usize = 2 * 1024 * 1024;

/// The service implementation.
pub struct Service {
    lifecycle: Arc<Lifecycle>,
}

impl Service {
    /// Creates the service over the server's lifecycle.
    pub fn new(lifecycle: Arc<Lifecycle>) -> Self {
        Self { lifecycle }
    }

    fn resolve(&self, target: &Target) -> Option<SandboxRecord> {
        let store = self.lifecycle.store();
        match target {
            Target::Name { workspace, name } => store.get_by_name(workspace, name),
            Target::Id(id) => store.get(id),
        }
    }

    /// Builds the error for a target that resolves to no record. For the id of a removed sandbox
    /// it names what the sandbox was, because a delete by that id reports it deleted.
    fn not_found(&self, target: &Target) -> ApiError {
        match target {
            Target::Id(id) => match self.lifecycle.store().tombstone(id) {
                Some(tombstone) => ApiError::removed(&tombstone),
                None => ApiError::NotFound(target.describe()),
            },
            Target::Name { .. } => ApiError::NotFound(target.describe()),
        }
    }

    async fn delete(
        &self,
        request: pb::DeleteSandboxRequest,
    ) -> Result<pb::DeleteSandboxResponse, ApiError> {
        let target = convert::target("target", request.target.as_ref())?;
        let grace_period = convert::duration_field("grace_period", request.grace_period.as_ref())?;
        if let Some(grace) = grace_period {
            duration::grace_period("grace_period", grace)?;
        }
        let timeout = if request.wait {
            Some(duration::wait_timeout(
                "timeout",
                convert::duration_field("timeout", request.timeout.as_ref())?,
            )?)
        } else {
            convert::duration_field("timeout", request.timeout.as_ref())?
                .map(|timeout| duration::wait_timeout("timeout", Some(timeout)))
                .transpose()?
        };
        let params = DeleteParams {
            grace_period,
            force: request.force,
        };

        let Some(record) = self.resolve(&target) else {
            return self.absent(&target, request.ignore_not_found);
        };

        let accepted = match self.lifecycle.delete(record.id, params).await? {
            DeleteResult::Deleted(tombstone) => return Ok(deleted(&tombstone)),
            DeleteResult::Accepted(record) => record,
        };
        let Some(timeout) = timeout.filter(|_| request.wait) else {
            return Ok(pb::DeleteSandboxResponse {
                id: accepted.id.to_string(),
                outcome: pb::DeleteOutcome::Accepted as i32,
                sandbox: Some(convert::sandbox(&accepted)),
                tombstone: None,
            });
        };
        let tombstone = self.lifecycle.wait_removed(accepted.id, timeout).await?;
        Ok(deleted(&tombstone))
    }

    /// Builds the response to a delete whose target has no record: DELETED from a tombstone (by id only), else
    /// NOT_FOUND or ALREADY_ABSENT.
    fn absent(
        &self,
        target: &Target,
        ignore_not_found: bool,
    ) -> Result<pb::DeleteSandboxResponse, ApiError> {
        if let Target::Id(id) = target
            && let Some(tombstone) = self.lifecycle.store().tombstone(id)
        {
            return Ok(deleted(&tombstone));
        }
        if !ignore_not_found {
            return Err(ApiError::NotFound(target.describe()));
        }
        Ok(pb::DeleteSandboxResponse {
            id: match target {
                Target::Id(id) => id.to_string(),
                Target::Name { .. } => String::new(),
            },
            outcome: pb::DeleteOutcome::AlreadyAbsent as i32,
            sandbox: None,
            tombstone: None,
        })
    }

    fn list(
        &self,
        request: &pb::ListSandboxesRequest,
    ) -> Result<pb::ListSandboxesResponse, ApiError> {
        let workspace = if request.all_workspaces {
            None
        } else {
            Some(validate::workspace("workspace", &request.workspace)?)
        };
        let selector = Selector::parse("label_selector", &request.label_selector)?;
        let mut phases = Vec::new();
        for value in &request.phases {
            let phase = convert::phase_from_proto(*value).ok_or_else(|| {
                ValidationError::new(
                    "phases",
                    format!("invalid phase {value}: use PROVISIONING, READY, EXITED, ERROR, UNKNOWN or DELETING"),
                )
            })?;
            phases.push(phase);
        }
        let page_size = match request.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(ValidationError::new(
                    "page_size",
                    format!("page size {size} is too large: use at most {MAX_PAGE_SIZE}"),
                )
                .into());
            }
            size => size,
        };
        let after = decode_page_token(&request.page_token)?;

        let store = self.lifecycle.store();
        let revision = store.revision();
        let mut matching = store.records().into_iter().filter(|record| {
            workspace.as_ref().is_none_or(|w| *w == record.workspace)
                && selector.matches(&record.labels)
                && (phases.is_empty() || phases.contains(&record.phase))
                && after
                    .as_ref()
                    .is_none_or(|(w, n)| (&record.workspace, &record.name) > (w, n))
        });
        // Pages stop at a byte budget as well as at the page size, so that a page of large records
        // stays below the 4 MiB message limit of gRPC clients.
        let mut page: Vec<SandboxRecord> = Vec::new();
        let mut bytes = 0;
        for record in matching.by_ref() {
            bytes += convert::sandbox(&record).encoded_len();
            page.push(record);
            if page.len() >= page_size || bytes >= PAGE_BYTES {
                break;
            }
        }
        let next_page_token = match (page.last(), matching.next()) {
            (Some(last), Some(_)) => encode_page_token(&last.workspace, &last.name),
            _ => String::new(),
        };
        Ok(pb::ListSandboxesResponse {
            sandboxes: page.iter().map(convert::sandbox).collect(),
            next_page_token,
            revision,
        })
    }
}

fn deleted(tombstone: &sandgate_core::Tombstone) -> pb::DeleteSandboxResponse {
    pb::DeleteSandboxResponse {
        id: tombstone.id.to_string(),
        outcome: pb::DeleteOutcome::Deleted as i32,
        sandbox: Some(convert::sandbox_from_tombstone(tombstone)),
        tombstone: Some(convert::tombstone(tombstone)),
    }
}

fn encode_page_token(workspace: &str, name: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{workspace}/{name}"))
}

fn decode_page_token(token: &str) -> Result<Option<(String, String)>, ValidationError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ValidationError::new(
            "page_token",
            format!("invalid page token {token:?}: pass the next_page_token of the previous page"),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (workspace, name) = text.split_once('/').ok_or_else(invalid)?;
    Ok(Some((workspace.to_string(), name.to_string())))
}

#[tonic::async_trait]
impl SandboxService for Service {
    async fn create_sandbox(
        &self,
        request: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let request = request.into_inner();
        let span =
            info_span!("create_sandbox", workspace = %request.workspace, name = %request.name);
        async {
            let record =
                convert::new_record(&request, SystemTime::now()).map_err(ApiError::from)?;
            let record = self.lifecycle.create(record).await?;
            Ok(Response::new(convert::sandbox(&record)))
        }
        .instrument(span)
        .await
        .map_err(|error: ApiError| {
            debug!(%error, "CreateSandbox failed");
            Status::from(error)
        })
    }

    async fn get_sandbox(
        &self,
        request: Request<pb::GetSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let request = request.into_inner();
        let target = convert::target("target", request.target.as_ref()).map_err(ApiError::from)?;
        let record = self
            .resolve(&target)
            .ok_or_else(|| self.not_found(&target))?;
        Ok(Response::new(convert::sandbox(&record)))
    }

    async fn list_sandboxes(
        &self,
        request: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        Ok(Response::new(self.list(request.get_ref())?))
    }

    async fn delete_sandbox(
        &self,
        request: Request<pb::DeleteSandboxRequest>,
    ) -> Result<Response<pb::DeleteSandboxResponse>, Status> {
        let request = request.into_inner();
        let span = info_span!("delete_sandbox", target = ?request.target, wait = request.wait);
        self.delete(request)
            .instrument(span)
            .await
            .map(Response::new)
            .map_err(|error| {
                debug!(%error, "DeleteSandbox failed");
                Status::from(error)
            })
    }

    async fn wait_sandbox_deleted(
        &self,
        request: Request<pb::WaitSandboxDeletedRequest>,
    ) -> Result<Response<pb::DeleteSandboxResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            let id = sandgate_core::SandboxId::parse_field("id", &request.id)?;
            let timeout = duration::wait_timeout(
                "timeout",
                convert::duration_field("timeout", request.timeout.as_ref())?,
            )?;
            let tombstone = self.lifecycle.wait_removed(id, timeout).await?;
            Ok::<_, ApiError>(deleted(&tombstone))
        }
        .instrument(info_span!("wait_sandbox_deleted", id = %request.id))
        .await;
        result.map(Response::new).map_err(Status::from)
    }

    type WatchSandboxesStream = watch::EventStream;

    async fn watch_sandboxes(
        &self,
        request: Request<pb::WatchSandboxesRequest>,
    ) -> Result<Response<Self::WatchSandboxesStream>, Status> {
        let stream = watch::start(self.lifecycle.clone(), request.into_inner())?;
        Ok(Response::new(stream))
    }
}
