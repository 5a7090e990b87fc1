//! The product's state as keysync caches it: built from what the product reports plus what
//! only keysync knows ([`refresh`]), and kept up to date while a change set is applied
//! ([`Working`]).
//!
//! The product knows its accounts, groups and memberships; the cache adds which accounts
//! keysync manages (and for which Keycloak user) and which groups it created. A refresh
//! takes both from the previous cached state, matching accounts by the product's stable id
//! and groups by name (case-insensitively). Where the product does not list emails
//! (Confluence), the email keysync last wrote is kept, so the plan does not see every email
//! as missing.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use atlassian::DirectoryState;
use proto::v1;

/// The cached state of `product` after reading `directory`, with keysync's knowledge taken
/// from `previous`.
pub fn refresh(
    product: v1::Product,
    directory: DirectoryState,
    previous: Option<&v1::ProductState>,
    lists_email: bool,
    run_id: &str,
    read_at: SystemTime,
) -> v1::ProductState {
    let known_accounts: HashMap<&str, &v1::CachedAccount> = previous
        .map(|state| {
            state
                .accounts
                .iter()
                .map(|account| (account.id.as_str(), account))
                .collect()
        })
        .unwrap_or_default();
    let managed_groups: HashSet<String> = previous
        .map(|state| {
            state
                .groups
                .iter()
                .filter(|group| group.managed)
                .map(|group| group.name.to_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let accounts = directory
        .accounts
        .into_iter()
        .map(|remote| {
            let known = known_accounts.get(remote.id.as_str());
            let email = match (remote.email, known) {
                (Some(email), _) => email,
                (None, Some(known)) if !lists_email => known.email.clone(),
                (None, _) => String::new(),
            };
            let managed =
                known.is_some_and(|known| known.managed && !known.keycloak_user_id.is_empty());
            v1::CachedAccount {
                id: remote.id,
                login: remote.login,
                display_name: remote.display_name,
                email,
                active: remote.active,
                managed,
                keycloak_user_id: known
                    .filter(|_| managed)
                    .map(|known| known.keycloak_user_id.clone())
                    .unwrap_or_default(),
                read_only_reason: remote.read_only.unwrap_or_default(),
            }
        })
        .collect();
    let groups = directory
        .groups
        .into_iter()
        .map(|remote| v1::CachedGroup {
            managed: managed_groups.contains(&remote.name.to_lowercase()),
            name: remote.name,
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
        product: product as i32,
        accounts,
        groups,
        memberships,
        read_at: Some(read_at.into()),
        run_id: run_id.to_owned(),
    }
}

/// The cached state while a change set is applied: what the changes that succeeded did,
/// written back to the cache at the end of the set. Lookups by id and by login are what
/// the applier needs to name accounts to the product.
pub struct Working {
    state: v1::ProductState,
}

impl Working {
    pub fn new(state: v1::ProductState) -> Working {
        Working { state }
    }

    pub fn into_state(self, run_id: &str) -> v1::ProductState {
        v1::ProductState {
            run_id: run_id.to_owned(),
            ..self.state
        }
    }

    /// The account with product id `id`.
    pub fn account(&self, id: &str) -> Option<&v1::CachedAccount> {
        self.state.accounts.iter().find(|account| account.id == id)
    }

    /// The account whose login is `login`, compared case-insensitively.
    pub fn account_by_login(&self, login: &str) -> Option<&v1::CachedAccount> {
        self.state
            .accounts
            .iter()
            .find(|account| account.login.to_lowercase() == login.to_lowercase())
    }

    /// A created account (or one that was already there, identical): managed, for
    /// `keycloak_user_id`.
    pub fn created(&mut self, id: &str, fields: &v1::AccountFields, keycloak_user_id: &str) {
        let account = v1::CachedAccount {
            id: id.to_owned(),
            login: fields.login.clone(),
            display_name: fields.display_name.clone(),
            email: fields.email.clone(),
            active: true,
            managed: !keycloak_user_id.is_empty(),
            keycloak_user_id: keycloak_user_id.to_owned(),
            read_only_reason: String::new(),
        };
        match self.state.accounts.iter_mut().find(|known| known.id == id) {
            Some(known) => *known = account,
            None => self.state.accounts.push(account),
        }
    }

    /// keysync manages the account from now on, for `keycloak_user_id`.
    pub fn linked(&mut self, id: &str, keycloak_user_id: &str) {
        if let Some(account) = self.account_mut(id) {
            account.managed = !keycloak_user_id.is_empty();
            account.keycloak_user_id = keycloak_user_id.to_owned();
        }
    }

    /// The account's fields were set to `fields`.
    pub fn updated(&mut self, id: &str, fields: &v1::AccountFields) {
        if let Some(account) = self.account_mut(id) {
            account.login = fields.login.clone();
            account.display_name = fields.display_name.clone();
            if !fields.email.is_empty() {
                account.email = fields.email.clone();
            }
        }
    }

    pub fn set_active(&mut self, id: &str, active: bool) {
        if let Some(account) = self.account_mut(id) {
            account.active = active;
        }
    }

    pub fn deleted(&mut self, id: &str) {
        self.state.accounts.retain(|account| account.id != id);
        self.state
            .memberships
            .retain(|membership| membership.account_id != id);
    }

    /// A group keysync created (or that was there already when it meant to).
    pub fn group_created(&mut self, name: &str) {
        match self
            .state
            .groups
            .iter_mut()
            .find(|group| group.name.eq_ignore_ascii_case(name))
        {
            Some(group) => group.managed = true,
            None => self.state.groups.push(v1::CachedGroup {
                name: name.to_owned(),
                managed: true,
            }),
        }
    }

    pub fn group_removed(&mut self, name: &str) {
        self.state
            .groups
            .retain(|group| !group.name.eq_ignore_ascii_case(name));
        self.state
            .memberships
            .retain(|membership| !membership.group.eq_ignore_ascii_case(name));
    }

    pub fn member_added(&mut self, id: &str, group: &str) {
        let present = self.state.memberships.iter().any(|membership| {
            membership.account_id == id && membership.group.eq_ignore_ascii_case(group)
        });
        if !present {
            self.state.memberships.push(v1::CachedMembership {
                account_id: id.to_owned(),
                group: group.to_owned(),
            });
        }
    }

    pub fn member_removed(&mut self, id: &str, group: &str) {
        self.state.memberships.retain(|membership| {
            !(membership.account_id == id && membership.group.eq_ignore_ascii_case(group))
        });
    }

    fn account_mut(&mut self, id: &str) -> Option<&mut v1::CachedAccount> {
        self.state
            .accounts
            .iter_mut()
            .find(|account| account.id == id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use atlassian::{Membership, RemoteAccount, RemoteGroup};

    use super::*;

    fn remote(id: &str, login: &str, email: Option<&str>) -> RemoteAccount {
        RemoteAccount {
            id: id.to_owned(),
            login: login.to_owned(),
            display_name: login.to_owned(),
            email: email.map(str::to_owned),
            active: true,
            read_only: None,
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
                },
                v1::CachedGroup {
                    name: "removed".to_owned(),
                    managed: true,
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
        };
        let state = refresh(
            v1::Product::Jira,
            directory,
            Some(&previous),
            true,
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
    fn a_product_that_lists_no_emails_keeps_the_cached_ones() {
        let previous = v1::ProductState {
            accounts: vec![cached("k1", "alice", "kc-alice", "alice@example.com")],
            ..Default::default()
        };
        let directory = DirectoryState {
            accounts: vec![remote("k1", "alice", None), remote("k2", "bob", None)],
            groups: vec![],
            memberships: BTreeSet::new(),
        };
        let state = refresh(
            v1::Product::Confluence,
            directory,
            Some(&previous),
            false,
            "run",
            SystemTime::now(),
        );
        assert_eq!(state.accounts[0].email, "alice@example.com");
        assert_eq!(state.accounts[1].email, "");
    }

    #[test]
    fn working_state_records_what_a_change_set_did() {
        let mut working = Working::new(v1::ProductState {
            accounts: vec![cached("k1", "bob", "", "bob@example.com")],
            ..Default::default()
        });
        working.group_created("devs");
        let fields = v1::AccountFields {
            login: "alice".to_owned(),
            display_name: "Alice".to_owned(),
            email: "alice@example.com".to_owned(),
            active: true,
        };
        working.created("k2", &fields, "kc-alice");
        working.linked("k1", "kc-bob");
        working.member_added("k2", "devs");
        working.member_added("k2", "DEVS");
        working.member_added("k1", "devs");
        working.member_removed("k1", "Devs");
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
}
