//! The product's state as keysync caches it: built from what the product reports plus what
//! only keysync knows ([`refresh`]), and kept up to date while a change set is applied
//! ([`Working`]).
//!
//! The product knows its accounts, groups and memberships; the cache adds which accounts
//! keysync manages (and for which Keycloak user) and which groups it created. A refresh
//! takes both from the previous cached state, matching accounts by the product's stable id
//! and groups by name (case-insensitively, as [`fold`] compares them). Where the product does
//! not list emails (Confluence), the email keysync last wrote is kept, so the plan does not
//! see every email as missing. The capabilities the product's client reports are cached with
//! the state, for the plan.
//!
//! While a change set is applied, the state is a [`Working`] one (in the `cache` crate,
//! whose readers replay the same records from the product's state journal).

use std::collections::HashMap;
use std::time::SystemTime;

use atlassian::{Capabilities, DirectoryState};
pub use cache::working::Working;
use model::mapping::fold;
use model::state::ProductState;
use proto::v1;

/// What only keysync knows of a product, taken from its previous cached state before a
/// refresh replaces it: which accounts it manages (for which Keycloak user and connector),
/// the emails it wrote, and which groups it created. Small next to the state it comes from
/// (no memberships), so the state can be dropped before the new one is built.
#[derive(Debug, Default, PartialEq)]
pub struct Known {
    /// By the product's account id.
    accounts: HashMap<String, KnownAccount>,
    /// The managed groups by folded name, with the connector that created each.
    managed_groups: HashMap<String, String>,
}

#[derive(Debug, PartialEq)]
struct KnownAccount {
    email: String,
    /// Empty: not managed.
    keycloak_user_id: String,
    connector: String,
}

impl From<&v1::ProductState> for Known {
    fn from(state: &v1::ProductState) -> Known {
        Known {
            accounts: state
                .accounts
                .iter()
                .map(|account| {
                    let managed = account.managed && !account.keycloak_user_id.is_empty();
                    let known = KnownAccount {
                        email: account.email.clone(),
                        keycloak_user_id: if managed {
                            account.keycloak_user_id.clone()
                        } else {
                            String::new()
                        },
                        connector: if managed {
                            account.connector.clone()
                        } else {
                            String::new()
                        },
                    };
                    (account.id.clone(), known)
                })
                .collect(),
            managed_groups: state
                .groups
                .iter()
                .filter(|group| group.managed)
                .map(|group| (fold(&group.name).into_owned(), group.connector.clone()))
                .collect(),
        }
    }
}

/// The model's form says the same: an account is managed when it names its Keycloak user
/// (`cache::convert::state_to_model`).
impl From<&ProductState> for Known {
    fn from(state: &ProductState) -> Known {
        Known {
            accounts: state
                .accounts
                .iter()
                .map(|account| {
                    let managed = account.keycloak_user_id.as_ref();
                    let known = KnownAccount {
                        email: account.email.clone().unwrap_or_default(),
                        keycloak_user_id: managed
                            .map(|user| user.as_str().to_owned())
                            .unwrap_or_default(),
                        connector: account
                            .connector
                            .as_ref()
                            .filter(|_| managed.is_some())
                            .map(|connector| connector.as_str().to_owned())
                            .unwrap_or_default(),
                    };
                    (account.id.as_str().to_owned(), known)
                })
                .collect(),
            managed_groups: state
                .groups
                .iter()
                .filter(|group| group.managed)
                .map(|group| {
                    let connector = group
                        .connector
                        .as_ref()
                        .map(|connector| connector.as_str().to_owned())
                        .unwrap_or_default();
                    (fold(group.name.as_str()).into_owned(), connector)
                })
                .collect(),
        }
    }
}

/// The cached state of `product` after reading `directory`, with what keysync knew of it
/// before (`previous`) and the capabilities the product's client reports.
pub fn refresh(
    product: v1::Product,
    directory: DirectoryState,
    previous: &Known,
    capabilities: Capabilities,
    run_id: &str,
    read_at: SystemTime,
) -> v1::ProductState {
    let accounts = directory
        .accounts
        .into_iter()
        .map(|remote| {
            let known = previous.accounts.get(remote.id.as_str());
            let email = match (remote.email, known) {
                (Some(email), _) => email,
                (None, Some(known)) if !capabilities.lists_email => known.email.clone(),
                (None, _) => String::new(),
            };
            let managed = known.filter(|known| !known.keycloak_user_id.is_empty());
            v1::CachedAccount {
                id: remote.id,
                login: remote.login,
                display_name: remote.display_name,
                email,
                active: remote.active,
                managed: managed.is_some(),
                keycloak_user_id: managed
                    .map(|known| known.keycloak_user_id.clone())
                    .unwrap_or_default(),
                read_only_reason: remote.read_only.unwrap_or_default(),
                connector: managed
                    .map(|known| known.connector.clone())
                    .unwrap_or_default(),
                administrator: remote.administrator,
            }
        })
        .collect();
    let groups = directory
        .groups
        .into_iter()
        .map(|remote| {
            let owner = previous.managed_groups.get(fold(&remote.name).as_ref());
            v1::CachedGroup {
                managed: owner.is_some(),
                connector: owner.cloned().unwrap_or_default(),
                name: remote.name,
            }
        })
        .collect();
    let memberships = directory
        .memberships
        .into_iter()
        .map(|membership| v1::CachedMembership {
            account_id: membership.account_id,
            group: membership.group,
        })
        .collect();
    v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        // The caller sets it: where the journal stood when the product was read.
        journal_seq: 0,
        product: product as i32,
        accounts,
        groups,
        memberships,
        read_at: Some(read_at.into()),
        run_id: run_id.to_owned(),
        capabilities: Some(v1::Capabilities {
            can_deactivate: capabilities.can_deactivate,
            can_rename: capabilities.can_rename,
        }),
        leads: directory
            .leads
            .into_iter()
            .map(|lead| v1::CachedLead {
                account_id: lead.account_id,
                target: Some(lead_target(lead.target)),
            })
            .collect(),
        seats: directory.seats.map(|seats| v1::Seats {
            used: seats.used,
            limit: seats.limit,
        }),
    }
}

/// The wire form of what a lead leads.
fn lead_target(target: atlassian::LeadTarget) -> v1::LeadTarget {
    let target = match target {
        atlassian::LeadTarget::Project { key } => v1::lead_target::Target::ProjectKey(key),
        atlassian::LeadTarget::Component {
            id,
            project_key,
            name,
        } => v1::lead_target::Target::Component(v1::LeadComponent {
            id,
            project_key,
            name,
        }),
    };
    v1::LeadTarget {
        target: Some(target),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use atlassian::{Membership, RemoteAccount, RemoteGroup};
    use model::state::Product;
    use proto::v1::ChangeOp;
    use proto::v1::account_ref::Ref;

    use super::*;

    fn capabilities(lists_email: bool) -> Capabilities {
        Capabilities {
            can_deactivate: true,
            can_rename: true,
            lists_email,
            async_delete: false,
            nested_group_members: false,
            groups_per_add: 1,
        }
    }

    fn wire_change(op: ChangeOp, keycloak_user_id: &str) -> v1::Change {
        v1::Change {
            id: format!("{:016x}", op as u64),
            product: v1::Product::Jira as i32,
            op: op as i32,
            keycloak_user_id: keycloak_user_id.to_owned(),
            reason: "a test".to_owned(),
            ..Default::default()
        }
    }

    fn membership(op: ChangeOp, group: &str) -> v1::Change {
        v1::Change {
            group: group.to_owned(),
            ..wire_change(op, "")
        }
    }

    fn remote(id: &str, login: &str, email: Option<&str>) -> RemoteAccount {
        RemoteAccount {
            id: id.to_owned(),
            login: login.to_owned(),
            display_name: login.to_owned(),
            email: email.map(str::to_owned),
            active: true,
            read_only: None,
            administrator: false,
        }
    }

    fn cached(id: &str, login: &str, keycloak_user_id: &str, email: &str) -> v1::CachedAccount {
        v1::CachedAccount {
            id: id.to_owned(),
            login: login.to_owned(),
            display_name: login.to_owned(),
            email: email.to_owned(),
            active: true,
            managed: !keycloak_user_id.is_empty(),
            keycloak_user_id: keycloak_user_id.to_owned(),
            read_only_reason: String::new(),
            administrator: false,
            connector: String::new(),
        }
    }

    #[test]
    fn a_refresh_takes_the_product_as_it_is_and_keysyncs_knowledge_from_the_cache() {
        let previous = v1::ProductState {
            accounts: vec![
                cached("k1", "alice", "kc-alice", "alice@old.example"),
                cached("k2", "gone", "kc-gone", "gone@example.com"),
            ],
            groups: vec![
                v1::CachedGroup {
                    name: "Devs".to_owned(),
                    managed: true,
                    connector: String::new(),
                },
                v1::CachedGroup {
                    name: "removed".to_owned(),
                    managed: true,
                    connector: String::new(),
                },
            ],
            ..Default::default()
        };
        let mut alice = remote("k1", "alice2", Some("alice@new.example"));
        alice.active = false;
        let mut locked = remote("k3", "ldap-user", Some("l@example.com"));
        locked.read_only = Some("from LDAP".to_owned());
        let directory = DirectoryState {
            accounts: vec![alice, locked],
            groups: vec![
                RemoteGroup {
                    name: "devs".to_owned(),
                    read_only: None,
                },
                RemoteGroup {
                    name: "jira-users".to_owned(),
                    read_only: None,
                },
            ],
            memberships: BTreeSet::from([Membership {
                group: "devs".to_owned(),
                account_id: "k1".to_owned(),
            }]),
            leads: Vec::new(),
            seats: None,
        };
        let state = refresh(
            v1::Product::Jira,
            directory,
            &Known::from(&previous),
            capabilities(true),
            "run-2",
            SystemTime::now(),
        );
        assert_eq!(state.run_id, "run-2");
        assert_eq!(
            state.accounts.len(),
            2,
            "the account deleted by hand is gone"
        );
        let alice = &state.accounts[0];
        assert_eq!(
            (alice.login.as_str(), alice.email.as_str(), alice.active),
            ("alice2", "alice@new.example", false),
            "changes made by hand are seen"
        );
        assert!(alice.managed);
        assert_eq!(alice.keycloak_user_id, "kc-alice");
        assert!(!state.accounts[1].managed);
        assert_eq!(state.accounts[1].read_only_reason, "from LDAP");
        let groups: Vec<(&str, bool)> = state
            .groups
            .iter()
            .map(|group| (group.name.as_str(), group.managed))
            .collect();
        assert_eq!(groups, [("devs", true), ("jira-users", false)]);
        assert_eq!(state.memberships.len(), 1);
    }

    #[test]
    fn a_refresh_takes_administrator_rights_from_the_product_not_from_the_cache() {
        let mut was_admin = cached("k1", "ops", "", "ops@example.com");
        was_admin.administrator = true;
        let previous = v1::ProductState {
            accounts: vec![
                was_admin,
                cached("k2", "lead", "kc-lead", "lead@example.com"),
            ],
            ..Default::default()
        };
        let mut lead = remote("k2", "lead", Some("lead@example.com"));
        lead.administrator = true;
        let directory = DirectoryState {
            accounts: vec![remote("k1", "ops", Some("ops@example.com")), lead],
            groups: vec![],
            memberships: BTreeSet::new(),
            leads: Vec::new(),
            seats: None,
        };
        let state = refresh(
            v1::Product::Bitbucket,
            directory,
            &Known::from(&previous),
            capabilities(true),
            "run",
            SystemTime::now(),
        );
        let administrators: Vec<(&str, bool)> = state
            .accounts
            .iter()
            .map(|account| (account.login.as_str(), account.administrator))
            .collect();
        assert_eq!(administrators, [("ops", false), ("lead", true)]);
        let model = cache::convert::state_to_model(&state).expect("converts");
        let lead = model
            .accounts
            .iter()
            .find(|account| account.login == "lead");
        assert!(
            lead.is_some_and(|lead| lead.administrator),
            "the plan sees it"
        );
    }

    #[test]
    fn a_product_that_lists_no_emails_keeps_the_cached_ones() {
        let previous = v1::ProductState {
            accounts: vec![cached("k1", "alice", "kc-alice", "alice@example.com")],
            ..Default::default()
        };
        let directory = DirectoryState {
            accounts: vec![remote("k1", "alice", None), remote("k2", "bob", None)],
            groups: vec![],
            memberships: BTreeSet::new(),
            leads: Vec::new(),
            seats: None,
        };
        let state = refresh(
            v1::Product::Confluence,
            directory,
            &Known::from(&previous),
            capabilities(false),
            "run",
            SystemTime::now(),
        );
        assert_eq!(state.accounts[0].email, "alice@example.com");
        assert_eq!(state.accounts[1].email, "");
    }

    #[test]
    fn working_state_records_what_a_change_set_did() {
        let mut working = Working::new(
            Product::Jira,
            v1::ProductState {
                product: v1::Product::Jira as i32,
                accounts: vec![cached("k1", "bob", "", "bob@example.com")],
                ..Default::default()
            },
        )
        .expect("a valid state");
        working.record(&membership(ChangeOp::CreateGroup, "devs"), None, None);
        let fields = v1::AccountFields {
            login: "alice".to_owned(),
            display_name: "Alice".to_owned(),
            email: "alice@example.com".to_owned(),
            active: true,
        };
        let create = v1::Change {
            account: Some(v1::AccountRef {
                r#ref: Some(Ref::NewLogin("alice".to_owned())),
            }),
            fields: Some(fields),
            ..wire_change(ChangeOp::CreateUser, "kc-alice")
        };
        working.record(&create, None, Some("k2"));
        working.record(&wire_change(ChangeOp::LinkUser, "kc-bob"), Some("k1"), None);
        let add = membership(ChangeOp::AddMembership, "devs");
        working.record(&add, Some("k2"), None);
        working.record(
            &membership(ChangeOp::AddMembership, "DEVS"),
            Some("k2"),
            None,
        );
        working.record(&add, Some("k1"), None);
        working.record(
            &membership(ChangeOp::RemoveMembership, "Devs"),
            Some("k1"),
            None,
        );
        assert_eq!(
            working
                .account_by_login("ALICE")
                .map(|account| account.id.as_str()),
            Some("k2")
        );
        let state = working.into_state("run-3");
        assert_eq!(state.run_id, "run-3");
        assert!(state.accounts.iter().all(|account| account.managed));
        assert_eq!(state.memberships.len(), 1);
        assert!(state.groups[0].managed);
    }

    /// A state with every field of every account, group and membership set, both ways.
    fn full_state() -> v1::ProductState {
        let mut locked = cached("k2", "Zoë", "", "");
        locked.read_only_reason = "from LDAP".to_owned();
        locked.active = false;
        v1::ProductState {
            schema_version: v1::SCHEMA_VERSION,
            journal_seq: 0,
            product: v1::Product::Jira as i32,
            accounts: vec![
                cached("k1", "alice", "kc-alice", "alice@example.com"),
                locked,
            ],
            groups: vec![
                v1::CachedGroup {
                    name: "Ärger".to_owned(),
                    managed: true,
                    connector: String::new(),
                },
                v1::CachedGroup {
                    name: "jira-users".to_owned(),
                    managed: false,
                    connector: String::new(),
                },
            ],
            memberships: vec![
                v1::CachedMembership {
                    account_id: "k1".to_owned(),
                    group: "Ärger".to_owned(),
                },
                v1::CachedMembership {
                    account_id: "k2".to_owned(),
                    group: "jira-users".to_owned(),
                },
            ],
            read_at: Some(SystemTime::UNIX_EPOCH.into()),
            run_id: "run-1".to_owned(),
            capabilities: Some(v1::Capabilities {
                can_deactivate: false,
                can_rename: false,
            }),
            leads: vec![v1::CachedLead {
                account_id: "k2".to_owned(),
                target: Some(lead_target(atlassian::LeadTarget::Project {
                    key: "ABC".to_owned(),
                })),
            }],
            seats: Some(v1::Seats {
                used: 2,
                limit: Some(25),
            }),
        }
    }

    #[test]
    fn every_field_of_the_cached_state_survives_the_working_state() {
        let cached = full_state();
        let working = Working::new(Product::Jira, cached.clone()).expect("a valid state");
        assert_eq!(working.into_state("run-1"), cached);

        let older = v1::ProductState {
            capabilities: None,
            schema_version: 0,
            read_at: None,
            ..full_state()
        };
        let working = Working::new(Product::Jira, older.clone()).expect("a valid state");
        assert_eq!(
            working.into_state("run-2"),
            v1::ProductState {
                run_id: "run-2".to_owned(),
                ..older
            },
            "a state cached by an older build stays as it was"
        );
    }

    #[test]
    fn changes_keep_what_only_keysync_and_the_product_know() {
        let mut working = Working::new(Product::Jira, full_state()).expect("a valid state");
        let create = v1::Change {
            account: Some(v1::AccountRef {
                r#ref: Some(Ref::NewLogin("ÖRJAN".to_owned())),
            }),
            fields: Some(v1::AccountFields {
                login: "ÖRJAN".to_owned(),
                display_name: "Örjan".to_owned(),
                email: "orjan@example.com".to_owned(),
                active: true,
            }),
            ..wire_change(ChangeOp::CreateUser, "kc-orjan")
        };
        working.record(&create, None, Some("JIRAUSER10100"));
        let found = working.account_by_login("örjan").expect("created");
        assert_eq!(found.id.as_str(), "JIRAUSER10100");
        working.record(
            &membership(ChangeOp::AddMembership, "ärger "),
            Some("JIRAUSER10100"),
            None,
        );
        working.record(&wire_change(ChangeOp::DeactivateUser, ""), Some("k1"), None);
        let state = working.into_state("run-2");

        let mut expected = full_state();
        expected.run_id = "run-2".to_owned();
        expected.accounts[0].active = false;
        expected.accounts.push(v1::CachedAccount {
            id: "JIRAUSER10100".to_owned(),
            login: "ÖRJAN".to_owned(),
            display_name: "Örjan".to_owned(),
            email: "orjan@example.com".to_owned(),
            active: true,
            managed: true,
            keycloak_user_id: "kc-orjan".to_owned(),
            read_only_reason: String::new(),
            administrator: false,
            connector: String::new(),
        });
        expected.memberships.push(v1::CachedMembership {
            account_id: "JIRAUSER10100".to_owned(),
            group: "ärger ".to_owned(),
        });
        assert_eq!(state, expected);
    }

    #[test]
    fn a_refresh_caches_the_capabilities_the_client_reports_for_the_plan() {
        let reported = Capabilities {
            can_deactivate: true,
            can_rename: false,
            ..capabilities(true)
        };
        let directory = DirectoryState {
            accounts: vec![],
            groups: vec![RemoteGroup {
                name: "ärger".to_owned(),
                read_only: None,
            }],
            memberships: BTreeSet::new(),
            leads: Vec::new(),
            seats: None,
        };
        let previous = v1::ProductState {
            groups: vec![v1::CachedGroup {
                name: "ÄRGER".to_owned(),
                managed: true,
                connector: String::new(),
            }],
            ..Default::default()
        };
        let state = refresh(
            v1::Product::Bitbucket,
            directory,
            &Known::from(&previous),
            reported,
            "run",
            SystemTime::now(),
        );
        assert!(
            state.groups[0].managed,
            "group names compare in Unicode lower case"
        );
        let planned = cache::convert::state_to_model(&state).expect("converts");
        assert_ne!(
            planned.capabilities,
            model::state::Capabilities::of(Product::Bitbucket)
        );
        assert_eq!(
            planned.capabilities,
            model::state::Capabilities {
                can_deactivate: true,
                can_rename: false,
            }
        );
    }

    /// A refresh knows the same of the previous state whether it is read from the wire (as
    /// the tests give it) or from the followed state's model form (as the applier does).
    #[test]
    fn what_is_known_is_the_same_from_the_wire_and_from_the_model() {
        let account =
            |id: &str, managed: bool, user: &str, connector: &str, email: &str| v1::CachedAccount {
                id: id.to_owned(),
                login: format!("login-{id}"),
                email: email.to_owned(),
                managed,
                keycloak_user_id: user.to_owned(),
                connector: connector.to_owned(),
                read_only_reason: "read-only directory".to_owned(),
                ..Default::default()
            };
        let group = |name: &str, managed: bool, connector: &str| v1::CachedGroup {
            name: name.to_owned(),
            managed,
            connector: connector.to_owned(),
        };
        let wire = v1::ProductState {
            product: v1::Product::Jira as i32,
            accounts: vec![
                account("1", true, "kc-1", "corp", "a@example.com"),
                account("2", true, "", "corp", ""),
                account("3", false, "kc-3", "corp", "c@example.com"),
                account("4", true, "kc-4", "", ""),
            ],
            groups: vec![
                group("Devs", true, "corp"),
                group("ÄRGER", true, ""),
                group("jira-users", false, "corp"),
            ],
            memberships: vec![v1::CachedMembership {
                account_id: "1".to_owned(),
                group: "Devs".to_owned(),
            }],
            ..Default::default()
        };
        let model = cache::convert::state_to_model(&wire).expect("a state the model reads");
        let known = Known::from(&wire);
        assert_eq!(Known::from(&model), known);
        assert_eq!(known.accounts["1"].keycloak_user_id, "kc-1");
        assert_eq!(known.accounts["1"].connector, "corp");
        assert!(known.accounts["2"].keycloak_user_id.is_empty());
        assert!(known.accounts["3"].connector.is_empty());
        assert_eq!(known.managed_groups.len(), 2);
        assert_eq!(known.managed_groups[&*fold("Devs")], "corp");
    }
}
