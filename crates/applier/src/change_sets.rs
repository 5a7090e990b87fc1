//! One change set: in sequence order within its run ([`crate::progress`]), checked against
//! what the control plane recorded of the run (an APPLY run, not held, whose change-set
//! manifest lists this set's digest: `bus::integrity`; anything else is dead-lettered),
//! skipped when the run is cancelled, applied ([`crate::apply`]) with every success
//! recorded in the cached state ([`crate::state`]), every result reported
//! (`control_client`); only then is the message acknowledged (by the worker).

use std::sync::Arc;
use std::time::Duration;

use bus::worker::Delivery;
use opentelemetry::KeyValue;
use proto::v1;
use telemetry::error_chain;
use tracing::Instrument;

use crate::app::{Applier, StepOutcome};
use crate::{Error, apply, progress, state};

/// The longest time between two touches of a run's mark while a set is applied.
const MAX_TOUCH: Duration = Duration::from_secs(30);

impl Applier {
    /// Applies one change set, in order, and reports every result.
    pub(crate) async fn apply_change_set(
        &self,
        delivery: &Delivery<'_>,
    ) -> Result<StepOutcome, Error> {
        let Some(set) = delivery.decode::<v1::ChangeSet>().await? else {
            return Ok(StepOutcome::DeadLettered);
        };
        if set.product != self.wire_product as i32 {
            let reason = format!(
                "a change set of product {} on the {} subject",
                set.product, self.product
            );
            delivery.dead_letter(&reason).await?;
            return Ok(StepOutcome::DeadLettered);
        }
        let span = tracing::info_span!(
            "apply_change_set",
            run_id = %set.run_id,
            product = %self.product,
            sequence = set.sequence,
            total_sets = set.total_sets,
        );
        bus::trace::continue_trace(&span, delivery.message().headers.as_ref());
        self.apply_in_order(delivery, set).instrument(span).await
    }

    async fn apply_in_order(
        &self,
        delivery: &Delivery<'_>,
        set: v1::ChangeSet,
    ) -> Result<StepOutcome, Error> {
        let run_id = set.run_id.clone();
        let sequence = set.sequence;
        let (mark, marked) = self.progress.get(&run_id).await?;
        if mark.is_finished(sequence) {
            tracing::info!("The change set was applied before.");
            return Ok(StepOutcome::AlreadyApplied { run_id, sequence });
        }
        // Sets from planners before `depends_on` wait for every earlier set.
        let depends_on = set.depends_on.unwrap_or(sequence).min(sequence);
        let mut give_up = (!mark.skip_reason.is_empty()).then(|| mark.skip_reason.clone());
        if give_up.is_none() && !mark.all_finished_below(depends_on) {
            // The run's last progress: the mark's, or the set's publication before any.
            let last_progress = if marked {
                mark.touched_at
            } else {
                delivery
                    .message()
                    .info()
                    .map(|info| info.published.unix_timestamp().max(0) as u64)
                    .unwrap_or(u64::MAX)
            };
            let still = progress::now_unix().saturating_sub(last_progress);
            if still < self.sequence_timeout.as_secs() {
                tracing::debug!(
                    waiting_for = mark.next_sequence,
                    depends_on,
                    "The change set waits for the sets before its phase."
                );
                return Ok(StepOutcome::Waiting { run_id, sequence });
            }
            give_up = Some(format!(
                "not attempted: change set {} of this run did not finish, and the run made no \
                 progress for {still} s (applier.sequence_timeout_seconds = {})",
                mark.next_sequence,
                self.sequence_timeout.as_secs()
            ));
        }

        let (set, digest) = match self.inline(&delivery.message().payload, set).await? {
            Ok(inlined) => inlined,
            Err(reason) => {
                delivery.dead_letter(&reason).await?;
                return Ok(StepOutcome::DeadLettered);
            }
        };

        let run = match self.control.get_run(&run_id).await {
            Ok(run) => run,
            Err(error) if error.is_unknown_run() => {
                let reason = format!(
                    "the control plane knows no run {run_id}: {}",
                    error_chain(&error)
                );
                delivery.dead_letter(&reason).await?;
                return Ok(StepOutcome::DeadLettered);
            }
            Err(error) => return Err(error.into()),
        };
        match self.verify(&run, &set, digest).await? {
            Verdict::Verified => {}
            Verdict::NotYet => {
                tracing::debug!("The control plane has not recorded the run's plan yet.");
                return Ok(StepOutcome::Unconfirmed { run_id, sequence });
            }
            Verdict::Refused(reason) => {
                tracing::warn!(
                    reason,
                    "Refused a change set that is not part of an approved plan."
                );
                delivery.dead_letter(&reason).await?;
                return Ok(StepOutcome::DeadLettered);
            }
        }
        let changes = set.changes;
        let mut fold_due = false;
        let results = if run.state() == v1::RunState::Cancelled {
            tracing::info!(
                changes = changes.len(),
                "The run is cancelled; its changes are skipped."
            );
            apply::skip_all(&run_id, self.wire_product, &changes, "run cancelled")
        } else if run.state() == v1::RunState::Failed {
            // Failed by the control plane (a deadline passed, another product failed it):
            // its late sets are not applied, and each change says why.
            tracing::warn!(
                changes = changes.len(),
                "The run has failed; its late change set is not applied."
            );
            let reason = format!("not attempted: run {run_id} had already failed");
            apply::fail_all(&run_id, self.wire_product, &changes, &reason)
        } else if let Some(reason) = &give_up {
            tracing::warn!(
                reason,
                changes = changes.len(),
                "The change set is given up."
            );
            apply::fail_all(&run_id, self.wire_product, &changes, reason)
        } else {
            let (results, fold) = self
                .apply_and_record(&run_id, &set.connector, &changes)
                .await?;
            fold_due = fold;
            results
        };

        let Some(reported) = self
            .report(delivery, &run_id, sequence, give_up.as_deref(), &results)
            .await?
        else {
            return Ok(StepOutcome::DeadLettered);
        };
        self.progress
            .finish(&run_id, sequence, give_up.as_deref())
            .await?;
        self.count(&changes, &results);
        tracing::info!(
            changes = changes.len(),
            recorded = reported.recorded,
            "Applied the change set and reported its results."
        );
        if fold_due {
            self.fold_journal().await;
        }
        Ok(StepOutcome::Applied {
            run_id,
            sequence,
            results,
        })
    }

    /// Reports the set's `results`; `None` when the control plane refused them for good.
    /// Asking again cannot help then, and redelivering the set would apply it again and
    /// again: its changes are made, its mark is finished so the run's later sets go on,
    /// and the refusal goes to the dead letters with the set (the run fails at its
    /// deadline, its results unreported).
    async fn report(
        &self,
        delivery: &Delivery<'_>,
        run_id: &str,
        sequence: u32,
        give_up: Option<&str>,
        results: &[v1::ChangeResult],
    ) -> Result<Option<control_client::Reported>, Error> {
        let reported = match self
            .control
            .report(run_id, self.wire_product, results, self.report_batch_size)
            .await
        {
            Ok(reported) => reported,
            Err(error) if error.is_refused() => {
                let reason = format!(
                    "the control plane refused the results of change set {sequence}: {}",
                    error_chain(&error)
                );
                tracing::error!(reason, "The change set's results cannot be reported.");
                self.progress.finish(run_id, sequence, give_up).await?;
                delivery.dead_letter(&reason).await?;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        if reported.retries > 0 {
            self.metrics.retries.add(
                reported.retries,
                &[
                    KeyValue::new("product", self.product.as_str()),
                    KeyValue::new("kind", "report"),
                ],
            );
        }
        Ok(Some(reported))
    }

    /// Applies `changes` to the product, touching the run's mark while it works, and records
    /// what succeeded in the product's state journal ([`cache::Cache::append`]): one small
    /// entry, whatever the size of the product, and replicas applying sets of one phase at
    /// once never lose each other's records. Answers the results, and whether the journal
    /// is due to be folded into a new base ([`Applier::fold_journal`]).
    async fn apply_and_record(
        &self,
        run_id: &str,
        connector: &str,
        changes: &[v1::Change],
    ) -> Result<(Vec<v1::ChangeResult>, bool), Error> {
        let (mut working, lease) = match self.cache.take_working(self.product, connector).await? {
            Some((working, lease)) => (working, Some(lease)),
            None => (self.working(None, connector)?, None),
        };
        let touching = self.touch_while_working(run_id);
        let results = apply::apply(
            &self.directory,
            run_id,
            self.wire_product,
            changes,
            &mut working,
            self.concurrency,
        )
        .await;
        touching.abort();
        let fold = self
            .cache
            .record_set(self.product, run_id, connector, working, lease)
            .await?;
        Ok((results, fold))
    }

    /// Folds the product's state journal into a new base, under the product's cache lock so
    /// a refresh storing one is never lost. It runs after the set's results are reported:
    /// at 100,000 accounts a fold takes about a second, which an event run would otherwise
    /// wait for. A fold that fails loses nothing (the entries stay in the journal, and the
    /// next set folds them), so it is only logged.
    async fn fold_journal(&self) {
        let folded = async {
            let guard = self.cache_lock.acquire().await?;
            let folded = self.cache.fold(self.product).await;
            guard.release().await;
            folded.map_err(Error::from)
        }
        .await;
        if let Err(error) = folded {
            tracing::warn!(
                error = %error_chain(&error),
                "Could not fold the state journal into a new base; the next change set will."
            );
        }
    }

    fn working(
        &self,
        cached: Option<v1::ProductState>,
        connector: &str,
    ) -> Result<state::Working, Error> {
        let state = cached.unwrap_or_else(|| v1::ProductState {
            schema_version: v1::SCHEMA_VERSION,
            product: self.wire_product as i32,
            ..Default::default()
        });
        Ok(state::Working::for_connector(
            self.product,
            state,
            connector,
        )?)
    }

    /// Touches the run's mark every so often while a set is applied, so the replicas
    /// waiting for it know the run is making progress.
    fn touch_while_working(&self, run_id: &str) -> tokio::task::JoinHandle<()> {
        let progress = self.progress.clone();
        let run_id = run_id.to_owned();
        let every = (self.sequence_timeout / 4).clamp(Duration::from_millis(200), MAX_TOUCH);
        tokio::spawn(async move {
            loop {
                if let Err(error) = progress.touch(&run_id).await {
                    tracing::warn!(error = %error_chain(&error), "Could not touch the run's mark.");
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// `set` with its changes inline (loaded from the object store when it was too large for
    /// a message) and its digest, computed from the bytes as they arrived (`wire`, and the
    /// stored set's), so fields a newer planner added still count
    /// ([`bus::integrity::change_set_digest_of_wire`]). The inner `Err` is why the set is
    /// unusable (a dead letter).
    async fn inline(
        &self,
        wire: &[u8],
        mut set: v1::ChangeSet,
    ) -> Result<Result<(v1::ChangeSet, String), String>, Error> {
        let mut stored_bytes = None;
        if let Some(object) = set.stored.take() {
            let loaded = match self.bus.get_object_encoded(&object).await {
                Ok(encoded) => bus::decode::<v1::ChangeSet>(&encoded)
                    .map(|stored| (stored, encoded))
                    .map_err(|error| error.to_string()),
                Err(error) if error.is_permanent() => Err(error_chain(&error)),
                Err(error) => return Err(error.into()),
            };
            match loaded {
                Ok((stored, encoded)) => {
                    set.changes = stored.changes;
                    stored_bytes = Some(encoded);
                }
                Err(reason) => {
                    return Ok(Err(format!("the stored changes are unusable: {reason}")));
                }
            }
        }
        Ok(
            match bus::integrity::change_set_digest_of_wire(wire, stored_bytes.as_deref()) {
                Ok(digest) => Ok((set, digest)),
                Err(error) => Err(format!("the change set cannot be digested: {error}")),
            },
        )
    }

    /// Whether `set` may be applied: `run` is an APPLY run that is not held (a part's set
    /// of a streamed first sync may be applied while it is), and the change-set manifest the control plane recorded for it (from the planner's
    /// `PlanReady`) lists the set's digest.
    async fn verify(
        &self,
        run: &v1::Run,
        set: &v1::ChangeSet,
        digest: String,
    ) -> Result<Verdict, Error> {
        let run_id = &run.run_id;
        if run.mode() != v1::RunMode::Apply {
            return Ok(Verdict::Refused(format!(
                "run {run_id} is a simulation, which writes nothing"
            )));
        }
        let Some(reference) = &run.change_sets else {
            return Ok(match run.state() {
                v1::RunState::Requested | v1::RunState::Fetching | v1::RunState::Planning => {
                    Verdict::NotYet
                }
                state => Verdict::Refused(format!(
                    "the control plane records no change sets of run {run_id} (it is {})",
                    state.as_str_name()
                )),
            });
        };
        // A part of a streamed first sync only adds and is never held: its sets go on
        // while the complete plan waits for an approval.
        if run.state() == v1::RunState::Held && set.part == 0 {
            return Ok(Verdict::Refused(format!(
                "run {run_id} is held: its change sets are published once it is approved"
            )));
        }
        let manifest = match self.manifest(reference).await {
            Ok(manifest) => manifest,
            Err(error) if error.is_permanent() => {
                return Ok(Verdict::Refused(format!(
                    "the change-set manifest of run {run_id} is unusable: {}",
                    error_chain(&error)
                )));
            }
            Err(error) => return Err(error.into()),
        };
        let planning = matches!(
            run.state(),
            v1::RunState::Requested | v1::RunState::Fetching | v1::RunState::Planning
        );
        Ok(match bus::integrity::check_digest(&manifest, set, digest) {
            Ok(()) => Verdict::Verified,
            // Until the run applies, the newest manifest recorded may be a part's of a
            // streamed first sync: a later part's set, or a set of the complete plan, can
            // arrive before the control plane records the manifest that lists it.
            Err(_) if planning => Verdict::NotYet,
            Err(refusal) => Verdict::Refused(format!("run {run_id}: {refusal}")),
        })
    }

    /// The manifest `reference` names, from the one-entry cache or the plans bucket (its
    /// checksum checked).
    async fn manifest(
        &self,
        reference: &v1::ObjectRef,
    ) -> Result<Arc<v1::ChangeSetManifest>, bus::objects::ObjectError> {
        if let Ok(cached) = self.manifest.lock()
            && let Some((sha256, manifest)) = cached.as_ref()
            && *sha256 == reference.sha256
        {
            return Ok(Arc::clone(manifest));
        }
        let manifest = Arc::new(
            self.bus
                .get_object::<v1::ChangeSetManifest>(reference)
                .await?,
        );
        if let Ok(mut cached) = self.manifest.lock() {
            *cached = Some((reference.sha256.clone(), Arc::clone(&manifest)));
        }
        Ok(manifest)
    }

    /// Counts the set's results by operation and outcome, once per set.
    fn count(&self, changes: &[v1::Change], results: &[v1::ChangeResult]) {
        let mut counts: std::collections::BTreeMap<(&'static str, &'static str), u64> =
            Default::default();
        for (change, result) in changes.iter().zip(results) {
            let op = change.op().as_str_name();
            let outcome = result.outcome().as_str_name();
            *counts.entry((op, outcome)).or_default() += 1;
        }
        for ((op, outcome), count) in counts {
            self.metrics.changes.add(
                count,
                &[
                    KeyValue::new("product", self.product.as_str()),
                    KeyValue::new("op", op),
                    KeyValue::new("outcome", outcome),
                ],
            );
        }
    }
}

/// Whether a change set may be applied.
enum Verdict {
    Verified,
    /// The control plane has not recorded the run's plan yet: ask again later.
    NotYet,
    /// Never: the reason goes with the dead letter.
    Refused(String),
}
