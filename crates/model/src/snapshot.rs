//! The Keycloak side of a sync: one realm's users, groups and direct group memberships at one
//! moment, as the fetcher read them. Plain data: every field is public and nothing here is
//! validated, because the plan treats odd input (duplicate ids, unknown references, cycles in the
//! group tree) as a normal case and reports it.

use std::collections::BTreeMap;

crate::string_id! {
    /// A Keycloak user id (a UUID in practice). Clones share one allocation, so memberships can
    /// hold the id without copying it: build them from the user's own `id.clone()`.
    UserId
}

crate::string_id! {
    /// A Keycloak group id (a UUID in practice). Clones share one allocation, like [`UserId`].
    GroupId
}

/// One realm's directory at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub users: Vec<KeycloakUser>,
    pub groups: Vec<KeycloakGroup>,
    /// Direct memberships only: a member of `/staff/devs` is listed for that group, not for
    /// `/staff`.
    pub memberships: Vec<KeycloakMembership>,
}

/// A Keycloak user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeycloakUser {
    pub id: UserId,
    /// Keycloak keeps usernames lower-case, but the plan does not rely on it.
    pub username: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub enabled: bool,
    pub email_verified: bool,
    /// Custom attributes; Keycloak allows several values per attribute, and the mapping uses the
    /// first.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// The user-federation provider (LDAP, Kerberos) the user comes from, if any.
    pub federation_link: Option<String>,
}

/// A Keycloak group. The tree is given by `parent_id`; `path` is Keycloak's full path, such as
/// `/staff/devs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeycloakGroup {
    pub id: GroupId,
    pub name: String,
    pub path: String,
    pub parent_id: Option<GroupId>,
}

/// A user's direct membership of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeycloakMembership {
    pub user_id: UserId,
    pub group_id: GroupId,
}
