//! The plan function: from a Keycloak [`Snapshot`], one product's [`ProductState`] and a
//! [`ValidPolicy`] to the exact, ordered [`Change`]s that bring the product in line, with a
//! readable reason for each, the conflicts and other problems found on the way, and whether the
//! safety limit holds the plan.
//!
//! [`plan`] is pure and total: it reads nothing but its arguments, returns the same plan for the
//! same inputs (whatever the order of their vectors), and never panics; odd input becomes a
//! [`Diagnostic`]. It indexes the inputs once, in tables keyed by borrowed strings, and allocates
//! only for the changes it emits; the two big joins and the per-account work each run on two
//! threads. A million users plan in about 1.2 s.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::fmt;

use crate::hash::{BATCH, FastMap, IdKey, IdTable, fast_map, fnv1a, hash_str};
use crate::mapping::{self, fold, trim};
use crate::policy::{CleanupAction, Fallback, ValidPolicy};
use crate::snapshot::{GroupId, KeycloakUser, Snapshot, UserId};
use crate::state::{Account, AccountId, Product, ProductState};

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
    /// Set when the safety limit holds the plan until a person approves it. A held plan still lists
    /// every change, for review.
    pub hold: Option<Hold>,
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
    DeactivateUser {
        account: AccountRef,
    },
    DeleteUser {
        account: AccountRef,
    },
    /// Removes a group keysync created; its memberships go with it.
    RemoveGroup {
        group: String,
    },
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
    pub reason: String,
    /// Accounts that would be deactivated, deleted, or removed from their groups by cleanup.
    pub losing_access: usize,
    /// Accounts keysync managed before the plan.
    pub managed_accounts: usize,
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
}

/// Plans the changes that make `state` match `snapshot` under `policy`. See the crate documentation
/// for the rules.
pub fn plan(snapshot: &Snapshot, state: &ProductState, policy: &ValidPolicy) -> Plan {
    let mut report = Report::default();
    let mut product_groups = ProductGroups::from_state_and_defaults(state, policy);
    let keycloak_groups = KeycloakGroups::index(snapshot, policy, &mut product_groups, &mut report);
    // The Keycloak side and the product side are indexed at the same time, on two threads: each
    // joins millions of memberships, and neither needs the other.
    let (users, mut accounts) = std::thread::scope(|scope| {
        let product_side = scope.spawn(|| {
            let mut product_report = Report::default();
            let accounts = Accounts::index(state, &mut product_groups, &mut product_report);
            (accounts, product_report)
        });
        let users = Users::index(snapshot, policy, &keycloak_groups, &mut report);
        let (accounts, product_report) = joined(product_side.join());
        report.absorb(product_report);
        (users, accounts)
    });
    accounts.join_users(state, &users);
    product_groups.finish(policy, &mut report);
    let ctx = Ctx {
        snapshot,
        state,
        policy,
        keycloak_groups,
        product_groups,
        users,
        accounts,
    };

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

    let mut out = Output::new(state.product);
    emit_group_changes(&ctx, &mut out);
    for (user_idx, resolution) in resolutions.iter().enumerate() {
        if let Resolution::Create = resolution {
            emit_create(&ctx, &mut out, user_idx);
        }
    }
    // The accounts are planned in two halves on two threads; the halves' changes are merged and all
    // changes sorted below, so the result does not depend on the split.
    let half = dispositions.len() / 2;
    std::thread::scope(|scope| {
        let second_half = scope.spawn(|| {
            let mut second_out = Output::new(state.product);
            let mut second_report = Report::default();
            for (account_idx, disposition) in dispositions.iter().enumerate().skip(half) {
                emit_account(
                    &ctx,
                    &mut second_out,
                    &mut second_report,
                    &renames,
                    account_idx,
                    *disposition,
                );
            }
            (second_out, second_report)
        });
        for (account_idx, disposition) in dispositions.iter().enumerate().take(half) {
            emit_account(
                &ctx,
                &mut out,
                &mut report,
                &renames,
                account_idx,
                *disposition,
            );
        }
        let (second_out, second_report) = joined(second_half.join());
        out.changes.extend(second_out.changes);
        out.losing_access += second_out.losing_access;
        report.absorb(second_report);
    });

    let hold = safety_hold(&ctx, out.losing_access);
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
            | Action::DeactivateUser { account }
            | Action::DeleteUser { account } => (account.login(), ""),
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
            | Action::DeactivateUser { account }
            | Action::DeleteUser { account } => {
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
            | Action::DeactivateUser { account }
            | Action::DeleteUser { account } => write!(f, "{op} {account}")?,
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

// -------------------------------------------------------------------------------------------------
// Indexes. Everything below is private; indexes are `u32` positions into the input vectors.

const NONE: u32 = u32::MAX;

#[derive(Default)]
struct Report {
    conflicts: Vec<Conflict>,
    diagnostics: Vec<Diagnostic>,
}

impl Report {
    fn absorb(&mut self, other: Report) {
        self.conflicts.extend(other.conflicts);
        self.diagnostics.extend(other.diagnostics);
    }

    fn diagnose(
        &mut self,
        kind: DiagnosticKind,
        user: Option<&UserId>,
        subject: &str,
        message: String,
    ) {
        self.diagnostics.push(Diagnostic {
            kind,
            subject: subject.to_owned(),
            message,
            keycloak_user_id: user.cloned(),
        });
    }

    fn conflict(&mut self, user: &UserId, login: &str, reason: String) {
        self.conflicts.push(Conflict {
            login: login.to_owned(),
            keycloak_user_id: user.clone(),
            reason,
        });
    }
}

/// The result of a scoped thread: a panic there (a bug) continues as a panic here.
fn joined<T>(result: std::thread::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

struct Ctx<'a> {
    snapshot: &'a Snapshot,
    state: &'a ProductState,
    policy: &'a ValidPolicy,
    keycloak_groups: KeycloakGroups<'a>,
    product_groups: ProductGroups<'a>,
    users: Users<'a>,
    accounts: Accounts,
}

/// A compressed adjacency list: the sorted, deduplicated items of each owner, in one vector.
struct Csr {
    offsets: Vec<u32>,
    items: Vec<u32>,
}

impl Csr {
    fn build(n_owners: usize, pairs: &[(u32, u32)]) -> Csr {
        let mut offsets = vec![0u32; n_owners + 1];
        for &(owner, _) in pairs {
            offsets[owner as usize + 1] += 1;
        }
        for idx in 0..n_owners {
            offsets[idx + 1] += offsets[idx];
        }
        let mut cursor = offsets.clone();
        let mut items = vec![0u32; pairs.len()];
        for &(owner, item) in pairs {
            let slot = &mut cursor[owner as usize];
            items[*slot as usize] = item;
            *slot += 1;
        }
        drop(cursor);
        let mut write = 0usize;
        let mut read_start = 0usize;
        for owner in 0..n_owners {
            let read_end = offsets[owner + 1] as usize;
            items[read_start..read_end].sort_unstable();
            let write_start = write;
            for read in read_start..read_end {
                let item = items[read];
                if write == write_start || items[write - 1] != item {
                    items[write] = item;
                    write += 1;
                }
            }
            offsets[owner] = write_start as u32;
            read_start = read_end;
        }
        offsets[n_owners] = write as u32;
        items.truncate(write);
        Csr { offsets, items }
    }

    fn get(&self, owner: usize) -> &[u32] {
        &self.items[self.offsets[owner] as usize..self.offsets[owner + 1] as usize]
    }
}

#[derive(Clone, Copy, Default)]
struct GroupFlags {
    /// Listed in the product's groups, or implied by one of its memberships.
    in_state: bool,
    /// Listed in the product's groups.
    listed: bool,
    /// Created by keysync (from the cache).
    state_managed: bool,
    /// A Keycloak group maps to it in this run.
    mapped: bool,
    default_new: bool,
    default_all: bool,
    /// Removed by this plan.
    removed: bool,
}

/// Where a product group name was seen, from the least to the most authoritative spelling.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NameSource {
    Policy,
    Membership,
    Listed,
}

/// Every product group the plan knows of, from the product, the defaults and the mapping, by folded
/// name.
struct ProductGroups<'a> {
    index: FastMap<Cow<'a, str>, u32>,
    /// The product's own group list by exact name: memberships name their group exactly as the list
    /// does, so this finds almost all of them without folding or reading the name.
    by_state_name: IdTable<'a>,
    names: Vec<Cow<'a, str>>,
    /// Where each name's spelling comes from.
    name_ranks: Vec<NameSource>,
    flags: Vec<GroupFlags>,
    /// For mapped groups: how many Keycloak groups map here, and the smallest of their paths.
    sources: Vec<(u32, &'a str)>,
    default_new: Vec<u32>,
    default_all: Vec<u32>,
}

impl<'a> ProductGroups<'a> {
    fn from_state_and_defaults(
        state: &'a ProductState,
        policy: &'a ValidPolicy,
    ) -> ProductGroups<'a> {
        let mut groups = ProductGroups {
            index: fast_map(state.groups.len()),
            by_state_name: IdTable::with_capacity(state.groups.len()),
            names: Vec::new(),
            name_ranks: Vec::new(),
            flags: Vec::new(),
            sources: Vec::new(),
            default_new: Vec::new(),
            default_all: Vec::new(),
        };
        for group in &state.groups {
            let idx = groups.intern(Cow::Borrowed(trim(group.name.as_str())), NameSource::Listed);
            groups.by_state_name.insert(group.name.key(), idx);
            groups.flags[idx as usize].state_managed |= group.managed;
        }
        let settings = &policy.policy().groups;
        for name in &settings.default_for_new_users {
            let idx = groups.intern(Cow::Borrowed(trim(name)), NameSource::Policy);
            groups.flags[idx as usize].default_new = true;
            groups.default_new.push(idx);
        }
        for name in &settings.default_for_all_users {
            let idx = groups.intern(Cow::Borrowed(trim(name)), NameSource::Policy);
            groups.flags[idx as usize].default_all = true;
            groups.default_all.push(idx);
        }
        groups
    }

    /// The index of a group, added if new. Of several spellings of one name, the product's group
    /// list wins, then its memberships, then the policy; among equals the smallest, so the choice
    /// does not depend on input order.
    fn intern(&mut self, name: Cow<'a, str>, source: NameSource) -> u32 {
        let key = match &name {
            Cow::Borrowed(text) => fold(text),
            Cow::Owned(text) => Cow::Owned(fold(text).into_owned()),
        };
        if let Some(&idx) = self.index.get(key.as_ref()) {
            let idx_usize = idx as usize;
            let rank = &mut self.name_ranks[idx_usize];
            if source > *rank || (source == *rank && name < self.names[idx_usize]) {
                self.names[idx_usize] = name;
                *rank = source;
            }
            let flags = &mut self.flags[idx_usize];
            flags.in_state |= source != NameSource::Policy;
            flags.listed |= source == NameSource::Listed;
            return idx;
        }
        let idx = self.names.len() as u32;
        self.index.insert(key, idx);
        self.names.push(name);
        self.name_ranks.push(source);
        self.flags.push(GroupFlags {
            in_state: source != NameSource::Policy,
            listed: source == NameSource::Listed,
            ..GroupFlags::default()
        });
        self.sources.push((0, ""));
        idx
    }

    fn is_default(&self, idx: u32) -> bool {
        let flags = self.flags[idx as usize];
        flags.default_new || flags.default_all
    }

    /// Whether keysync removes members who should not be in the group: it is mapped or keysync
    /// created it, it is not a default group (unless mapped too, when the mapping decides), and it
    /// is not being removed.
    fn prunes(&self, idx: u32) -> bool {
        let flags = self.flags[idx as usize];
        (flags.mapped || (flags.state_managed && !self.is_default(idx))) && !flags.removed
    }

    /// Whether cleanup's `remove_groups` takes an account out of the group: every managed or
    /// default group.
    fn strips(&self, idx: u32) -> bool {
        let flags = self.flags[idx as usize];
        (flags.mapped || flags.state_managed || self.is_default(idx)) && !flags.removed
    }

    /// Marks the groups this plan removes, and reports groups several Keycloak groups share and
    /// groups only memberships mention.
    fn finish(&mut self, policy: &ValidPolicy, report: &mut Report) {
        let remove_unmapped = policy.policy().groups.remove_unmapped;
        for idx in 0..self.names.len() {
            let flags = self.flags[idx];
            if remove_unmapped
                && flags.in_state
                && flags.state_managed
                && !flags.mapped
                && !self.is_default(idx as u32)
            {
                self.flags[idx].removed = true;
            }
            if flags.in_state && !flags.listed {
                report.diagnose(
                    DiagnosticKind::InvalidInput,
                    None,
                    &self.names[idx],
                    "the product has memberships of this group but does not list the group"
                        .to_owned(),
                );
            }
            let (n_sources, first_path) = self.sources[idx];
            if n_sources > 1 && !policy.groups.is_explicit() {
                report.diagnose(
                    DiagnosticKind::MergedGroups,
                    None,
                    &self.names[idx],
                    format!(
                        "{n_sources} Keycloak groups map to this product group ({first_path} \
                         and {} more); its members are their union",
                        n_sources - 1
                    ),
                );
            }
        }
    }
}

struct KeycloakGroups<'a> {
    by_id: FastMap<IdKey<'a>, u32>,
    /// False for groups whose id occurs more than once; they are ignored.
    usable: Vec<bool>,
    /// Required, or (when subgroups count) below a required group.
    in_scope: Vec<bool>,
    /// The product group each maps to, or [`NONE`].
    target: Vec<u32>,
}

impl<'a> KeycloakGroups<'a> {
    fn index(
        snapshot: &'a Snapshot,
        policy: &'a ValidPolicy,
        product_groups: &mut ProductGroups<'a>,
        report: &mut Report,
    ) -> KeycloakGroups<'a> {
        let groups = &snapshot.groups;
        let mut by_id: FastMap<IdKey<'_>, u32> = fast_map(groups.len());
        let mut usable = vec![true; groups.len()];
        for (idx, group) in groups.iter().enumerate() {
            match by_id.entry(group.id.key()) {
                Entry::Occupied(entry) => {
                    usable[*entry.get() as usize] = false;
                    usable[idx] = false;
                    report.diagnose(
                        DiagnosticKind::InvalidInput,
                        None,
                        group.id.as_str(),
                        "this Keycloak group id occurs more than once; the groups are ignored"
                            .to_owned(),
                    );
                }
                Entry::Vacant(entry) => {
                    entry.insert(idx as u32);
                }
            }
        }
        let lookup = |id: &GroupId| {
            by_id
                .get(&id.key())
                .copied()
                .filter(|&idx| usable[idx as usize])
        };

        let scope = &policy.policy().scope;
        let mut required: FastMap<&str, bool> = scope
            .required_groups
            .iter()
            .map(|path| (path.as_str(), false))
            .collect();
        let mut directly = vec![false; groups.len()];
        for (idx, group) in groups.iter().enumerate() {
            if let Some(found) = required.get_mut(group.path.as_str()) {
                *found = true;
                directly[idx] = usable[idx];
            }
        }
        for (path, found) in &required {
            if !found {
                report.diagnose(
                    DiagnosticKind::InvalidInput,
                    None,
                    path,
                    "this required group is not in the Keycloak snapshot, so none of its \
                         members are in scope"
                        .to_owned(),
                );
            }
        }

        let mut parent = vec![NONE; groups.len()];
        for (idx, group) in groups.iter().enumerate() {
            let Some(parent_id) = &group.parent_id else {
                continue;
            };
            match lookup(parent_id) {
                Some(parent_idx) => parent[idx] = parent_idx,
                None => report.diagnose(
                    DiagnosticKind::InvalidInput,
                    None,
                    &group.path,
                    format!(
                        "parent group id {parent_id} is not in the snapshot; treated as a \
                         top-level group"
                    ),
                ),
            }
        }
        let in_scope = if scope.include_subgroups {
            below_required(snapshot, &parent, &directly, report)
        } else {
            directly
        };

        let mut target = vec![NONE; groups.len()];
        for (idx, group) in groups.iter().enumerate() {
            if !usable[idx] {
                continue;
            }
            let Some(name) = policy.groups.product_group(group) else {
                continue;
            };
            if name.is_empty() {
                report.diagnose(
                    DiagnosticKind::InvalidInput,
                    None,
                    &group.path,
                    "this Keycloak group maps to an empty product group name; it is not synced"
                        .to_owned(),
                );
                continue;
            }
            let product_idx = product_groups.intern(name, NameSource::Policy);
            product_groups.flags[product_idx as usize].mapped = true;
            let (n_sources, first_path) = &mut product_groups.sources[product_idx as usize];
            if *n_sources == 0 || group.path.as_str() < *first_path {
                *first_path = group.path.as_str();
            }
            *n_sources += 1;
            target[idx] = product_idx;
        }
        KeycloakGroups {
            by_id,
            usable,
            in_scope,
            target,
        }
    }
}

/// For each group, whether it or an ancestor is directly required: each parent chain is walked
/// once, and a cycle (which Keycloak does not allow, but input may have) is reported and treated as
/// one unit.
fn below_required(
    snapshot: &Snapshot,
    parent: &[u32],
    directly: &[bool],
    report: &mut Report,
) -> Vec<bool> {
    const UNKNOWN: u8 = 0;
    const NO: u8 = 1;
    const YES: u8 = 2;
    let n_groups = parent.len();
    let mut memo = vec![UNKNOWN; n_groups];
    let mut walk_of = vec![NONE; n_groups];
    let mut position = vec![0u32; n_groups];
    let mut chain: Vec<u32> = Vec::new();
    for start in 0..n_groups {
        if memo[start] != UNKNOWN {
            continue;
        }
        chain.clear();
        let mut node = start as u32;
        let mut end_value = false;
        let mut cycle_start = None;
        loop {
            let node_idx = node as usize;
            if memo[node_idx] != UNKNOWN {
                end_value = memo[node_idx] == YES;
                break;
            }
            if walk_of[node_idx] == start as u32 {
                cycle_start = Some(position[node_idx] as usize);
                break;
            }
            walk_of[node_idx] = start as u32;
            position[node_idx] = chain.len() as u32;
            chain.push(node);
            if parent[node_idx] == NONE {
                break;
            }
            node = parent[node_idx];
        }
        let mut below = end_value;
        for &node in chain.iter().rev() {
            below |= directly[node as usize];
            memo[node as usize] = if below { YES } else { NO };
        }
        if let Some(cycle_start) = cycle_start {
            let value = memo[chain[cycle_start] as usize];
            let cycle = &chain[cycle_start..];
            for &node in cycle {
                memo[node as usize] = value;
            }
            let mut paths: Vec<&str> = cycle
                .iter()
                .map(|&node| snapshot.groups[node as usize].path.as_str())
                .collect();
            paths.sort_unstable();
            report.diagnose(
                DiagnosticKind::InvalidInput,
                None,
                paths[0],
                format!(
                    "the parent links of groups {} form a cycle",
                    paths.join(", ")
                ),
            );
        }
    }
    memo.into_iter().map(|value| value == YES).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UserStatus {
    /// A duplicate id or no login name: nothing is planned for the user, and its account is left
    /// alone.
    Ignored,
    OutOfScope,
    InScope,
}

struct Users<'a> {
    by_id: IdTable<'a>,
    /// Keycloak groups of each user.
    groups: Csr,
    status: Vec<UserStatus>,
    /// The login name of each user in scope; empty for the others.
    logins: Vec<Cow<'a, str>>,
}

impl<'a> Users<'a> {
    fn index(
        snapshot: &'a Snapshot,
        policy: &'a ValidPolicy,
        keycloak_groups: &KeycloakGroups<'a>,
        report: &mut Report,
    ) -> Users<'a> {
        let users = &snapshot.users;
        let mut by_id = IdTable::with_capacity(users.len());
        let mut status = vec![UserStatus::OutOfScope; users.len()];
        let mut touched = 0u64;
        for (idx, user) in users.iter().enumerate() {
            if idx % BATCH == 0 {
                let batch = &users[idx..(idx + BATCH).min(users.len())];
                touched ^= batch
                    .iter()
                    .fold(0, |acc, user| acc ^ by_id.touch(&user.id.key()));
            }
            if let Some(first) = by_id.insert(user.id.key(), idx as u32) {
                {
                    status[first as usize] = UserStatus::Ignored;
                    status[idx] = UserStatus::Ignored;
                    report.diagnose(
                        DiagnosticKind::InvalidInput,
                        Some(&user.id),
                        user.id.as_str(),
                        "this Keycloak user id occurs more than once; the users and their \
                             account are left alone"
                            .to_owned(),
                    );
                }
            }
        }

        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(snapshot.memberships.len());
        let mut unknown_users: BTreeMap<&str, u32> = BTreeMap::new();
        let mut unknown_groups: BTreeMap<&str, u32> = BTreeMap::new();
        // Memberships usually come group by group, so the last group lookup is worth remembering.
        let mut last_group: Option<(&GroupId, Option<u32>)> = None;
        for (membership_idx, membership) in snapshot.memberships.iter().enumerate() {
            if membership_idx % BATCH == 0 {
                let batch = &snapshot.memberships
                    [membership_idx..(membership_idx + BATCH).min(snapshot.memberships.len())];
                touched ^= batch.iter().fold(0, |acc, membership| {
                    acc ^ by_id.touch(&membership.user_id.key())
                });
            }
            let group_id = &membership.group_id;
            let group_idx = match last_group {
                Some((id, idx)) if id == group_id => idx,
                _ => {
                    let idx = keycloak_groups.by_id.get(&group_id.key()).copied();
                    last_group = Some((group_id, idx));
                    idx
                }
            };
            let user_idx = by_id.get(&membership.user_id.key());
            match (user_idx, group_idx) {
                (Some(user_idx), Some(group_idx)) => {
                    if keycloak_groups.usable[group_idx as usize]
                        && status[user_idx as usize] != UserStatus::Ignored
                    {
                        pairs.push((user_idx, group_idx));
                    }
                }
                (user_idx, group_idx) => {
                    if user_idx.is_none() {
                        *unknown_users
                            .entry(membership.user_id.as_str())
                            .or_default() += 1;
                    }
                    if group_idx.is_none() {
                        *unknown_groups.entry(group_id.as_str()).or_default() += 1;
                    }
                }
            }
        }
        for (id, count) in unknown_users {
            report.diagnose(
                DiagnosticKind::InvalidInput,
                None,
                id,
                format!(
                    "{count} membership(s) name this user id, which is not in the snapshot; ignored"
                ),
            );
        }
        for (id, count) in unknown_groups {
            report.diagnose(
                DiagnosticKind::InvalidInput,
                None,
                id,
                format!(
                    "{count} membership(s) name this group id, which is not in the \
                     snapshot; ignored"
                ),
            );
        }
        std::hint::black_box(touched);
        let groups = Csr::build(users.len(), &pairs);
        drop(pairs);

        let everyone = policy.policy().scope.required_groups.is_empty();
        let login_mapping = &policy.policy().attributes.login;
        let mut logins = vec![Cow::Borrowed(""); users.len()];
        for (idx, user) in users.iter().enumerate() {
            if status[idx] == UserStatus::Ignored {
                continue;
            }
            let in_scope = everyone
                || groups
                    .get(idx)
                    .iter()
                    .any(|&group| keycloak_groups.in_scope[group as usize]);
            if !in_scope {
                continue;
            }
            match mapping::login(login_mapping, user) {
                Some(login) => {
                    logins[idx] = login;
                    status[idx] = UserStatus::InScope;
                }
                None => {
                    status[idx] = UserStatus::Ignored;
                    report.diagnose(
                        DiagnosticKind::MissingData,
                        Some(&user.id),
                        &user.username,
                        "the login name's source is missing or empty; the user and its account \
                             are left alone"
                            .to_owned(),
                    );
                }
            }
        }
        Users {
            by_id,
            groups,
            status,
            logins,
        }
    }
}

/// Marks a user with more than one managed account in [`Accounts::account_of_user`].
const MANY: u32 = u32::MAX - 1;

struct Accounts {
    /// False for accounts whose id occurs more than once; they are left alone.
    usable: Vec<bool>,
    /// For each usable managed account, its Keycloak user, or [`NONE`] when the snapshot does not
    /// have it.
    user_of: Vec<u32>,
    /// For each Keycloak user, its managed account, [`NONE`], or [`MANY`].
    account_of_user: Vec<u32>,
    /// Product groups of each account.
    groups: Csr,
}

impl Accounts {
    /// Indexes the product's accounts and memberships; [`Accounts::join_users`] then links them to the
    /// Keycloak users.
    fn index<'a>(
        state: &'a ProductState,
        product_groups: &mut ProductGroups<'a>,
        report: &mut Report,
    ) -> Accounts {
        let accounts = &state.accounts;
        let mut by_id = IdTable::with_capacity(accounts.len());
        let mut usable = vec![true; accounts.len()];
        let mut touched = 0u64;
        for (idx, account) in accounts.iter().enumerate() {
            if idx % BATCH == 0 {
                let batch = &accounts[idx..(idx + BATCH).min(accounts.len())];
                touched ^= batch
                    .iter()
                    .fold(0, |acc, account| acc ^ by_id.touch(&account.id.key()));
            }
            if let Some(first) = by_id.insert(account.id.key(), idx as u32) {
                {
                    usable[first as usize] = false;
                    usable[idx] = false;
                    report.diagnose(
                        DiagnosticKind::InvalidInput,
                        None,
                        account.id.as_str(),
                        "this account id occurs more than once in the product state; the \
                             accounts are left alone"
                            .to_owned(),
                    );
                }
            }
        }
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(state.memberships.len());
        let mut unknown_accounts: BTreeMap<&str, u32> = BTreeMap::new();
        // Memberships usually come account by account, so the last account lookup is worth
        // remembering.
        let mut last_account: Option<(&AccountId, Option<u32>)> = None;
        for (membership_idx, membership) in state.memberships.iter().enumerate() {
            if membership_idx % BATCH == 0 {
                let batch = &state.memberships
                    [membership_idx..(membership_idx + BATCH).min(state.memberships.len())];
                touched ^= batch.iter().fold(0, |acc, membership| {
                    acc ^ by_id.touch(&membership.account_id.key())
                        ^ product_groups.by_state_name.touch(&membership.group.key())
                });
            }
            let account_id = &membership.account_id;
            let account_idx = match last_account {
                Some((id, idx)) if id == account_id => idx,
                _ => {
                    let idx = by_id.get(&account_id.key());
                    last_account = Some((account_id, idx));
                    idx
                }
            };
            let Some(account_idx) = account_idx else {
                *unknown_accounts.entry(account_id.as_str()).or_default() += 1;
                continue;
            };
            let group_idx = match product_groups.by_state_name.get(&membership.group.key()) {
                Some(idx) => idx,
                None => {
                    let group_name = Cow::Borrowed(trim(membership.group.as_str()));
                    product_groups.intern(group_name, NameSource::Membership)
                }
            };
            pairs.push((account_idx, group_idx));
        }
        for (id, count) in unknown_accounts {
            report.diagnose(
                DiagnosticKind::InvalidInput,
                None,
                id,
                format!(
                    "{count} membership(s) in the product state name this account id, \
                     which it does not list"
                ),
            );
        }
        std::hint::black_box(touched);
        let groups = Csr::build(accounts.len(), &pairs);
        Accounts {
            usable,
            user_of: Vec::new(),
            account_of_user: Vec::new(),
            groups,
        }
    }
    /// Finds each managed account's Keycloak user through the users' index, so the join needs no
    /// index of its own.
    fn join_users(&mut self, state: &ProductState, users: &Users<'_>) {
        let accounts = &state.accounts;
        let mut user_of = vec![NONE; accounts.len()];
        let mut account_of_user = vec![NONE; users.status.len()];
        let mut touched = 0u64;
        for (idx, account) in accounts.iter().enumerate() {
            if idx % BATCH == 0 {
                let batch = &accounts[idx..(idx + BATCH).min(accounts.len())];
                let keys = batch
                    .iter()
                    .filter_map(|account| account.keycloak_user_id.as_ref());
                touched ^= keys.fold(0, |acc, user_id| acc ^ users.by_id.touch(&user_id.key()));
            }
            let Some(user_id) = &account.keycloak_user_id else {
                continue;
            };
            if !self.usable[idx] {
                continue;
            }
            let Some(user_idx) = users.by_id.get(&user_id.key()) else {
                continue;
            };
            user_of[idx] = user_idx;
            let slot = &mut account_of_user[user_idx as usize];
            *slot = if *slot == NONE { idx as u32 } else { MANY };
        }
        std::hint::black_box(touched);
        self.user_of = user_of;
        self.account_of_user = account_of_user;
    }
}

// -------------------------------------------------------------------------------------------------
// Deciding what happens to each user and account.

#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkedBy {
    Login,
    Email,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resolution {
    /// Nothing is planned for the user: out of scope, ignored, disabled without an account, or in a
    /// conflict.
    Nothing,
    Managed(u32),
    Link(u32, LinkedBy),
    Create,
    /// Would be created or linked, but the login belongs to another user's account, or to several
    /// accounts.
    Held,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Untouched,
    Sync {
        user: u32,
        link: Option<LinkedBy>,
    },
    /// The account's user is gone from Keycloak (`None`) or out of scope.
    Cleanup {
        user: Option<u32>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rename {
    Renamed,
    /// The new login belongs to another account.
    Blocked,
    Refused,
}

/// Accounts by folded login (the one with the smallest id, and how many), only for the logins the
/// plan looks up: the logins of users who need an account and the new logins of renamed users.
/// Indexing every account would cost more than the rest of the plan.
type LoginIndex<'c> = FastMap<&'c str, (u32, u32)>;

struct Resolved<'c> {
    /// What happens to each Keycloak user.
    resolutions: Vec<Resolution>,
    by_login: LoginIndex<'c>,
    /// Accounts whose user's login may differ from theirs: managed accounts whose login changed in
    /// Keycloak, and accounts being linked.
    rename_candidates: Vec<u32>,
}

/// What happens to each Keycloak user: matched to its managed account, linked to an existing one,
/// created, or nothing. Reports the conflicts.
fn resolve<'c>(ctx: &'c Ctx<'_>, report: &mut Report) -> Resolved<'c> {
    let users = &ctx.snapshot.users;
    let policy = ctx.policy;
    let accounts = &ctx.state.accounts;
    let mut resolutions = vec![Resolution::Nothing; users.len()];

    // The login of every user in scope, to find two users with one login. Hashes are computed a
    // batch at a time and their slots touched before inserting, as in the other joins of a million
    // keys.
    let login_key = |idx: usize| {
        let login = ctx.users.logins[idx].as_ref();
        IdKey {
            hash: hash_str(login),
            text: login,
        }
    };
    let mut claims = IdTable::with_capacity(users.len());
    let mut clashing_logins: FastMap<&str, ()> = fast_map(0);
    let mut keys: Vec<(usize, IdKey<'_>)> = Vec::with_capacity(BATCH);
    let mut touched = 0u64;
    for batch_start in (0..users.len()).step_by(BATCH) {
        keys.clear();
        for idx in batch_start..(batch_start + BATCH).min(users.len()) {
            if ctx.users.status[idx] == UserStatus::InScope {
                let key = login_key(idx);
                touched ^= claims.touch(&key);
                keys.push((idx, key));
            }
        }
        for &(idx, key) in &keys {
            if claims.insert(key, idx as u32).is_some() {
                clashing_logins.insert(key.text, ());
            }
        }
    }
    std::hint::black_box(touched);
    let is_claimed = |login: &str| {
        claims
            .get(&IdKey {
                hash: hash_str(login),
                text: login,
            })
            .is_some()
    };
    let mut clashes: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    if !clashing_logins.is_empty() {
        for (idx, login) in ctx.users.logins.iter().enumerate() {
            let clashing = clashing_logins.contains_key(login.as_ref());
            if ctx.users.status[idx] == UserStatus::InScope && clashing {
                clashes.entry(login.as_ref()).or_default().push(idx as u32);
            }
        }
    }
    for (login, clashing) in &clashes {
        let mut names: Vec<String> = clashing
            .iter()
            .map(|&idx| {
                format!(
                    "{} ({})",
                    users[idx as usize].username, users[idx as usize].id
                )
            })
            .collect();
        names.sort();
        let reason = format!(
            "Keycloak users {} all map to this login; none of them is synced",
            names.join(", ")
        );
        for &idx in clashing {
            report.conflict(&users[idx as usize].id, login, reason.clone());
        }
    }

    let linking = &policy.policy().linking;
    let email_mapping = &policy.policy().attributes.email;
    let mut by_email: FastMap<Cow<'_, str>, (u32, u32)> = fast_map(0);
    if linking.by_email {
        for (idx, account) in accounts.iter().enumerate() {
            let Some(email) = &account.email else {
                continue;
            };
            let linkable = ctx.accounts.usable[idx]
                && !account.is_managed()
                && !is_claimed(fold(trim(&account.login)).as_ref())
                && !policy.is_protected(&account.login);
            if linkable {
                by_email
                    .entry(fold(trim(email)))
                    .and_modify(|(_, count)| *count += 1)
                    .or_insert((idx as u32, 1));
            }
        }
    }

    let mut by_login: LoginIndex<'c> = fast_map(0);
    let mut rename_candidates: Vec<u32> = Vec::new();
    let mut pending: Vec<u32> = Vec::new();
    for (idx, user) in users.iter().enumerate() {
        if ctx.users.status[idx] != UserStatus::InScope {
            continue;
        }
        let login = ctx.users.logins[idx].as_ref();
        if clashes.contains_key(login) {
            continue;
        }
        match ctx.accounts.account_of_user[idx] {
            MANY => {
                report.conflict(
                    &user.id,
                    login,
                    "this Keycloak user is linked to several accounts".to_owned(),
                );
                continue;
            }
            NONE => {}
            account_idx => {
                resolutions[idx] = Resolution::Managed(account_idx);
                let current = trim(&accounts[account_idx as usize].login);
                if user.enabled && login != current && fold(login) != fold(current) {
                    by_login.insert(login, (NONE, 0));
                    rename_candidates.push(account_idx);
                }
                continue;
            }
        }
        if !user.enabled {
            continue;
        }
        if policy.is_protected(login) {
            report.conflict(
                &user.id,
                login,
                "this login matches a protected pattern; no account is created or linked"
                    .to_owned(),
            );
            continue;
        }
        by_login.insert(login, (NONE, 0));
        pending.push(idx as u32);
    }
    for (idx, account) in accounts.iter().enumerate() {
        if let Some((first, count)) = by_login.get_mut(fold(trim(&account.login)).as_ref()) {
            // Of several accounts with one login, the smallest id is named, whatever the input
            // order.
            if *count == 0 || account.id < accounts[*first as usize].id {
                *first = idx as u32;
            }
            *count += 1;
        }
    }
    by_login.retain(|_, (_, count)| *count > 0);

    for idx in pending {
        let idx = idx as usize;
        let user = &users[idx];
        let login = ctx.users.logins[idx].as_ref();
        if let Some(&(account_idx, count)) = by_login.get(login) {
            let account = &accounts[account_idx as usize];
            if count > 1 || account.is_managed() {
                resolutions[idx] = Resolution::Held;
            } else if !ctx.accounts.usable[account_idx as usize] {
                report.conflict(
                    &user.id,
                    login,
                    format!(
                        "this login belongs to account {}, whose id occurs more than once",
                        account.id
                    ),
                );
            } else if policy.is_protected(&account.login) {
                report.conflict(
                    &user.id,
                    login,
                    format!("this login belongs to protected account {}", account.id),
                );
            } else if !linking.by_login {
                report.conflict(
                    &user.id,
                    login,
                    format!(
                        "this login belongs to account {}, which keysync does not manage, \
                         and linking by login is off",
                        account.id
                    ),
                );
            } else {
                resolutions[idx] = Resolution::Link(account_idx, LinkedBy::Login);
            }
            continue;
        }
        let email = mapping::email(email_mapping, user);
        if let Some(email) = &email {
            match by_email.get(fold(email).as_ref()) {
                Some(&(account_idx, 1)) => {
                    resolutions[idx] = Resolution::Link(account_idx, LinkedBy::Email);
                    continue;
                }
                Some(&(_, count)) => {
                    report.conflict(
                        &user.id,
                        login,
                        format!("email {email} matches {count} accounts keysync does not manage"),
                    );
                    continue;
                }
                None => {}
            }
        }
        if email.is_none() && email_mapping.required {
            report.diagnose(
                DiagnosticKind::MissingData,
                Some(&user.id),
                login,
                "no usable email, which a new account needs; not created".to_owned(),
            );
            continue;
        }
        resolutions[idx] = Resolution::Create;
    }

    // Two users may match one account by email (Keycloak allows duplicate emails when configured
    // to).
    let mut email_claims: FastMap<u32, u32> = fast_map(0);
    for resolution in &resolutions {
        if let Resolution::Link(account_idx, LinkedBy::Email) = resolution {
            *email_claims.entry(*account_idx).or_default() += 1;
        }
    }
    for (idx, resolution) in resolutions.iter_mut().enumerate() {
        if let Resolution::Link(account_idx, LinkedBy::Email) = *resolution {
            let count = email_claims.get(&account_idx).copied().unwrap_or(0);
            if count > 1 {
                let account = &accounts[account_idx as usize];
                report.conflict(
                    &users[idx].id,
                    &ctx.users.logins[idx],
                    format!(
                        "{count} Keycloak users match account {} ({}) by email",
                        account.id, account.login
                    ),
                );
                *resolution = Resolution::Nothing;
            }
        }
    }
    let rename_candidates = rename_candidates
        .into_iter()
        .chain(
            resolutions
                .iter()
                .filter_map(|resolution| match resolution {
                    Resolution::Link(account_idx, _) => Some(*account_idx),
                    _ => None,
                }),
        )
        .collect();
    Resolved {
        resolutions,
        by_login,
        rename_candidates,
    }
}

/// What happens to each account.
fn dispositions(ctx: &Ctx<'_>, resolutions: &[Resolution]) -> Vec<Disposition> {
    let mut dispositions = vec![Disposition::Untouched; ctx.state.accounts.len()];
    for (user_idx, resolution) in resolutions.iter().enumerate() {
        let user = user_idx as u32;
        match *resolution {
            Resolution::Managed(account_idx) => {
                dispositions[account_idx as usize] = Disposition::Sync { user, link: None };
            }
            Resolution::Link(account_idx, by) => {
                dispositions[account_idx as usize] = Disposition::Sync {
                    user,
                    link: Some(by),
                };
            }
            Resolution::Nothing | Resolution::Create | Resolution::Held => {}
        }
    }
    for (idx, account) in ctx.state.accounts.iter().enumerate() {
        if !account.is_managed()
            || !ctx.accounts.usable[idx]
            || dispositions[idx] != Disposition::Untouched
        {
            continue;
        }
        dispositions[idx] = match ctx.accounts.user_of[idx] {
            NONE => Disposition::Cleanup { user: None },
            user_idx => match ctx.users.status[user_idx as usize] {
                UserStatus::OutOfScope => Disposition::Cleanup {
                    user: Some(user_idx),
                },
                UserStatus::Ignored | UserStatus::InScope => Disposition::Untouched,
            },
        };
    }
    dispositions
}

/// Decides the renames: a synced account whose user's login changed is renamed when the product
/// can, the new login is not protected, and no other account has it now.
fn renames(
    ctx: &Ctx<'_>,
    by_login: &LoginIndex<'_>,
    candidates: &[u32],
    dispositions: &[Disposition],
    report: &mut Report,
) -> FastMap<u32, Rename> {
    let mut renames = fast_map(0);
    for &idx in candidates {
        let idx = idx as usize;
        let Disposition::Sync { user, .. } = dispositions[idx] else {
            continue;
        };
        let keycloak_user = &ctx.snapshot.users[user as usize];
        let account = &ctx.state.accounts[idx];
        let desired = ctx.users.logins[user as usize].as_ref();
        let current = trim(&account.login);
        if !keycloak_user.enabled
            || desired == current
            || fold(desired) == fold(current)
            || ctx.policy.is_protected(current)
        {
            continue;
        }
        let rename = if !ctx.state.capabilities.can_rename {
            report.diagnose(
                DiagnosticKind::Unsupported,
                Some(&keycloak_user.id),
                &account.login,
                format!(
                    "the Keycloak login is now {desired}, but {} cannot rename accounts",
                    ctx.state.product
                ),
            );
            Rename::Refused
        } else if ctx.policy.is_protected(desired) {
            report.conflict(
                &keycloak_user.id,
                desired,
                format!(
                    "renaming account {} to this login would make it a protected account; \
                     not renamed",
                    account.id
                ),
            );
            Rename::Refused
        } else if by_login.contains_key(desired) {
            Rename::Blocked
        } else {
            Rename::Renamed
        };
        renames.insert(idx as u32, rename);
    }
    renames
}

/// Whether an account gives up its login in this plan: renamed, or deleted.
fn frees_login(
    ctx: &Ctx<'_>,
    dispositions: &[Disposition],
    renames: &FastMap<u32, Rename>,
    account_idx: u32,
) -> bool {
    let account = &ctx.state.accounts[account_idx as usize];
    if ctx.policy.is_protected(&account.login) {
        return false;
    }
    match dispositions[account_idx as usize] {
        Disposition::Untouched => false,
        Disposition::Sync { user, .. } => {
            if ctx.snapshot.users[user as usize].enabled {
                renames.get(&account_idx) == Some(&Rename::Renamed)
            } else {
                lifecycle(ctx, CleanupAction::Deactivate) == Lifecycle::Delete
            }
        }
        Disposition::Cleanup { .. } => {
            lifecycle(ctx, ctx.policy.policy().cleanup.action) == Lifecycle::Delete
        }
    }
}

/// Turns blocked renames and held logins into a deferral (when this plan frees the login, so the
/// next run can finish) or a conflict (when nothing will).
fn settle_held_logins(
    ctx: &Ctx<'_>,
    by_login: &LoginIndex<'_>,
    dispositions: &[Disposition],
    renames: &FastMap<u32, Rename>,
    resolutions: &mut [Resolution],
    report: &mut Report,
) {
    let accounts = &ctx.state.accounts;
    let holder_text = |holder: u32| -> String {
        let account = &accounts[holder as usize];
        match &account.keycloak_user_id {
            Some(user_id) => {
                format!(
                    "account {} (managed for Keycloak user {user_id})",
                    account.id
                )
            }
            None => format!("account {} (not managed by keysync)", account.id),
        }
    };
    // The accounts that hold a login, by id; several only in odd input.
    let holders_of = |login: &str| -> Vec<u32> {
        match by_login.get(login) {
            None => Vec::new(),
            Some(&(first, 1)) => vec![first],
            Some(_) => {
                let mut holders: Vec<u32> = (0..accounts.len() as u32)
                    .filter(|&idx| fold(trim(&accounts[idx as usize].login)) == login)
                    .collect();
                holders.sort_by(|left, right| {
                    accounts[*left as usize]
                        .id
                        .cmp(&accounts[*right as usize].id)
                });
                holders
            }
        }
    };
    let describe = |holders: &[u32]| -> String {
        match holders {
            [holder] => holder_text(*holder),
            _ => {
                let ids: Vec<&str> = holders
                    .iter()
                    .map(|&idx| accounts[idx as usize].id.as_str())
                    .collect();
                format!("{} accounts ({})", holders.len(), ids.join(", "))
            }
        }
    };
    let frees = |holders: &[u32]| {
        holders
            .iter()
            .any(|&holder| frees_login(ctx, dispositions, renames, holder))
    };

    let mut blocked: Vec<u32> = renames
        .iter()
        .filter_map(|(&idx, rename)| (*rename == Rename::Blocked).then_some(idx))
        .collect();
    blocked.sort_unstable();
    for idx in blocked {
        let Disposition::Sync { user, .. } = dispositions[idx as usize] else {
            continue;
        };
        let keycloak_user = &ctx.snapshot.users[user as usize];
        let desired = ctx.users.logins[user as usize].as_ref();
        let holders: Vec<u32> = holders_of(desired)
            .into_iter()
            .filter(|&holder| holder != idx)
            .collect();
        if frees(&holders) {
            report.diagnose(
                DiagnosticKind::Deferred,
                Some(&keycloak_user.id),
                desired,
                format!(
                    "this login still belongs to {}, which this plan renames or deletes; \
                     account {} is renamed to it by the next run",
                    describe(&holders),
                    accounts[idx as usize].id
                ),
            );
        } else {
            report.conflict(
                &keycloak_user.id,
                desired,
                format!(
                    "account {} is not renamed to this login: it belongs to {}",
                    accounts[idx as usize].id,
                    describe(&holders)
                ),
            );
        }
    }
    for (idx, resolution) in resolutions.iter_mut().enumerate() {
        if *resolution != Resolution::Held {
            continue;
        }
        *resolution = Resolution::Nothing;
        let keycloak_user = &ctx.snapshot.users[idx];
        let login = ctx.users.logins[idx].as_ref();
        let holders = holders_of(login);
        if frees(&holders) {
            report.diagnose(
                DiagnosticKind::Deferred,
                Some(&keycloak_user.id),
                login,
                format!(
                    "this login still belongs to {}, which this plan renames or deletes; the \
                     account is created or linked by the next run",
                    describe(&holders)
                ),
            );
        } else {
            report.conflict(
                &keycloak_user.id,
                login,
                format!("this login belongs to {}", describe(&holders)),
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Deactivate,
    Delete,
    StripGroups,
    Keep,
}

/// What taking an account's access away means for this product: `action`, or the policy's fallback
/// when the action is deactivation and the product cannot deactivate.
fn lifecycle(ctx: &Ctx<'_>, action: CleanupAction) -> Lifecycle {
    match action {
        CleanupAction::Deactivate if ctx.state.capabilities.can_deactivate => Lifecycle::Deactivate,
        CleanupAction::Deactivate => match ctx.policy.policy().cleanup.when_cannot_deactivate {
            Fallback::RemoveGroups => Lifecycle::StripGroups,
            Fallback::Delete => Lifecycle::Delete,
            Fallback::Keep => Lifecycle::Keep,
        },
        CleanupAction::Delete => Lifecycle::Delete,
        CleanupAction::RemoveGroups => Lifecycle::StripGroups,
        CleanupAction::Keep => Lifecycle::Keep,
    }
}

// -------------------------------------------------------------------------------------------------
// Emitting changes.

struct Output {
    product: Product,
    changes: Vec<Change>,
    losing_access: usize,
    /// Scratch space for rendering display names without allocating.
    display: String,
    /// Scratch space for a user's desired groups.
    groups: Vec<u32>,
}

impl Output {
    fn new(product: Product) -> Output {
        Output {
            product,
            changes: Vec::new(),
            losing_access: 0,
            display: String::new(),
            groups: Vec::new(),
        }
    }

    fn push(&mut self, user: Option<&UserId>, action: Action, reason: String) {
        let id = ChangeId::of(self.product, user, &action);
        self.changes.push(Change {
            id,
            product: self.product,
            keycloak_user_id: user.cloned(),
            action,
            reason,
        });
    }
}

fn emit_group_changes(ctx: &Ctx<'_>, out: &mut Output) {
    let groups = &ctx.product_groups;
    for (idx, flags) in groups.flags.iter().enumerate() {
        let name = groups.names[idx].as_ref();
        if flags.removed {
            out.push(
                None,
                Action::RemoveGroup {
                    group: name.to_owned(),
                },
                "created by keysync and no longer mapped from Keycloak or named as a default group"
                    .to_owned(),
            );
            continue;
        }
        if flags.listed || !(flags.mapped || flags.default_new || flags.default_all) {
            continue;
        }
        let reason = if flags.mapped {
            let (n_sources, first_path) = groups.sources[idx];
            match n_sources {
                1 => format!("mapped from Keycloak group {first_path}"),
                _ => format!(
                    "mapped from Keycloak group {first_path} and {} more",
                    n_sources - 1
                ),
            }
        } else if flags.default_all {
            "default group for all users".to_owned()
        } else {
            "default group for new users".to_owned()
        };
        out.push(
            None,
            Action::CreateGroup {
                group: name.to_owned(),
            },
            reason,
        );
    }
}

/// The product groups a user should be in: the mapped groups of its Keycloak groups, the defaults
/// for all users, and for a new account the defaults for new users. Sorted and deduplicated into
/// `desired`.
fn desired_groups(ctx: &Ctx<'_>, user_idx: usize, new_account: bool, desired: &mut Vec<u32>) {
    desired.clear();
    for &group in ctx.users.groups.get(user_idx) {
        let target = ctx.keycloak_groups.target[group as usize];
        if target != NONE {
            desired.push(target);
        }
    }
    desired.extend_from_slice(&ctx.product_groups.default_all);
    if new_account {
        desired.extend_from_slice(&ctx.product_groups.default_new);
    }
    desired.sort_unstable();
    desired.dedup();
}

/// Why a user should be in a product group.
fn membership_reason(ctx: &Ctx<'_>, user_idx: usize, group: u32) -> String {
    let mut source: Option<&str> = None;
    for &keycloak_group in ctx.users.groups.get(user_idx) {
        if ctx.keycloak_groups.target[keycloak_group as usize] == group {
            let path = ctx.snapshot.groups[keycloak_group as usize].path.as_str();
            if source.is_none_or(|current| path < current) {
                source = Some(path);
            }
        }
    }
    match source {
        Some(path) => format!("member of Keycloak group {path}"),
        None if ctx.product_groups.flags[group as usize].default_all => {
            "default group for all users".to_owned()
        }
        None => "default group for new users".to_owned(),
    }
}

fn emit_create(ctx: &Ctx<'_>, out: &mut Output, user_idx: usize) {
    let user = &ctx.snapshot.users[user_idx];
    let login = ctx.users.logins[user_idx].as_ref();
    mapping::display_name_into(ctx.policy, user, login, &mut out.display);
    let email = mapping::email(&ctx.policy.policy().attributes.email, user).map(Cow::into_owned);
    let fields = AccountFields {
        login: login.to_owned(),
        display_name: out.display.clone(),
        email,
    };
    let reason = if ctx.policy.policy().scope.required_groups.is_empty() {
        "new Keycloak user".to_owned()
    } else {
        let mut through: Vec<&str> = ctx
            .users
            .groups
            .get(user_idx)
            .iter()
            .filter(|&&group| ctx.keycloak_groups.in_scope[group as usize])
            .map(|&group| ctx.snapshot.groups[group as usize].path.as_str())
            .collect();
        through.sort_unstable();
        format!(
            "new Keycloak user, in scope through group {}",
            through.first().copied().unwrap_or("?")
        )
    };
    out.push(Some(&user.id), Action::CreateUser { fields }, reason);
    let mut desired = Vec::new();
    desired_groups(ctx, user_idx, true, &mut desired);
    for group in desired {
        let reason = membership_reason(ctx, user_idx, group);
        out.push(
            Some(&user.id),
            Action::AddMembership {
                account: AccountRef::New {
                    login: login.to_owned(),
                },
                group: ctx.product_groups.names[group as usize].to_string(),
            },
            reason,
        );
    }
}

/// Plans the changes of one account, unless the account is protected.
fn emit_account(
    ctx: &Ctx<'_>,
    out: &mut Output,
    report: &mut Report,
    renames: &FastMap<u32, Rename>,
    account_idx: usize,
    disposition: Disposition,
) {
    let account = &ctx.state.accounts[account_idx];
    if disposition == Disposition::Untouched {
        return;
    }
    if ctx.policy.is_protected(&account.login) {
        report.diagnose(
            DiagnosticKind::Protected,
            account.keycloak_user_id.as_ref(),
            &account.login,
            format!(
                "account {} matches a protected pattern; keysync leaves it alone",
                account.id
            ),
        );
        return;
    }
    match disposition {
        Disposition::Untouched => {}
        Disposition::Sync { user, link } => {
            let keycloak_user = &ctx.snapshot.users[user as usize];
            if keycloak_user.enabled {
                emit_sync(ctx, out, report, renames, account_idx, user as usize, link);
            } else {
                let reason = "disabled in Keycloak".to_owned();
                emit_access_removal(
                    ctx,
                    out,
                    account_idx,
                    Some(keycloak_user),
                    CleanupAction::Deactivate,
                    reason,
                );
            }
        }
        Disposition::Cleanup { user } => {
            let keycloak_user = user.map(|idx| &ctx.snapshot.users[idx as usize]);
            let reason = match keycloak_user {
                None => "no longer in Keycloak".to_owned(),
                Some(_) => {
                    let required = &ctx.policy.policy().scope.required_groups;
                    match required.as_slice() {
                        [only] => format!("no longer in required group {only}"),
                        _ => format!("no longer in any required group ({})", required.join(", ")),
                    }
                }
            };
            let action = ctx.policy.policy().cleanup.action;
            emit_access_removal(ctx, out, account_idx, keycloak_user, action, reason);
        }
    }
}

/// Links, updates, reactivates and fixes the memberships of the account of an enabled user in
/// scope.
fn emit_sync(
    ctx: &Ctx<'_>,
    out: &mut Output,
    report: &mut Report,
    renames: &FastMap<u32, Rename>,
    account_idx: usize,
    user_idx: usize,
    link: Option<LinkedBy>,
) {
    let account = &ctx.state.accounts[account_idx];
    let user = &ctx.snapshot.users[user_idx];
    let user_id = Some(&user.id);
    if let Some(by) = link {
        let reason = match by {
            LinkedBy::Login => format!(
                "existing account {} linked on first sync: same login",
                account.login
            ),
            LinkedBy::Email => format!(
                "existing account {} linked on first sync: same email {}",
                account.login,
                account.email.as_deref().unwrap_or("")
            ),
        };
        out.push(
            user_id,
            Action::LinkUser {
                id: account.id.clone(),
                login: account.login.clone(),
            },
            reason,
        );
    }

    let desired_login = ctx.users.logins[user_idx].as_ref();
    let final_login = if renames.get(&(account_idx as u32)) == Some(&Rename::Renamed) {
        desired_login
    } else {
        account.login.as_str()
    };
    mapping::display_name_into(ctx.policy, user, final_login, &mut out.display);
    let desired_email = mapping::email(&ctx.policy.policy().attributes.email, user);
    let mut differences = Vec::new();
    if final_login != account.login {
        differences.push(format!(
            "login changed from {} to {final_login}",
            account.login
        ));
    }
    if out.display != account.display_name {
        differences.push(format!(
            "display name changed from \"{}\" to \"{}\"",
            account.display_name, out.display
        ));
    }
    // The new email, when it changes; a user without a usable email keeps the account's.
    let new_email: Option<&str> = match (&desired_email, &account.email) {
        (Some(desired), Some(current))
            if desired.as_ref() == current.as_str() || fold(desired) == fold(trim(current)) =>
        {
            None
        }
        (Some(desired), Some(current)) => {
            differences.push(format!("email changed from {current} to {desired}"));
            Some(desired)
        }
        (Some(desired), None) => {
            differences.push(format!("email set to {desired}"));
            Some(desired)
        }
        (None, _) => None,
    };
    if !differences.is_empty() {
        let previous = AccountFields {
            login: account.login.clone(),
            display_name: account.display_name.clone(),
            email: account.email.clone(),
        };
        let fields = AccountFields {
            login: final_login.to_owned(),
            display_name: out.display.clone(),
            email: new_email
                .map(str::to_owned)
                .or_else(|| account.email.clone()),
        };
        let account = AccountRef::Existing {
            id: account.id.clone(),
            login: account.login.clone(),
        };
        out.push(
            user_id,
            Action::UpdateUser {
                account,
                previous,
                fields,
            },
            differences.join("; "),
        );
    }
    // Built only when a change needs it: most accounts need none.
    let after = || AccountRef::Existing {
        id: account.id.clone(),
        login: final_login.to_owned(),
    };

    if !account.active {
        if ctx.state.capabilities.can_deactivate {
            out.push(
                user_id,
                Action::ReactivateUser { account: after() },
                format!(
                    "enabled and in scope in Keycloak, but inactive in {}",
                    ctx.state.product
                ),
            );
        } else {
            report.diagnose(
                DiagnosticKind::Unsupported,
                user_id,
                &account.login,
                format!(
                    "the account is inactive, and {} cannot reactivate accounts",
                    ctx.state.product
                ),
            );
        }
    }

    let mut desired = std::mem::take(&mut out.groups);
    desired_groups(ctx, user_idx, false, &mut desired);
    let current_groups = ctx.accounts.groups.get(account_idx);
    for &group in &desired {
        if current_groups.binary_search(&group).is_err() {
            let reason = membership_reason(ctx, user_idx, group);
            let group = ctx.product_groups.names[group as usize].to_string();
            out.push(
                user_id,
                Action::AddMembership {
                    account: after(),
                    group,
                },
                reason,
            );
        }
    }
    for &group in current_groups {
        if ctx.product_groups.prunes(group) && desired.binary_search(&group).is_err() {
            let name = ctx.product_groups.names[group as usize].to_string();
            let reason = if ctx.product_groups.flags[group as usize].mapped {
                format!("not in any Keycloak group mapped to {name}")
            } else {
                "the group is no longer mapped from Keycloak".to_owned()
            };
            out.push(
                user_id,
                Action::RemoveMembership {
                    account: after(),
                    group: name,
                },
                reason,
            );
        }
    }
    out.groups = desired;
}

/// Takes access away from an account: deactivates, deletes or strips its groups, as `action` and
/// the product's capabilities say; counts it for the safety limit.
fn emit_access_removal(
    ctx: &Ctx<'_>,
    out: &mut Output,
    account_idx: usize,
    user: Option<&KeycloakUser>,
    action: CleanupAction,
    reason: String,
) {
    let account: &Account = &ctx.state.accounts[account_idx];
    let user_id = user
        .map(|user| &user.id)
        .or(account.keycloak_user_id.as_ref());
    let target = AccountRef::Existing {
        id: account.id.clone(),
        login: account.login.clone(),
    };
    let lifecycle = lifecycle(ctx, action);
    let fallback_note = |reason: &str, what: &str| -> String {
        if action == CleanupAction::Deactivate {
            format!(
                "{reason}; {} cannot deactivate, so {what}",
                ctx.state.product
            )
        } else {
            reason.to_owned()
        }
    };
    match lifecycle {
        Lifecycle::Keep => {}
        Lifecycle::Deactivate => {
            if account.active {
                out.push(user_id, Action::DeactivateUser { account: target }, reason);
                out.losing_access += 1;
            }
        }
        Lifecycle::Delete => {
            let reason = fallback_note(&reason, "the account is deleted");
            out.push(user_id, Action::DeleteUser { account: target }, reason);
            out.losing_access += 1;
        }
        Lifecycle::StripGroups => {
            let reason = fallback_note(&reason, "its groups are removed");
            let mut stripped = false;
            for &group in ctx.accounts.groups.get(account_idx) {
                if ctx.product_groups.strips(group) {
                    let group = ctx.product_groups.names[group as usize].to_string();
                    out.push(
                        user_id,
                        Action::RemoveMembership {
                            account: target.clone(),
                            group,
                        },
                        reason.clone(),
                    );
                    stripped = true;
                }
            }
            if stripped {
                out.losing_access += 1;
            }
        }
    }
}

/// The hold, if the plan takes access from too many accounts or the snapshot looks empty.
fn safety_hold(ctx: &Ctx<'_>, losing_access: usize) -> Option<Hold> {
    let managed_accounts = ctx
        .state
        .accounts
        .iter()
        .filter(|account| account.is_managed())
        .count();
    let safety = &ctx.policy.policy().safety;
    let product = ctx.state.product;
    let mut reasons = Vec::new();
    if managed_accounts > 0 {
        if ctx.snapshot.users.is_empty() {
            reasons.push(format!(
                "the Keycloak snapshot has no users, but keysync manages {managed_accounts} \
                     account(s) in {product}"
            ));
        } else if !ctx.users.status.contains(&UserStatus::InScope) {
            reasons.push(format!(
                "no Keycloak user is in scope, but keysync manages {managed_accounts} \
                     account(s) in {product}"
            ));
        }
    }
    if losing_access as u64 > u64::from(safety.max_accounts) {
        reasons.push(format!(
            "{losing_access} account(s) would lose access, more than safety.max_accounts ({})",
            safety.max_accounts
        ));
    }
    if managed_accounts > 0
        && (losing_access as u64) * 100 > u64::from(safety.max_percent) * managed_accounts as u64
    {
        reasons.push(format!(
            "{losing_access} of {managed_accounts} managed accounts ({}%) would lose access, \
                 more than safety.max_percent ({}%)",
            (losing_access as u64 * 100).div_ceil(managed_accounts as u64),
            safety.max_percent
        ));
    }
    if reasons.is_empty() {
        return None;
    }
    Some(Hold {
        reason: reasons.join("; "),
        losing_access,
        managed_accounts,
    })
}
