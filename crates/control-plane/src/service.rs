//! The tonic service of `keysync.v1.ControlService`: turns requests into [`Runs`] (writes)
//! and [`History`] (reads) calls, and [`RunsError`]s into gRPC statuses. Every call but health and reflection passes
//! [`crate::auth::BearerAuth`] first.
//!
//! Statuses: a malformed request is `INVALID_ARGUMENT` (an approval without a reason, a
//! connector not configured, or none named when several are), an unknown run `NOT_FOUND`,
//! an action the run's state does not allow `FAILED_PRECONDITION` (the message names the
//! state; also a start while another run of the connector is active, and an approval of
//! an expired hold or of a plan whose products changed since), and a bus or store failure
//! `UNAVAILABLE` (retrying is safe: every call is idempotent or refused on repeat).

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use proto::v1::{
    self, ChangeOp, ChangeOutcome, DiagnosticKind, Product, RunMode, RunState, RunTrigger,
    control_service_server::{ControlService, ControlServiceServer},
};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    auth::{Authorized, BearerAuth},
    connections::{Connections, ConnectionsError},
    history::{ChangeQuery, DiagnosticQuery, History},
    runs::{Runs, RunsError, StartRun},
};

pub use proto::v1::control_service_server::SERVICE_NAME;

/// The metadata key a client may set to say who it acts for; it is recorded as the run's
/// `requested_by` or `approved_by`, and logged with cancellations. Informational only: the
/// token is what authenticates.
pub const USER_METADATA: &str = "keysync-user";

/// The metadata key of every `ReportResults` answer: the run's state after the report
/// (`RUN_STATE_CANCELLED` tells an applier to stop).
pub const RUN_STATE_METADATA: &str = "keysync-run-state";

/// Default and largest page of `ListRuns`.
const RUNS_PAGE: (u32, u32) = (50, 1000);

/// Default and largest page of `ListChanges`.
const CHANGES_PAGE: (u32, u32) = (100, 1000);

/// Default and largest page of `ListDiagnostics`.
const DIAGNOSTICS_PAGE: (u32, u32) = (100, 1000);

/// The control API over the runs.
pub struct ControlPlane {
    runs: Arc<Runs>,
    history: Arc<History>,
    connections: Arc<Connections>,
}

impl ControlPlane {
    pub fn new(
        runs: Arc<Runs>,
        history: Arc<History>,
        connections: Arc<Connections>,
    ) -> ControlPlane {
        ControlPlane {
            runs,
            history,
            connections,
        }
    }

    /// The gRPC service, behind the check of the bearer token and of its role.
    pub fn into_server(self, auth: BearerAuth) -> Authorized<ControlServiceServer<ControlPlane>> {
        auth.layer(ControlServiceServer::new(self))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::Run, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for ControlPlane {
    #[tracing::instrument(name = "StartSync", skip_all, fields(run_id = tracing::field::Empty))]
    async fn start_sync(
        &self,
        request: Request<v1::StartSyncRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        continue_trace(request.metadata());
        let requested_by = user(request.metadata(), "api");
        let request = request.into_inner();
        let mut products = Vec::with_capacity(request.products.len());
        for product in &request.products {
            products
                .push(Product::try_from(*product).map_err(|_| {
                    Status::invalid_argument(format!("{product} is not a product"))
                })?);
        }
        let mode = RunMode::try_from(request.mode)
            .map_err(|_| Status::invalid_argument(format!("{} is not a run mode", request.mode)))?;
        let run = self
            .runs
            .start(StartRun {
                mode,
                products,
                connector: request.connector.trim().to_owned(),
                trigger: RunTrigger::Api,
                requested_by,
            })
            .await
            .map_err(status)?;
        tracing::Span::current().record("run_id", run.run_id.as_str());
        Ok(Response::new(run))
    }

    #[tracing::instrument(name = "GetRun", skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        continue_trace(request.metadata());
        let run = self
            .history
            .get(&request.get_ref().run_id)
            .await
            .map_err(status)?;
        Ok(Response::new(run))
    }

    type WatchRunStream = WatchStream;

    #[tracing::instrument(name = "WatchRun", skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn watch_run(
        &self,
        request: Request<v1::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        continue_trace(request.metadata());
        let updates = self
            .history
            .watch(&request.get_ref().run_id)
            .await
            .map_err(status)?;
        // A write that changes neither state nor progress is not news.
        let mut last: Option<v1::Run> = None;
        let stream = updates.filter_map(move |item| {
            let item = match item {
                Ok(run) => {
                    let same = last.as_ref().is_some_and(|last| {
                        last.state == run.state
                            && last.progress == run.progress
                            && last.reason == run.reason
                    });
                    last = Some(run.clone());
                    (!same).then_some(Ok(run))
                }
                Err(error) => Some(Err(status(error))),
            };
            std::future::ready(item)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "ListRuns", skip_all)]
    async fn list_runs(
        &self,
        request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        continue_trace(request.metadata());
        let request = request.into_inner();
        let mut states = Vec::with_capacity(request.states.len());
        for state in &request.states {
            states
                .push(RunState::try_from(*state).map_err(|_| {
                    Status::invalid_argument(format!("{state} is not a run state"))
                })?);
        }
        let mut triggers = Vec::with_capacity(request.triggers.len());
        for trigger in &request.triggers {
            triggers.push(RunTrigger::try_from(*trigger).map_err(|_| {
                Status::invalid_argument(format!("{trigger} is not a run trigger"))
            })?);
        }
        let after = (!request.page_token.is_empty()).then_some(request.page_token.as_str());
        let page = self
            .history
            .list(
                &states,
                &triggers,
                after,
                page_size(request.page_size, RUNS_PAGE),
            )
            .await
            .map_err(|error| match error {
                RunsError::InvalidRunId { .. } => {
                    Status::invalid_argument("page_token is not one this API gave out")
                }
                error => status(error),
            })?;
        Ok(Response::new(v1::ListRunsResponse {
            runs: page.runs,
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "ListChanges", skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn list_changes(
        &self,
        request: Request<v1::ListChangesRequest>,
    ) -> Result<Response<v1::ListChangesResponse>, Status> {
        continue_trace(request.metadata());
        let request = request.into_inner();
        let product = enum_filter(request.product, Product::Unspecified, "a product")?;
        let op = enum_filter(request.op, ChangeOp::Unspecified, "a change op")?;
        let outcome = enum_filter(
            request.outcome,
            ChangeOutcome::Unspecified,
            "a change outcome",
        )?;
        let offset = page_offset(&request.page_token)?;
        let user = request.user.trim();
        let query = ChangeQuery {
            product,
            op,
            outcome,
            user: (!user.is_empty()).then(|| user.to_owned()),
            offset,
            limit: page_size(request.page_size, CHANGES_PAGE),
        };
        let page = self
            .history
            .changes(&request.run_id, &query)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListChangesResponse {
            changes: page.changes,
            next_page_token: page
                .next_offset
                .map(|offset| offset.to_string())
                .unwrap_or_default(),
            total: page.total,
        }))
    }

    #[tracing::instrument(name = "ListDiagnostics", skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn list_diagnostics(
        &self,
        request: Request<v1::ListDiagnosticsRequest>,
    ) -> Result<Response<v1::ListDiagnosticsResponse>, Status> {
        continue_trace(request.metadata());
        let request = request.into_inner();
        let product = enum_filter(request.product, Product::Unspecified, "a product")?;
        let kind = enum_filter(
            request.kind,
            DiagnosticKind::Unspecified,
            "a diagnostic kind",
        )?;
        let user = request.user.trim();
        let query = DiagnosticQuery {
            product,
            kind,
            user: (!user.is_empty()).then(|| user.to_owned()),
            offset: page_offset(&request.page_token)?,
            limit: page_size(request.page_size, DIAGNOSTICS_PAGE),
        };
        let page = self
            .history
            .diagnostics(&request.run_id, &query)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListDiagnosticsResponse {
            conflicts: page.conflicts,
            diagnostics: page.diagnostics,
            next_page_token: page
                .next_offset
                .map(|offset| offset.to_string())
                .unwrap_or_default(),
            total: page.total,
        }))
    }

    /// Approves a HELD run: `comment` is the reason, required, recorded on the run with who
    /// (the `keysync-user` metadata) and when. Refused with FAILED_PRECONDITION once the
    /// hold has expired (the run is cancelled), once a product changed since the plan was
    /// made (the run stays HELD), and while another run of the connector is active. A HELD
    /// run is also cancelled ("superseded by run ...") when an apply run of its connector
    /// starts, by the API or the schedule; a simulated run supersedes nothing.
    #[tracing::instrument(name = "ApproveRun", skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn approve_run(
        &self,
        request: Request<v1::ApproveRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        continue_trace(request.metadata());
        let approved_by = user(request.metadata(), "api");
        let request = request.into_inner();
        let run = self
            .runs
            .approve(&request.run_id, &request.comment, &approved_by)
            .await
            .map_err(status)?;
        Ok(Response::new(run))
    }

    #[tracing::instrument(name = "CancelRun", skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn cancel_run(
        &self,
        request: Request<v1::CancelRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        continue_trace(request.metadata());
        let cancelled_by = user(request.metadata(), "api");
        let request = request.into_inner();
        let run = self
            .runs
            .cancel(&request.run_id, &request.reason, &cancelled_by)
            .await
            .map_err(status)?;
        Ok(Response::new(run))
    }

    #[tracing::instrument(name = "TestConnection", skip_all)]
    async fn test_connection(
        &self,
        request: Request<v1::TestConnectionRequest>,
    ) -> Result<Response<v1::TestConnectionResponse>, Status> {
        continue_trace(request.metadata());
        let targets: Vec<String> = request
            .into_inner()
            .targets
            .iter()
            .map(|target| target.trim().to_owned())
            .filter(|target| !target.is_empty())
            .collect();
        let checks = self
            .connections
            .check(&targets)
            .await
            .map_err(|error| match error {
                ConnectionsError::UnknownTarget { .. } => {
                    Status::invalid_argument(error.to_string())
                }
                ConnectionsError::NothingConfigured => {
                    Status::failed_precondition(error.to_string())
                }
            })?;
        Ok(Response::new(v1::TestConnectionResponse { checks }))
    }

    #[tracing::instrument(
        name = "ReportResults",
        skip_all,
        fields(run_id = %request.get_ref().run_id, results = request.get_ref().results.len())
    )]
    async fn report_results(
        &self,
        request: Request<v1::ReportResultsRequest>,
    ) -> Result<Response<v1::ReportResultsResponse>, Status> {
        continue_trace(request.metadata());
        let request = request.into_inner();
        let product = Product::try_from(request.product).map_err(|_| {
            Status::invalid_argument(format!("{} is not a product", request.product))
        })?;
        let (recorded, state) = self
            .runs
            .report(&request.run_id, product, request.results)
            .await
            .map_err(status)?;
        let mut response = Response::new(v1::ReportResultsResponse { recorded });
        response.metadata_mut().insert(
            RUN_STATE_METADATA,
            tonic::metadata::MetadataValue::from_static(state.as_str_name()),
        );
        Ok(response)
    }
}

/// The gRPC status of a failed run operation.
fn status(error: RunsError) -> Status {
    match &error {
        RunsError::InvalidRunId { .. } | RunsError::Invalid(_) => {
            Status::invalid_argument(error.to_string())
        }
        RunsError::NotFound { .. } => Status::not_found(error.to_string()),
        RunsError::WrongState { .. }
        | RunsError::Busy { .. }
        | RunsError::HoldExpired { .. }
        | RunsError::StalePlan(_) => Status::failed_precondition(error.to_string()),
        RunsError::Plan { source, .. } if source.is_permanent() => {
            tracing::error!(error = %telemetry::error_chain(&error), "A stored plan cannot be read.");
            Status::internal(telemetry::error_chain(&error))
        }
        RunsError::State { source, .. } if source.is_permanent() => {
            tracing::error!(error = %telemetry::error_chain(&error), "A cached state cannot be read.");
            Status::internal(telemetry::error_chain(&error))
        }
        RunsError::Store(_)
        | RunsError::Bus(_)
        | RunsError::Plan { .. }
        | RunsError::State { .. } => {
            tracing::warn!(error = %telemetry::error_chain(&error), "A call failed on the bus.");
            Status::unavailable(telemetry::error_chain(&error))
        }
    }
}

/// Who the caller says it acts for, or `default`.
fn user(metadata: &MetadataMap, default: &str) -> String {
    metadata
        .get(USER_METADATA)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .chars()
                .filter(|char| !char.is_control())
                .take(128)
                .collect::<String>()
        })
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Continues the caller's trace, if it sent one.
fn continue_trace(metadata: &MetadataMap) {
    telemetry::set_parent(
        &tracing::Span::current(),
        &telemetry::GrpcMetadataReader(metadata),
    );
}

/// An optional enum filter of a list request: its `UNSPECIFIED` value means none, and a
/// value this build does not know is `INVALID_ARGUMENT` ("7 is not a change op").
fn enum_filter<E>(value: i32, unspecified: E, what: &str) -> Result<Option<E>, Status>
where
    E: TryFrom<i32> + PartialEq,
{
    match E::try_from(value) {
        Ok(found) if found == unspecified => Ok(None),
        Ok(found) => Ok(Some(found)),
        Err(_) => Err(Status::invalid_argument(format!("{value} is not {what}"))),
    }
}

/// Where the page of `page_token` starts: 0 for the first page.
fn page_offset(page_token: &str) -> Result<usize, Status> {
    if page_token.is_empty() {
        return Ok(0);
    }
    page_token
        .parse::<usize>()
        .map_err(|_| Status::invalid_argument("page_token is not one this API gave out"))
}

/// The page size asked for, within `(default, largest)`.
fn page_size(asked: u32, (default, largest): (u32, u32)) -> usize {
    let size = if asked == 0 {
        default
    } else {
        asked.min(largest)
    };
    size as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::state_name;

    #[test]
    fn wrong_state_is_a_failed_precondition_that_names_the_state() {
        let error = RunsError::WrongState {
            run_id: "01JD000000000000000000000".to_owned(),
            state: state_name(RunState::Succeeded),
            expected: "only a HELD run can be approved",
        };
        let status = status(error);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "run 01JD000000000000000000000 is SUCCEEDED; only a HELD run can be approved"
        );
    }

    #[test]
    fn page_sizes_default_and_are_capped() {
        assert_eq!(page_size(0, (50, 1000)), 50);
        assert_eq!(page_size(7, (50, 1000)), 7);
        assert_eq!(page_size(5000, (50, 1000)), 1000);
    }
}
