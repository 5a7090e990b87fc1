//! The emulator's in-memory directory (accounts, groups, memberships, Bitbucket's global
//! permissions, Jira's projects and components, and the seeded callers who may sign in), its
//! counters and request log, and the JSON shapes of the test endpoints: [`SeedDocument`] in,
//! [`Dump`] out.
//!
//! Accounts are kept in creation order under a numeric id; each also has the product's
//! stable key (Jira `JIRAUSER…` key, Confluence 32-hex `userKey`, Bitbucket slug) and a
//! case-insensitive login index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub(crate) use crate::bucket::{Bucket, Take};
pub use crate::gate::{Counters, RequestRecord};
use crate::projects::Projects;
use crate::search::Search;
use crate::{Config, Error, Product};

pub use crate::projects::{DumpComponent, DumpProject, SeedComponent, SeedProject};

mod dump;

/// The initial directory of an emulator ([`Config::seed`]): accounts, groups and
/// memberships. Its global permissions, if any, are [`Config::permissions`]; the JSON seed
/// holds both ([`SeedDocument`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub accounts: Vec<SeedAccount>,
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
    #[serde(default)]
    pub memberships: Vec<SeedMembership>,
}

/// The initial state of an emulator as JSON, for `--seed-file` and `POST /_emulator/seed`:
/// a [`Seed`] with, for Bitbucket, the global permissions, for example
/// `{"accounts": [...], "permissions": [{"user": "ops-admin", "permission": "SYS_ADMIN"},
/// {"group": "bb-admins", "permission": "ADMIN"}]}`, and the accounts that may sign in
/// (`"callers": [{"login": "svc", "password": "pw"}]`, see [`SeedCaller`]), and, for Jira,
/// the projects with their leads and components (`"projects": [{"key": "ABC", "name":
/// "Alpha", "lead": "alice", "components": [{"name": "Backend", "lead": "bob"}]}]`, see
/// [`SeedProject`]). Every field may be left out.
///
/// [`SeedDocument::into_parts`] leaves the projects out (they are no part of [`Seed`], whose
/// literal shape other crates build): take them first and give them to
/// [`StateHandle::seed_with_projects`] (what `POST /_emulator/seed` does) or, for the start
/// state that `reset` restores, [`StateHandle::set_initial_projects`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedDocument {
    #[serde(default)]
    pub accounts: Vec<SeedAccount>,
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
    #[serde(default)]
    pub memberships: Vec<SeedMembership>,
    #[serde(default)]
    pub permissions: Vec<SeedPermission>,
    #[serde(default)]
    pub callers: Vec<SeedCaller>,
    /// Jira's projects (Jira only).
    #[serde(default)]
    pub projects: Vec<SeedProject>,
}

impl SeedDocument {
    /// The directory, the global permissions and the callers; the projects are left out
    /// (take [`SeedDocument::projects`] first).
    pub fn into_parts(self) -> (Seed, Vec<SeedPermission>, Vec<SeedCaller>) {
        let seed = Seed {
            accounts: self.accounts,
            groups: self.groups,
            memberships: self.memberships,
        };
        (seed, self.permissions, self.callers)
    }
}

/// An account of the seed that may sign in, with a password (basic auth), a token (bearer),
/// or both; it holds the rights the directory gives it (see the `access` module: Jira's
/// administrator groups, `confluence-administrators`, Bitbucket's global permissions).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCaller {
    /// The login of an account of the seed.
    pub login: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

impl SeedCaller {
    /// The account `login`, signing in with basic auth and `password`.
    pub fn with_password(login: &str, password: &str) -> SeedCaller {
        SeedCaller {
            login: login.to_owned(),
            password: Some(password.to_owned()),
            token: None,
        }
    }

    /// The account `login`, signing in with the bearer token `token`.
    pub fn with_token(login: &str, token: &str) -> SeedCaller {
        SeedCaller {
            login: login.to_owned(),
            password: None,
            token: Some(token.to_owned()),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAccount {
    pub login: String,
    pub display_name: String,
    pub email: String,
    #[serde(default = "yes")]
    pub active: bool,
    /// From a read-only directory: Bitbucket reports `mutableDetails`, `mutableGroups` and
    /// `deletable` false, and every product refuses writes to it.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroup {
    pub name: String,
    #[serde(default = "yes")]
    pub deletable: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedMembership {
    pub group: String,
    pub login: String,
}

/// A global permission granted to one user or one group (Bitbucket only): exactly one of
/// `user` (a login) and `group`. A user or group holds one global permission, its highest,
/// so each may be named once.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPermission {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub permission: GlobalPermission,
}

impl SeedPermission {
    /// `permission` granted to the user with this login.
    pub fn user(login: &str, permission: GlobalPermission) -> SeedPermission {
        SeedPermission {
            user: Some(login.to_owned()),
            group: None,
            permission,
        }
    }

    /// `permission` granted to this group.
    pub fn group(name: &str, permission: GlobalPermission) -> SeedPermission {
        SeedPermission {
            user: None,
            group: Some(name.to_owned()),
            permission,
        }
    }
}

/// Bitbucket's global permissions, lowest first; each includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GlobalPermission {
    LicensedUser,
    ProjectCreate,
    Admin,
    SysAdmin,
}

fn yes() -> bool {
    true
}

/// The answer of `GET /_emulator/state`.
#[derive(Clone, Debug, Serialize)]
pub struct Dump {
    pub product: Product,
    pub accounts: Vec<DumpAccount>,
    pub groups: Vec<String>,
    pub memberships: Vec<DumpMembership>,
    /// Bitbucket's global permissions, users (by login) first, then groups.
    pub permissions: Vec<DumpPermission>,
    /// Jira's projects by key, with their leads and components (empty for the others).
    pub projects: Vec<DumpProject>,
    pub counters: Counters,
    /// Only with `record_requests`.
    pub requests: Vec<RequestRecord>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DumpAccount {
    /// The product's stable key: Jira key, Confluence userKey, Bitbucket slug.
    pub key: String,
    pub login: String,
    pub display_name: String,
    pub email: String,
    pub active: bool,
    pub read_only: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct DumpMembership {
    pub group: String,
    /// The member's login.
    pub login: String,
}

/// A global permission and its holder: a user's login or a group's name.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DumpPermission {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub permission: GlobalPermission,
}

/// A clonable handle on one emulator's state.
#[derive(Clone, Debug)]
pub struct StateHandle(pub(crate) Arc<Shared>);

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) started: Instant,
    store: Mutex<Store>,
    pub(crate) bucket: Mutex<Bucket>,
    /// Jira's projects of the start state, which `reset` restores
    /// ([`StateHandle::set_initial_projects`]).
    initial_projects: Mutex<Vec<SeedProject>>,
}

impl StateHandle {
    pub(crate) fn new(config: Config) -> Result<StateHandle, Error> {
        let store = Store::seeded(
            config.product,
            &config.seed,
            &config.permissions,
            &config.callers,
        )?;
        let bucket = Bucket::new(config.rate_limit);
        Ok(StateHandle(Arc::new(Shared {
            config,
            started: Instant::now(),
            store: Mutex::new(store),
            bucket: Mutex::new(bucket),
            initial_projects: Mutex::new(Vec::new()),
        })))
    }

    pub fn product(&self) -> Product {
        self.0.config.product
    }

    pub(crate) fn config(&self) -> &Config {
        &self.0.config
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.0
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything the emulator holds and has counted.
    pub fn dump(&self) -> Dump {
        let mut store = self.lock();
        store.settle_long_tasks(Instant::now());
        store.dump()
    }

    /// Replaces the directory with `seed`, with no global permissions, and zeroes the
    /// counters.
    pub fn seed(&self, seed: &Seed) -> Result<(), Error> {
        self.seed_with(seed, &[])
    }

    /// Replaces the directory with `seed` and the global permissions with `permissions`
    /// (Bitbucket only), with no seeded callers, and zeroes the counters.
    pub fn seed_with(&self, seed: &Seed, permissions: &[SeedPermission]) -> Result<(), Error> {
        self.seed_with_callers(seed, permissions, &[])
    }

    /// Replaces the directory with `seed`, the global permissions with `permissions`
    /// (Bitbucket only) and the seeded callers with `callers`, and zeroes the counters.
    pub fn seed_with_callers(
        &self,
        seed: &Seed,
        permissions: &[SeedPermission],
        callers: &[SeedCaller],
    ) -> Result<(), Error> {
        self.seed_with_projects(seed, permissions, callers, &[])
    }

    /// Replaces the directory with `seed`, the global permissions with `permissions`
    /// (Bitbucket only), the seeded callers with `callers` and the projects with `projects`
    /// (Jira only), and zeroes the counters; on an error the state stays as it was.
    pub fn seed_with_projects(
        &self,
        seed: &Seed,
        permissions: &[SeedPermission],
        callers: &[SeedCaller],
        projects: &[SeedProject],
    ) -> Result<(), Error> {
        let mut store = Store::seeded(self.product(), seed, permissions, callers)?;
        store.projects = store.seeded_projects(projects)?;
        *self.lock() = store;
        Ok(())
    }

    /// Replaces Jira's projects and components with `projects`, whose leads name accounts
    /// of the current directory; component ids start again at 10000. `reset` does not
    /// restore them (see [`StateHandle::set_initial_projects`]).
    pub fn seed_projects(&self, projects: &[SeedProject]) -> Result<(), Error> {
        let mut store = self.lock();
        store.projects = store.seeded_projects(projects)?;
        Ok(())
    }

    /// Makes `projects` part of the state the emulator was started with, and resets to it:
    /// their leads name accounts of [`Config::seed`], and `reset` restores them from now
    /// on. For `--seed-file` and for tests, which cannot put projects in [`Config`].
    pub fn set_initial_projects(&self, projects: &[SeedProject]) -> Result<(), Error> {
        let config = &self.0.config;
        self.seed_with_projects(&config.seed, &config.permissions, &config.callers, projects)?;
        *self
            .0
            .initial_projects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = projects.to_vec();
        Ok(())
    }

    /// Back to the seed, the permissions, the callers and the projects the emulator was
    /// started with.
    pub fn reset(&self) -> Result<(), Error> {
        let config = &self.0.config;
        let projects = self
            .0
            .initial_projects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        self.seed_with_projects(
            &config.seed,
            &config.permissions,
            &config.callers,
            &projects,
        )
    }
}

/// An account as the emulator keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Account {
    pub(crate) id: u64,
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) email: String,
    pub(crate) active: bool,
    pub(crate) read_only: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) deletable: bool,
}

/// Who holds a global permission: an account (by id) or a group (by lower-cased name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Grantee {
    User(u64),
    Group(String),
}

/// A Confluence long task (user deletion).
#[derive(Clone, Debug)]
pub(crate) struct LongTask {
    pub(crate) account_id: u64,
    pub(crate) submitted: Instant,
    pub(crate) polls: u32,
    pub(crate) finished: bool,
}

/// A long task finishes on its second poll, or this long after it was submitted.
pub(crate) const LONG_TASK_DURATION: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct Store {
    product: Product,
    accounts: BTreeMap<u64, Account>,
    by_key: HashMap<String, u64>,
    by_name: HashMap<String, u64>,
    next_id: u64,
    groups: BTreeMap<String, Group>,
    /// (lower-cased group name, account id): a group's members are one range.
    memberships: BTreeSet<(String, u64)>,
    /// The same pairs the other way round: an account's groups are one range.
    groups_by_account: BTreeSet<(u64, String)>,
    /// Bitbucket's global permissions: each holder's one (highest) permission.
    permissions: BTreeMap<Grantee, GlobalPermission>,
    /// The accounts that may sign in.
    callers: Vec<SeedCaller>,
    /// Jira's projects and components.
    pub(crate) projects: Projects,
    pub(crate) counters: Counters,
    pub(crate) requests: Vec<RequestRecord>,
    pub(crate) long_tasks: BTreeMap<String, LongTask>,
    next_task: u64,
    /// Bitbucket's user search (`filter`); `None` for the products that have none.
    search: Option<Search>,
}

impl Store {
    fn seeded(
        product: Product,
        seed: &Seed,
        permissions: &[SeedPermission],
        callers: &[SeedCaller],
    ) -> Result<Store, Error> {
        let mut store = Store {
            product,
            accounts: BTreeMap::new(),
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            next_id: 1,
            groups: BTreeMap::new(),
            memberships: BTreeSet::new(),
            groups_by_account: BTreeSet::new(),
            permissions: BTreeMap::new(),
            callers: Vec::new(),
            projects: Projects::default(),
            counters: Counters::default(),
            requests: Vec::new(),
            long_tasks: BTreeMap::new(),
            next_task: 1,
            search: (product == Product::Bitbucket).then(Search::default),
        };
        for account in &seed.accounts {
            if store.account_by_name(&account.login).is_some() {
                return Err(Error::Seed {
                    message: format!("account {} appears twice", account.login),
                });
            }
            let id = store.insert_account(&account.login, &account.display_name, &account.email);
            if let Some(stored) = store.accounts.get_mut(&id) {
                stored.active = account.active;
                stored.read_only = account.read_only;
            }
        }
        for group in &seed.groups {
            store.insert_group(&group.name);
            if let Some(stored) = store.groups.get_mut(&group.name.to_lowercase()) {
                stored.deletable = group.deletable;
            }
        }
        for membership in &seed.memberships {
            let Some(account_id) = store.account_by_name(&membership.login).map(|a| a.id) else {
                return Err(Error::Seed {
                    message: format!("membership names unknown account {}", membership.login),
                });
            };
            if store.group(&membership.group).is_none() {
                return Err(Error::Seed {
                    message: format!("membership names unknown group {}", membership.group),
                });
            }
            store.add_member(&membership.group, account_id);
        }
        store.seed_permissions(permissions)?;
        store.seed_callers(callers)?;
        Ok(store)
    }

    /// The projects of `seeds` over this directory; only Jira has projects.
    pub(crate) fn seeded_projects(&self, seeds: &[SeedProject]) -> Result<Projects, Error> {
        if !seeds.is_empty() && self.product != Product::Jira {
            return Err(Error::Seed {
                message: "projects are emulated for Jira only".to_owned(),
            });
        }
        Projects::seeded(self, seeds)
    }

    /// Takes the seeded callers; each names an account of the seed and a password or a
    /// token.
    fn seed_callers(&mut self, callers: &[SeedCaller]) -> Result<(), Error> {
        for caller in callers {
            if self.account_by_name(&caller.login).is_none() {
                return Err(Error::Seed {
                    message: format!("caller names unknown account {}", caller.login),
                });
            }
            if caller.password.is_none() && caller.token.is_none() {
                return Err(Error::Seed {
                    message: format!("caller {} has neither a password nor a token", caller.login),
                });
            }
        }
        self.callers = callers.to_vec();
        Ok(())
    }

    /// The seeded caller whose account is `login` (any case) with this password.
    pub(crate) fn caller_with_password(&self, login: &str, password: &str) -> Option<&SeedCaller> {
        self.callers.iter().find(|caller| {
            caller.login.eq_ignore_ascii_case(login) && caller.password.as_deref() == Some(password)
        })
    }

    /// The seeded caller with this token.
    pub(crate) fn caller_with_token(&self, token: &str) -> Option<&SeedCaller> {
        self.callers
            .iter()
            .find(|caller| caller.token.as_deref() == Some(token))
    }

    /// The global permission granted to the group `name`, if any.
    pub(crate) fn group_permission(&self, name: &str) -> Option<GlobalPermission> {
        self.permissions
            .get(&Grantee::Group(name.to_lowercase()))
            .copied()
    }

    /// An account's highest global permission, granted to it or to a group it is in.
    pub(crate) fn highest_permission(&self, account_id: u64) -> Option<GlobalPermission> {
        let direct = self.permissions.get(&Grantee::User(account_id)).copied();
        self.groups_of(account_id)
            .iter()
            .filter_map(|group| self.group_permission(&group.name))
            .chain(direct)
            .max()
    }

    /// Grants the seed's global permissions; each must name exactly one existing user or
    /// group, once, and only Bitbucket has them.
    fn seed_permissions(&mut self, permissions: &[SeedPermission]) -> Result<(), Error> {
        let refuse = |message: String| Err(Error::Seed { message });
        if !permissions.is_empty() && self.product != Product::Bitbucket {
            return refuse("global permissions are emulated for Bitbucket only".to_owned());
        }
        for permission in permissions {
            let (grantee, holder) = match (&permission.user, &permission.group) {
                (Some(login), None) => match self.account_by_name(login) {
                    Some(account) => (Grantee::User(account.id), format!("account {login}")),
                    None => return refuse(format!("permission names unknown account {login}")),
                },
                (None, Some(name)) => match self.group(name) {
                    Some(_) => (Grantee::Group(name.to_lowercase()), format!("group {name}")),
                    None => return refuse(format!("permission names unknown group {name}")),
                },
                _ => return refuse("a permission names exactly one user or group".to_owned()),
            };
            if self
                .permissions
                .insert(grantee, permission.permission)
                .is_some()
            {
                return refuse(format!("{holder} is given more than one global permission"));
            }
        }
        Ok(())
    }

    /// The accounts that hold a global permission, with it, by login.
    pub(crate) fn permitted_users(&self) -> Vec<(&Account, GlobalPermission)> {
        let mut users: Vec<(&Account, GlobalPermission)> = self
            .permissions
            .iter()
            .filter_map(|(grantee, permission)| match grantee {
                Grantee::User(id) => Some((self.accounts.get(id)?, *permission)),
                Grantee::Group(_) => None,
            })
            .collect();
        users.sort_by_key(|(account, _)| account.name.to_lowercase());
        users
    }

    /// The groups that hold a global permission, with it, by name.
    pub(crate) fn permitted_groups(&self) -> Vec<(&Group, GlobalPermission)> {
        self.permissions
            .iter()
            .filter_map(|(grantee, permission)| match grantee {
                Grantee::Group(name) => Some((self.groups.get(name)?, *permission)),
                Grantee::User(_) => None,
            })
            .collect()
    }

    pub(crate) fn count_write(&mut self, kind: &str) {
        *self.counters.writes.entry(kind.to_owned()).or_default() += 1;
    }

    pub(crate) fn accounts(&self) -> impl DoubleEndedIterator<Item = &Account> {
        self.accounts.values()
    }

    /// Accounts with an id greater than `after`, in id order.
    pub(crate) fn accounts_after(&self, after: u64) -> impl Iterator<Item = &Account> {
        self.accounts
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .map(|(_, account)| account)
    }

    pub(crate) fn account(&self, id: u64) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// Only where there is no search index (Bitbucket's: [`Store::update_account`]).
    pub(crate) fn account_mut(&mut self, id: u64) -> Option<&mut Account> {
        debug_assert!(self.search.is_none(), "the search index would go stale");
        self.accounts.get_mut(&id)
    }

    /// Changes the account `id` with `change`, keeping the user search index true.
    pub(crate) fn update_account<R>(
        &mut self,
        id: u64,
        change: impl FnOnce(&mut Account) -> R,
    ) -> Option<R> {
        let account = self.accounts.get_mut(&id)?;
        self.search
            .iter_mut()
            .for_each(|search| search.remove(account));
        let answer = change(account);
        self.search
            .iter_mut()
            .for_each(|search| search.insert(account));
        Some(answer)
    }

    /// Bitbucket's user search index ([`Search::candidates`]); `None` for other products.
    pub(crate) fn search(&self) -> Option<&Search> {
        self.search.as_ref()
    }

    pub(crate) fn account_by_name(&self, name: &str) -> Option<&Account> {
        let id = self.by_name.get(&name.to_lowercase())?;
        self.accounts.get(id)
    }

    pub(crate) fn account_by_key(&self, key: &str) -> Option<&Account> {
        let id = self.by_key.get(key)?;
        self.accounts.get(id)
    }

    pub(crate) fn n_active_accounts(&self) -> usize {
        self.accounts
            .values()
            .filter(|account| account.active)
            .count()
    }

    /// Adds an active account and answers its id; the caller checks the name is free.
    pub(crate) fn insert_account(&mut self, name: &str, display_name: &str, email: &str) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let key = match self.product {
            Product::Jira => format!("JIRAUSER{}", 10_000 + id),
            Product::Confluence => format!("8a7f808a{:024x}", 0x5eed_0000_u64 + id),
            Product::Bitbucket => self.free_slug(name),
        };
        self.by_key.insert(key.clone(), id);
        self.by_name.insert(name.to_lowercase(), id);
        let account = Account {
            id,
            key,
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            email: email.to_owned(),
            active: true,
            read_only: false,
        };
        self.search
            .iter_mut()
            .for_each(|search| search.insert(&account));
        self.accounts.insert(id, account);
        id
    }

    /// Bitbucket-style slug: lower case, characters outside `[a-z0-9._-]` become `_`, and a
    /// numeric suffix when taken.
    fn free_slug(&self, name: &str) -> String {
        let base: String = name
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut slug = base.clone();
        let mut suffix = 1;
        while self.by_key.contains_key(&slug) {
            slug = format!("{base}{suffix}");
            suffix += 1;
        }
        slug
    }

    /// Changes an account's login; the caller checks the new name is free. A Bitbucket slug
    /// follows the new name.
    pub(crate) fn rename_account(&mut self, id: u64, new_name: &str) {
        let Some(account) = self.accounts.get(&id) else {
            return;
        };
        let (old_name, old_key) = (account.name.to_lowercase(), account.key.clone());
        self.by_name.remove(&old_name);
        self.by_name.insert(new_name.to_lowercase(), id);
        let new_key = if self.product == Product::Bitbucket {
            self.by_key.remove(&old_key);
            let slug = self.free_slug(new_name);
            self.by_key.insert(slug.clone(), id);
            slug
        } else {
            old_key
        };
        self.update_account(id, |account| {
            account.name = new_name.to_owned();
            account.key = new_key;
        });
    }

    pub(crate) fn remove_account(&mut self, id: u64) -> Option<Account> {
        let account = self.accounts.remove(&id)?;
        self.search
            .iter_mut()
            .for_each(|search| search.remove(&account));
        self.by_key.remove(&account.key);
        self.by_name.remove(&account.name.to_lowercase());
        let groups: Vec<String> = self
            .groups_by_account
            .range((id, String::new())..)
            .take_while(|(member, _)| *member == id)
            .map(|(_, group)| group.clone())
            .collect();
        for group in groups {
            self.remove_pair(group, id);
        }
        self.permissions.remove(&Grantee::User(id));
        Some(account)
    }

    pub(crate) fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub(crate) fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(&name.to_lowercase())
    }

    pub(crate) fn insert_group(&mut self, name: &str) {
        self.groups.insert(
            name.to_lowercase(),
            Group {
                name: name.to_owned(),
                deletable: true,
            },
        );
    }

    pub(crate) fn remove_group(&mut self, name: &str) -> Option<Group> {
        let lower = name.to_lowercase();
        let group = self.groups.remove(&lower)?;
        for id in self.member_ids(&lower) {
            self.remove_pair(lower.clone(), id);
        }
        self.permissions.remove(&Grantee::Group(lower));
        Some(group)
    }

    /// `true` when the membership is new.
    pub(crate) fn add_member(&mut self, group: &str, account_id: u64) -> bool {
        let lower = group.to_lowercase();
        self.groups_by_account.insert((account_id, lower.clone()));
        self.memberships.insert((lower, account_id))
    }

    /// `true` when there was such a membership.
    pub(crate) fn remove_member(&mut self, group: &str, account_id: u64) -> bool {
        self.remove_pair(group.to_lowercase(), account_id)
    }

    /// Removes the membership of `account_id` in the lower-cased `group` from both indexes;
    /// `true` when there was one.
    fn remove_pair(&mut self, group: String, account_id: u64) -> bool {
        let removed = self.memberships.remove(&(group.clone(), account_id));
        self.groups_by_account.remove(&(account_id, group));
        removed
    }

    /// The members' ids of a lower-cased group name, in id order.
    fn member_ids(&self, lower: &str) -> Vec<u64> {
        self.memberships
            .range((lower.to_owned(), 0)..=(lower.to_owned(), u64::MAX))
            .map(|(_, id)| *id)
            .collect()
    }

    /// A group's members in account id order.
    pub(crate) fn members(&self, group: &str) -> Vec<&Account> {
        self.member_ids(&group.to_lowercase())
            .iter()
            .filter_map(|id| self.accounts.get(id))
            .collect()
    }

    /// The groups an account belongs to, by name.
    pub(crate) fn groups_of(&self, account_id: u64) -> Vec<&Group> {
        self.groups_by_account
            .range((account_id, String::new())..)
            .take_while(|(id, _)| *id == account_id)
            .filter_map(|(_, group_name)| self.groups.get(group_name))
            .collect()
    }

    pub(crate) fn submit_long_task(&mut self, account_id: u64, now: Instant) -> String {
        let task_id = format!("{}", 9_000 + self.next_task);
        self.next_task += 1;
        self.long_tasks.insert(
            task_id.clone(),
            LongTask {
                account_id,
                submitted: now,
                polls: 0,
                finished: false,
            },
        );
        task_id
    }

    /// Finishes long tasks that have run long enough, deleting their accounts.
    pub(crate) fn settle_long_tasks(&mut self, now: Instant) {
        let due: Vec<String> = self
            .long_tasks
            .iter()
            .filter(|(_, task)| {
                !task.finished && (task.polls >= 2 || now - task.submitted >= LONG_TASK_DURATION)
            })
            .map(|(task_id, _)| task_id.clone())
            .collect();
        for task_id in due {
            let Some(task) = self.long_tasks.get_mut(&task_id) else {
                continue;
            };
            task.finished = true;
            let account_id = task.account_id;
            if self.remove_account(account_id).is_some() {
                self.count_write("delete_account");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(product: Product) -> Store {
        Store::seeded(product, &Seed::default(), &[], &[]).unwrap()
    }

    #[test]
    fn bitbucket_slugs_are_lower_case_url_safe_and_unique() {
        let mut store = store(Product::Bitbucket);
        let first = store.insert_account("Jane.Doe@Corp", "Jane", "jane@example.com");
        let second = store.insert_account("jane.doe_corp", "Jane 2", "jane2@example.com");
        assert_eq!(store.account(first).unwrap().key, "jane.doe_corp");
        assert_eq!(store.account(second).unwrap().key, "jane.doe_corp1");
    }

    #[test]
    fn a_bitbucket_rename_changes_the_slug_and_a_jira_rename_keeps_the_key() {
        let mut bitbucket = store(Product::Bitbucket);
        let id = bitbucket.insert_account("dave", "Dave", "dave@example.com");
        bitbucket.rename_account(id, "david");
        assert_eq!(bitbucket.account_by_key("david").map(|a| a.id), Some(id));
        assert!(bitbucket.account_by_key("dave").is_none());

        let mut jira = store(Product::Jira);
        let id = jira.insert_account("dave", "Dave", "dave@example.com");
        jira.rename_account(id, "david");
        assert_eq!(
            jira.account_by_name("david").map(|a| a.key.as_str()),
            Some("JIRAUSER10001")
        );
        assert!(jira.account_by_name("dave").is_none());
    }

    #[test]
    fn deleting_an_account_or_a_group_drops_its_memberships() {
        let mut store = store(Product::Confluence);
        let id = store.insert_account("erin", "Erin", "erin@example.com");
        store.insert_group("writers");
        store.insert_group("readers");
        store.add_member("writers", id);
        store.add_member("readers", id);
        let other = store.insert_account("finn", "Finn", "finn@example.com");
        store.add_member("Readers", other);
        let names = |store: &Store, id| -> Vec<String> {
            store
                .groups_of(id)
                .iter()
                .map(|group| group.name.clone())
                .collect()
        };
        assert_eq!(names(&store, id), ["readers", "writers"]);
        store.remove_group("writers");
        assert_eq!(names(&store, id), ["readers"]);
        assert!(store.members("writers").is_empty());
        store.remove_account(id);
        let members: Vec<u64> = store.members("READERS").iter().map(|a| a.id).collect();
        assert_eq!(members, [other], "a group's members, by either index");
        assert!(store.remove_member("readers", other));
        assert!(names(&store, other).is_empty() && store.members("readers").is_empty());
        assert!(store.memberships.is_empty() && store.groups_by_account.is_empty());
    }

    #[test]
    fn a_seed_naming_an_unknown_account_is_refused() {
        let seed = Seed {
            memberships: vec![SeedMembership {
                group: "g".into(),
                login: "nobody".into(),
            }],
            groups: vec![SeedGroup {
                name: "g".into(),
                deletable: true,
            }],
            accounts: vec![],
        };
        assert!(matches!(
            Store::seeded(Product::Jira, &seed, &[], &[]),
            Err(Error::Seed { .. })
        ));
    }
}
