//! The plan function: from a Keycloak [`Snapshot`], one product's [`ProductState`] and a
//! [`ValidPolicy`] to the exact, ordered [`Change`]s that bring the product in line, with a
//! readable reason for each, the conflicts and other problems found on the way, and whether the
//! safety limit holds the plan.
//!
//! [`plan`] is pure and total: it reads nothing but its arguments, returns the same plan for the
//! same inputs (whatever the order of their vectors), and never panics; odd input becomes a
//! [`Diagnostic`]. It indexes the inputs once, in tables keyed by borrowed strings, and allocates
//! only for the changes it emits; the two big joins and the per-account work each run on two
//! threads. A million users plan in 1.6 to 1.8 s on a shared two-core machine (`make
//! bench-plan`; the floor is 2 s).
//!
//! The work is in three steps, one module each: `index` reads the inputs into tables, `resolve`
//! decides what happens to each user and account, and `emit` writes the changes. Beside them,
//! `recreated` decides when an account follows its login to a re-created Keycloak user, and
//! `operations` which changes the policy's operation switches leave out, and how the plan says so.

mod emit;
mod index;
mod leads;
mod operations;
mod owners;
mod part;
mod protect;
mod recreated;
mod resolve;
mod safety;
mod seats;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use self::emit::{Output, emit_accounts, emit_create, emit_group_changes};
use self::index::{Ctx, Report};
pub use self::part::{Created, plan_part, without_parts};
use self::resolve::{Resolution, Resolved, dispositions, renames, resolve, settle_held_logins};
use crate::hash::fnv1a;
use crate::policy::ValidPolicy;
use crate::snapshot::{Snapshot, UserId};
use crate::state::{AccountId, LeadTarget, Product, ProductState};

/// What one sync would do to one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub product: Product,
    /// Ordered for safe application: by [`ChangeOp`], then by login or group name.
    pub changes: Vec<Change>,
    /// Keycloak users left alone because they clash with another user or account; sorted by login.
    pub conflicts: Vec<Conflict>,
    /// Everything else worth a look: odd input, missing data, operations the product lacks; sorted.
    pub diagnostics: Vec<Diagnostic>,
    /// Set when a safety limit holds the plan until a person approves it. A held plan still lists
    /// every change, for review.
    pub hold: Option<Hold>,
    /// What the safety limits counted, held or not.
    pub safety: SafetyCounts,
    /// The licence seats the plan needs and has, when the product reports its seats.
    pub seats: Option<SeatUse>,
}

/// The licence seats of one plan: the accounts it would create or reactivate, against the
/// seats free when the product state was read. A plan never needs more than are free: the
/// accounts beyond them are left out, each with a [`DiagnosticKind::NoSeat`] diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatUse {
    /// Accounts the policy would create or reactivate, before the limit.
    pub needed: u64,
    /// Seats taken when the product state was read.
    pub used: u64,
    /// Seats of the licence; `None` for an unlimited one.
    pub limit: Option<u64>,
    /// Accounts left out for want of a seat.
    pub left_out: u64,
}

impl SeatUse {
    /// Seats free when the product state was read; `None` when unlimited.
    pub fn free(&self) -> Option<u64> {
        self.limit.map(|limit| limit.saturating_sub(self.used))
    }
}

/// One change to a product, with everything an applier needs to perform it without looking anything
/// up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Deterministic: the same logical change has the same id in every run.
    pub id: ChangeId,
    pub product: Product,
    /// The Keycloak user the change is for; `None` for group changes.
    pub keycloak_user_id: Option<UserId>,
    pub action: Action,
    /// Why, for a person: "email changed from a@x to b@x", "no longer in required group /staff".
    pub reason: String,
}

/// The kinds of change, in the order a plan applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeOp {
    CreateGroup,
    CreateUser,
    LinkUser,
    UpdateUser,
    ReactivateUser,
    AddMembership,
    RemoveMembership,
    DeactivateUser,
    DeleteUser,
    RemoveGroup,
}

/// What a change does, with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateGroup {
        group: String,
    },
    /// Creates an active account; later changes of the plan name it by [`AccountRef::New`].
    CreateUser {
        fields: AccountFields,
    },
    /// Marks an existing account as managed by keysync (in keysync's cache; the product is not
    /// written).
    LinkUser {
        id: AccountId,
        login: String,
    },
    /// Sets the account's fields to `fields`; a different login is a rename. `account` names the
    /// account by its login before the change.
    UpdateUser {
        account: AccountRef,
        previous: AccountFields,
        fields: AccountFields,
    },
    ReactivateUser {
        account: AccountRef,
    },
    AddMembership {
        account: AccountRef,
        group: String,
    },
    RemoveMembership {
        account: AccountRef,
        group: String,
    },
    /// Deactivates the account, after handing over what it leads (Jira), in order.
    DeactivateUser {
        account: AccountRef,
        handovers: Vec<Handover>,
    },
    /// Deletes the account, after handing over the projects it leads (Jira), in order.
    DeleteUser {
        account: AccountRef,
        handovers: Vec<Handover>,
    },
    /// Removes a group keysync created; its memberships go with it.
    RemoveGroup {
        group: String,
    },
}

/// A project or component lead that passes to another account (`cleanup.lead_replacement`)
/// before the account that leads it is deactivated or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub target: LeadTarget,
    /// The login of the account that becomes the lead.
    pub to: String,
}

/// How a change names the account it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRef {
    /// An account the product has: its stable id, and its login at this point of the plan (after a
    /// rename earlier in the plan).
    Existing { id: AccountId, login: String },
    /// An account created earlier in the same plan, which has no id yet.
    New { login: String },
}

/// The account data a change writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFields {
    pub login: String,
    pub display_name: String,
    pub email: Option<String>,
}

/// A change id: 64-bit FNV-1a of the product, the operation, the Keycloak user and the change's
/// data, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeId(u64);

/// Why a plan waits for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Every limit that tripped, with its numbers, joined by `; `.
    pub reason: String,
}

/// What a plan takes away or hands over, and what it is measured against: the numbers the
/// safety limits ([`crate::policy::Safety`]) compare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SafetyCounts {
    /// Accounts deactivated, deleted, or stripped of their groups by cleanup.
    pub losing_access: usize,
    /// Accounts keysync managed before the plan.
    pub managed_accounts: usize,
    /// Memberships the plan removes, for any reason.
    pub removed_memberships: usize,
    /// Memberships of managed accounts before the plan.
    pub managed_memberships: usize,
    /// Groups the plan removes.
    pub removed_groups: usize,
    /// Existing accounts the plan links to Keycloak users.
    pub links: usize,
    /// Whether keysync managed no account in the product before the plan: linking the
    /// accounts that exist is then the expected migration, and links are not held.
    pub first_run: bool,
}

/// A Keycloak user keysync leaves alone because its account would clash with another user or
/// account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    pub login: String,
    pub keycloak_user_id: UserId,
    pub reason: String,
}

/// A problem that does not stop the plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub kind: DiagnosticKind,
    /// What it is about: a login, a group, an id.
    pub subject: String,
    pub message: String,
    pub keycloak_user_id: Option<UserId>,
}

/// The kinds of [`Diagnostic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiagnosticKind {
    /// The input contradicts itself: a duplicate id, a reference to something missing, a cycle of
    /// groups, a required group Keycloak does not have.
    InvalidInput,
    /// A user lacks what the policy needs: no login name, or no email for a new account.
    MissingData,
    /// A managed account matches a protected pattern, so keysync leaves it alone.
    Protected,
    /// The product cannot do what the user's state needs (rename, reactivate).
    Unsupported,
    /// Waits for a login that this plan frees; the next run completes it.
    Deferred,
    /// Several Keycloak groups map to one product group, whose members are their union.
    MergedGroups,
    /// A switch of `operations` that is off left changes out of the plan; the subject is the
    /// switch (`operations.create_users`) and the message counts what would have been done.
    Disabled,
    /// A managed account's Keycloak user was deleted and re-created under the same login: the
    /// account follows the login to the new user (a link, which counts toward
    /// `safety.max_links`).
    Recreated,
    /// The user is in no group of `scope.required_groups`, so the plan syncs it no further: it
    /// gets no account, and an account it has is cleaned up as `cleanup` says. The subject is the
    /// username.
    OutOfScope,
    /// The product refuses the user's login name (`crate::rules::LoginRules`: Confluence's
    /// documented user-name rules) and the policy maps none
    /// (`attributes.login.replace_forbidden`), so the user is not synced to this product: no
    /// account is made, and an account the user has is left alone. The message names the rule.
    NotSyncable,
    /// The account leads Jira projects or components, which Jira refuses to deactivate (or, for
    /// a project lead, to delete), and `cleanup.lead_replacement` names no account to hand them
    /// to (or one Jira does not have active): the account is left as it is. The message lists
    /// what it leads.
    Lead,
    /// The product's licence has no seat left for the account the user would get (created or
    /// reactivated): the plan leaves it out, and a later run makes it once a seat is free.
    NoSeat,
}

/// Plans the changes that make `state` match `snapshot` under `policy`. See the crate documentation
/// for the rules.
pub fn plan(snapshot: &Snapshot, state: &ProductState, policy: &ValidPolicy) -> Plan {
    plan_with(snapshot, state, policy, None)
}

/// The plan of a delta (event-driven sync, [`crate::delta`]): [`plan`] of the whole
/// `snapshot`, keeping only the changes, conflicts and diagnostics of the Keycloak users in
/// `scope` and the groups to create; no group is removed. The safety counts and the hold
/// are those of the changes kept. A user outside `scope` is never touched, whatever the
/// snapshot says of it.
pub fn plan_scoped(
    snapshot: &Snapshot,
    state: &ProductState,
    policy: &ValidPolicy,
    scope: &BTreeSet<UserId>,
) -> Plan {
    let mut planned = plan_with(snapshot, state, policy, Some(Arc::new(scope.clone())));
    planned
        .conflicts
        .retain(|conflict| scope.contains(&conflict.keycloak_user_id));
    planned.diagnostics.retain(|diagnostic| {
        diagnostic
            .keycloak_user_id
            .as_ref()
            .is_some_and(|user| scope.contains(user))
    });
    planned
}

fn plan_with(
    snapshot: &Snapshot,
    state: &ProductState,
    policy: &ValidPolicy,
    scope: Option<Arc<BTreeSet<UserId>>>,
) -> Plan {
    let mut report = Report::default();
    let owned = owners::view(snapshot, state, policy);
    let state = owned.state.as_ref();
    let ctx = Ctx::index(snapshot, state, policy, &owned.foreign, &mut report);

    let Resolved {
        mut resolutions,
        by_login,
        rename_candidates,
    } = resolve(&ctx, &mut report);
    let dispositions = dispositions(&ctx, &resolutions);
    let renames = renames(
        &ctx,
        &by_login,
        &rename_candidates,
        &dispositions,
        &mut report,
    );
    settle_held_logins(
        &ctx,
        &by_login,
        &dispositions,
        &renames,
        &mut resolutions,
        &mut report,
    );

    let mut out = Output::new(state.product, policy.policy().operations, scope);
    emit_group_changes(&ctx, &mut out);
    for (user_idx, resolution) in resolutions.iter().enumerate() {
        if let Resolution::Create = resolution {
            emit_create(&ctx, &mut out, user_idx);
        }
    }
    emit_accounts(&ctx, &mut out, &mut report, &renames, &dispositions);
    out.skipped.report(&mut report);

    let mut changes = out.changes;
    changes.sort_by(|left, right| {
        let (left_first, left_second) = left.action.sort_key();
        let (right_first, right_second) = right.action.sort_key();
        (left.op(), left_first, left_second, left.id).cmp(&(
            right.op(),
            right_first,
            right_second,
            right.id,
        ))
    });
    let seats = seats::limit(state, &mut changes, &mut report);
    let counts = safety::count(&ctx, &changes, out.losing_access);
    let hold = safety::hold(&ctx, &changes, &counts);
    let Report {
        mut conflicts,
        mut diagnostics,
    } = report;
    conflicts.sort();
    conflicts.dedup();
    diagnostics.sort();
    diagnostics.dedup();
    Plan {
        product: state.product,
        changes,
        conflicts,
        diagnostics,
        hold,
        safety: counts,
        seats,
    }
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes of one kind the plan has.
    pub fn count(&self, op: ChangeOp) -> usize {
        self.changes
            .iter()
            .filter(|change| change.op() == op)
            .count()
    }
}

impl Change {
    pub fn op(&self) -> ChangeOp {
        self.action.op()
    }
}

impl Action {
    pub fn op(&self) -> ChangeOp {
        match self {
            Action::CreateGroup { .. } => ChangeOp::CreateGroup,
            Action::CreateUser { .. } => ChangeOp::CreateUser,
            Action::LinkUser { .. } => ChangeOp::LinkUser,
            Action::UpdateUser { .. } => ChangeOp::UpdateUser,
            Action::ReactivateUser { .. } => ChangeOp::ReactivateUser,
            Action::AddMembership { .. } => ChangeOp::AddMembership,
            Action::RemoveMembership { .. } => ChangeOp::RemoveMembership,
            Action::DeactivateUser { .. } => ChangeOp::DeactivateUser,
            Action::DeleteUser { .. } => ChangeOp::DeleteUser,
            Action::RemoveGroup { .. } => ChangeOp::RemoveGroup,
        }
    }

    /// The key that orders changes of one kind: the login, then the group.
    fn sort_key(&self) -> (&str, &str) {
        match self {
            Action::CreateGroup { group } | Action::RemoveGroup { group } => (group, ""),
            Action::CreateUser { fields } => (&fields.login, ""),
            Action::LinkUser { login, .. } => (login, ""),
            Action::UpdateUser { account, .. }
            | Action::ReactivateUser { account }
            | Action::DeactivateUser { account, .. }
            | Action::DeleteUser { account, .. } => (account.login(), ""),
            Action::AddMembership { account, group }
            | Action::RemoveMembership { account, group } => (account.login(), group),
        }
    }
}

impl ChangeOp {
    /// Every kind, in plan order.
    pub const ALL: [ChangeOp; 10] = [
        ChangeOp::CreateGroup,
        ChangeOp::CreateUser,
        ChangeOp::LinkUser,
        ChangeOp::UpdateUser,
        ChangeOp::ReactivateUser,
        ChangeOp::AddMembership,
        ChangeOp::RemoveMembership,
        ChangeOp::DeactivateUser,
        ChangeOp::DeleteUser,
        ChangeOp::RemoveGroup,
    ];

    /// How many phases an applier runs changes in: one per kind, except that deactivations and
    /// deletions share one.
    pub const PHASES: usize = ChangeOp::ALL.len() - 1;

    /// The phase, from 0, in which an applier runs changes of this kind: the plan order, except
    /// that deactivations and deletions share a phase (they name different accounts, so they can
    /// run together). The changes of one phase may run at the same time; a phase starts when the
    /// one before it has finished, so a membership is added only after its account was created.
    pub fn phase(self) -> usize {
        // The declaration order is the plan order, as in `ALL` and `Ord`.
        let position = self as usize;
        if self > ChangeOp::DeactivateUser {
            position - 1
        } else {
            position
        }
    }

    /// The snake_case name, as in reasons, summaries and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::CreateGroup => "create_group",
            ChangeOp::CreateUser => "create_user",
            ChangeOp::LinkUser => "link_user",
            ChangeOp::UpdateUser => "update_user",
            ChangeOp::ReactivateUser => "reactivate_user",
            ChangeOp::AddMembership => "add_membership",
            ChangeOp::RemoveMembership => "remove_membership",
            ChangeOp::DeactivateUser => "deactivate_user",
            ChangeOp::DeleteUser => "delete_user",
            ChangeOp::RemoveGroup => "remove_group",
        }
    }
}

impl AccountRef {
    /// The account's login at this point of the plan.
    pub fn login(&self) -> &str {
        match self {
            AccountRef::Existing { login, .. } | AccountRef::New { login } => login,
        }
    }
}

impl ChangeId {
    /// The id as a number, for wire formats that want one.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The id of [`ChangeId::as_u64`], back from a wire format.
    pub fn from_u64(value: u64) -> ChangeId {
        ChangeId(value)
    }

    fn of(product: Product, keycloak_user_id: Option<&UserId>, action: &Action) -> ChangeId {
        let product = product.as_str();
        let op = action.op().as_str();
        let user = keycloak_user_id.map_or("", UserId::as_str);
        let account_key = |account: &AccountRef| -> (&'static str, String) {
            match account {
                AccountRef::Existing { id, .. } => ("id", id.as_str().to_owned()),
                AccountRef::New { login } => ("new", login.clone()),
            }
        };
        let hash = match action {
            Action::CreateGroup { group } | Action::RemoveGroup { group } => {
                fnv1a(&[product, op, user, group])
            }
            Action::CreateUser { fields } => fnv1a(&[
                product,
                op,
                user,
                &fields.login,
                &fields.display_name,
                fields.email.as_deref().unwrap_or(""),
            ]),
            Action::LinkUser { id, login } => fnv1a(&[product, op, user, id.as_str(), login]),
            Action::UpdateUser {
                account,
                previous,
                fields,
            } => {
                let (kind, key) = account_key(account);
                fnv1a(&[
                    product,
                    op,
                    user,
                    kind,
                    &key,
                    &previous.login,
                    &previous.display_name,
                    previous.email.as_deref().unwrap_or(""),
                    &fields.login,
                    &fields.display_name,
                    fields.email.as_deref().unwrap_or(""),
                ])
            }
            Action::ReactivateUser { account }
            | Action::DeactivateUser { account, .. }
            | Action::DeleteUser { account, .. } => {
                let (kind, key) = account_key(account);
                fnv1a(&[product, op, user, kind, &key])
            }
            Action::AddMembership { account, group }
            | Action::RemoveMembership { account, group } => {
                let (kind, key) = account_key(account);
                fnv1a(&[product, op, user, kind, &key, group])
            }
        };
        ChangeId(hash)
    }
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Reads the 16 hex digits that [`ChangeId`]'s `Display` writes.
impl std::str::FromStr for ChangeId {
    type Err = std::num::ParseIntError;

    fn from_str(text: &str) -> Result<ChangeId, Self::Err> {
        u64::from_str_radix(text, 16).map(ChangeId)
    }
}

impl fmt::Debug for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangeId({:016x})", self.0)
    }
}

impl fmt::Display for AccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountRef::Existing { id, login } => write!(f, "{login} [{id}]"),
            AccountRef::New { login } => write!(f, "{login} [new]"),
        }
    }
}

/// One line: the operation, what it acts on, and the reason.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.op().as_str();
        match &self.action {
            Action::CreateGroup { group } | Action::RemoveGroup { group } => {
                write!(f, "{op} {group}")?
            }
            Action::CreateUser { fields } => write!(
                f,
                "{op} {} \"{}\" <{}>",
                fields.login,
                fields.display_name,
                fields.email.as_deref().unwrap_or("")
            )?,
            Action::LinkUser { id, login } => write!(f, "{op} {login} [{id}]")?,
            Action::UpdateUser { account, .. }
            | Action::ReactivateUser { account }
            | Action::DeactivateUser { account, .. }
            | Action::DeleteUser { account, .. } => write!(f, "{op} {account}")?,
            Action::AddMembership { account, group } => write!(f, "{op} {account} to {group}")?,
            Action::RemoveMembership { account, group } => {
                write!(f, "{op} {account} from {group}")?
            }
        }
        write!(f, ": {}", self.reason)
    }
}

/// The plan as a person reads it: the hold, the changes, the conflicts and the diagnostics, one per
/// line.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(hold) = &self.hold {
            writeln!(f, "held: {}", hold.reason)?;
        }
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        for conflict in &self.conflicts {
            writeln!(
                f,
                "conflict {} ({}): {}",
                conflict.login, conflict.keycloak_user_id, conflict.reason
            )?;
        }
        for diagnostic in &self.diagnostics {
            writeln!(
                f,
                "{:?} {}: {}",
                diagnostic.kind, diagnostic.subject, diagnostic.message
            )?;
        }
        Ok(())
    }
}
