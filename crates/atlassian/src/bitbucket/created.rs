//! The accounts a Bitbucket client created itself, for their first groups.

use super::DetailedUser;
use crate::AccountRef;

/// The most accounts [`CreatedHere`] remembers; past it, new ones take the lookup again.
const MAX_REMEMBERED: usize = 200_000;

/// The accounts this client created and read back with `mutableGroups` true, slug to name,
/// so that their first groups (a first sync adds them minutes later) cost one `add-groups`
/// instead of a lookup and an `add-groups`: about a quarter of a first sync's requests.
/// An entry is only a shortcut: a name that no longer matches the account's login asks
/// again, and an `add-groups` that fails forgets the entry and takes the lookup.
#[derive(Default)]
pub(super) struct CreatedHere {
    names: std::sync::Mutex<std::collections::HashMap<Box<str>, Box<str>>>,
}

impl CreatedHere {
    pub(super) fn remember(&self, user: &DetailedUser) {
        if !user.mutable_groups {
            return;
        }
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if names.len() < MAX_REMEMBERED {
            names.insert(user.slug.as_str().into(), user.name.as_str().into());
        }
    }

    /// The name of `account` if this client created it under its current login.
    pub(super) fn name_of(&self, account: AccountRef<'_>) -> Option<String> {
        let names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        names
            .get(account.id)
            .filter(|name| name.eq_ignore_ascii_case(account.login))
            .map(|name| name.to_string())
    }

    pub(super) fn forget(&self, slug: &str) {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        names.remove(slug);
    }
}

impl std::fmt::Debug for CreatedHere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f.debug_struct("CreatedHere")
            .field("accounts", &names.len())
            .finish()
    }
}
