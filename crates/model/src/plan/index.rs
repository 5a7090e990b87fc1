//! The plan's indexes of its inputs: the product groups (from the product, the defaults and the
//! mapping), the Keycloak groups (scope and mapping), the Keycloak users (groups, scope, login) and
//! the product accounts (groups, and the join to their Keycloak users), with the [`Report`] that
//! collects what is odd about the input. Everything here is private to the plan; indexes are `u32`
//! positions into the input vectors.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::hash_map::Entry;

use super::protect::Protection;
use super::{Conflict, Diagnostic, DiagnosticKind};
use crate::hash::{BATCH, FastMap, IdKey, IdTable, fast_map};
use crate::mapping::{self, fold, trim};
use crate::policy::ValidPolicy;
use crate::snapshot::{GroupId, Snapshot, UserId};
use crate::state::{AccountId, ProductState};

pub(super) const NONE: u32 = u32::MAX;

#[derive(Default)]
pub(super) struct Report {
    pub(super) conflicts: Vec<Conflict>,
    pub(super) diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub(super) fn absorb(&mut self, other: Report) {
        self.conflicts.extend(other.conflicts);
        self.diagnostics.extend(other.diagnostics);
    }

    pub(super) fn diagnose(
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

    pub(super) fn conflict(&mut self, user: &UserId, login: &str, reason: String) {
        self.conflicts.push(Conflict {
            login: login.to_owned(),
            keycloak_user_id: user.clone(),
            reason,
        });
    }
}

/// The result of a scoped thread: a panic there (a bug) continues as a panic here.
pub(super) fn joined<T>(result: std::thread::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

pub(super) struct Ctx<'a> {
    pub(super) snapshot: &'a Snapshot,
    pub(super) state: &'a ProductState,
    pub(super) policy: &'a ValidPolicy,
    pub(super) keycloak_groups: KeycloakGroups<'a>,
    pub(super) product_groups: ProductGroups<'a>,
    pub(super) users: Users<'a>,
    pub(super) accounts: Accounts,
    /// Why each account is protected, if it is: its login matches `protected_accounts`, or it
    /// is in a group that matches `protected_groups`.
    pub(super) protected: Vec<Option<Protection>>,
    /// Whether keysync manages no account in the product yet: its first sync, where linking
    /// the accounts that exist is the expected migration.
    pub(super) first_run: bool,
}

impl<'a> Ctx<'a> {
    /// Indexes the inputs of a plan.
    pub(super) fn index(
        snapshot: &'a Snapshot,
        state: &'a ProductState,
        policy: &'a ValidPolicy,
        foreign: &[bool],
        report: &mut Report,
    ) -> Ctx<'a> {
        let mut product_groups = ProductGroups::from_state_and_defaults(state, policy);
        let keycloak_groups = KeycloakGroups::index(snapshot, policy, &mut product_groups, report);
        // The Keycloak side and the product side are indexed at the same time, on two threads:
        // each joins millions of memberships, and neither needs the other.
        let (users, mut accounts) = std::thread::scope(|scope| {
            let product_side = scope.spawn(|| {
                let mut product_report = Report::default();
                let accounts = Accounts::index(state, &mut product_groups, &mut product_report);
                (accounts, product_report)
            });
            let rules = crate::rules::LoginRules::of(state.product);
            let users = Users::index(snapshot, policy, rules, &keycloak_groups, report);
            let (accounts, product_report) = joined(product_side.join());
            report.absorb(product_report);
            (users, accounts)
        });
        accounts.join_users(state, &users);
        product_groups.finish(policy, report);
        let protected =
            super::protect::protections(state, policy, &product_groups, &accounts, foreign);
        Ctx {
            snapshot,
            state,
            policy,
            keycloak_groups,
            product_groups,
            users,
            accounts,
            protected,
            first_run: !state.accounts.iter().any(|account| account.is_managed()),
        }
    }
}

/// A compressed adjacency list: the sorted, deduplicated items of each owner, in one vector.
pub(super) struct Csr {
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

    pub(super) fn get(&self, owner: usize) -> &[u32] {
        &self.items[self.offsets[owner] as usize..self.offsets[owner + 1] as usize]
    }
}

#[derive(Clone, Copy, Default)]
pub(super) struct GroupFlags {
    /// Listed in the product's groups, or implied by one of its memberships.
    pub(super) in_state: bool,
    /// Listed in the product's groups.
    pub(super) listed: bool,
    /// Created by keysync (from the cache).
    pub(super) state_managed: bool,
    /// A Keycloak group maps to it in this run.
    pub(super) mapped: bool,
    /// A Keycloak group maps to it by a rule (`all`, `pattern`, the rest of `map_and_rest`),
    /// not by an entry of a `map`.
    by_rule: bool,
    pub(super) default_new: bool,
    pub(super) default_all: bool,
    /// Removed by this plan.
    pub(super) removed: bool,
}

impl GroupFlags {
    /// False for a group only the product's memberships mention: the product's own list missed
    /// it (a listing read mid-change), so keysync neither creates it (it exists) nor changes its
    /// members until a consistent read.
    pub(super) fn usable(self) -> bool {
        self.listed || !self.in_state
    }
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
pub(super) struct ProductGroups<'a> {
    index: FastMap<Cow<'a, str>, u32>,
    /// The product's own group list by exact name: memberships name their group exactly as the list
    /// does, so this finds almost all of them without folding or reading the name.
    by_state_name: IdTable<'a>,
    pub(super) names: Vec<Cow<'a, str>>,
    /// Where each name's spelling comes from.
    name_ranks: Vec<NameSource>,
    pub(super) flags: Vec<GroupFlags>,
    /// For mapped groups: how many Keycloak groups map here, and the smallest of their paths.
    pub(super) sources: Vec<(u32, &'a str)>,
    pub(super) default_new: Vec<u32>,
    pub(super) default_all: Vec<u32>,
    /// `groups.remove_unmanaged_members`: whether groups keysync did not create are pruned.
    prune_unmanaged: bool,
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
            prune_unmanaged: policy.policy().groups.remove_unmanaged_members,
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
    /// created it, it is not a default group (unless mapped too, when the mapping decides), it
    /// is not being removed, and keysync created it unless `groups.remove_unmanaged_members`.
    pub(super) fn prunes(&self, idx: u32) -> bool {
        let flags = self.flags[idx as usize];
        flags.usable()
            && (flags.mapped || (flags.state_managed && !self.is_default(idx)))
            && !flags.removed
            && (self.prune_unmanaged || flags.state_managed)
    }

    /// Whether cleanup's `remove_groups` takes an account out of the group: every managed or
    /// default group.
    pub(super) fn strips(&self, idx: u32) -> bool {
        let flags = self.flags[idx as usize];
        flags.usable()
            && (flags.mapped || flags.state_managed || self.is_default(idx))
            && !flags.removed
    }

    /// Marks the groups this plan removes (never a protected one), and reports groups several
    /// Keycloak groups share and groups only memberships mention.
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
                if policy.is_protected_group(&self.names[idx]) {
                    report.diagnose(
                        DiagnosticKind::Protected,
                        None,
                        &self.names[idx],
                        "keysync created this group and no longer maps it, but it is a protected \
                         group; it is not removed"
                            .to_owned(),
                    );
                } else {
                    self.flags[idx].removed = true;
                }
            }
            if flags.in_state && !flags.listed {
                report.diagnose(
                    DiagnosticKind::InvalidInput,
                    None,
                    &self.names[idx],
                    "the product has memberships of this group but does not list the group; \
                     the group and its members are left alone until it does"
                        .to_owned(),
                );
            }
            let (n_sources, first_path) = self.sources[idx];
            if n_sources > 1 && flags.by_rule {
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

pub(super) struct KeycloakGroups<'a> {
    by_id: FastMap<IdKey<'a>, u32>,
    /// False for groups whose id occurs more than once; they are ignored.
    usable: Vec<bool>,
    /// Required, or (when subgroups count) below a required group.
    pub(super) in_scope: Vec<bool>,
    /// The product group each maps to, or [`NONE`].
    pub(super) target: Vec<u32>,
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
            if !usable[idx] || policy.is_excluded_group(&group.path) {
                continue;
            }
            let Some((name, explicit)) = policy.groups.product_group(group) else {
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
            let flags = &mut product_groups.flags[product_idx as usize];
            flags.mapped = true;
            flags.by_rule |= !explicit;
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
pub(super) enum UserStatus {
    /// A duplicate id or no login name: nothing is planned for the user, and its account is left
    /// alone.
    Ignored,
    OutOfScope,
    InScope,
}

pub(super) struct Users<'a> {
    by_id: IdTable<'a>,
    /// Keycloak groups of each user.
    pub(super) groups: Csr,
    pub(super) status: Vec<UserStatus>,
    /// The login name of each user in scope; empty for the others.
    pub(super) logins: Vec<Cow<'a, str>>,
}

impl<'a> Users<'a> {
    /// Indexes the Keycloak users: by id, with their groups, and with the login of each user in
    /// scope.
    fn index(
        snapshot: &'a Snapshot,
        policy: &'a ValidPolicy,
        rules: crate::rules::LoginRules,
        keycloak_groups: &KeycloakGroups<'a>,
        report: &mut Report,
    ) -> Users<'a> {
        let (by_id, mut status) = Users::index_ids(snapshot, report);
        let groups = Users::join_groups(snapshot, keycloak_groups, &by_id, &status, report);
        let logins = Users::scope_and_logins(
            snapshot,
            policy,
            rules,
            keycloak_groups,
            &groups,
            &mut status,
            report,
        );
        Users {
            by_id,
            groups,
            status,
            logins,
        }
    }

    /// The users by id. Both users of a duplicate id are [`UserStatus::Ignored`]; every other user
    /// is out of scope until [`Users::scope_and_logins`] says otherwise.
    fn index_ids(snapshot: &'a Snapshot, report: &mut Report) -> (IdTable<'a>, Vec<UserStatus>) {
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
        std::hint::black_box(touched);
        (by_id, status)
    }

    /// The usable Keycloak groups of each user that is not ignored, from the snapshot's
    /// memberships; memberships naming a user or group the snapshot lacks are counted and reported.
    fn join_groups(
        snapshot: &'a Snapshot,
        keycloak_groups: &KeycloakGroups<'a>,
        by_id: &IdTable<'a>,
        status: &[UserStatus],
        report: &mut Report,
    ) -> Csr {
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(snapshot.memberships.len());
        let mut unknown_users: BTreeMap<&str, u32> = BTreeMap::new();
        let mut unknown_groups: BTreeMap<&str, u32> = BTreeMap::new();
        let mut touched = 0u64;
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
        Csr::build(snapshot.users.len(), &pairs)
    }

    /// Puts in scope the users the policy's scope takes (everyone, or members of a required group)
    /// and maps their logins; a user in scope without a login is [`UserStatus::Ignored`]. The
    /// logins of the users not in scope stay empty.
    fn scope_and_logins(
        snapshot: &'a Snapshot,
        policy: &'a ValidPolicy,
        rules: crate::rules::LoginRules,
        keycloak_groups: &KeycloakGroups<'a>,
        groups: &Csr,
        status: &mut [UserStatus],
        report: &mut Report,
    ) -> Vec<Cow<'a, str>> {
        let users = &snapshot.users;
        let everyone = policy.policy().scope.required_groups.is_empty();
        let login_mapping = &policy.policy().attributes.login;
        let mut logins = vec![Cow::Borrowed(""); users.len()];
        let out_of_scope = out_of_scope_message(policy);
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
                report.diagnose(
                    DiagnosticKind::OutOfScope,
                    Some(&user.id),
                    &user.username,
                    out_of_scope.clone(),
                );
                continue;
            }
            match mapping::login(login_mapping, user) {
                Some(login) => match conform_login(login, rules, login_mapping) {
                    Ok(login) => {
                        logins[idx] = login;
                        status[idx] = UserStatus::InScope;
                    }
                    Err(rule) => {
                        status[idx] = UserStatus::Ignored;
                        report.diagnose(
                            DiagnosticKind::NotSyncable,
                            Some(&user.id),
                            &user.username,
                            rule,
                        );
                    }
                },
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
        logins
    }
}

/// `login` as the product takes it: lower-cased where the product wants lower case, then
/// unchanged when it keeps the product's rules, else mapped
/// through `attributes.login.replace_forbidden` when the policy sets it. `Err` holds the reason
/// of the [`DiagnosticKind::NotSyncable`] diagnostic: the login and the rule it breaks.
fn conform_login<'a>(
    login: Cow<'a, str>,
    rules: crate::rules::LoginRules,
    mapping: &crate::policy::LoginMapping,
) -> Result<Cow<'a, str>, String> {
    if rules == crate::rules::LoginRules::NONE {
        return Ok(login);
    }
    // Logins compare without case everywhere, so a product that wants lower case gets the
    // same login lower-cased: never a reason to leave a user out.
    let login = match login {
        Cow::Borrowed(text) if rules.lowercase_only => mapping::fold(text),
        Cow::Owned(text) if rules.lowercase_only => Cow::Owned(text.to_lowercase()),
        login => login,
    };
    let Some(rule) = rules.broken(&login) else {
        return Ok(login);
    };
    let Some(replacement) = &mapping.replace_forbidden else {
        return Err(format!(
            "the login `{login}` {rule}; not synced to this product (set \
             attributes.login.replace_forbidden to map it)"
        ));
    };
    let conformed = rules.conform(&login, replacement).into_owned();
    match rules.broken(&conformed) {
        None => Ok(Cow::Owned(conformed)),
        Some(still) => Err(format!(
            "the login `{login}` {rule}, and mapped through \
             attributes.login.replace_forbidden it becomes `{conformed}`, which {still}; \
             not synced to this product"
        )),
    }
}

/// The reason of every [`DiagnosticKind::OutOfScope`] diagnostic: the rule, with the required
/// groups.
fn out_of_scope_message(policy: &ValidPolicy) -> String {
    let scope = &policy.policy().scope;
    let subgroups = if scope.include_subgroups {
        ", or a subgroup"
    } else {
        ""
    };
    format!(
        "not in scope.required_groups ({}{subgroups}); not synced",
        scope.required_groups.join(", ")
    )
}

/// Marks a user with more than one managed account in [`Accounts::account_of_user`].
pub(super) const MANY: u32 = u32::MAX - 1;

pub(super) struct Accounts {
    /// False for accounts whose id occurs more than once; they are left alone.
    pub(super) usable: Vec<bool>,
    /// For each usable managed account, its Keycloak user, or [`NONE`] when the snapshot does not
    /// have it.
    pub(super) user_of: Vec<u32>,
    /// For each Keycloak user, its managed account, [`NONE`], or [`MANY`].
    pub(super) account_of_user: Vec<u32>,
    /// Product groups of each account.
    pub(super) groups: Csr,
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
