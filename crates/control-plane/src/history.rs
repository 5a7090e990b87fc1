//! What the control API reads of runs, without gRPC: one run (`GetRun`, `WatchRun`), the
//! list of runs (`ListRuns`), a run's changes joined with their results (`ListChanges`),
//! and the conflicts and diagnostics its plan stored (`ListDiagnostics`). Nothing here
//! writes: the writes and the transitions are in [`crate::runs`].
//!
//! Reads are sized by the page, not by the deployment: `ListRuns` walks the in-memory
//! [`RunIndex`] and reads only the runs of the page; `ListChanges` streams the plan object
//! ([`bus::object_stream`]), decoding one change at a time (and only the changes a filter
//! or the page needs), and reads the results of the page's changes by key. Only the
//! `outcome` filter needs every change's outcome: it reads the run's results stream into a
//! compact map (change id digest -> outcome, about 20 bytes a result), kept for the run
//! listed last and topped up with what was recorded since.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bus::{Bus, object_stream::FieldReader, objects::ObjectError};
use futures::{Stream, StreamExt};
use prost::{Message as _, encoding::WireType};
use proto::v1::{self, ChangeOp, ChangeOutcome, DiagnosticKind, Product, RunState, RunTrigger};
use sha2::{Digest, Sha256};

use crate::{
    machine::is_terminal,
    run_index::RunIndex,
    runs::{RunsError, check_run_id},
    store::Store,
};

/// How long `ListRuns` waits for the index of runs to catch up (at start, its first load).
const INDEX_WAIT: Duration = Duration::from_secs(30);

/// Runs read at once for a page of `ListRuns`, and results for a page of `ListChanges`.
const READ_CONCURRENCY: usize = 32;

/// The largest encoded change, conflict or diagnostic a plan may hold.
const MAX_ELEMENT_BYTES: usize = 16 << 20;

/// The fields of `v1::Plan` that are read (`proto/keysync/v1/bus.proto`).
const PLAN_SCHEMA_VERSION: u32 = 1;
const PLAN_CHANGES: u32 = 5;
const PLAN_CONFLICTS: u32 = 8;
const PLAN_DIAGNOSTICS: u32 = 11;

/// What the `product` and `op` filters read of a change, without decoding the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct ChangeHead {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int32, tag = "2")]
    product: i32,
    #[prost(int32, tag = "3")]
    op: i32,
}

/// A change id's key in the outcome map: the first 128 bits of its SHA-256 (no two of a
/// run's ids share it in practice: 2^-128 a pair), so a run of half a million results
/// needs about 10 MB, not the ids themselves.
type OutcomeKey = [u8; 16];

fn outcome_key(change_id: &str) -> OutcomeKey {
    let digest = Sha256::digest(change_id.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The filters and page of `ListChanges`.
#[derive(Clone, Debug, Default)]
pub struct ChangeQuery {
    pub product: Option<Product>,
    pub op: Option<ChangeOp>,
    pub outcome: Option<ChangeOutcome>,
    /// A login, email or Keycloak user id, compared without case.
    pub user: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

/// One page of a run's changes.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangePage {
    pub changes: Vec<v1::ChangeRecord>,
    /// Changes that match the filters, on every page.
    pub total: u64,
    /// Where the next page starts, if there is one.
    pub next_offset: Option<usize>,
}

/// The filters and page of `ListDiagnostics`.
#[derive(Clone, Debug, Default)]
pub struct DiagnosticQuery {
    pub product: Option<Product>,
    /// Only diagnostics of this kind, and then no conflicts.
    pub kind: Option<DiagnosticKind>,
    /// A Keycloak user id, username, login or subject, compared without case.
    pub user: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

/// One page of a plan's conflicts, then diagnostics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiagnosticPage {
    pub conflicts: Vec<v1::Conflict>,
    pub diagnostics: Vec<v1::Diagnostic>,
    /// Conflicts and diagnostics that match the filters, on every page.
    pub total: u64,
    /// Where the next page starts, if there is one.
    pub next_offset: Option<usize>,
}

/// One page of runs.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPage {
    pub runs: Vec<v1::Run>,
    /// The id after which the next page starts, if there is one.
    pub next_after: Option<String>,
}

/// The read side of the runs of one deployment, with what it keeps between two pages.
pub struct History {
    bus: Bus,
    store: Arc<Store>,
    index: Arc<RunIndex>,
    /// The outcomes of the run last listed with an `outcome` filter, read up to a stream
    /// sequence; the next page reads only what was recorded since.
    outcomes_cache: tokio::sync::Mutex<Option<OutcomesCache>>,
}

struct OutcomesCache {
    run_id: String,
    read_through: u64,
    outcomes: Arc<HashMap<OutcomeKey, u8>>,
}

impl History {
    /// Reads the runs of `store` (listing them through `index`), and their plans through
    /// `bus`.
    pub fn new(bus: Bus, store: Arc<Store>, index: Arc<RunIndex>) -> History {
        History {
            bus,
            store,
            index,
            outcomes_cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The run `run_id`.
    pub async fn get(&self, run_id: &str) -> Result<v1::Run, RunsError> {
        check_run_id(run_id)?;
        match self.store.get(run_id).await? {
            Some(stored) => Ok(stored.run),
            None => Err(RunsError::NotFound {
                run_id: run_id.to_owned(),
            }),
        }
    }

    /// The run now, then after every change, ending with the first terminal state.
    pub async fn watch(
        &self,
        run_id: &str,
    ) -> Result<impl Stream<Item = Result<v1::Run, RunsError>> + Send + 'static, RunsError> {
        // Fails with NotFound before a watch is made on a key that may never exist.
        self.get(run_id).await?;
        let updates = Box::pin(self.store.watch(run_id).await?);
        // Ends right after the terminal state (or an error), not when the next write comes.
        Ok(futures::stream::unfold(
            Some(updates),
            |updates| async move {
                let mut updates = updates?;
                let item = updates.next().await?.map_err(RunsError::from);
                let ended = match &item {
                    Ok(run) => is_terminal(run.state()),
                    Err(_) => true,
                };
                Some((item, (!ended).then_some(updates)))
            },
        ))
    }

    /// Runs newest first: `limit` of them after the id `after`, in `states` and of
    /// `triggers` (all when empty). Reads only the runs of the page (and those the index
    /// had in another state than the run now has, or that expired).
    pub async fn list(
        &self,
        states: &[RunState],
        triggers: &[RunTrigger],
        after: Option<&str>,
        limit: usize,
    ) -> Result<RunPage, RunsError> {
        if let Some(after) = after {
            check_run_id(after)?;
        }
        self.index.wait_current(INDEX_WAIT).await?;
        let mut runs = Vec::new();
        let mut cursor = after.map(str::to_owned);
        // One more than asked for tells whether there is a next page.
        while runs.len() <= limit {
            let ids = self
                .index
                .page(cursor.as_deref(), states, triggers, limit + 1 - runs.len());
            let Some(last) = ids.last() else {
                break;
            };
            cursor = Some(last.clone());
            let store = &self.store;
            let mut read = futures::stream::iter(ids)
                .map(|run_id| async move {
                    let stored = store.get(&run_id).await;
                    (run_id, stored)
                })
                .buffered(READ_CONCURRENCY);
            while let Some((run_id, stored)) = read.next().await {
                match stored? {
                    None => self.index.remove(&run_id),
                    Some(stored) => {
                        if (states.is_empty() || states.contains(&stored.run.state()))
                            && (triggers.is_empty() || triggers.contains(&stored.run.trigger()))
                        {
                            runs.push(stored.run);
                        }
                    }
                }
            }
        }
        let next_after = if runs.len() > limit {
            runs.truncate(limit);
            runs.last().map(|run| run.run_id.clone())
        } else {
            None
        };
        Ok(RunPage { runs, next_after })
    }

    /// The run's planned changes joined with their results, filtered, in plan order. The
    /// plan is streamed (every call reads it to its end, which checks its checksum and
    /// makes `total` exact); a change is decoded only when a filter or the page needs it.
    pub async fn changes(
        &self,
        run_id: &str,
        query: &ChangeQuery,
    ) -> Result<ChangePage, RunsError> {
        check_run_id(run_id)?;
        let Some(stored) = self.store.get(run_id).await? else {
            return Err(RunsError::NotFound {
                run_id: run_id.to_owned(),
            });
        };
        let Some(object) = stored.plan else {
            return Ok(ChangePage {
                changes: Vec::new(),
                total: 0,
                next_offset: None,
            });
        };
        let outcomes = match query.outcome {
            Some(_) => Some(self.outcomes(run_id).await?),
            None => None,
        };
        let plan_error = |source| RunsError::Plan {
            run_id: run_id.to_owned(),
            source,
        };
        let (total, page) = self
            .select_changes(&object, query, outcomes.as_deref())
            .await
            .map_err(plan_error)?;
        let store = &self.store;
        let mut read = futures::stream::iter(page)
            .map(|change| async move {
                let result = store.result(run_id, &change.id).await;
                (change, result)
            })
            .buffered(READ_CONCURRENCY);
        let mut changes = Vec::new();
        while let Some((change, result)) = read.next().await {
            let mut result = result?;
            // A result recorded since the outcomes were read is left out, so that the page
            // answers the filter it was selected by.
            if let Some(wanted) = query.outcome {
                let outcome = result
                    .as_ref()
                    .map_or(ChangeOutcome::Planned, |result| result.outcome());
                if outcome != wanted {
                    result = None;
                }
            }
            let mut record = v1::ChangeRecord {
                change: Some(change),
                ..v1::ChangeRecord::default()
            };
            record.set_outcome(ChangeOutcome::Planned);
            if let Some(result) = result {
                record.set_outcome(result.outcome());
                record.message = result.message;
                record.product_status = result.product_status;
                record.finished_at = result.finished_at;
            }
            changes.push(record);
        }
        let next = query.offset + changes.len();
        Ok(ChangePage {
            changes,
            total,
            next_offset: (next < total as usize).then_some(next),
        })
    }

    /// Streams the plan `object`: how many changes match `query`, and those of its page.
    async fn select_changes(
        &self,
        object: &v1::ObjectRef,
        query: &ChangeQuery,
        outcomes: Option<&HashMap<OutcomeKey, u8>>,
    ) -> Result<(u64, Vec<v1::Change>), ObjectError> {
        let user = query.user.as_deref().map(str::to_lowercase);
        let by_head = query.product.is_some() || query.op.is_some() || outcomes.is_some();
        let mut fields = FieldReader::new(self.bus.object_reader(object).await?, "Plan");
        let mut schema_version = 0;
        let mut total = 0u64;
        let mut page = Vec::new();
        while let Some((tag, wire_type)) = fields.next_key().await? {
            match (tag, wire_type) {
                (PLAN_SCHEMA_VERSION, WireType::Varint) => {
                    schema_version = fields.read_varint().await?;
                }
                (PLAN_CHANGES, WireType::LengthDelimited) => {
                    let on_page = total as usize >= query.offset && page.len() < query.limit;
                    if !by_head && user.is_none() && !on_page {
                        // Counted without being read.
                        fields.skip(wire_type).await?;
                        total += 1;
                        continue;
                    }
                    let bytes = fields.read_bytes(MAX_ELEMENT_BYTES).await?;
                    let malformed = |error: prost::DecodeError| fields.malformed(error.to_string());
                    if by_head {
                        let head = ChangeHead::decode(bytes.as_slice()).map_err(malformed)?;
                        if !head_matches(&head, query, outcomes) {
                            continue;
                        }
                    }
                    if user.is_none() && !on_page {
                        total += 1;
                        continue;
                    }
                    let change = v1::Change::decode(bytes.as_slice()).map_err(malformed)?;
                    if user
                        .as_deref()
                        .is_some_and(|user| !concerns_user(&change, user))
                    {
                        continue;
                    }
                    total += 1;
                    if on_page {
                        page.push(change);
                    }
                }
                _ => fields.skip(wire_type).await?,
            }
        }
        check_schema_version(object, schema_version)?;
        Ok((total, page))
    }

    /// The conflicts, then the diagnostics, of the run's plan, filtered, in plan order. A
    /// run with no plan yet has none. The plan is streamed, its changes skipped undecoded;
    /// a plan lists its conflicts before its diagnostics (its fields in tag order, as
    /// protobuf encoders write them), and one that does not is refused.
    pub async fn diagnostics(
        &self,
        run_id: &str,
        query: &DiagnosticQuery,
    ) -> Result<DiagnosticPage, RunsError> {
        check_run_id(run_id)?;
        let Some(stored) = self.store.get(run_id).await? else {
            return Err(RunsError::NotFound {
                run_id: run_id.to_owned(),
            });
        };
        let Some(object) = stored.plan else {
            return Ok(DiagnosticPage::default());
        };
        self.select_diagnostics(&object, query)
            .await
            .map_err(|source| RunsError::Plan {
                run_id: run_id.to_owned(),
                source,
            })
    }

    async fn select_diagnostics(
        &self,
        object: &v1::ObjectRef,
        query: &DiagnosticQuery,
    ) -> Result<DiagnosticPage, ObjectError> {
        let user = query.user.as_deref().map(str::to_lowercase);
        let same = |value: &str| {
            user.as_deref()
                .is_none_or(|user| !value.is_empty() && value.to_lowercase() == user)
        };
        let in_product = |product: i32| query.product.is_none_or(|wanted| wanted as i32 == product);
        let mut fields = FieldReader::new(self.bus.object_reader(object).await?, "Plan");
        let mut schema_version = 0;
        let mut page = DiagnosticPage::default();
        let mut seen_diagnostic = false;
        while let Some((tag, wire_type)) = fields.next_key().await? {
            match (tag, wire_type) {
                (PLAN_SCHEMA_VERSION, WireType::Varint) => {
                    schema_version = fields.read_varint().await?;
                }
                (PLAN_CONFLICTS, WireType::LengthDelimited) => {
                    let bytes = fields.read_bytes(MAX_ELEMENT_BYTES).await?;
                    if seen_diagnostic {
                        return Err(fields.malformed("a conflict after a diagnostic".to_owned()));
                    }
                    let conflict = v1::Conflict::decode(bytes.as_slice())
                        .map_err(|error| fields.malformed(error.to_string()))?;
                    let matches = query.kind.is_none()
                        && in_product(conflict.product)
                        && (same(&conflict.login)
                            || conflict.keycloak_user_ids.iter().any(|id| same(id))
                            || conflict.usernames.iter().any(|name| same(name)));
                    if matches {
                        page.total += 1;
                        if page.total as usize > query.offset && page.conflicts.len() < query.limit
                        {
                            page.conflicts.push(conflict);
                        }
                    }
                }
                (PLAN_DIAGNOSTICS, WireType::LengthDelimited) => {
                    seen_diagnostic = true;
                    let bytes = fields.read_bytes(MAX_ELEMENT_BYTES).await?;
                    let diagnostic = v1::Diagnostic::decode(bytes.as_slice())
                        .map_err(|error| fields.malformed(error.to_string()))?;
                    let matches = query.kind.is_none_or(|kind| diagnostic.kind() == kind)
                        && in_product(diagnostic.product)
                        && (same(&diagnostic.subject)
                            || same(&diagnostic.keycloak_user_id)
                            || same(&diagnostic.username));
                    if matches {
                        page.total += 1;
                        if page.total as usize > query.offset
                            && page.conflicts.len() + page.diagnostics.len() < query.limit
                        {
                            page.diagnostics.push(diagnostic);
                        }
                    }
                }
                _ => fields.skip(wire_type).await?,
            }
        }
        check_schema_version(object, schema_version)?;
        let next = query.offset + page.conflicts.len() + page.diagnostics.len();
        page.next_offset = (next < page.total as usize).then_some(next);
        Ok(page)
    }

    /// The outcome of every result of `run_id`, by change id digest: those read last for
    /// the same run, and those recorded since.
    async fn outcomes(&self, run_id: &str) -> Result<Arc<HashMap<OutcomeKey, u8>>, RunsError> {
        let mut cache = self.outcomes_cache.lock().await;
        let cached = cache.take().filter(|cached| cached.run_id == run_id);
        let (mut read_through, mut outcomes) = match cached {
            Some(cached) => (cached.read_through, cached.outcomes),
            None => (0, Arc::new(HashMap::new())),
        };
        {
            let outcomes = Arc::make_mut(&mut outcomes);
            self.store
                .for_each_result_after(run_id, read_through, |recorded| {
                    read_through = recorded.sequence;
                    let outcome = u8::try_from(recorded.result.outcome).unwrap_or(u8::MAX);
                    outcomes.insert(outcome_key(&recorded.result.change_id), outcome);
                })
                .await?;
        }
        *cache = Some(OutcomesCache {
            run_id: run_id.to_owned(),
            read_through,
            outcomes: Arc::clone(&outcomes),
        });
        Ok(outcomes)
    }
}

/// Whether a change passes the `product`, `op` and `outcome` filters (a change without a
/// result is PLANNED).
fn head_matches(
    head: &ChangeHead,
    query: &ChangeQuery,
    outcomes: Option<&HashMap<OutcomeKey, u8>>,
) -> bool {
    if query
        .product
        .is_some_and(|product| head.product != product as i32)
    {
        return false;
    }
    if query.op.is_some_and(|op| head.op != op as i32) {
        return false;
    }
    match (query.outcome, outcomes) {
        (Some(wanted), Some(outcomes)) => {
            let outcome = outcomes
                .get(&outcome_key(&head.id))
                .map_or(ChangeOutcome::Planned as i32, |outcome| i32::from(*outcome));
            outcome == wanted as i32
        }
        _ => true,
    }
}

/// Refuses a plan of a schema version this build does not know, as [`bus::decode`] does.
fn check_schema_version(object: &v1::ObjectRef, found: u64) -> Result<(), ObjectError> {
    if found == 0 || found > u64::from(v1::SCHEMA_VERSION) {
        return Err(ObjectError::Decode {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            source: bus::DecodeError::UnknownVersion {
                kind: "Plan",
                found: u32::try_from(found).unwrap_or(u32::MAX),
                known: v1::SCHEMA_VERSION,
            },
        });
    }
    Ok(())
}

/// Whether `change` is about the user `user` (lower case): their login (new or before),
/// email (new or before), or Keycloak user id.
fn concerns_user(change: &v1::Change, user: &str) -> bool {
    let same = |value: &str| !value.is_empty() && value.to_lowercase() == user;
    let fields = [change.fields.as_ref(), change.previous.as_ref()];
    let account_login = match change
        .account
        .as_ref()
        .and_then(|account| account.r#ref.as_ref())
    {
        Some(v1::account_ref::Ref::NewLogin(login)) => login.as_str(),
        Some(v1::account_ref::Ref::AccountId(id)) => id.as_str(),
        None => "",
    };
    same(&change.keycloak_user_id)
        || same(account_login)
        || fields
            .iter()
            .flatten()
            .any(|fields| same(&fields.login) || same(&fields.email))
}
