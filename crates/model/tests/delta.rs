//! Event-driven sync at the model level: for any sequence of Keycloak edits, planning each
//! edit's delta (the users and groups its event names, re-read as they are now) with
//! `plan_scoped` over `delta::scope`, and applying it, leaves nothing for a full sync to do
//! but remove the groups keysync created and no longer maps (a delta removes no group);
//! and no delta plan touches a user outside its scope.

mod fixture;

use std::collections::{BTreeMap, BTreeSet};

use model::apply::apply;
use model::delta::{Delta, patch, scope};
use model::plan::{Action, Plan, plan, plan_scoped};
use model::policy::{CleanupAction, Policy, ValidPolicy};
use model::snapshot::{GroupId, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, UserId};
use model::state::{AccountId, Product};
use proptest::prelude::*;
use proptest::sample::select;

const USERNAMES: [&str; 6] = ["ann", "ben", "cat", "dan", "eve", "fay"];
const GROUP_NAMES: [&str; 5] = ["staff", "devs", "ops", "guests", "sales"];

/// One edit made through Keycloak's Admin API.
#[derive(Debug, Clone)]
enum Edit {
    Create(usize),
    UpdateEmail(usize, u8),
    Disable(usize),
    Enable(usize),
    Delete(usize),
    Join(usize, usize),
    Leave(usize, usize),
    /// Renames group `.0` to the name `GROUP_NAMES[.1]` (when no other group has it).
    RenameGroup(usize, usize),
    DeleteGroup(usize),
}

/// A realm as Keycloak holds it, small enough to reason about.
#[derive(Debug, Clone, Default)]
struct Realm {
    /// By username index: the user, whose id changes when it is deleted and created again.
    users: BTreeMap<usize, KeycloakUser>,
    /// Group id (`g{n}`) to its top-level name.
    groups: BTreeMap<String, String>,
    memberships: BTreeSet<(usize, String)>,
    generation: u32,
}

/// What an edit's events name.
enum Named {
    User(UserId),
    Groups,
    Nothing,
}

impl Realm {
    fn user(&mut self, idx: usize) -> KeycloakUser {
        self.generation += 1;
        let username = USERNAMES[idx];
        KeycloakUser {
            id: UserId::new(format!("u{idx}-{}", self.generation)),
            username: username.to_owned(),
            email: Some(format!("{username}@x.io")),
            first_name: Some(username.to_uppercase()),
            last_name: Some("Example".to_owned()),
            enabled: true,
            email_verified: true,
            attributes: BTreeMap::new(),
            federation_link: None,
        }
    }

    fn edit(&mut self, edit: &Edit) -> Named {
        let id_of = |realm: &Realm, idx: usize| realm.users.get(&idx).map(|user| user.id.clone());
        match *edit {
            Edit::Create(idx) => {
                if self.users.contains_key(&idx) {
                    return Named::Nothing;
                }
                let user = self.user(idx);
                let id = user.id.clone();
                self.users.insert(idx, user);
                Named::User(id)
            }
            Edit::UpdateEmail(idx, version) => match self.users.get_mut(&idx) {
                Some(user) => {
                    user.email = Some(format!("{}.v{version}@x.io", USERNAMES[idx]));
                    Named::User(user.id.clone())
                }
                None => Named::Nothing,
            },
            Edit::Disable(idx) | Edit::Enable(idx) => match self.users.get_mut(&idx) {
                Some(user) => {
                    user.enabled = matches!(edit, Edit::Enable(_));
                    Named::User(user.id.clone())
                }
                None => Named::Nothing,
            },
            Edit::Delete(idx) => match self.users.remove(&idx) {
                Some(user) => {
                    self.memberships.retain(|(member, _)| *member != idx);
                    Named::User(user.id)
                }
                None => Named::Nothing,
            },
            Edit::Join(idx, group) | Edit::Leave(idx, group) => {
                let group = format!("g{group}");
                let Some(id) = id_of(self, idx) else {
                    return Named::Nothing;
                };
                if !self.groups.contains_key(&group) {
                    return Named::Nothing;
                }
                if matches!(edit, Edit::Join(..)) {
                    self.memberships.insert((idx, group));
                } else {
                    self.memberships.remove(&(idx, group));
                }
                Named::User(id)
            }
            Edit::RenameGroup(group, name) => {
                let name = GROUP_NAMES[name];
                let group = format!("g{group}");
                if !self.groups.contains_key(&group) || self.groups.values().any(|n| n == name) {
                    return Named::Nothing;
                }
                self.groups.insert(group, name.to_owned());
                Named::Groups
            }
            Edit::DeleteGroup(group) => {
                let group = format!("g{group}");
                if self.groups.remove(&group).is_none() {
                    return Named::Nothing;
                }
                self.memberships
                    .retain(|(_, member_of)| *member_of != group);
                Named::Groups
            }
        }
    }

    fn tree(&self) -> Vec<KeycloakGroup> {
        self.groups
            .iter()
            .map(|(id, name)| KeycloakGroup {
                id: GroupId::new(id.as_str()),
                name: name.clone(),
                path: format!("/{name}"),
                parent_id: None,
            })
            .collect()
    }

    fn memberships_of(&self, idx: usize) -> Vec<KeycloakMembership> {
        let user_id = self.users[&idx].id.clone();
        self.memberships
            .iter()
            .filter(|(member, _)| *member == idx)
            .map(|(_, group)| KeycloakMembership {
                user_id: user_id.clone(),
                group_id: GroupId::new(group.as_str()),
            })
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            users: self.users.values().cloned().collect(),
            groups: self.tree(),
            memberships: self
                .users
                .keys()
                .flat_map(|idx| self.memberships_of(*idx))
                .collect(),
        }
    }

    /// What the event follower re-reads for what the events named.
    fn delta(&self, named: Named) -> Delta {
        match named {
            Named::Nothing => Delta::default(),
            Named::Groups => Delta {
                groups: Some(self.tree()),
                ..Delta::default()
            },
            Named::User(id) => match self.users.iter().find(|(_, user)| user.id == id) {
                Some((idx, user)) => Delta {
                    users: vec![user.clone()],
                    memberships: self.memberships_of(*idx),
                    ..Delta::default()
                },
                None => Delta {
                    deleted: vec![id],
                    ..Delta::default()
                },
            },
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let user = 0..USERNAMES.len();
    let group = 0..3usize;
    prop_oneof![
        3 => user.clone().prop_map(Edit::Create),
        2 => (user.clone(), 0..3u8).prop_map(|(idx, v)| Edit::UpdateEmail(idx, v)),
        1 => user.clone().prop_map(Edit::Disable),
        1 => user.clone().prop_map(Edit::Enable),
        2 => user.clone().prop_map(Edit::Delete),
        3 => (user.clone(), group.clone()).prop_map(|(idx, g)| Edit::Join(idx, g)),
        2 => (user, group.clone()).prop_map(|(idx, g)| Edit::Leave(idx, g)),
        1 => (group.clone(), 0..GROUP_NAMES.len()).prop_map(|(g, n)| Edit::RenameGroup(g, n)),
        1 => group.prop_map(Edit::DeleteGroup),
    ]
}

fn initial_realm() -> impl Strategy<Value = Realm> {
    (
        prop::collection::vec(any::<bool>(), USERNAMES.len()),
        prop::collection::vec(prop::collection::vec(any::<bool>(), 3), USERNAMES.len()),
    )
        .prop_map(|(exists, member_of)| {
            let mut realm = Realm::default();
            for (group, name) in GROUP_NAMES.iter().take(3).enumerate() {
                realm.groups.insert(format!("g{group}"), (*name).to_owned());
            }
            for (idx, exists) in exists.into_iter().enumerate() {
                if !exists {
                    continue;
                }
                let user = realm.user(idx);
                realm.users.insert(idx, user);
                for (group, member) in member_of[idx].iter().enumerate() {
                    if *member {
                        realm.memberships.insert((idx, format!("g{group}")));
                    }
                }
            }
            realm
        })
}

fn policy(cleanup: CleanupAction) -> ValidPolicy {
    let mut policy = Policy::default();
    policy.cleanup.action = cleanup;
    // The property is about what deltas change, not about holds: no limit trips.
    policy.safety.max_accounts = u32::MAX;
    policy.safety.max_percent = 100;
    policy.safety.max_memberships = u32::MAX;
    policy.safety.max_memberships_percent = 100;
    policy.safety.max_group_loss_percent = 100;
    policy.safety.max_groups = u32::MAX;
    policy.safety.max_links = u32::MAX;
    policy
        .validate()
        .unwrap_or_else(|errors| panic!("an invalid policy: {errors:?}"))
}

fn new_account_id() -> impl FnMut(&model::plan::Change) -> AccountId {
    let mut created = 0;
    move |_| {
        created += 1;
        AccountId::new(format!("new-{created}"))
    }
}

fn users_of(planned: &Plan) -> BTreeSet<Option<&UserId>> {
    planned
        .changes
        .iter()
        .filter(|change| !matches!(change.action, Action::CreateGroup { .. }))
        .map(|change| change.keycloak_user_id.as_ref())
        .collect()
}

fn deltas_leave_a_full_sync_nothing_but_group_removals(
    mut realm: Realm,
    edits: Vec<Edit>,
    cleanup: CleanupAction,
    product: Product,
) -> Result<(), TestCaseError> {
    let policy = policy(cleanup);
    let mut new_id = new_account_id();
    // The first full sync.
    let mut base = realm.snapshot();
    let first = plan(
        &base,
        &fixture::product(product, vec![], vec![], vec![]),
        &policy,
    );
    prop_assert!(first.hold.is_none(), "{first}");
    let mut state = apply(
        fixture::product(product, vec![], vec![], vec![]),
        &first.changes,
        &mut new_id,
    );
    for edit in &edits {
        let named = realm.edit(edit);
        let delta = realm.delta(named);
        if delta.is_empty() {
            continue;
        }
        let in_scope = scope(&base, &delta);
        base = patch(&base, &delta);
        // The follower's patched snapshot is the realm as it is.
        let mut patched = base.clone();
        let mut actual = realm.snapshot();
        for snapshot in [&mut patched, &mut actual] {
            snapshot.users.sort_by(|a, b| a.id.cmp(&b.id));
            snapshot
                .memberships
                .sort_by(|a, b| (&a.user_id, &a.group_id).cmp(&(&b.user_id, &b.group_id)));
        }
        prop_assert_eq!(&patched, &actual, "after {:?}", edit);

        let planned = plan_scoped(&base, &state, &policy, &in_scope);
        for user in users_of(&planned) {
            prop_assert!(
                user.is_some_and(|user| in_scope.contains(user)),
                "after {:?} the delta plan touches {:?}, outside its scope {:?}:\n{}",
                edit,
                user,
                in_scope,
                planned
            );
        }
        prop_assert!(
            !planned
                .changes
                .iter()
                .any(|change| matches!(change.action, Action::RemoveGroup { .. })),
            "{}",
            planned
        );
        state = apply(state, &planned.changes, &mut new_id);
    }
    let full = plan(&realm.snapshot(), &state, &policy);
    for change in &full.changes {
        prop_assert!(
            matches!(change.action, Action::RemoveGroup { .. }),
            "after {:?} a full sync still has {}\nfull plan:\n{}",
            edits,
            change,
            full
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: fixture::property_cases(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn deltas_leave_a_full_sync_nothing_but_group_removals_and_touch_only_what_they_name(
        realm in initial_realm(),
        edits in prop::collection::vec(edit(), 1..25),
        cleanup in select(vec![
            CleanupAction::Deactivate,
            CleanupAction::Delete,
            CleanupAction::RemoveGroups,
            CleanupAction::Keep,
        ]),
        product in select(vec![Product::Jira, Product::Bitbucket]),
    ) {
        deltas_leave_a_full_sync_nothing_but_group_removals(realm, edits, cleanup, product)?;
    }
}
