//! A run request: read the product's whole state, keep what only keysync knows from the
//! previous cached state ([`crate::state::refresh`]), store it in the cache as the product's
//! new base (holding the state journal up to where the read began) and announce
//! it with `StateReady`, or `StateFailed` when the product cannot be read. An event run
//! that names users or groups (#16, no `full_sync_reason`) announces the cached state
//! instead, when there is one (outcome `cached` of `keysync_state_refreshes_total`).

use std::time::SystemTime;

use atlassian::Directory;
use bus::worker::Delivery;
use opentelemetry::KeyValue;
use proto::v1;
use telemetry::error_chain;
use tracing::Instrument;

use crate::app::{Applier, StepOutcome};
use crate::{Error, state};

impl Applier {
    /// Reads the product's state for a run and announces it.
    pub(crate) async fn refresh(&self, delivery: &Delivery<'_>) -> Result<StepOutcome, Error> {
        let Some(requested) = delivery.decode::<v1::RunRequested>().await? else {
            return Ok(StepOutcome::DeadLettered);
        };
        let run_id = requested.run_id.clone();
        let span = tracing::info_span!("refresh_state", run_id = %run_id, product = %self.product);
        bus::trace::continue_trace(&span, delivery.message().headers.as_ref());
        async {
            if !requested.products.is_empty()
                && !requested.products.contains(&(self.wire_product as i32))
            {
                return Ok(StepOutcome::Ignored);
            }
            if names_only_some(&requested)
                && let Some(outcome) = self.announce_cached(&run_id).await?
            {
                return Ok(outcome);
            }
            let topology = self.bus.topology();
            let product = self.product.as_str();
            // What change sets record from here on may be missing from the read: the new
            // base takes the journal in only up to here, and the rest is replayed on it.
            let journal_seq = self.cache.journal_position().await?;
            let directory = match self.directory.fetch_state().await {
                Ok(directory) => directory,
                Err(error) => {
                    let reason = error_chain(&error);
                    let failed = v1::StateFailed {
                        schema_version: v1::SCHEMA_VERSION,
                        run_id: run_id.clone(),
                        product: self.wire_product as i32,
                        reason: reason.clone(),
                    };
                    self.bus
                        .publish(
                            &topology.state_failed(product),
                            &failed,
                            &format!("{run_id}/state-failed/{product}"),
                        )
                        .await?;
                    self.metrics.refreshes.add(
                        1,
                        &[
                            KeyValue::new("product", product),
                            KeyValue::new("outcome", "failed"),
                        ],
                    );
                    tracing::warn!(reason, "Could not read the product's state.");
                    return Ok(StepOutcome::StateFailed { run_id, reason });
                }
            };
            let guard = self.cache_lock.acquire().await?;
            let stored = async {
                // The base is about to be replaced: the state followed so far is not kept
                // next to the new one (an applier's memory is bounded). What the refresh
                // needs of it is taken, and the rest (its memberships, its lookups) dropped
                // before the new state is built.
                let known = self
                    .cache
                    .load_model_once(self.product)
                    .await?
                    .map(|previous| state::Known::from(&previous.state))
                    .unwrap_or_default();
                let mut state = state::refresh(
                    self.wire_product,
                    directory,
                    &known,
                    self.directory.capabilities(),
                    &run_id,
                    SystemTime::now(),
                );
                drop(known);
                state.journal_seq = journal_seq;
                let object = self.cache.store(self.product, &state).await?;
                let counts = (
                    state.accounts.len(),
                    state.groups.len(),
                    state.memberships.len(),
                );
                Ok::<_, Error>((counts, object))
            }
            .await;
            guard.release().await;
            let (counts, object) = stored?;
            self.announce_state(&run_id, counts, object, "ready")
                .await?;
            tracing::info!(
                accounts = counts.0,
                groups = counts.1,
                memberships = counts.2,
                "Cached the product's state."
            );
            Ok(StepOutcome::StateReady {
                run_id,
                accounts: counts.0,
            })
        }
        .instrument(span)
        .await
    }

    /// Announces the cached state for an event run, without reading the product: a burst
    /// of events changes a few users, and reading a whole product of 100,000 accounts for
    /// them would cost more than the changes. The cache holds every write keysync made
    /// (`model::apply`), so only what someone changed in the product by hand since the
    /// last full read is missing, and the next full sync catches it. `None` when nothing
    /// is cached (or the cache cannot be read): the run reads the product as a full run
    /// does.
    async fn announce_cached(&self, run_id: &str) -> Result<Option<StepOutcome>, Error> {
        let (object, counts) = match self.cache.summary(self.product).await {
            Ok(Some(cached)) => cached,
            Ok(None) => {
                tracing::info!("No state is cached; the event run reads the product.");
                return Ok(None);
            }
            Err(error) => {
                tracing::warn!(
                    error = %error_chain(&error),
                    "Could not load the cached state; the event run reads the product."
                );
                return Ok(None);
            }
        };
        self.announce_state(run_id, counts, object, "cached")
            .await?;
        tracing::info!(
            accounts = counts.0,
            "An event run: announced the cached state without reading the product."
        );
        Ok(Some(StepOutcome::StateReady {
            run_id: run_id.to_owned(),
            accounts: counts.0,
        }))
    }

    /// Publishes `StateReady` naming `object`, the stored base of a state of `counts`
    /// accounts, groups and memberships, and counts the refresh with `outcome` (`ready`
    /// after a read of the product, `cached` for an event run).
    async fn announce_state(
        &self,
        run_id: &str,
        (accounts, groups, memberships): (usize, usize, usize),
        object: v1::ObjectRef,
        outcome: &'static str,
    ) -> Result<(), Error> {
        let product = self.product.as_str();
        let ready = v1::StateReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            product: self.wire_product as i32,
            state: Some(object),
            accounts: accounts as u64,
            groups: groups as u64,
            memberships: memberships as u64,
        };
        self.bus
            .publish(
                &self.bus.topology().state_ready(product),
                &ready,
                &format!("{run_id}/state/{product}"),
            )
            .await?;
        self.metrics.refreshes.add(
            1,
            &[
                KeyValue::new("product", product),
                KeyValue::new("outcome", outcome),
            ],
        );
        Ok(())
    }
}

/// Whether `requested` is an event run that names users or groups and needs no full sync:
/// the fetcher reads only those again, and the product need not be read whole either.
fn names_only_some(requested: &v1::RunRequested) -> bool {
    requested.event.as_ref().is_some_and(|event| {
        (!event.user_ids.is_empty() || !event.group_ids.is_empty())
            && event.full_sync_reason.is_empty()
    })
}
