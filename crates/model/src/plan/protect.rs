//! Accounts keysync leaves alone whatever Keycloak says: protected logins, members of
//! protected groups, accounts the product reports as administrators, and accounts another
//! connector manages; and how a person reads why.

use super::index::{Accounts, Ctx, ProductGroups};
use crate::policy::ValidPolicy;
use crate::state::ProductState;

/// Why keysync leaves an account alone whatever Keycloak says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protection {
    Login,
    /// In the product group of this index (an administrator group).
    Group(u32),
    /// The product reports that it holds administrator rights.
    Administrator,
    /// Another connector manages it.
    Foreign,
}

impl Ctx<'_> {
    /// Why account `idx` is protected, if it is.
    pub(super) fn protection(&self, idx: usize) -> Option<Protection> {
        self.protected.get(idx).copied().flatten()
    }

    /// How a person reads why account `idx` is left alone.
    pub(super) fn protection_reason(&self, idx: usize) -> Option<String> {
        let account = &self.state.accounts[idx];
        Some(match self.protection(idx)? {
            Protection::Login => format!(
                "account {} matches a protected pattern; keysync leaves it alone",
                account.id
            ),
            Protection::Group(group) => format!(
                "account {} is in protected group {}; keysync leaves it alone",
                account.id, self.product_groups.names[group as usize]
            ),
            Protection::Administrator => format!(
                "account {} holds {}'s administrator rights; keysync leaves it alone",
                account.id, self.state.product
            ),
            Protection::Foreign => format!(
                "account {}{}; this connector leaves it alone",
                account.id,
                self.protection_note(idx, Protection::Foreign)
            ),
        })
    }

    /// What makes account `idx` protected, as a clause after its id: `, in protected group
    /// jira-administrators`.
    pub(super) fn protection_note(&self, idx: usize, protection: Protection) -> String {
        let account = &self.state.accounts[idx];
        match protection {
            Protection::Login => " (a protected login)".to_owned(),
            Protection::Group(group) => format!(
                ", in protected group {}",
                self.product_groups.names[group as usize]
            ),
            Protection::Administrator => {
                format!(
                    ", which holds {}'s administrator rights",
                    self.state.product
                )
            }
            Protection::Foreign => match &account.connector {
                Some(owner) => format!(", managed by connector `{owner}`"),
                None => ", managed by keysync for a user of another connector".to_owned(),
            },
        }
    }
}

/// Why each account is protected, if it is (see [`Ctx::protected`]).
pub(super) fn protections(
    state: &ProductState,
    policy: &ValidPolicy,
    product_groups: &ProductGroups<'_>,
    accounts: &Accounts,
    foreign: &[bool],
) -> Vec<Option<Protection>> {
    let protected_groups: Vec<bool> = product_groups
        .names
        .iter()
        .map(|name| policy.is_protected_group(name))
        .collect();
    let any_group = protected_groups.iter().any(|protected| *protected);
    state
        .accounts
        .iter()
        .enumerate()
        .map(|(idx, account)| {
            if foreign.get(idx).copied().unwrap_or(false) {
                return Some(Protection::Foreign);
            }
            if account.administrator {
                return Some(Protection::Administrator);
            }
            if policy.is_protected(&account.login) {
                return Some(Protection::Login);
            }
            if !any_group {
                return None;
            }
            accounts
                .groups
                .get(idx)
                .iter()
                .find(|&&group| protected_groups[group as usize])
                .map(|&group| Protection::Group(group))
        })
        .collect()
}
