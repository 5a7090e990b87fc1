//! Who calls an emulated product, and what that caller may do there.
//!
//! A request is made by one of three callers ([`Caller`]): nobody (no credentials, or on
//! Confluence a bad token), the administrator the emulator was started with
//! ([`Config::token`](crate::Config::token) and [`Config::basic`](crate::Config::basic), a
//! system administrator of every product that is no account of the directory), or a seeded
//! caller ([`SeedCaller`]): an account of the directory that signs in with a password or a
//! token and holds the rights the directory gives it, read at the time of each request:
//!
//! - Jira: the global permissions `ADMINISTER` (members of `jira-administrators`) and
//!   `SYSTEM_ADMIN` (members of `jira-system-administrators`, which also administer), the
//!   groups Jira grants them to on a new installation ("Managing global permissions", Jira
//!   Data Center administration docs). `GET /rest/api/2/mypermissions` reports them.
//! - Confluence: the Confluence Administrator permission, which a new installation grants to
//!   `confluence-administrators` ("Global permissions overview", Confluence Data Center
//!   docs).
//! - Bitbucket: the highest global permission the account holds itself or through a group
//!   (the seed's `permissions`), as "Permission Management" in the 8.14 OpenAPI document
//!   lists them.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;

use crate::store::{GlobalPermission, Store};
use crate::{Config, Product};

/// Jira's group that holds `ADMINISTER` on a new installation.
pub(crate) const JIRA_ADMINISTRATORS: &str = "jira-administrators";
/// Jira's group that holds `SYSTEM_ADMIN` on a new installation.
pub(crate) const JIRA_SYSTEM_ADMINISTRATORS: &str = "jira-system-administrators";
/// Confluence's group that holds the Confluence Administrator permission on a new
/// installation.
pub(crate) const CONFLUENCE_ADMINISTRATORS: &str = "confluence-administrators";

/// Who a request comes from, as handlers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// No credentials (or, on Confluence, a bad token).
    Anonymous,
    /// The credentials the emulator was started with: a system administrator.
    Administrator {
        /// Signed in with a bearer token (a Bitbucket HTTP access token), not a password.
        token: bool,
    },
    /// A seeded caller: the account with this login.
    Account {
        login: String,
        /// Signed in with a bearer token, not a password.
        token: bool,
    },
}

impl Caller {
    pub(crate) fn is_anonymous(&self) -> bool {
        *self == Caller::Anonymous
    }

    /// Signed in with a bearer token.
    pub(crate) fn by_token(&self) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Administrator { token } | Caller::Account { token, .. } => *token,
        }
    }

    /// The caller's login: the account's, or the administrator's basic-auth user.
    pub(crate) fn login(&self, config: &Config) -> Option<String> {
        match self {
            Caller::Anonymous => None,
            Caller::Administrator { .. } => Some(
                config
                    .basic
                    .as_ref()
                    .map_or("admin", |(user, _)| user.as_str())
                    .to_owned(),
            ),
            Caller::Account { login, .. } => Some(login.clone()),
        }
    }

    /// Whether the caller is a member of `group` (the administrator is a member of none).
    fn in_group(&self, store: &Store, group: &str) -> bool {
        let Caller::Account { login, .. } = self else {
            return false;
        };
        store.account_by_name(login).is_some_and(|account| {
            store
                .groups_of(account.id)
                .iter()
                .any(|member_of| member_of.name.eq_ignore_ascii_case(group))
        })
    }

    /// Jira: the caller holds `ADMINISTER` (which `SYSTEM_ADMIN` includes).
    pub(crate) fn jira_administer(&self, store: &Store) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Administrator { .. } => true,
            Caller::Account { .. } => {
                self.in_group(store, JIRA_ADMINISTRATORS) || self.jira_system_admin(store)
            }
        }
    }

    /// Jira: the caller holds `SYSTEM_ADMIN`.
    pub(crate) fn jira_system_admin(&self, store: &Store) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Administrator { .. } => true,
            Caller::Account { .. } => self.in_group(store, JIRA_SYSTEM_ADMINISTRATORS),
        }
    }

    /// Confluence: the caller is a Confluence administrator.
    pub(crate) fn confluence_admin(&self, store: &Store) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Administrator { .. } => true,
            Caller::Account { .. } => self.in_group(store, CONFLUENCE_ADMINISTRATORS),
        }
    }

    /// Bitbucket: the caller's highest global permission, its own or through a group.
    pub(crate) fn bitbucket_permission(&self, store: &Store) -> Option<GlobalPermission> {
        match self {
            Caller::Anonymous => None,
            Caller::Administrator { .. } => Some(GlobalPermission::SysAdmin),
            Caller::Account { login, .. } => {
                let account = store.account_by_name(login)?;
                store.highest_permission(account.id)
            }
        }
    }
}

/// `Some(caller)` for valid or missing credentials, `None` for credentials to refuse with
/// 401. A bad bearer token on Confluence is the anonymous user.
pub(crate) fn authenticate(config: &Config, store: &Store, headers: &HeaderMap) -> Option<Caller> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Some(Caller::Anonymous);
    };
    let value = value.to_str().unwrap_or_default();
    if let Some(token) = value.strip_prefix("Bearer ") {
        let token = token.trim();
        if config.token.as_deref() == Some(token) {
            return Some(Caller::Administrator { token: true });
        }
        if let Some(caller) = store.caller_with_token(token) {
            return Some(Caller::Account {
                login: caller.login.clone(),
                token: true,
            });
        }
        return (config.product == Product::Confluence).then_some(Caller::Anonymous);
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())?;
        let (user, password) = decoded.split_once(':')?;
        if config
            .basic
            .as_ref()
            .is_some_and(|(u, p)| u == user && p == password)
        {
            return Some(Caller::Administrator { token: false });
        }
        let caller = store.caller_with_password(user, password)?;
        return Some(Caller::Account {
            login: caller.login.clone(),
            token: false,
        });
    }
    None
}
