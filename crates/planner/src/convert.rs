//! Hand-written conversions at the planner's edge: the fetcher's wire snapshot into the
//! plan's [`Snapshot`], and the plan's changes, conflicts and summaries into their wire
//! form. Empty strings on the wire are absent values in the model.

use std::collections::{BTreeMap, HashMap};

use cache::convert::product_to_proto;
use model::plan::{AccountFields, AccountRef, Action, Change, ChangeOp, Plan, SafetyCounts};
use model::snapshot::{GroupId, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, UserId};
use model::state::{Account, ProductState};
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

/// The wire form of one product's plan: its changes in plan order, its conflicts and its
/// summary. `state` is the state it was planned against; it gives the `active` flag of
/// the account data that updates and links carry.
pub fn plan_to_proto(
    plan: &Plan,
    state: &ProductState,
) -> (Vec<v1::Change>, Vec<v1::Conflict>, v1::PlanSummary) {
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
    let conflicts = plan
        .conflicts
        .iter()
        .map(|conflict| v1::Conflict {
            product,
            login: conflict.login.clone(),
            keycloak_user_ids: vec![conflict.keycloak_user_id.as_str().to_owned()],
            reason: conflict.reason.clone(),
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
    };
    (changes, conflicts, summary)
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
        Action::ReactivateUser { account }
        | Action::DeactivateUser { account }
        | Action::DeleteUser { account } => {
            wire.account = Some(account_ref(account));
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
    use model::state::{AccountId, Product};

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
        let (changes, conflicts, summary) = plan_to_proto(&plan, &state);

        let ops: Vec<v1::ChangeOp> = changes.iter().map(|change| change.op()).collect();
        let mut sorted = ops.clone();
        sorted.sort();
        assert_eq!(ops, sorted, "changes are in plan order");
        assert_eq!(changes.len(), plan.changes.len());
        assert!(conflicts.is_empty());
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
}
