//! Applying one change set to a product: each [`v1::Change`] becomes one [`Directory`]
//! call, in dependency order, with bounded concurrency, and every change gets a
//! [`v1::ChangeResult`]. An account's consecutive additions to groups are one call where
//! the product takes several groups in one request (Bitbucket's `add-groups`,
//! [`atlassian::Capabilities::groups_per_add`]); each still gets its own result.
//!
//! Changes run in the phases of the plan's order ([`model::plan::ChangeOp::phase`]): create
//! groups, create users, link, update, reactivate, add memberships, remove memberships,
//! deactivate and delete, remove groups. The changes of one phase run concurrently (at most
//! `concurrency` at once); a phase starts when the one before it has finished, so a
//! membership is added only after its account was created.
//!
//! An account is named by its product id, or (for one created earlier in the plan) by its
//! login. Writes need both the id and the current login, so an id is resolved to its login,
//! and a login to its id, from the accounts created in this set, else the cache, else a
//! listing of the product (read at most once per set). Links write nothing to the product:
//! they make the account managed in the cache. What succeeded is recorded in the
//! [`Working`] state (with the model's rules, for the account the change was resolved to),
//! which the caller writes back to the cache at the end of the set.

use std::sync::Mutex;
use std::time::SystemTime;

use atlassian::{
    AccountRef, AccountUpdate, Directory, LeadTarget, NewAccount, Outcome, RemoteAccount,
};
use futures::StreamExt;
use model::mapping::fold;
use proto::v1::{self, ChangeOp, ChangeOutcome, account_ref::Ref};
use telemetry::error_chain;
use tokio::sync::OnceCell;

use crate::state::Working;

/// The phase of an operation, as the plan's order gives it; `None` for an unknown one.
fn phase(op: ChangeOp) -> Option<usize> {
    cache::convert::op_from_proto(op).map(model::plan::ChangeOp::phase)
}

const PHASES: usize = model::plan::ChangeOp::PHASES;

/// One product call, with the accounts resolved.
enum Call {
    CreateGroup {
        group: String,
    },
    CreateUser {
        account: NewAccount,
    },
    Link {
        id: String,
    },
    Update {
        id: String,
        login: String,
        update: AccountUpdate,
    },
    Reactivate {
        id: String,
        login: String,
    },
    /// Hands over what the account leads, in order, then deactivates it.
    Deactivate {
        id: String,
        login: String,
        handovers: Vec<(LeadTarget, String)>,
    },
    /// Hands over what the account leads, in order, then deletes it.
    Delete {
        id: String,
        login: String,
        handovers: Vec<(LeadTarget, String)>,
    },
    AddMember {
        id: String,
        login: String,
        group: String,
    },
    RemoveMember {
        id: String,
        login: String,
        group: String,
    },
    RemoveGroup {
        group: String,
    },
}

/// What a call did: the product's outcome, and the id of a created account.
type Done = Result<(Outcome, Option<String>), atlassian::Error>;

/// Applies `changes` (one set, in plan order) and answers one result per change, in the
/// same order.
pub async fn apply<D: Directory>(
    directory: &D,
    run_id: &str,
    product: v1::Product,
    changes: &[v1::Change],
    working: &mut Working,
    concurrency: usize,
) -> Vec<v1::ChangeResult> {
    let mut results: Vec<Option<v1::ChangeResult>> = vec![None; changes.len()];
    let listing: OnceCell<Result<Vec<RemoteAccount>, String>> = OnceCell::new();
    // Set by the first account the product refuses for its licence limit: the set's other
    // creations and reactivations are then failed with that reason without a call each.
    let licence_full: Mutex<Option<String>> = Mutex::new(None);
    let result = |change: &v1::Change, outcome: ChangeOutcome, message: String| v1::ChangeResult {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        change_id: change.id.clone(),
        product: product as i32,
        outcome: outcome as i32,
        message,
        product_status: 0,
        account_id: String::new(),
        finished_at: Some(SystemTime::now().into()),
        attempts: 1,
    };

    for (idx, change) in changes.iter().enumerate() {
        let valid_op = phase(change.op()).is_some() && ChangeOp::try_from(change.op).is_ok();
        if change.product != product as i32 {
            results[idx] = Some(result(
                change,
                ChangeOutcome::Failed,
                format!("not a change of {}", product.as_str_name()),
            ));
        } else if !valid_op {
            results[idx] = Some(result(
                change,
                ChangeOutcome::Failed,
                format!("unknown operation {}", change.op),
            ));
        }
    }

    for current in 0..PHASES {
        let mut calls = Vec::new();
        for (idx, change) in changes.iter().enumerate() {
            if results[idx].is_some() || phase(change.op()) != Some(current) {
                continue;
            }
            match prepare(directory, change, working, &listing).await {
                Ok(call) => calls.push((idx, call)),
                Err(reason) => results[idx] = Some(result(change, ChangeOutcome::Failed, reason)),
            }
        }
        if calls.is_empty() {
            continue;
        }
        let licence_full = &licence_full;
        let units = units(calls, directory.capabilities().groups_per_add);
        let done: Vec<(usize, Call, Result<Done, String>)> = futures::stream::iter(units)
            .map(|unit| run_unit(directory, unit, licence_full))
            .buffer_unordered(concurrency.max(1))
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        for (idx, call, done) in done {
            let change = &changes[idx];
            let done = match done {
                Ok(done) => done,
                Err(refused) => {
                    results[idx] = Some(result(change, ChangeOutcome::Failed, refused));
                    continue;
                }
            };
            let finished = match done {
                Ok((outcome, created_id)) => {
                    let changed = !matches!(outcome, Outcome::Skipped { .. });
                    if changed {
                        record(working, change, &call, created_id.as_deref());
                    }
                    let (wire_outcome, message) = match outcome {
                        Outcome::Applied => (ChangeOutcome::Applied, String::new()),
                        Outcome::AlreadyDone => (ChangeOutcome::AlreadyDone, String::new()),
                        Outcome::Skipped { reason } => (ChangeOutcome::Skipped, reason),
                    };
                    v1::ChangeResult {
                        account_id: created_id.unwrap_or_default(),
                        ..result(change, wire_outcome, message)
                    }
                }
                Err(error) => v1::ChangeResult {
                    product_status: error.status().map(u32::from).unwrap_or(0),
                    ..result(change, ChangeOutcome::Failed, error_chain(&error))
                },
            };
            results[idx] = Some(finished);
        }
    }

    results
        .into_iter()
        .zip(changes)
        .map(|(finished, change)| {
            finished.unwrap_or_else(|| {
                result(
                    change,
                    ChangeOutcome::Failed,
                    "the change was not attempted".to_owned(),
                )
            })
        })
        .collect()
}

/// Calls made as one: a call alone, or an account's additions to several groups where the
/// product takes them in one request ([`atlassian::Capabilities::groups_per_add`]).
enum Unit {
    One(usize, Call),
    Adds {
        id: String,
        login: String,
        /// The change's index and the group, for each addition.
        groups: Vec<(usize, String)>,
    },
}

/// The calls of one phase as units: consecutive additions of one account (the plan orders
/// memberships by login) gathered, at most `groups_per_add` to a unit.
fn units(calls: Vec<(usize, Call)>, groups_per_add: usize) -> Vec<Unit> {
    let mut units = Vec::with_capacity(calls.len());
    for (idx, call) in calls {
        if groups_per_add > 1
            && let Call::AddMember { id, login, group } = call
        {
            if let Some(Unit::Adds {
                id: last, groups, ..
            }) = units.last_mut()
                && *last == id
                && groups.len() < groups_per_add
            {
                groups.push((idx, group));
            } else {
                units.push(Unit::Adds {
                    id,
                    login,
                    groups: vec![(idx, group)],
                });
            }
        } else {
            units.push(Unit::One(idx, call));
        }
    }
    units
}

/// Makes the calls of one unit: each call's index, the call, and what it did (or why it was
/// not made).
async fn run_unit<D: Directory>(
    directory: &D,
    unit: Unit,
    licence_full: &Mutex<Option<String>>,
) -> Vec<(usize, Call, Result<Done, String>)> {
    match unit {
        Unit::One(idx, call) => vec![run_one(directory, idx, call, licence_full).await],
        Unit::Adds { id, login, groups } => {
            let names: Vec<String> = groups.iter().map(|(_, group)| group.clone()).collect();
            let account = AccountRef {
                id: &id,
                login: &login,
            };
            let mut outcomes = directory
                .add_member_to_groups(&names, account)
                .await
                .into_iter();
            groups
                .into_iter()
                .map(|(idx, group)| {
                    let done = outcomes
                        .next()
                        .map(|outcome| outcome.map(|outcome| (outcome, None)))
                        .ok_or_else(|| "the product answered nothing for this group".to_owned());
                    let call = Call::AddMember {
                        id: id.clone(),
                        login: login.clone(),
                        group,
                    };
                    (idx, call, done)
                })
                .collect()
        }
    }
}

/// Makes one call, unless the set already met the licence limit and the call takes a seat.
async fn run_one<D: Directory>(
    directory: &D,
    idx: usize,
    call: Call,
    licence_full: &Mutex<Option<String>>,
) -> (usize, Call, Result<Done, String>) {
    let takes_seat = matches!(call, Call::CreateUser { .. } | Call::Reactivate { .. });
    if takes_seat && let Some(refused) = lock(licence_full).clone() {
        return (idx, call, Err(refused));
    }
    let done = execute(directory, &call).await;
    if takes_seat && let Err(error @ atlassian::Error::LicenseLimit { .. }) = &done {
        lock(licence_full).get_or_insert_with(|| {
            format!(
                "not attempted: an earlier account of this set was refused for the licence \
                 limit ({error}); a later run makes it once a seat is free"
            )
        });
    }
    (idx, call, Ok(done))
}

/// The guarded value, even after a panic elsewhere (it holds only a message).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every change of `changes` as failed, for `reason`, without touching the product: changes
/// that were never attempted (their run gave up) are failures, never skipped.
pub fn fail_all(
    run_id: &str,
    product: v1::Product,
    changes: &[v1::Change],
    reason: &str,
) -> Vec<v1::ChangeResult> {
    unattempted(run_id, product, changes, reason, ChangeOutcome::Failed)
}

/// Every change of `changes` as skipped, for `reason`, without touching the product.
pub fn skip_all(
    run_id: &str,
    product: v1::Product,
    changes: &[v1::Change],
    reason: &str,
) -> Vec<v1::ChangeResult> {
    unattempted(run_id, product, changes, reason, ChangeOutcome::Skipped)
}

/// Every change of `changes` with `outcome` and `reason`, none of them attempted.
fn unattempted(
    run_id: &str,
    product: v1::Product,
    changes: &[v1::Change],
    reason: &str,
    outcome: ChangeOutcome,
) -> Vec<v1::ChangeResult> {
    changes
        .iter()
        .map(|change| v1::ChangeResult {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            change_id: change.id.clone(),
            product: product as i32,
            outcome: outcome as i32,
            message: reason.to_owned(),
            product_status: 0,
            account_id: String::new(),
            finished_at: Some(SystemTime::now().into()),
            attempts: 1,
        })
        .collect()
}

/// Resolves the change's account and builds its call.
async fn prepare<D: Directory>(
    directory: &D,
    change: &v1::Change,
    working: &Working,
    listing: &OnceCell<Result<Vec<RemoteAccount>, String>>,
) -> Result<Call, String> {
    let group = || {
        if change.group.trim().is_empty() {
            return Err("the change names no group".to_owned());
        }
        Ok(change.group.clone())
    };
    let fields = || {
        change
            .fields
            .as_ref()
            .ok_or_else(|| "the change carries no account data".to_owned())
    };
    let op = change.op();
    if op == ChangeOp::CreateGroup {
        return Ok(Call::CreateGroup { group: group()? });
    }
    if op == ChangeOp::RemoveGroup {
        return Ok(Call::RemoveGroup { group: group()? });
    }
    if op == ChangeOp::CreateUser {
        let fields = fields()?;
        return Ok(Call::CreateUser {
            account: NewAccount {
                login: fields.login.clone(),
                display_name: fields.display_name.clone(),
                email: fields.email.clone(),
                password: None,
            },
        });
    }
    let (id, login) = resolve(directory, change.account.as_ref(), working, listing).await?;
    Ok(match op {
        ChangeOp::LinkUser => Call::Link { id },
        ChangeOp::UpdateUser => {
            let fields = fields()?;
            let previous = change.previous.clone().unwrap_or_default();
            let differs = |wanted: &str, before: &str| {
                (!wanted.is_empty() && wanted != before).then(|| wanted.to_owned())
            };
            let update = AccountUpdate {
                login: differs(&fields.login, &previous.login),
                display_name: differs(&fields.display_name, &previous.display_name),
                email: differs(&fields.email, &previous.email),
            };
            Call::Update { id, login, update }
        }
        ChangeOp::ReactivateUser => Call::Reactivate { id, login },
        ChangeOp::DeactivateUser => Call::Deactivate {
            id,
            login,
            handovers: handovers(change)?,
        },
        ChangeOp::DeleteUser => Call::Delete {
            id,
            login,
            handovers: handovers(change)?,
        },
        ChangeOp::AddMembership => Call::AddMember {
            id,
            login,
            group: group()?,
        },
        ChangeOp::RemoveMembership => Call::RemoveMember {
            id,
            login,
            group: group()?,
        },
        ChangeOp::CreateGroup
        | ChangeOp::RemoveGroup
        | ChangeOp::CreateUser
        | ChangeOp::Unspecified => {
            return Err(format!("unexpected operation {}", op.as_str_name()));
        }
    })
}

/// The leads a deactivation or deletion hands over first, with the login that takes each.
fn handovers(change: &v1::Change) -> Result<Vec<(LeadTarget, String)>, String> {
    change
        .handovers
        .iter()
        .map(|handover| {
            let target = handover
                .target
                .as_ref()
                .and_then(|target| target.target.as_ref())
                .ok_or_else(|| "a lead handover names no project or component".to_owned())?;
            if handover.to.trim().is_empty() {
                return Err("a lead handover names no account to hand the lead to".to_owned());
            }
            let target = match target {
                v1::lead_target::Target::ProjectKey(key) => {
                    LeadTarget::Project { key: key.clone() }
                }
                v1::lead_target::Target::Component(component) => LeadTarget::Component {
                    id: component.id.clone(),
                    project_key: component.project_key.clone(),
                    name: component.name.clone(),
                },
            };
            Ok((target, handover.to.clone()))
        })
        .collect()
}

/// The product id and current login of the account a change names.
async fn resolve<D: Directory>(
    directory: &D,
    account: Option<&v1::AccountRef>,
    working: &Working,
    listing: &OnceCell<Result<Vec<RemoteAccount>, String>>,
) -> Result<(String, String), String> {
    let Some(reference) = account.and_then(|account| account.r#ref.as_ref()) else {
        return Err("the change names no account".to_owned());
    };
    let cached = match reference {
        Ref::AccountId(id) => working.account(id),
        Ref::NewLogin(login) => working.account_by_login(login),
    };
    if let Some(account) = cached {
        return Ok((account.id.as_str().to_owned(), account.login.clone()));
    }
    let accounts = listing
        .get_or_init(|| async {
            directory
                .list_accounts()
                .await
                .map_err(|error| format!("looking the account up: {}", error_chain(&error)))
        })
        .await
        .as_ref()
        .map_err(Clone::clone)?;
    let found = accounts.iter().find(|account| match reference {
        Ref::AccountId(id) => &account.id == id,
        Ref::NewLogin(login) => fold(&account.login) == fold(login),
    });
    match (found, reference) {
        (Some(account), _) => Ok((account.id.clone(), account.login.clone())),
        (None, Ref::AccountId(id)) => Err(format!("no account with id {id}")),
        (None, Ref::NewLogin(login)) => {
            Err(format!("no account {login}; its creation did not succeed"))
        }
    }
}

/// Makes the product call.
async fn execute<D: Directory>(directory: &D, call: &Call) -> Done {
    let outcome = match call {
        Call::CreateGroup { group } => directory.create_group(group).await?,
        Call::CreateUser { account } => {
            let created = directory.create_account(account).await?;
            return Ok((created.outcome, Some(created.id)));
        }
        Call::Link { .. } => Outcome::Applied,
        Call::Update { id, login, update } => {
            if update == &AccountUpdate::default() {
                Outcome::AlreadyDone
            } else {
                directory
                    .update_account(AccountRef { id, login }, update)
                    .await?
            }
        }
        Call::Reactivate { id, login } => {
            directory
                .reactivate_account(AccountRef { id, login })
                .await?
        }
        Call::Deactivate {
            id,
            login,
            handovers,
        } => {
            hand_over(directory, handovers).await?;
            directory
                .deactivate_account(AccountRef { id, login })
                .await?
        }
        Call::Delete {
            id,
            login,
            handovers,
        } => {
            hand_over(directory, handovers).await?;
            directory.delete_account(AccountRef { id, login }).await?
        }
        Call::AddMember { id, login, group } => {
            directory
                .add_member(group, AccountRef { id, login })
                .await?
        }
        Call::RemoveMember { id, login, group } => {
            directory
                .remove_member(group, AccountRef { id, login })
                .await?
        }
        Call::RemoveGroup { group } => directory.delete_group(group).await?,
    };
    Ok((outcome, None))
}

/// Hands each lead to its new account, in order; the first refusal fails the change before
/// the account is touched.
async fn hand_over<D: Directory>(
    directory: &D,
    handovers: &[(LeadTarget, String)],
) -> Result<(), atlassian::Error> {
    for (target, to) in handovers {
        directory.hand_over_lead(target, to).await?;
    }
    Ok(())
}

/// Records in the working state what a call that succeeded did, for the account the call
/// resolved the change's account to.
fn record(working: &mut Working, change: &v1::Change, call: &Call, created_id: Option<&str>) {
    let account_id = match call {
        Call::CreateGroup { .. } | Call::CreateUser { .. } | Call::RemoveGroup { .. } => None,
        Call::Link { id }
        | Call::Update { id, .. }
        | Call::Reactivate { id, .. }
        | Call::Deactivate { id, .. }
        | Call::Delete { id, .. }
        | Call::AddMember { id, .. }
        | Call::RemoveMember { id, .. } => Some(id.as_str()),
    };
    working.record(change, account_id, created_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(idx: usize, id: &str, group: &str) -> (usize, Call) {
        let call = Call::AddMember {
            id: id.to_owned(),
            login: id.to_owned(),
            group: group.to_owned(),
        };
        (idx, call)
    }

    /// A unit of additions: the account, and each change's index and group.
    type Adds<'a> = (&'a str, Vec<(usize, &'a str)>);

    /// Each unit's additions, `None` for a call alone.
    fn shape(units: &[Unit]) -> Vec<Option<Adds<'_>>> {
        units
            .iter()
            .map(|unit| match unit {
                Unit::One(..) => None,
                Unit::Adds { id, groups, .. } => Some((
                    id.as_str(),
                    groups
                        .iter()
                        .map(|(idx, group)| (*idx, group.as_str()))
                        .collect(),
                )),
            })
            .collect()
    }

    fn calls() -> Vec<(usize, Call)> {
        vec![
            add(0, "ann", "a"),
            add(1, "ann", "b"),
            add(2, "ann", "c"),
            add(3, "bob", "a"),
            (
                4,
                Call::RemoveMember {
                    id: "bob".to_owned(),
                    login: "bob".to_owned(),
                    group: "b".to_owned(),
                },
            ),
            add(5, "bob", "c"),
        ]
    }

    #[test]
    fn an_accounts_consecutive_additions_become_one_unit_up_to_the_products_limit() {
        let units = units(calls(), 2);
        assert_eq!(
            shape(&units),
            [
                Some(("ann", vec![(0, "a"), (1, "b")])),
                Some(("ann", vec![(2, "c")])),
                Some(("bob", vec![(3, "a")])),
                None,
                Some(("bob", vec![(5, "c")])),
            ]
        );
    }

    #[test]
    fn a_product_without_several_groups_per_add_makes_every_call_alone() {
        let units = units(calls(), 1);
        assert_eq!(shape(&units), [None, None, None, None, None, None]);
    }
}
