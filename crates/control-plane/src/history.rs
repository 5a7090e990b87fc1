//! What the control API reads of runs, without gRPC: one run (`GetRun`, `WatchRun`), the
//! list of runs (`ListRuns`), a run's changes joined with their results (`ListChanges`),
//! and the conflicts and diagnostics its plan stored (`ListDiagnostics`). Nothing here
//! writes: the writes and the transitions are in [`crate::runs`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bus::Bus;
use futures::{Stream, StreamExt};
use proto::v1::{self, ChangeOp, ChangeOutcome, DiagnosticKind, Product, RunState};

use crate::{
    machine::is_terminal,
    runs::{RunsError, check_run_id},
    store::Store,
};

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
    /// The plan read last: `ListChanges` pages through one run's plan at a time.
    plan_cache: Mutex<Option<(v1::ObjectRef, Arc<v1::Plan>)>>,
    /// The results of the run listed last, by change id, read up to a stream sequence; the
    /// next page reads only what was recorded since.
    results_cache: tokio::sync::Mutex<Option<ResultsCache>>,
}

struct ResultsCache {
    run_id: String,
    read_through: u64,
    results: Arc<HashMap<String, v1::ChangeResult>>,
}

impl History {
    /// Reads the runs of `store`, and their plans through `bus`.
    pub fn new(bus: Bus, store: Arc<Store>) -> History {
        History {
            bus,
            store,
            plan_cache: Mutex::new(None),
            results_cache: tokio::sync::Mutex::new(None),
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

    /// Runs newest first: `limit` of them after the id `after`, in `states` (all when
    /// empty).
    pub async fn list(
        &self,
        states: &[RunState],
        after: Option<&str>,
        limit: usize,
    ) -> Result<RunPage, RunsError> {
        if let Some(after) = after {
            check_run_id(after)?;
        }
        let mut runs = Vec::new();
        for run_id in self.store.run_ids().await? {
            if after.is_some_and(|after| run_id.as_str() >= after) {
                continue;
            }
            let Some(stored) = self.store.get(&run_id).await? else {
                continue;
            };
            if !states.is_empty() && !states.contains(&stored.run.state()) {
                continue;
            }
            runs.push(stored.run);
            // One more than asked for tells whether there is a next page.
            if runs.len() > limit {
                break;
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

    /// The run's planned changes joined with their results, filtered, in plan order.
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
        let plan = self.plan(run_id, &object).await?;
        let results = self.results(run_id).await?;
        let user = query.user.as_deref().map(str::to_lowercase);
        let mut total = 0u64;
        let mut changes = Vec::new();
        for change in &plan.changes {
            if query
                .product
                .is_some_and(|product| change.product() != product)
            {
                continue;
            }
            if query.op.is_some_and(|op| change.op() != op) {
                continue;
            }
            if let Some(user) = &user
                && !concerns_user(change, user)
            {
                continue;
            }
            let result = results.get(&change.id);
            let outcome = result.map_or(ChangeOutcome::Planned, |result| result.outcome());
            if query.outcome.is_some_and(|wanted| outcome != wanted) {
                continue;
            }
            total += 1;
            if total as usize <= query.offset || changes.len() >= query.limit {
                continue;
            }
            let mut record = v1::ChangeRecord {
                change: Some(change.clone()),
                ..v1::ChangeRecord::default()
            };
            record.set_outcome(outcome);
            if let Some(result) = result {
                record.message = result.message.clone();
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

    /// The conflicts, then the diagnostics, of the run's plan, filtered, in plan order. A
    /// run with no plan yet has none.
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
        let plan = self.plan(run_id, &object).await?;
        let user = query.user.as_deref().map(str::to_lowercase);
        let same = |value: &str| {
            user.as_deref()
                .is_none_or(|user| !value.is_empty() && value.to_lowercase() == user)
        };
        let in_product = |product: i32| query.product.is_none_or(|wanted| wanted as i32 == product);
        let conflicts = plan.conflicts.iter().filter(|conflict| {
            query.kind.is_none()
                && in_product(conflict.product)
                && (same(&conflict.login)
                    || conflict.keycloak_user_ids.iter().any(|id| same(id))
                    || conflict.usernames.iter().any(|name| same(name)))
        });
        let diagnostics = plan.diagnostics.iter().filter(|diagnostic| {
            query.kind.is_none_or(|kind| diagnostic.kind() == kind)
                && in_product(diagnostic.product)
                && (same(&diagnostic.subject)
                    || same(&diagnostic.keycloak_user_id)
                    || same(&diagnostic.username))
        });
        let mut page = DiagnosticPage::default();
        for conflict in conflicts {
            page.total += 1;
            if page.total as usize > query.offset && page.conflicts.len() < query.limit {
                page.conflicts.push(conflict.clone());
            }
        }
        for diagnostic in diagnostics {
            page.total += 1;
            if page.total as usize > query.offset
                && page.conflicts.len() + page.diagnostics.len() < query.limit
            {
                page.diagnostics.push(diagnostic.clone());
            }
        }
        let next = query.offset + page.conflicts.len() + page.diagnostics.len();
        page.next_offset = (next < page.total as usize).then_some(next);
        Ok(page)
    }

    /// Every result of `run_id` by change id: those read last for the same run, and those
    /// recorded since.
    async fn results(
        &self,
        run_id: &str,
    ) -> Result<Arc<HashMap<String, v1::ChangeResult>>, RunsError> {
        let mut cache = self.results_cache.lock().await;
        let cached = cache.take().filter(|cached| cached.run_id == run_id);
        let (mut read_through, mut results) = match cached {
            Some(cached) => (cached.read_through, cached.results),
            None => (0, Arc::new(HashMap::new())),
        };
        let new = self.store.results_after(run_id, read_through).await?;
        if let Some(last) = new.last() {
            read_through = last.sequence;
            let results = Arc::make_mut(&mut results);
            for recorded in new {
                results.insert(recorded.result.change_id.clone(), recorded.result);
            }
        }
        *cache = Some(ResultsCache {
            run_id: run_id.to_owned(),
            read_through,
            results: Arc::clone(&results),
        });
        Ok(results)
    }

    /// Reads the plan `object` of `run_id`, or the one read last if it is the same.
    async fn plan(&self, run_id: &str, object: &v1::ObjectRef) -> Result<Arc<v1::Plan>, RunsError> {
        {
            let cache = self
                .plan_cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((cached, plan)) = cache.as_ref()
                && cached == object
            {
                return Ok(Arc::clone(plan));
            }
        }
        let plan: v1::Plan =
            self.bus
                .get_object(object)
                .await
                .map_err(|source| RunsError::Plan {
                    run_id: run_id.to_owned(),
                    source,
                })?;
        let plan = Arc::new(plan);
        *self
            .plan_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((object.clone(), Arc::clone(&plan)));
        Ok(plan)
    }
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
