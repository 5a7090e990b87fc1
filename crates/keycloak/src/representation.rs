//! The JSON the admin API answers with, reduced to the fields keysync reads: serde skips
//! the rest while parsing, so a page of users never exists as a generic JSON tree.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A user, full representation (`briefRepresentation=false`, which carries `attributes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRepresentation {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    /// Required: a user without it is a decode error, never a disabled user (which would
    /// deactivate them in every product).
    pub enabled: bool,
    /// Required, like `enabled`: Keycloak fills it in both the brief and the full
    /// representation.
    pub email_verified: bool,
    /// Custom attributes (user-profile fields like `email` are not repeated here). Only
    /// declared attributes show, unless the realm's `unmanagedAttributePolicy` lets admins
    /// see the others.
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub federation_link: Option<String>,
    /// Set on the user behind a client's service account; such users are never synced.
    #[serde(default)]
    pub service_account_client_id: Option<String>,
}

/// A user as a group's member listing gives it with `briefRepresentation=true`: only the
/// id is read.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberRepresentation {
    pub id: String,
}

/// A group. Since Keycloak 23, `/groups` and `/children` give `subGroupCount` and leave
/// `subGroups` empty; before, `/groups` gave the whole tree in `subGroups` and no count.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRepresentation {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub sub_group_count: Option<u64>,
    #[serde(default)]
    pub sub_groups: Vec<GroupRepresentation>,
}

/// A count as the admin API answers it: `GET /users/count` a bare number,
/// `GET /groups/count` `{"count": n}`. Read as any JSON number, so that a negative or
/// fractional count is told apart from a body that is not JSON; see
/// [`crate::Error::ImpossibleCount`].
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Bare(serde_json::Number),
    Object { count: serde_json::Number },
}

impl Count {
    /// The count if it is an integer from 0 to [`crate::MAX_COUNT`].
    pub fn checked(&self) -> Result<u64, &serde_json::Number> {
        let (Count::Bare(number) | Count::Object { count: number }) = self;
        number
            .as_u64()
            .filter(|count| *count <= crate::MAX_COUNT)
            .ok_or(number)
    }
}

/// The token endpoint's answer to a client-credentials grant.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    /// Seconds; any JSON number, clamped by `client::token_lifetime`.
    pub(crate) expires_in: serde_json::Number,
}
