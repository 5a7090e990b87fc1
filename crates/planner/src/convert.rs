//! Hand-written conversions at the planner's edge: the fetcher's wire snapshot into the
//! plan's [`Snapshot`], and the plan's changes, conflicts, diagnostics and summaries into
//! their wire form. Empty strings on the wire are absent values in the model.

use std::collections::{BTreeMap, HashMap, HashSet};

use cache::convert::product_to_proto;
use model::delta::Delta;
use model::plan::{
    AccountFields, AccountRef, Action, Change, ChangeOp, Diagnostic, DiagnosticKind, Plan,
    SafetyCounts,
};
use model::policy::ValidPolicy;
use model::snapshot::{GroupId, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, UserId};
use model::state::{Account, Product, ProductState};
use proto::v1;

/// The plan's view of a stored snapshot.
pub fn snapshot_to_model(snapshot: &v1::Snapshot) -> Snapshot {
    let non_empty = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    // Memberships name users and groups by id; sharing the id allocations keeps a million
    // memberships cheap, as the model suggests.
    let mut user_ids: HashMap<&str, UserId> = HashMap::with_capacity(snapshot.users.len());
    let users = snapshot
        .users
        .iter()
        .map(|user| {
            let id = user_ids
                .entry(user.id.as_str())
                .or_insert_with(|| UserId::new(user.id.as_str()))
                .clone();
            KeycloakUser {
                id,
                username: user.username.clone(),
                email: non_empty(&user.email),
                first_name: non_empty(&user.first_name),
                last_name: non_empty(&user.last_name),
                enabled: user.enabled,
                email_verified: user.email_verified,
                attributes: user
                    .attributes
                    .iter()
                    .map(|(name, values)| (name.clone(), values.values.clone()))
                    .collect(),
                federation_link: non_empty(&user.federation_link),
            }
        })
        .collect();
    let mut group_ids: HashMap<&str, GroupId> = HashMap::with_capacity(snapshot.groups.len());
    let groups = snapshot
        .groups
        .iter()
        .map(|group| {
            let id = group_ids
                .entry(group.id.as_str())
                .or_insert_with(|| GroupId::new(group.id.as_str()))
                .clone();
            KeycloakGroup {
                id,
                name: group.name.clone(),
                path: group.path.clone(),
                parent_id: non_empty(&group.parent_id).map(GroupId::new),
            }
        })
        .collect();
    let memberships = snapshot
        .memberships
        .iter()
        .map(|membership| KeycloakMembership {
            user_id: user_ids
                .get(membership.user_id.as_str())
                .cloned()
                .unwrap_or_else(|| UserId::new(membership.user_id.as_str())),
            group_id: group_ids
                .get(membership.group_id.as_str())
                .cloned()
                .unwrap_or_else(|| GroupId::new(membership.group_id.as_str())),
        })
        .collect();
    Snapshot {
        users,
        groups,
        memberships,
    }
}

/// The model's view of a stored delta snapshot (`v1::Snapshot::delta`): its users and
/// their memberships as re-read, the users Keycloak no longer has, and the group tree only
/// when the fetcher included it (otherwise the base's tree stands).
pub fn delta_to_model(snapshot: &v1::Snapshot) -> Delta {
    let Snapshot {
        users,
        groups,
        memberships,
    } = snapshot_to_model(snapshot);
    Delta {
        users,
        deleted: snapshot
            .deleted_user_ids
            .iter()
            .map(|id| UserId::new(id.as_str()))
            .collect(),
        memberships,
        groups: snapshot.groups_included.then_some(groups),
    }
}

pub fn op_to_proto(op: ChangeOp) -> v1::ChangeOp {
    match op {
        ChangeOp::CreateGroup => v1::ChangeOp::CreateGroup,
        ChangeOp::CreateUser => v1::ChangeOp::CreateUser,
        ChangeOp::LinkUser => v1::ChangeOp::LinkUser,
        ChangeOp::UpdateUser => v1::ChangeOp::UpdateUser,
        ChangeOp::ReactivateUser => v1::ChangeOp::ReactivateUser,
        ChangeOp::AddMembership => v1::ChangeOp::AddMembership,
        ChangeOp::RemoveMembership => v1::ChangeOp::RemoveMembership,
        ChangeOp::DeactivateUser => v1::ChangeOp::DeactivateUser,
        ChangeOp::DeleteUser => v1::ChangeOp::DeleteUser,
        ChangeOp::RemoveGroup => v1::ChangeOp::RemoveGroup,
    }
}

/// One product's plan in wire form.
#[derive(Debug)]
pub struct WirePlan {
    /// In plan order.
    pub changes: Vec<v1::Change>,
    pub conflicts: Vec<v1::Conflict>,
    pub diagnostics: Vec<v1::Diagnostic>,
    pub summary: v1::PlanSummary,
}

/// The wire form of one product's plan: its changes in plan order, its conflicts, its
/// diagnostics (with the usernames of the users they name) and its summary. `state` is the
/// state it was planned against; it gives the `active` flag of the account data that
/// updates and links carry. `snapshot` is the snapshot it was planned from; it gives the
/// usernames and the count of users the plan skipped or left unchanged.
pub fn plan_to_proto(plan: &Plan, state: &ProductState, snapshot: &Snapshot) -> WirePlan {
    let product = product_to_proto(plan.product) as i32;
    let accounts: HashMap<&str, &Account> = state
        .accounts
        .iter()
        .map(|account| (account.id.as_str(), account))
        .collect();
    let changes = plan
        .changes
        .iter()
        .map(|change| change_to_proto(change, product, &accounts))
        .collect();
    let users = UserCounts::of(plan, snapshot);
    let conflicts = plan
        .conflicts
        .iter()
        .map(|conflict| {
            let id = conflict.keycloak_user_id.as_str();
            v1::Conflict {
                product,
                login: conflict.login.clone(),
                keycloak_user_ids: vec![id.to_owned()],
                reason: conflict.reason.clone(),
                usernames: vec![users.username(id).to_owned()],
            }
        })
        .collect();
    let diagnostics = plan
        .diagnostics
        .iter()
        .map(|diagnostic| {
            let id = diagnostic
                .keycloak_user_id
                .as_ref()
                .map_or("", |id| id.as_str());
            let mut wire = v1::Diagnostic {
                product,
                subject: diagnostic.subject.clone(),
                message: diagnostic.message.clone(),
                keycloak_user_id: id.to_owned(),
                username: users.username(id).to_owned(),
                ..v1::Diagnostic::default()
            };
            wire.set_kind(kind_to_proto(diagnostic.kind));
            wire
        })
        .collect();
    let mut changes_by_op = BTreeMap::new();
    for change in &plan.changes {
        *changes_by_op
            .entry(op_to_proto(change.op()).as_str_name().to_owned())
            .or_insert(0u64) += 1;
    }
    let summary = v1::PlanSummary {
        product,
        changes_by_op: changes_by_op.into_iter().collect(),
        conflicts: plan.conflicts.len() as u64,
        hold_reason: plan
            .hold
            .as_ref()
            .map(|hold| hold.reason.clone())
            .unwrap_or_default(),
        safety: Some(safety_to_proto(&plan.safety)),
        // Set by the caller, who has the state as it was cached.
        state_fingerprint: String::new(),
        // Set by the caller, who knows the parts of a streamed first sync.
        streamed_sets: 0,
        skipped_users: users.skipped,
        unchanged_users: users.unchanged,
        seats: plan.seats.map(|seats| v1::SeatUse {
            needed: seats.needed,
            used: seats.used,
            limit: seats.limit,
            left_out: seats.left_out,
        }),
    };
    WirePlan {
        changes,
        conflicts,
        diagnostics,
        summary,
    }
}

/// What one product's plan did with the users of the snapshot, and the usernames of the
/// users its conflicts and diagnostics name.
struct UserCounts<'a> {
    /// Users named by a conflict or by a diagnostic that kept them out, with no change.
    skipped: u64,
    /// Users with no change, not skipped.
    unchanged: u64,
    usernames: HashMap<&'a str, &'a str>,
}

impl<'a> UserCounts<'a> {
    fn of(plan: &'a Plan, snapshot: &'a Snapshot) -> UserCounts<'a> {
        let changed: HashSet<&str> = plan
            .changes
            .iter()
            .filter_map(|change| change.keycloak_user_id.as_ref())
            .map(|id| id.as_str())
            .collect();
        let mut named: HashSet<&str> = HashSet::new();
        let mut skipped_ids: HashSet<&str> = HashSet::new();
        for conflict in &plan.conflicts {
            named.insert(conflict.keycloak_user_id.as_str());
            skipped_ids.insert(conflict.keycloak_user_id.as_str());
        }
        for diagnostic in &plan.diagnostics {
            if let Some(id) = &diagnostic.keycloak_user_id {
                named.insert(id.as_str());
                if keeps_user_out(diagnostic) {
                    skipped_ids.insert(id.as_str());
                }
            }
        }
        let mut counts = UserCounts {
            skipped: 0,
            unchanged: 0,
            usernames: HashMap::with_capacity(named.len()),
        };
        for user in &snapshot.users {
            let id = user.id.as_str();
            if named.contains(id) {
                counts.usernames.insert(id, user.username.as_str());
            }
            if changed.contains(id) {
                continue;
            }
            if skipped_ids.contains(id) {
                counts.skipped += 1;
            } else {
                counts.unchanged += 1;
            }
        }
        counts
    }

    /// The username of the Keycloak user `id`; empty when the snapshot lacks it.
    fn username(&self, id: &str) -> &'a str {
        self.usernames.get(id).copied().unwrap_or_default()
    }
}

/// Whether a diagnostic says the plan left its user out: no login or email, out of scope,
/// a protected account, a deferred login, a duplicate id, a Jira lead with nobody to hand
/// the lead to, or no licence seat.
fn keeps_user_out(diagnostic: &Diagnostic) -> bool {
    matches!(
        diagnostic.kind,
        DiagnosticKind::MissingData
            | DiagnosticKind::OutOfScope
            | DiagnosticKind::NotSyncable
            | DiagnosticKind::Protected
            | DiagnosticKind::Deferred
            | DiagnosticKind::InvalidInput
            | DiagnosticKind::Lead
            | DiagnosticKind::NoSeat
    )
}

/// The product's scope, as a diagnostic about no user: with `scope.required_groups`, the
/// fetcher reads only the members of those groups (and of their subgroups), so a user in
/// none of them is not in the snapshot and the plan says nothing about them; this says why.
/// `None` when every user is in scope.
pub fn scope_diagnostic(policy: &ValidPolicy, product: Product) -> Option<v1::Diagnostic> {
    let scope = &policy.policy().scope;
    if scope.required_groups.is_empty() {
        return None;
    }
    let subgroups = if scope.include_subgroups {
        "their members and their subgroups' members are synced"
    } else {
        "only their direct members are synced (scope.include_subgroups is off)"
    };
    let mut diagnostic = v1::Diagnostic {
        product: product_to_proto(product) as i32,
        subject: "scope.required_groups".to_owned(),
        message: format!(
            "only members of {} (and of their subgroups) are read from Keycloak, and {subgroups}: \
             a user in none of them is not in the run's snapshot and gets no account",
            scope.required_groups.join(", ")
        ),
        ..v1::Diagnostic::default()
    };
    diagnostic.set_kind(v1::DiagnosticKind::OutOfScope);
    Some(diagnostic)
}

pub fn kind_to_proto(kind: DiagnosticKind) -> v1::DiagnosticKind {
    match kind {
        DiagnosticKind::InvalidInput => v1::DiagnosticKind::InvalidInput,
        DiagnosticKind::MissingData => v1::DiagnosticKind::MissingData,
        DiagnosticKind::Protected => v1::DiagnosticKind::Protected,
        DiagnosticKind::Unsupported => v1::DiagnosticKind::Unsupported,
        DiagnosticKind::Deferred => v1::DiagnosticKind::Deferred,
        DiagnosticKind::MergedGroups => v1::DiagnosticKind::MergedGroups,
        DiagnosticKind::Disabled => v1::DiagnosticKind::Disabled,
        DiagnosticKind::Recreated => v1::DiagnosticKind::Recreated,
        DiagnosticKind::OutOfScope => v1::DiagnosticKind::OutOfScope,
        DiagnosticKind::NotSyncable => v1::DiagnosticKind::NotSyncable,
        DiagnosticKind::Lead => v1::DiagnosticKind::Lead,
        DiagnosticKind::NoSeat => v1::DiagnosticKind::NoSeat,
    }
}

fn safety_to_proto(counts: &SafetyCounts) -> v1::SafetyCounts {
    v1::SafetyCounts {
        losing_access: counts.losing_access as u64,
        managed_accounts: counts.managed_accounts as u64,
        removed_memberships: counts.removed_memberships as u64,
        managed_memberships: counts.managed_memberships as u64,
        removed_groups: counts.removed_groups as u64,
        links: counts.links as u64,
        first_run: counts.first_run,
    }
}

fn change_to_proto(
    change: &Change,
    product: i32,
    accounts: &HashMap<&str, &Account>,
) -> v1::Change {
    let existing = |id: &str| v1::AccountRef {
        r#ref: Some(v1::account_ref::Ref::AccountId(id.to_owned())),
    };
    let account_ref = |account: &AccountRef| match account {
        AccountRef::Existing { id, .. } => existing(id.as_str()),
        AccountRef::New { login } => v1::AccountRef {
            r#ref: Some(v1::account_ref::Ref::NewLogin(login.clone())),
        },
    };
    let active_of = |account: &AccountRef| match account {
        AccountRef::Existing { id, .. } => accounts
            .get(id.as_str())
            .is_some_and(|account| account.active),
        AccountRef::New { .. } => true,
    };
    let fields = |fields: &AccountFields, active: bool| v1::AccountFields {
        login: fields.login.clone(),
        display_name: fields.display_name.clone(),
        email: fields.email.clone().unwrap_or_default(),
        active,
    };
    let mut wire = v1::Change {
        id: change.id.to_string(),
        product,
        op: op_to_proto(change.op()) as i32,
        keycloak_user_id: change
            .keycloak_user_id
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        account: None,
        fields: None,
        previous: None,
        group: String::new(),
        reason: change.reason.clone(),
        handovers: Vec::new(),
        streamed_part: 0,
    };
    match &change.action {
        Action::CreateGroup { group } | Action::RemoveGroup { group } => wire.group = group.clone(),
        Action::CreateUser { fields: new } => {
            wire.account = Some(account_ref(&AccountRef::New {
                login: new.login.clone(),
            }));
            wire.fields = Some(fields(new, true));
        }
        Action::LinkUser { id, login } => {
            let account = accounts.get(id.as_str());
            wire.account = Some(existing(id.as_str()));
            wire.fields = Some(v1::AccountFields {
                login: login.clone(),
                display_name: account
                    .map(|account| account.display_name.clone())
                    .unwrap_or_default(),
                email: account
                    .and_then(|account| account.email.clone())
                    .unwrap_or_default(),
                active: account.is_some_and(|account| account.active),
            });
        }
        Action::UpdateUser {
            account,
            previous,
            fields: wanted,
        } => {
            let active = active_of(account);
            wire.account = Some(account_ref(account));
            wire.previous = Some(fields(previous, active));
            wire.fields = Some(fields(wanted, active));
        }
        Action::ReactivateUser { account } => {
            wire.account = Some(account_ref(account));
        }
        Action::DeactivateUser { account, handovers }
        | Action::DeleteUser { account, handovers } => {
            wire.account = Some(account_ref(account));
            wire.handovers = cache::convert::handovers_to_proto(handovers);
        }
        Action::AddMembership { account, group } | Action::RemoveMembership { account, group } => {
            wire.account = Some(account_ref(account));
            wire.group = group.clone();
        }
    }
    wire
}

#[cfg(test)]
mod tests {
    use model::policy::Policy;
    use model::state::AccountId;

    use super::*;

    fn wire_snapshot() -> v1::Snapshot {
        v1::Snapshot {
            schema_version: v1::SCHEMA_VERSION,
            users: vec![
                v1::KeycloakUser {
                    id: "u1".to_owned(),
                    username: "alice".to_owned(),
                    email: "alice@example.com".to_owned(),
                    first_name: "Alice".to_owned(),
                    last_name: "Smith".to_owned(),
                    enabled: true,
                    email_verified: true,
                    ..Default::default()
                },
                v1::KeycloakUser {
                    id: "u2".to_owned(),
                    username: "bob".to_owned(),
                    enabled: true,
                    ..Default::default()
                },
            ],
            groups: vec![
                v1::KeycloakGroup {
                    id: "g1".to_owned(),
                    name: "staff".to_owned(),
                    path: "/staff".to_owned(),
                    parent_id: String::new(),
                },
                v1::KeycloakGroup {
                    id: "g2".to_owned(),
                    name: "devs".to_owned(),
                    path: "/staff/devs".to_owned(),
                    parent_id: "g1".to_owned(),
                },
            ],
            memberships: vec![v1::KeycloakMembership {
                user_id: "u1".to_owned(),
                group_id: "g2".to_owned(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_wire_snapshot_converts_with_empty_strings_as_absent_values() {
        let snapshot = snapshot_to_model(&wire_snapshot());
        assert_eq!(
            snapshot.users[0].email.as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(snapshot.users[1].email, None);
        assert_eq!(snapshot.users[1].first_name, None);
        assert_eq!(snapshot.groups[0].parent_id, None);
        assert_eq!(snapshot.groups[1].parent_id, Some(GroupId::new("g1")));
        assert_eq!(snapshot.memberships[0].user_id, UserId::new("u1"));
    }

    #[test]
    fn a_delta_keeps_the_base_tree_unless_the_fetcher_included_one() {
        let wire = v1::Snapshot {
            delta: true,
            deleted_user_ids: vec!["u9".to_owned()],
            ..wire_snapshot()
        };
        let delta = delta_to_model(&wire);
        assert_eq!(delta.users.len(), 2);
        assert_eq!(delta.memberships.len(), 1);
        assert_eq!(delta.deleted, [UserId::new("u9")]);
        assert_eq!(delta.groups, None, "the tree was not re-read");
        let with_tree = delta_to_model(&v1::Snapshot {
            groups_included: true,
            ..wire
        });
        assert_eq!(with_tree.groups.map(|groups| groups.len()), Some(2));
    }

    #[test]
    fn a_plan_converts_to_wire_changes_in_plan_order_with_a_summary() {
        let snapshot = snapshot_to_model(&wire_snapshot());
        let mut state = ProductState::empty(Product::Jira);
        state.accounts.push(Account {
            id: AccountId::new("JIRAUSER1"),
            login: "bob".to_owned(),
            display_name: "Bob".to_owned(),
            email: None,
            active: true,
            keycloak_user_id: None,
            administrator: false,
            connector: None,
        });
        let policy = Policy::default().validate().expect("valid");
        let plan = model::plan::plan(&snapshot, &state, &policy);
        let WirePlan {
            changes,
            conflicts,
            diagnostics,
            summary,
        } = plan_to_proto(&plan, &state, &snapshot);

        let ops: Vec<v1::ChangeOp> = changes.iter().map(|change| change.op()).collect();
        let mut sorted = ops.clone();
        sorted.sort();
        assert_eq!(ops, sorted, "changes are in plan order");
        assert_eq!(changes.len(), plan.changes.len());
        assert!(conflicts.is_empty());
        assert!(diagnostics.is_empty());
        assert_eq!(summary.skipped_users, 0);
        assert_eq!(summary.unchanged_users, 0, "alice is created, bob linked");
        let create = changes
            .iter()
            .find(|change| change.op() == v1::ChangeOp::CreateUser)
            .expect("alice is created");
        assert_eq!(
            create.fields.as_ref().map(|fields| fields.login.as_str()),
            Some("alice")
        );
        assert_eq!(create.id.len(), 16);
        let link = changes
            .iter()
            .find(|change| change.op() == v1::ChangeOp::LinkUser)
            .expect("bob is linked");
        assert_eq!(
            link.account,
            Some(v1::AccountRef {
                r#ref: Some(v1::account_ref::Ref::AccountId("JIRAUSER1".to_owned()))
            })
        );
        assert_eq!(link.keycloak_user_id, "u2");
        assert_eq!(summary.changes_by_op.get("CHANGE_OP_CREATE_USER"), Some(&1));
        assert_eq!(
            summary.changes_by_op.values().sum::<u64>(),
            changes.len() as u64
        );
        let safety = summary.safety.expect("the counts are always sent");
        assert_eq!(safety.links, 1);
        assert!(safety.first_run, "keysync managed nothing before");
        assert_eq!(safety.managed_accounts, 0);
    }

    #[test]
    fn diagnostics_and_conflicts_carry_usernames_and_the_summary_counts_users() {
        let mut wire = wire_snapshot();
        // bob has no email; carol is outside /staff; dave is in scope and already in line.
        wire.users.push(v1::KeycloakUser {
            id: "u3".to_owned(),
            username: "carol".to_owned(),
            email: "carol@example.com".to_owned(),
            enabled: true,
            email_verified: true,
            ..Default::default()
        });
        wire.users.push(v1::KeycloakUser {
            id: "u4".to_owned(),
            username: "dave".to_owned(),
            email: "dave@example.com".to_owned(),
            enabled: true,
            email_verified: true,
            ..Default::default()
        });
        for user in ["u2", "u4"] {
            wire.memberships.push(v1::KeycloakMembership {
                user_id: user.to_owned(),
                group_id: "g1".to_owned(),
            });
        }
        let snapshot = snapshot_to_model(&wire);
        let mut state = ProductState::empty(Product::Jira);
        state.accounts.push(Account {
            id: AccountId::new("JIRAUSER4"),
            login: "dave".to_owned(),
            display_name: "dave".to_owned(),
            email: Some("dave@example.com".to_owned()),
            active: true,
            keycloak_user_id: Some(UserId::new("u4")),
            administrator: false,
            connector: None,
        });
        let mut policy = Policy::default();
        policy.scope.required_groups = vec!["/staff".to_owned()];
        policy.groups.exclude = vec!["/*".to_owned()];
        let policy = policy.validate().expect("valid");
        let plan = model::plan::plan(&snapshot, &state, &policy);
        let wire_plan = plan_to_proto(&plan, &state, &snapshot);

        let about = |username: &str| -> Vec<(v1::DiagnosticKind, String)> {
            wire_plan
                .diagnostics
                .iter()
                .filter(|diagnostic| diagnostic.username == username)
                .map(|diagnostic| (diagnostic.kind(), diagnostic.message.clone()))
                .collect()
        };
        let bob = about("bob");
        assert_eq!(bob.len(), 1, "{bob:?}");
        assert_eq!(bob[0].0, v1::DiagnosticKind::MissingData);
        assert!(bob[0].1.contains("no usable email"), "{bob:?}");
        let carol = about("carol");
        assert_eq!(carol.len(), 1, "{carol:?}");
        assert_eq!(carol[0].0, v1::DiagnosticKind::OutOfScope);
        assert!(carol[0].1.contains("/staff"), "{carol:?}");
        assert!(about("dave").is_empty());
        assert!(
            wire_plan
                .diagnostics
                .iter()
                .all(|diagnostic| diagnostic.product == v1::Product::Jira as i32)
        );
        // alice is created; bob and carol are skipped; dave is unchanged.
        assert_eq!(wire_plan.summary.skipped_users, 2);
        assert_eq!(wire_plan.summary.unchanged_users, 1);

        let scope = scope_diagnostic(&policy, Product::Jira).expect("a scope is set");
        assert_eq!(scope.kind(), v1::DiagnosticKind::OutOfScope);
        assert!(scope.keycloak_user_id.is_empty());
        assert!(
            scope.message.contains("only members of /staff"),
            "{scope:?}"
        );
        let everyone = Policy::default().validate().expect("valid");
        assert_eq!(scope_diagnostic(&everyone, Product::Jira), None);
    }
}
