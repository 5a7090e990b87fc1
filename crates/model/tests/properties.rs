//! Properties of the plan, checked with proptest over generated inputs.
//!
//! Two generators: `odd_case` draws ids, names and emails from small pools, so duplicates, clashes,
//! unknown references, cycles, protected names and case differences are common; `clean_case` makes
//! well-formed input (unique ids and names, every user with an email) for which the desired end
//! state is easy to write down.

mod fixture;

use std::collections::{BTreeMap, BTreeSet};

use fixture::assert_converges;
use model::apply::{Applied, apply};
use model::mapping::fold;
use model::plan::{
    AccountRef, Action, ChangeOp, Created, DiagnosticKind, Plan, plan, plan_part, without_parts,
};
use model::policy::{
    CleanupAction, Fallback, GroupNaming, GroupSelection, LoginSource, Operations, Policy,
    RestSelection, Safety, ValidPolicy,
};
use model::snapshot::{GroupId, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, UserId};
use model::state::{
    Account, AccountId, Capabilities, ConnectorName, Group, GroupName, Membership, Product,
    ProductState, Seats,
};
use proptest::prelude::*;
use proptest::sample::select;

/// A generated case: the inputs of `plan`, and the policy as written (for the checks that read it).
#[derive(Debug, Clone)]
struct Case {
    snapshot: Snapshot,
    state: ProductState,
    policy: Policy,
    /// The connector the plan is for, and whether it is the only one.
    connector: Option<(&'static str, bool)>,
}

impl Case {
    fn valid_policy(&self) -> ValidPolicy {
        let policy = self
            .policy
            .validate()
            .unwrap_or_else(|errors| panic!("generated an invalid policy: {errors:?}"));
        match self.connector {
            Some((name, sole)) => policy.for_connector(name, sole),
            None => policy,
        }
    }

    /// Whether another connector owns `account`, as the plan must read it: owned by another,
    /// or (cached before connectors owned accounts) for a user not in this snapshot while
    /// other connectors exist.
    fn is_foreign(&self, account: &Account) -> bool {
        let Some((me, sole)) = self.connector else {
            return false;
        };
        let Some(user) = &account.keycloak_user_id else {
            return false;
        };
        match &account.connector {
            Some(owner) => owner.as_str() != me,
            None => !sole && !self.snapshot.users.iter().any(|known| &known.id == user),
        }
    }
}

// -------------------------------------------------------------------------------------------------
// Generators.

fn opt<T: std::fmt::Debug + Clone + 'static>(values: Vec<T>) -> impl Strategy<Value = Option<T>> {
    prop::option::of(select(values))
}

fn odd_user() -> impl Strategy<Value = KeycloakUser> {
    (
        select(vec!["u0", "u1", "u2", "u3", "u4", "u5"]),
        select(vec![
            "ann", "Ann", "ben", "bob", "cat", "admin", "svc-x", "", "ann.lee", "ärger",
        ]),
        opt(vec![
            "ann@x.io", "ANN@x.io", "ben@x.io", "cat@y.io", "bad", "", "b@x.io",
        ]),
        opt(vec!["Ann", "Ben", "", " "]),
        opt(vec!["Lee", "Example"]),
        prop::bool::weighted(0.8),
        any::<bool>(),
        opt(vec!["ALEE", "bob", ""]),
    )
        .prop_map(
            |(id, username, email, first, last, enabled, verified, uid)| {
                let mut attributes = BTreeMap::new();
                if let Some(uid) = uid {
                    attributes.insert("uid".to_owned(), vec![uid.to_owned()]);
                }
                KeycloakUser {
                    id: UserId::new(id),
                    username: username.to_owned(),
                    email: email.map(str::to_owned),
                    first_name: first.map(str::to_owned),
                    last_name: last.map(str::to_owned),
                    enabled,
                    email_verified: verified,
                    attributes,
                    federation_link: None,
                }
            },
        )
}

fn odd_group() -> impl Strategy<Value = KeycloakGroup> {
    (
        select(vec!["g0", "g1", "g2", "g3", "g4"]),
        select(vec!["devs", "Devs", "ops", "staff", ""]),
        select(vec!["/staff", "/devs", "/ops", "/staff/devs", "/x"]),
        opt(vec!["g0", "g1", "g2", "g9"]),
    )
        .prop_map(|(id, name, path, parent)| KeycloakGroup {
            id: GroupId::new(id),
            name: name.to_owned(),
            path: path.to_owned(),
            parent_id: parent.map(GroupId::new),
        })
}

fn odd_membership() -> impl Strategy<Value = KeycloakMembership> {
    (
        select(vec!["u0", "u1", "u2", "u3", "u9"]),
        select(vec!["g0", "g1", "g2", "g3", "g9"]),
    )
        .prop_map(|(user, group)| KeycloakMembership {
            user_id: UserId::new(user),
            group_id: GroupId::new(group),
        })
}

fn odd_account() -> impl Strategy<Value = Account> {
    (
        select(vec!["a0", "a1", "a2", "a3", "a4", "a5"]),
        select(vec![
            "ann", "ANN", "ben", "bob", "cat", "admin", "alee", "svc-x", "ci-bot",
        ]),
        select(vec!["Ann Lee", "Ben", "Ann Example", ""]),
        opt(vec!["ann@x.io", "ben@x.io", "B@X.IO", "old@x.io"]),
        prop::bool::weighted(0.7),
        opt(vec!["u0", "u1", "u2", "u3", "u9"]),
        opt(vec!["corp", "partners"]),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(id, login, display, email, active, user, connector, administrator)| Account {
                id: AccountId::new(id),
                login: login.to_owned(),
                display_name: display.to_owned(),
                email: email.map(str::to_owned),
                active,
                keycloak_user_id: user.map(UserId::new),
                connector: connector.map(ConnectorName::new),
                administrator,
            },
        )
}

fn odd_product_group() -> impl Strategy<Value = Group> {
    (
        select(vec![
            "devs",
            "Devs",
            "ops",
            "staff",
            "old",
            "jira-users",
            "welcome",
            "jira-administrators",
        ]),
        any::<bool>(),
        opt(vec!["corp", "partners"]),
    )
        .prop_map(|(name, managed, connector)| Group {
            name: GroupName::new(name),
            managed,
            connector: connector.map(ConnectorName::new),
        })
}

fn odd_product_membership() -> impl Strategy<Value = Membership> {
    (
        select(vec!["a0", "a1", "a2", "a3", "a9"]),
        select(vec![
            "devs",
            "DEVS",
            "ops",
            "old",
            "jira-users",
            "x",
            "Jira-Administrators",
        ]),
    )
        .prop_map(|(account, group)| Membership {
            account_id: AccountId::new(account),
            group: GroupName::new(group),
        })
}

fn odd_policy() -> impl Strategy<Value = Policy> {
    (
        (
            select(vec![vec![], vec!["/staff"], vec!["/devs", "/ops"]]),
            any::<bool>(),
            select(vec![0, 1, 2]),
            select(vec![0, 1, 2, 3, 4]),
            any::<bool>(),
        ),
        (
            select(vec![vec![], vec!["welcome"]]),
            select(vec![vec![], vec!["jira-users"]]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            select(vec![
                CleanupAction::Deactivate,
                CleanupAction::Delete,
                CleanupAction::RemoveGroups,
                CleanupAction::Keep,
            ]),
            select(vec![
                Fallback::RemoveGroups,
                Fallback::Delete,
                Fallback::Keep,
            ]),
            select(vec![vec![], vec!["admin"], vec!["admin", "*-bot", "svc-*"]]),
            select(vec![(0, 0), (1, 50), (50, 10), (1000, 100)]),
            any::<bool>(),
        ),
        (
            select(vec![vec![], vec!["/staff/*"], vec!["/D?VS", "/x"]]),
            prop::bool::weighted(0.7),
            prop::collection::vec(prop::bool::weighted(0.7), 4),
        ),
    )
        .prop_map(
            |(
                (required, subgroups, login, select_mode, path_naming),
                (new_defaults, all_defaults, by_login, by_email, remove_unmapped),
                (cleanup, fallback, protected, (max_accounts, max_percent), email_optional),
                (exclude, remove_unmanaged_members, switches),
            )| {
                let mut policy = Policy::default();
                policy.scope.required_groups = required.into_iter().map(str::to_owned).collect();
                policy.scope.include_subgroups = subgroups;
                match login {
                    0 => {}
                    1 => {
                        policy.attributes.login.from = LoginSource::Email;
                        policy.attributes.login.strip_domain = true;
                    }
                    _ => policy.attributes.login.from = LoginSource::Attribute("uid".to_owned()),
                }
                policy.attributes.email.required = !email_optional;
                let map = || {
                    [("/devs", "devs"), ("/staff/devs", "devs"), ("/ops", "Ops")]
                        .into_iter()
                        .map(|(path, name)| (path.to_owned(), name.to_owned()))
                        .collect()
                };
                policy.groups.select = match select_mode {
                    0 => GroupSelection::All,
                    1 => GroupSelection::Map(map()),
                    2 => GroupSelection::Pattern {
                        regex: "^(d|o)(.*)$".to_owned(),
                        rename: "$1$2".to_owned(),
                    },
                    3 => GroupSelection::MapAndRest {
                        map: map(),
                        rest: RestSelection::All,
                    },
                    _ => GroupSelection::MapAndRest {
                        map: [("/staff", "staff-team")]
                            .into_iter()
                            .map(|(path, name)| (path.to_owned(), name.to_owned()))
                            .collect(),
                        rest: RestSelection::Pattern {
                            regex: "^(d|o)".to_owned(),
                            rename: "x-$0".to_owned(),
                        },
                    },
                };
                policy.groups.exclude = exclude.into_iter().map(str::to_owned).collect();
                policy.groups.remove_unmanaged_members = remove_unmanaged_members;
                policy.operations = Operations {
                    create_users: switches[0],
                    update_users: switches[1],
                    group_changes: switches[2],
                    deactivate_users: switches[3],
                };
                policy.groups.naming = if path_naming {
                    GroupNaming::Path
                } else {
                    GroupNaming::Name
                };
                policy.groups.default_for_new_users =
                    new_defaults.into_iter().map(str::to_owned).collect();
                policy.groups.default_for_all_users =
                    all_defaults.into_iter().map(str::to_owned).collect();
                policy.groups.remove_unmapped = remove_unmapped;
                policy.linking.by_login = by_login;
                policy.linking.by_email = by_email;
                policy.cleanup.action = cleanup;
                policy.cleanup.when_cannot_deactivate = fallback;
                policy.protected_accounts = protected.into_iter().map(str::to_owned).collect();
                policy.safety.max_accounts = max_accounts;
                policy.safety.max_percent = max_percent;
                policy
            },
        )
}

fn product_and_capabilities() -> impl Strategy<Value = (Product, Capabilities)> {
    (
        select(vec![Product::Jira, Product::Confluence, Product::Bitbucket]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(product, usual, swap)| {
            let mut capabilities = Capabilities::of(product);
            if !usual {
                capabilities.can_deactivate ^= swap;
                capabilities.can_rename ^= !swap;
            }
            (product, capabilities)
        })
}

fn odd_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(odd_user(), 0..6),
        prop::collection::vec(odd_group(), 0..5),
        prop::collection::vec(odd_membership(), 0..10),
        prop::collection::vec(odd_account(), 0..6),
        prop::collection::vec(odd_product_group(), 0..5),
        prop::collection::vec(odd_product_membership(), 0..8),
        odd_policy(),
        product_and_capabilities(),
        opt(vec![("corp", true), ("corp", false), ("partners", false)]),
    )
        .prop_map(
            |(
                users,
                groups,
                memberships,
                accounts,
                product_groups,
                product_memberships,
                policy,
                (product, capabilities),
                connector,
            )| {
                Case {
                    snapshot: Snapshot {
                        users,
                        groups,
                        memberships,
                    },
                    state: ProductState {
                        product,
                        capabilities,
                        accounts,
                        groups: product_groups,
                        memberships: product_memberships,
                        leads: Vec::new(),
                        seats: None,
                    },
                    policy,
                    connector,
                }
            },
        )
}

/// An odd case, plus a user and an unmanaged account that share only an email, which
/// Keycloak may or may not have verified, and the policy may or may not require verified.
fn email_link_case() -> impl Strategy<Value = Case> {
    (odd_case(), any::<bool>(), any::<bool>()).prop_map(|(mut case, verified, require)| {
        case.snapshot.users.push(KeycloakUser {
            id: UserId::new("u-zed"),
            username: "zed".to_owned(),
            email: Some("zed@x.io".to_owned()),
            first_name: Some("Zed".to_owned()),
            last_name: None,
            enabled: true,
            email_verified: verified,
            attributes: BTreeMap::new(),
            federation_link: None,
        });
        case.state.accounts.push(Account {
            id: AccountId::new("a-zed"),
            login: "zlee".to_owned(),
            display_name: "Z Lee".to_owned(),
            email: Some("ZED@x.io".to_owned()),
            active: true,
            keycloak_user_id: None,
            administrator: false,
            connector: None,
        });
        case.policy.linking.by_email = true;
        case.policy.linking.by_email_requires_verified = require;
        case
    })
}

/// An odd case, plus a user in no Keycloak group whose managed account is in a product group
/// keysync did not create and one it created, both mapped from Keycloak groups: a member to
/// prune from both, or (with `remove_unmanaged_members = false`) only from the second.
fn prune_case() -> impl Strategy<Value = Case> {
    (odd_case(), any::<bool>()).prop_map(|(mut case, all)| {
        case.snapshot.users.push(KeycloakUser {
            id: UserId::new("u-zed"),
            username: "zed".to_owned(),
            email: Some("zed@x.io".to_owned()),
            first_name: Some("Zed".to_owned()),
            last_name: None,
            enabled: true,
            email_verified: true,
            attributes: BTreeMap::new(),
            federation_link: None,
        });
        for name in ["zed-team", "zed-created"] {
            case.snapshot.groups.push(KeycloakGroup {
                id: GroupId::new(format!("g-{name}")),
                name: name.to_owned(),
                path: format!("/{name}"),
                parent_id: None,
            });
            case.state.memberships.push(Membership {
                account_id: AccountId::new("a-zed"),
                group: GroupName::new(name),
            });
        }
        let owner = case.connector.map(|(name, _)| ConnectorName::new(name));
        case.state.accounts.push(Account {
            id: AccountId::new("a-zed"),
            login: "zed".to_owned(),
            display_name: "Zed".to_owned(),
            email: Some("zed@x.io".to_owned()),
            active: true,
            keycloak_user_id: Some(UserId::new("u-zed")),
            administrator: false,
            connector: owner.clone(),
        });
        case.state.groups.push(Group {
            name: GroupName::new("zed-team"),
            managed: false,
            connector: None,
        });
        case.state.groups.push(Group {
            name: GroupName::new("zed-created"),
            managed: true,
            connector: owner,
        });
        case.policy.scope.required_groups.clear();
        case.policy.attributes.login.from = LoginSource::Username;
        case.policy.groups.select = if all {
            GroupSelection::All
        } else {
            GroupSelection::MapAndRest {
                map: [("/zed-team", "zed-team")]
                    .into_iter()
                    .map(|(path, name)| (path.to_owned(), name.to_owned()))
                    .collect(),
                rest: RestSelection::All,
            }
        };
        case
    })
}

/// An odd case with every vector of its inputs shuffled.
fn odd_case_and_shuffled() -> impl Strategy<Value = (Case, Case)> {
    odd_case().prop_flat_map(|case| {
        let shuffled = (
            Just(case.snapshot.users.clone()).prop_shuffle(),
            Just(case.snapshot.groups.clone()).prop_shuffle(),
            Just(case.snapshot.memberships.clone()).prop_shuffle(),
            Just(case.state.accounts.clone()).prop_shuffle(),
            Just(case.state.groups.clone()).prop_shuffle(),
            Just(case.state.memberships.clone()).prop_shuffle(),
        );
        (Just(case), shuffled).prop_map(
            |(
                case,
                (users, groups, memberships, accounts, product_groups, product_memberships),
            )| {
                let shuffled = Case {
                    snapshot: Snapshot {
                        users,
                        groups,
                        memberships,
                    },
                    state: ProductState {
                        accounts,
                        groups: product_groups,
                        memberships: product_memberships,
                        ..case.state.clone()
                    },
                    policy: case.policy.clone(),
                    connector: case.connector,
                };
                (case, shuffled)
            },
        )
    })
}

const CLEAN_USERS: [&str; 6] = ["ann", "ben", "cat", "dan", "eve", "fay"];
const CLEAN_GROUPS: [&str; 4] = ["/staff", "/staff/devs", "/ops", "/guests"];

/// Well-formed input: users u0..u5 with distinct usernames, a fixed group tree, and a product whose
/// accounts are managed for some of those users (with stale data), for users who are gone, or
/// unmanaged and named like a user (to be linked) or not.
fn clean_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((any::<bool>(), prop::bool::weighted(0.8), any::<bool>()), 6),
        prop::collection::vec(prop::collection::vec(any::<bool>(), 4), 6),
        prop::collection::vec((0..6u8, any::<bool>(), any::<bool>()), 6),
        prop::collection::vec(prop::collection::vec(any::<bool>(), 3), 6),
        (
            select(vec![vec![], vec!["/staff"]]),
            select(vec![
                CleanupAction::Deactivate,
                CleanupAction::Delete,
                CleanupAction::RemoveGroups,
                CleanupAction::Keep,
            ]),
            select(vec![Product::Jira, Product::Bitbucket]),
        ),
    )
        .prop_map(
            |(
                user_flags,
                user_groups,
                account_kinds,
                account_groups,
                (required, cleanup, product),
            )| {
                let mut users = Vec::new();
                let mut memberships = Vec::new();
                for (idx, &(exists, enabled, renamed_email)) in user_flags.iter().enumerate() {
                    if !exists {
                        continue;
                    }
                    let username = CLEAN_USERS[idx];
                    let email = if renamed_email {
                        format!("{username}.new@x.io")
                    } else {
                        format!("{username}@x.io")
                    };
                    users.push(KeycloakUser {
                        id: UserId::new(format!("u{idx}")),
                        username: username.to_owned(),
                        email: Some(email),
                        first_name: Some(username.to_uppercase()),
                        last_name: Some("Example".to_owned()),
                        enabled,
                        email_verified: true,
                        attributes: BTreeMap::new(),
                        federation_link: None,
                    });
                    for (group_idx, &member) in user_groups[idx].iter().enumerate() {
                        if member {
                            memberships.push(KeycloakMembership {
                                user_id: UserId::new(format!("u{idx}")),
                                group_id: GroupId::new(CLEAN_GROUPS[group_idx]),
                            });
                        }
                    }
                }
                let groups = CLEAN_GROUPS
                    .iter()
                    .map(|path| {
                        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
                        KeycloakGroup {
                            id: GroupId::new(*path),
                            name: name.to_owned(),
                            path: (*path).to_owned(),
                            parent_id: (!parent.is_empty()).then(|| GroupId::new(parent)),
                        }
                    })
                    .collect();

                // Account kinds: 0 none; 1 managed for the user, fresh; 2 managed for the user,
                // stale and maybe inactive; 3 unmanaged with the user's login; 4 managed for a user
                // who is gone; 5 managed, with the user's login, for a user who is gone (the user
                // was deleted and re-created, if it exists), maybe inactive.
                let mut accounts = Vec::new();
                let mut product_memberships = Vec::new();
                let product_groups = ["devs", "ops", "staff", "guests", "manual"];
                for (idx, &(kind, active, stale)) in account_kinds.iter().enumerate() {
                    let username = CLEAN_USERS[idx];
                    let account = match kind {
                        1 | 2 => Account {
                            id: AccountId::new(format!("A{idx}")),
                            login: username.to_owned(),
                            display_name: if kind == 2 && stale {
                                "Stale".to_owned()
                            } else {
                                format!("{} Example", username.to_uppercase())
                            },
                            email: Some(format!("{username}@x.io")),
                            active: kind == 1 || active,
                            keycloak_user_id: Some(UserId::new(format!("u{idx}"))),
                            administrator: false,
                            connector: None,
                        },
                        3 => Account {
                            id: AccountId::new(format!("A{idx}")),
                            login: username.to_uppercase(),
                            display_name: "Local".to_owned(),
                            email: None,
                            active,
                            keycloak_user_id: None,
                            administrator: false,
                            connector: None,
                        },
                        5 => Account {
                            id: AccountId::new(format!("R{idx}")),
                            login: username.to_owned(),
                            display_name: "Before".to_owned(),
                            email: Some(format!("{username}.before@x.io")),
                            active,
                            keycloak_user_id: Some(UserId::new(format!("u{idx}-deleted"))),
                            administrator: false,
                            connector: None,
                        },
                        4 => Account {
                            id: AccountId::new(format!("G{idx}")),
                            login: format!("gone{idx}"),
                            display_name: "Gone".to_owned(),
                            email: Some(format!("gone{idx}@x.io")),
                            active,
                            keycloak_user_id: Some(UserId::new(format!("gone{idx}"))),
                            administrator: false,
                            connector: None,
                        },
                        _ => continue,
                    };
                    for (group_idx, &member) in account_groups[idx].iter().enumerate() {
                        if member {
                            product_memberships.push(Membership {
                                account_id: account.id.clone(),
                                group: GroupName::new(product_groups[[0, 1, 4][group_idx]]),
                            });
                        }
                    }
                    accounts.push(account);
                }
                let mut policy = Policy::default();
                policy.scope.required_groups = required.into_iter().map(str::to_owned).collect();
                policy.cleanup.action = cleanup;
                policy.safety.max_percent = 100;
                let mut state = fixture::product(product, accounts, vec![], product_memberships);
                state.groups = vec![
                    Group {
                        name: GroupName::new("devs"),
                        managed: true,
                        connector: None,
                    },
                    Group {
                        name: GroupName::new("ops"),
                        managed: false,
                        connector: None,
                    },
                    Group {
                        name: GroupName::new("manual"),
                        managed: false,
                        connector: None,
                    },
                ];
                Case {
                    snapshot: Snapshot {
                        users,
                        groups,
                        memberships,
                    },
                    state,
                    policy,
                    connector: None,
                }
            },
        )
}

fn new_account_id() -> impl FnMut(&model::plan::Change) -> AccountId {
    let mut n_created = 0;
    move |_| {
        n_created += 1;
        AccountId::new(format!("new-{n_created}"))
    }
}

// -------------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig { cases: fixture::property_cases(512), ..ProptestConfig::default() })]

    /// The plan does not depend on the order of any input vector, and never panics on odd input.
    #[test]
    fn planning_is_deterministic_whatever_the_input_order((case, shuffled) in odd_case_and_shuffled()) {
        planning_is_deterministic_whatever_the_input_order_holds((case, shuffled))?;
    }

    /// Changes come in plan order, and no two changes share an id.
    #[test]
    fn changes_are_ordered_by_kind_and_have_distinct_ids(case in odd_case()) {
        changes_are_ordered_by_kind_and_have_distinct_ids_holds(case)?;
    }

    /// Applying a plan and planning again leaves nothing to do, except work the first plan said it
    /// deferred (a login this plan frees), which the following plans finish. The policies turn
    /// `operations` switches off too: then nothing those switches allow is left to do.
    #[test]
    fn applying_a_plan_and_planning_again_leaves_nothing_to_do(case in odd_case()) {
        applying_a_plan_and_planning_again_leaves_nothing_to_do_holds(case)?;
    }

    /// Accounts keysync does not manage (and does not link in this plan) and protected accounts
    /// keep their fields and their memberships; no change names them. The one exception is a group
    /// keysync created and removes, which takes its memberships with it.
    #[test]
    fn unmanaged_and_protected_accounts_are_never_touched(case in odd_case()) {
        unmanaged_and_protected_accounts_are_never_touched_holds(case)?;
    }

    /// An account is linked by email only to a user whose email Keycloak verified (the
    /// default), so a user who edits their own email cannot take an account over.
    #[test]
    fn links_by_email_go_only_to_verified_emails(case in email_link_case()) {
        links_by_email_go_only_to_verified_emails_holds(case)?;
    }

    /// A held plan says why, and the limits hold a plan whenever they should.
    #[test]
    fn held_plans_say_why(case in odd_case()) {
        held_plans_say_why_holds(case)?;
    }

    /// With every safety limit at zero, a plan is held exactly when one of its changes takes
    /// access away (a membership, a group, an account deactivated or deleted) or links an
    /// account after the first sync: nothing that takes access away escapes the counts.
    #[test]
    fn every_change_that_takes_access_away_counts_toward_a_hold(case in odd_case()) {
        every_change_that_takes_access_away_counts_toward_a_hold_holds(case)?;
    }

    /// Applying a plan's changes one at a time, as an applier records what the product did, gives
    /// what `apply` gives, and the lookups find the state's accounts; applying them again, as for a
    /// redelivered change set, changes nothing more.
    #[test]
    fn apply_is_apply_one_over_the_changes(case in odd_case()) {
        apply_is_apply_one_over_the_changes_holds(case)?;
    }

    /// On well-formed input the product ends in the desired state: every enabled user in scope has
    /// one active, managed account with the mapped fields and exactly its mapped groups among the
    /// managed ones; every disabled user's account is inactive (or stripped where the product
    /// cannot deactivate); and every other managed account went through the cleanup action.
    #[test]
    fn the_product_ends_in_the_desired_state(case in clean_case()) {
        the_product_ends_in_the_desired_state_holds(case)?;
    }

    /// A switch of `operations` that is off takes out of the plan exactly the changes of its
    /// kinds: the plan is the plan with every switch on, less those changes, and one `Disabled`
    /// diagnostic per switch counts them. (That planning again after applying leaves nothing a
    /// switch allows is `applying_a_plan_and_planning_again_leaves_nothing_to_do`, whose policies
    /// turn switches off.)
    #[test]
    fn switches_that_are_off_leave_out_exactly_their_changes(case in odd_case()) {
        switches_that_are_off_leave_out_exactly_their_changes_holds(case)?;
    }

    /// Every change of a part of a streamed first sync (some users, every group, those users'
    /// memberships; Keycloak keeps ids and usernames unique, so users sharing either are in one
    /// part) is a change of the complete plan, with the same id and action; and taking what the
    /// parts created out of the state they were applied to gives back the state before them.
    #[test]
    fn the_changes_of_a_part_are_changes_of_the_complete_plan(
        case in odd_case(),
        split in prop::collection::vec(0usize..3, 6),
        seats in opt(vec![(0u64, None), (2, Some(3)), (0, Some(40)), (1, Some(13))]),
    ) {
        let mut case = case;
        case.state.seats = seats.map(|(used, limit)| Seats { used, limit });
        the_changes_of_a_part_are_changes_of_the_complete_plan_holds(case, split)?;
    }

    /// An excluded Keycloak group is the reason for no group and no membership; with
    /// `remove_unmanaged_members = false`, no member is pruned from a group keysync did not
    /// create.
    #[test]
    fn excluded_groups_and_groups_keysync_did_not_create_are_left_alone(case in prune_case()) {
        excluded_groups_and_groups_keysync_did_not_create_are_left_alone_holds(case)?;
    }
}

// -------------------------------------------------------------------------------------------------
// The properties' bodies, outside the macro so that rustfmt formats them.

fn planning_is_deterministic_whatever_the_input_order_holds(
    (case, shuffled): (Case, Case),
) -> Result<(), TestCaseError> {
    let policy = case.valid_policy();
    let first = plan(&case.snapshot, &case.state, &policy);
    prop_assert_eq!(&first, &plan(&case.snapshot, &case.state, &policy));
    let second = plan(&shuffled.snapshot, &shuffled.state, &policy);
    prop_assert_eq!(first.to_string(), second.to_string());
    prop_assert_eq!(first, second);
    Ok(())
}

fn changes_are_ordered_by_kind_and_have_distinct_ids_holds(
    case: Case,
) -> Result<(), TestCaseError> {
    let planned = plan(&case.snapshot, &case.state, &case.valid_policy());
    let ops: Vec<ChangeOp> = planned.changes.iter().map(|change| change.op()).collect();
    prop_assert!(
        ops.windows(2).all(|pair| pair[0] <= pair[1]),
        "not in plan order: {:?}",
        ops
    );
    let ids: BTreeSet<_> = planned.changes.iter().map(|change| change.id).collect();
    prop_assert_eq!(ids.len(), planned.changes.len());
    for change in &planned.changes {
        prop_assert!(!change.reason.is_empty(), "no reason for {}", change);
    }
    Ok(())
}

fn applying_a_plan_and_planning_again_leaves_nothing_to_do_holds(
    case: Case,
) -> Result<(), TestCaseError> {
    let policy = case.valid_policy();
    let planned = plan(&case.snapshot, &case.state, &policy);
    assert_converges(&case.snapshot, case.state.clone(), &policy, &planned);
    Ok(())
}

fn apply_is_apply_one_over_the_changes_holds(case: Case) -> Result<(), TestCaseError> {
    let planned = plan(&case.snapshot, &case.state, &case.valid_policy());
    // The product answers the same id when asked to create an account again.
    let id_of = |change: &model::plan::Change| match &change.action {
        Action::CreateUser { fields } => AccountId::new(format!("new-{}", fields.login)),
        _ => AccountId::new("not-created"),
    };
    let all_at_once = apply(case.state.clone(), &planned.changes, id_of);
    let mut applied = Applied::new(case.state.clone());
    for change in &planned.changes {
        applied.apply_one(change, id_of);
    }
    let one_at_a_time = applied.into_state();
    prop_assert_eq!(&one_at_a_time, &all_at_once);

    let applied = Applied::new(one_at_a_time.clone());
    for account in &one_at_a_time.accounts {
        let first_with_id = one_at_a_time
            .accounts
            .iter()
            .find(|other| other.id == account.id);
        prop_assert_eq!(applied.account(account.id.as_str()), first_with_id);
        let login = account.login.to_uppercase();
        let first_with_login = one_at_a_time
            .accounts
            .iter()
            .find(|other| other.login.to_lowercase() == login.to_lowercase());
        prop_assert_eq!(applied.account_by_login(&login), first_with_login);
    }

    let again = apply(one_at_a_time.clone(), &planned.changes, id_of);
    prop_assert_eq!(again, one_at_a_time);
    Ok(())
}

/// Whether keysync must leave `account` alone: its login matches `protected_accounts`, it
/// is in a group that matches `protected_groups`, or the product reports administrator
/// rights.
fn is_protected(state: &ProductState, policy: &ValidPolicy, account: &Account) -> bool {
    account.administrator
        || policy.is_protected(&account.login)
        || state.memberships.iter().any(|membership| {
            membership.account_id == account.id
                && policy.is_protected_group(membership.group.as_str())
        })
}

fn unmanaged_and_protected_accounts_are_never_touched_holds(
    case: Case,
) -> Result<(), TestCaseError> {
    let policy = case.valid_policy();
    let planned = plan(&case.snapshot, &case.state, &policy);
    let linked: BTreeSet<&AccountId> = planned
        .changes
        .iter()
        .filter_map(|change| match &change.action {
            Action::LinkUser { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    let untouchable: BTreeSet<&AccountId> = case
        .state
        .accounts
        .iter()
        .filter(|account| {
            is_protected(&case.state, &policy, account)
                || case.is_foreign(account)
                || (!account.is_managed() && !linked.contains(&account.id))
        })
        .map(|account| &account.id)
        .collect();
    for change in &planned.changes {
        let named = match &change.action {
            Action::LinkUser { id, .. } => Some(id),
            Action::UpdateUser { account, .. }
            | Action::ReactivateUser { account }
            | Action::AddMembership { account, .. }
            | Action::RemoveMembership { account, .. }
            | Action::DeactivateUser { account, .. }
            | Action::DeleteUser { account, .. } => match account {
                AccountRef::Existing { id, .. } => Some(id),
                AccountRef::New { .. } => None,
            },
            Action::CreateGroup { .. } | Action::RemoveGroup { .. } | Action::CreateUser { .. } => {
                None
            }
        };
        if let Some(id) = named {
            let protected = case.state.accounts.iter().any(|account| {
                &account.id == id
                    && (is_protected(&case.state, &policy, account) || case.is_foreign(account))
            });
            prop_assert!(
                !protected,
                "a change names protected account {}: {}",
                id,
                change
            );
            let unmanaged = case
                .state
                .accounts
                .iter()
                .any(|account| &account.id == id && !account.is_managed());
            prop_assert!(
                !unmanaged || linked.contains(id),
                "a change names unmanaged account {}: {}",
                id,
                change
            );
        }
    }

    let removed_groups: BTreeSet<String> = planned
        .changes
        .iter()
        .filter_map(|change| match &change.action {
            Action::RemoveGroup { group } => Some(group.to_lowercase()),
            _ => None,
        })
        .collect();
    let after = apply(case.state.clone(), &planned.changes, new_account_id());
    let memberships = |state: &ProductState, id: &AccountId| -> Vec<String> {
        let mut groups: Vec<String> = state
            .memberships
            .iter()
            .filter(|membership| &membership.account_id == id)
            .map(|membership| membership.group.as_str().to_owned())
            .filter(|group| !removed_groups.contains(&group.to_lowercase()))
            .collect();
        groups.sort();
        groups
    };
    for id in untouchable {
        let before: Vec<&Account> = case
            .state
            .accounts
            .iter()
            .filter(|account| &account.id == id)
            .collect();
        let now: Vec<&Account> = after
            .accounts
            .iter()
            .filter(|account| &account.id == id)
            .collect();
        prop_assert_eq!(before, now, "account {} changed", id);
        prop_assert_eq!(
            memberships(&case.state, id),
            memberships(&after, id),
            "memberships of {} changed",
            id
        );
    }
    Ok(())
}

fn links_by_email_go_only_to_verified_emails_holds(case: Case) -> Result<(), TestCaseError> {
    let policy = case.valid_policy();
    let planned = plan(&case.snapshot, &case.state, &policy);
    for change in &planned.changes {
        let Action::LinkUser { id, .. } = &change.action else {
            continue;
        };
        if !change.reason.contains(": same email") {
            continue;
        }
        let verified = case
            .snapshot
            .users
            .iter()
            .filter(|user| change.keycloak_user_id.as_ref() == Some(&user.id))
            .all(|user| user.email_verified);
        prop_assert!(
            verified || !policy.policy().linking.by_email_requires_verified,
            "account {id} linked by an unverified email: {change}"
        );
    }
    Ok(())
}

fn held_plans_say_why_holds(case: Case) -> Result<(), TestCaseError> {
    let planned = plan(&case.snapshot, &case.state, &case.valid_policy());
    let safety = &case.policy.safety;
    let managed = case
        .state
        .accounts
        .iter()
        .filter(|account| account.is_managed() && !case.is_foreign(account))
        .count();
    let removals = planned.count(ChangeOp::DeactivateUser) + planned.count(ChangeOp::DeleteUser);
    let stripped: BTreeSet<&str> = planned
        .changes
        .iter()
        .filter_map(|change| match &change.action {
            Action::RemoveMembership {
                account: AccountRef::Existing { id, .. },
                ..
            } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    // The counts are the plan's own changes.
    let counts = planned.safety;
    prop_assert_eq!(counts.managed_accounts, managed);
    prop_assert_eq!(counts.first_run, managed == 0);
    prop_assert_eq!(
        counts.removed_memberships,
        planned.count(ChangeOp::RemoveMembership)
    );
    prop_assert_eq!(counts.removed_groups, planned.count(ChangeOp::RemoveGroup));
    prop_assert_eq!(counts.links, planned.count(ChangeOp::LinkUser));
    prop_assert!(
        counts.losing_access >= removals && counts.losing_access <= removals + stripped.len()
    );
    let over = |count: usize, limit: u32| count > limit as usize;
    let over_percent =
        |part: usize, whole: usize, limit: u32| whole > 0 && part * 100 > limit as usize * whole;
    let must_hold = over(removals, safety.max_accounts)
        || over_percent(removals, managed, safety.max_percent)
        || over(counts.removed_memberships, safety.max_memberships)
        || over_percent(
            counts.removed_memberships,
            counts.managed_memberships,
            safety.max_memberships_percent,
        )
        || over(counts.removed_groups, safety.max_groups)
        || (!counts.first_run && over(counts.links, safety.max_links))
        || (case.snapshot.users.is_empty() && managed > 0);
    prop_assert!(
        !must_hold || planned.hold.is_some(),
        "not held:\n{}",
        planned
    );
    if let Some(hold) = &planned.hold {
        prop_assert!(!hold.reason.is_empty());
        let explained = hold.reason.contains("would lose access")
            || hold.reason.contains("membership(s) would be removed")
            || hold.reason.contains("memberships of managed accounts")
            || hold.reason.contains("would lose")
            || hold.reason.contains("is missing from the snapshot")
            || hold.reason.contains("group(s) would be removed")
            || hold.reason.contains("would be linked")
            || hold.reason.contains("has no users")
            || hold.reason.contains("no Keycloak user is in scope");
        prop_assert!(explained, "hold without a matching reason: {}", hold.reason);
    }
    Ok(())
}

fn every_change_that_takes_access_away_counts_toward_a_hold_holds(
    mut case: Case,
) -> Result<(), TestCaseError> {
    case.policy.safety = Safety {
        max_accounts: 0,
        max_percent: 0,
        max_memberships: 0,
        max_memberships_percent: 0,
        max_group_loss_percent: 0,
        max_groups: 0,
        max_links: 0,
    };
    let planned = plan(&case.snapshot, &case.state, &case.valid_policy());
    let takes_access = planned.changes.iter().any(|change| {
        matches!(
            change.op(),
            ChangeOp::RemoveMembership
                | ChangeOp::DeactivateUser
                | ChangeOp::DeleteUser
                | ChangeOp::RemoveGroup
        ) || (change.op() == ChangeOp::LinkUser && !planned.safety.first_run)
    });
    let empty_snapshot_hold = planned.hold.as_ref().is_some_and(|hold| {
        hold.reason.contains("has no users") || hold.reason.contains("no Keycloak user is in scope")
    });
    prop_assert!(
        takes_access == planned.hold.is_some() || (!takes_access && empty_snapshot_hold),
        "with every limit at zero, held = takes access away:\n{}",
        planned
    );
    Ok(())
}

fn the_product_ends_in_the_desired_state_holds(case: Case) -> Result<(), TestCaseError> {
    let policy = case.valid_policy();
    let planned = plan(&case.snapshot, &case.state, &policy);
    prop_assert!(planned.conflicts.is_empty(), "{}", planned);
    let after = assert_converges(&case.snapshot, case.state.clone(), &policy, &planned);
    let can_deactivate = case.state.capabilities.can_deactivate;
    let groups_of = |id: &AccountId| -> BTreeSet<String> {
        after
            .memberships
            .iter()
            .filter(|membership| &membership.account_id == id)
            .map(|membership| membership.group.as_str().to_owned())
            .collect()
    };
    let managed_groups: BTreeSet<String> = ["staff", "devs", "ops", "guests"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let in_scope = |user: &KeycloakUser| {
        case.policy.scope.required_groups.is_empty()
            || case.snapshot.memberships.iter().any(|membership| {
                membership.user_id == user.id && membership.group_id.as_str().starts_with("/staff")
            })
    };
    for user in &case.snapshot.users {
        let accounts: Vec<&Account> = after
            .accounts
            .iter()
            .filter(|account| account.keycloak_user_id.as_ref() == Some(&user.id))
            .collect();
        let before: Vec<&Account> = case
            .state
            .accounts
            .iter()
            .filter(|account| account.keycloak_user_id.as_ref() == Some(&user.id))
            .collect();
        if !in_scope(user) {
            continue;
        }
        if !user.enabled {
            match (before.first(), accounts.first()) {
                (None, account) => {
                    prop_assert!(account.is_none(), "a disabled user got an account")
                }
                (Some(_), Some(account)) if can_deactivate => prop_assert!(!account.active),
                (Some(_), Some(account)) => {
                    prop_assert!(groups_of(&account.id).is_disjoint(&managed_groups))
                }
                (Some(_), None) => prop_assert!(false, "the account of a disabled user vanished"),
            }
            continue;
        }
        prop_assert_eq!(
            accounts.len(),
            1,
            "user {} has {} accounts",
            user.id,
            accounts.len()
        );
        let account = accounts[0];
        prop_assert!(account.active || !can_deactivate);
        prop_assert_eq!(account.login.to_lowercase(), user.username.clone());
        prop_assert_eq!(account.email.as_deref(), user.email.as_deref());
        prop_assert_eq!(
            &account.display_name,
            &format!("{} Example", user.username.to_uppercase())
        );
        let wanted: BTreeSet<String> = case
            .snapshot
            .memberships
            .iter()
            .filter(|membership| membership.user_id == user.id)
            .map(|membership| {
                membership
                    .group_id
                    .as_str()
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        let have: BTreeSet<String> = groups_of(&account.id)
            .intersection(&managed_groups)
            .cloned()
            .collect();
        prop_assert_eq!(have, wanted);
    }
    for account in &case.state.accounts {
        let Some(user_id) = &account.keycloak_user_id else {
            continue;
        };
        let user = case.snapshot.users.iter().find(|user| &user.id == user_id);
        if user.is_some_and(&in_scope) {
            continue;
        }
        // The account of a user deleted and re-created follows the login to the new user, as
        // the check of the users above saw.
        let recreated = user.is_none()
            && case.snapshot.users.iter().any(|user| {
                user.enabled && in_scope(user) && user.username == account.login.to_lowercase()
            });
        if recreated {
            prop_assert!(
                after.accounts.iter().any(|now| now.id == account.id
                    && now
                        .keycloak_user_id
                        .as_ref()
                        .is_some_and(|id| id != user_id)),
                "account {} did not follow its login",
                account.id
            );
            continue;
        }
        let now = after
            .accounts
            .iter()
            .find(|candidate| candidate.id == account.id);
        let action = match case.policy.cleanup.action {
            CleanupAction::Deactivate if !can_deactivate => CleanupAction::RemoveGroups,
            action => action,
        };
        match action {
            CleanupAction::Deactivate => prop_assert!(now.is_some_and(|now| !now.active)),
            CleanupAction::Delete => prop_assert!(now.is_none()),
            CleanupAction::RemoveGroups => {
                prop_assert!(now.is_some_and(|now| groups_of(&now.id).is_disjoint(&managed_groups)))
            }
            CleanupAction::Keep => prop_assert_eq!(now, Some(account)),
        }
    }
    Ok(())
}

/// A plan's text is its review: every line of a non-empty plan says what and why.
#[test]
fn a_held_plan_lists_its_changes_for_review() {
    let snapshot = Snapshot::default();
    let state = fixture::jira(vec![fixture::managed("J1", "ann", "u1")], vec![], vec![]);
    let policy = Policy::default()
        .validate()
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let planned: Plan = plan(&snapshot, &state, &policy);
    assert!(planned.hold.is_some());
    assert_eq!(planned.count(ChangeOp::DeactivateUser), 1);
}

/// The switch keys of `operations` that are off and would take `change` out of a plan: a change
/// of a plan with these switches is never of these kinds, and a change left out is of one.
fn switches_against(operations: &Operations, change: &model::plan::Change) -> Vec<&'static str> {
    let new_account = matches!(
        &change.action,
        Action::AddMembership {
            account: AccountRef::New { .. },
            ..
        }
    );
    let needs: &[(&'static str, bool)] = match change.op() {
        ChangeOp::LinkUser => &[],
        ChangeOp::CreateUser => &[("operations.create_users", operations.create_users)],
        ChangeOp::AddMembership if new_account => &[
            ("operations.create_users", operations.create_users),
            ("operations.group_changes", operations.group_changes),
        ],
        ChangeOp::UpdateUser | ChangeOp::ReactivateUser => {
            &[("operations.update_users", operations.update_users)]
        }
        ChangeOp::DeactivateUser | ChangeOp::DeleteUser => {
            &[("operations.deactivate_users", operations.deactivate_users)]
        }
        // Removing a membership to take access away also needs `deactivate_users`.
        ChangeOp::RemoveMembership => &[
            ("operations.group_changes", operations.group_changes),
            ("operations.deactivate_users", operations.deactivate_users),
        ],
        ChangeOp::CreateGroup | ChangeOp::AddMembership | ChangeOp::RemoveGroup => {
            &[("operations.group_changes", operations.group_changes)]
        }
    };
    needs
        .iter()
        .filter(|(_, on)| !on)
        .map(|(key, _)| *key)
        .collect()
}

fn switches_that_are_off_leave_out_exactly_their_changes_holds(
    case: Case,
) -> Result<(), TestCaseError> {
    let operations = case.policy.operations;
    let planned = plan(&case.snapshot, &case.state, &case.valid_policy());
    let mut all_on = case.clone();
    all_on.policy.operations = Operations::default();
    let full = plan(&all_on.snapshot, &all_on.state, &all_on.valid_policy());
    let kept: BTreeSet<_> = planned.changes.iter().map(|change| change.id).collect();
    let full_ids: BTreeSet<_> = full.changes.iter().map(|change| change.id).collect();
    prop_assert!(
        kept.is_subset(&full_ids),
        "a switch that is off added changes:\n{}\nwith every switch on:\n{}",
        planned,
        full
    );
    for change in &planned.changes {
        let against = switches_against(&operations, change);
        // A membership removed to sync a group needs only `group_changes`.
        let allowed = against.is_empty()
            || (change.op() == ChangeOp::RemoveMembership
                && against == ["operations.deactivate_users"]);
        prop_assert!(
            allowed,
            "{} is off, but the plan has {}",
            against.join(", "),
            change
        );
    }
    let mut left_out = 0;
    for change in &full.changes {
        if !kept.contains(&change.id) {
            prop_assert!(
                !switches_against(&operations, change).is_empty(),
                "left out with no switch against it: {}",
                change
            );
            left_out += 1;
        }
    }
    let mut counted = 0;
    for diagnostic in &planned.diagnostics {
        if diagnostic.kind != DiagnosticKind::Disabled {
            continue;
        }
        let key = diagnostic.subject.as_str();
        let off = match key {
            "operations.create_users" => !operations.create_users,
            "operations.update_users" => !operations.update_users,
            "operations.group_changes" => !operations.group_changes,
            "operations.deactivate_users" => !operations.deactivate_users,
            _ => false,
        };
        prop_assert!(off, "a Disabled diagnostic about {}", key);
        let ending = format!(", but {key} is off");
        prop_assert!(
            diagnostic.message.ends_with(&ending),
            "{}",
            diagnostic.message
        );
        let words: Vec<&str> = diagnostic.message.split(' ').collect();
        for pair in words.windows(2) {
            if pair[1].ends_with("(s)")
                && let Ok(count) = pair[0].parse::<usize>()
            {
                counted += count;
            }
        }
    }
    prop_assert_eq!(
        counted,
        left_out,
        "the Disabled diagnostics miscount:\n{}",
        planned
    );
    Ok(())
}

fn excluded_groups_and_groups_keysync_did_not_create_are_left_alone_holds(
    case: Case,
) -> Result<(), TestCaseError> {
    let policy = case.valid_policy();
    let planned = plan(&case.snapshot, &case.state, &policy);
    for change in &planned.changes {
        for prefix in ["member of Keycloak group ", "mapped from Keycloak group "] {
            if let Some(rest) = change.reason.strip_prefix(prefix) {
                let path = rest.split(' ').next().unwrap_or("");
                prop_assert!(
                    !policy.is_excluded_group(path),
                    "a change for excluded group {}: {}",
                    path,
                    change
                );
            }
        }
    }
    if case.policy.groups.remove_unmanaged_members {
        return Ok(());
    }
    // The groups this connector created, folded as the plan compares them.
    let created: BTreeSet<String> = case
        .state
        .groups
        .iter()
        .filter(|group| {
            group.managed
                && match (case.connector, &group.connector) {
                    (None, _) => true,
                    (Some((me, _)), Some(owner)) => owner.as_str() == me,
                    (Some((_, sole)), None) => sole,
                }
        })
        .map(|group| group.name.as_str().trim().to_lowercase())
        .collect();
    for change in &planned.changes {
        let Action::RemoveMembership { group, .. } = &change.action else {
            continue;
        };
        let pruned = change
            .reason
            .starts_with("not in any Keycloak group mapped to")
            || change.reason == "the group is no longer mapped from Keycloak";
        prop_assert!(
            !pruned || created.contains(&group.trim().to_lowercase()),
            "a member pruned from {}, which keysync did not create: {}",
            group,
            change
        );
    }
    Ok(())
}

fn the_changes_of_a_part_are_changes_of_the_complete_plan_holds(
    case: Case,
    split: Vec<usize>,
) -> Result<(), TestCaseError> {
    let policy = case.valid_policy();
    let complete = plan(&case.snapshot, &case.state, &policy);
    let users = &case.snapshot.users;
    let mut part_of: Vec<usize> = Vec::with_capacity(users.len());
    for (index, user) in users.iter().enumerate() {
        let together = users[..index].iter().position(|earlier| {
            earlier.id == user.id || fold(&earlier.username) == fold(&user.username)
        });
        part_of.push(match together {
            Some(earlier) => part_of[earlier],
            None => split[index % split.len()],
        });
    }
    // The parts applied one after the other, and what they created.
    let mut applied = case.state.clone();
    let mut created = Created::default();
    let mut new_id = new_account_id();
    for part in 0..3 {
        let ids: BTreeSet<&UserId> = users
            .iter()
            .zip(&part_of)
            .filter(|(_, of)| **of == part)
            .map(|(user, _)| &user.id)
            .collect();
        let snapshot = Snapshot {
            users: users
                .iter()
                .filter(|user| ids.contains(&user.id))
                .cloned()
                .collect(),
            groups: case.snapshot.groups.clone(),
            memberships: case
                .snapshot
                .memberships
                .iter()
                .filter(|membership| ids.contains(&membership.user_id))
                .cloned()
                .collect(),
        };
        let planned = plan_part(&snapshot, &case.state, &policy, users.len() as u64);
        for change in &planned.changes {
            match &change.action {
                Action::CreateUser { fields } => {
                    if let Some(user) = &change.keycloak_user_id {
                        created.accounts.push((user.clone(), fields.login.clone()));
                    }
                }
                Action::CreateGroup { group } => created.groups.push(group.clone()),
                _ => {}
            }
        }
        applied = apply(applied, &planned.changes, &mut new_id);
        for change in &planned.changes {
            let in_complete = complete.changes.iter().find(|full| full.id == change.id);
            prop_assert_eq!(
                in_complete,
                Some(change),
                "part {} plans {}, which the complete plan does not",
                part,
                change
            );
        }
    }
    // Taking out what the parts created gives back the state the run began with, so the
    // complete plan is planned as if nothing had been streamed.
    let mut before = applied;
    without_parts(&mut before, &created);
    prop_assert_eq!(&before, &case.state);
    Ok(())
}
