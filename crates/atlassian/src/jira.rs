//! The Jira Data Center client (REST v2, `/rest/api/2`).
//!
//! Jira's particulars, from the reference:
//! - The stable id is the user key (`key`); writes address users by `key=` where Jira
//!   accepts it and by username where it does not (memberships).
//! - Listing every user: `/user/list` with a cursor from 10.3 LTS on; before that only
//!   `/user/search`, capped at 100 users on 10.0 to 10.2 and at the first 1,000 on 9.x, so
//!   the client searches by prefix, refines every prefix that may have met a cap, and fails
//!   a listing it cannot prove complete ([`UserListing`], and `jira/search.rs` for which
//!   version takes which path).
//! - Groups come from `/groups/picker`, which has no paging and is capped by a server
//!   property: a query whose `total` exceeds what came back is split by appending characters.
//! - An add of an existing member answers 400, and so does a create of an existing user or
//!   group: the client then reads the current state and answers [`Outcome::AlreadyDone`].
//! - `group/member` includes members of nested groups.
//! - [`Directory::test_connection`] proves the rights the writes need with
//!   `GET /rest/api/2/mypermissions?permissions=ADMINISTER,SYSTEM_ADMIN` (either will do).
//! - Project and component leads come from `project?expand=lead` and each project's
//!   `components`, and are handed over with `PUT project/{key}` (`lead`) and
//!   `PUT component/{id}` (`leadUserName`); the seats from `applicationrole` (`jira/leads.rs`).
//!   Jira refuses to deactivate a project or component lead and to delete a project lead
//!   with a 400, which comes back as [`Error::Validation`] with Jira's message.
//! - An update sends `name` only when it renames: the body of `PUT /rest/api/2/user?key=…`
//!   sets every field it carries, so a login read before an administrator renamed the user
//!   would rename it back.
//!
//! Hostile answers (see also `client.rs` for the paging loop):
//! - A user's `active` is required (a default would read a deactivated user as active or
//!   the reverse), and so are `groups.items` with `expand=groups`, `isLast` of both paged
//!   listings, `startAt` of `group/member` (it must be the one asked for) and `total` of
//!   the group picker; a missing one is [`Error::Decode`].
//! - A `/user/list` page that is not the last must carry a `nextCursor`, and a cursor that
//!   comes back fails the listing ([`Error::Incomplete`]); `/user/search` paging stops at
//!   `max_pages` pages per query, and the prefix refinement of the user search and of the
//!   group picker at `max_pages` queries (a server that caps every query would otherwise
//!   make them branch into billions).
//! - Defaults are kept only where they fail closed or cost only speed: `mypermissions`
//!   (absent means not held) and `serverInfo.versionNumbers` (absent picks the prefix
//!   search).

mod leads;
mod search;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::client::{Offset, Paged, Position, Split, product_client};
use crate::config::{JiraSettings, UserListing};
use crate::http::ApiRequest;
use crate::{
    AccountRef, AccountUpdate, Capabilities, ConnectionInfo, Created, Directory, DirectoryState,
    Error, Lead, LeadTarget, NewAccount, Outcome, Product, RemoteAccount, RemoteGroup, Seats,
    read_directory, same_account,
};

/// `/user/list`'s documented default page, and so the client's (`group/member` sets its own).
const USER_LIST_PAGE: u32 = 2000;
/// `group/member`'s default and largest page.
const MEMBER_PAGE: u32 = 50;
/// What we ask `groups/picker` for; the server may cap it lower.
const PICKER_MAX_RESULTS: u32 = 1000;
/// Characters appended to a group query that hit the picker's cap.
const NEXT_QUERY_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789._-@+' ";
/// The global permissions that allow the writes: either will do.
const ADMIN_PERMISSIONS: [&str; 2] = ["ADMINISTER", "SYSTEM_ADMIN"];

product_client! {
    /// A Jira Data Center client.
    pub struct JiraClient(Product::Jira, JiraSettings, USER_LIST_PAGE) {
        /// The listing flavour, resolved from `serverInfo` once when configured as `Auto`.
        listing: OnceCell<UserListing>,
    }
}

impl JiraClient {
    /// The user-listing flavour in use: the configured one, or the one `serverInfo` implies.
    pub async fn user_listing(&self) -> Result<UserListing, Error> {
        let configured = self.core.settings.user_listing;
        if configured != UserListing::Auto {
            return Ok(configured);
        }
        let listing = self
            .listing
            .get_or_try_init(|| async {
                let info = self.server_info().await?;
                let cursor = info.version_numbers.as_slice() >= [10, 3].as_slice();
                Ok::<_, Error>(if cursor {
                    UserListing::Cursor
                } else {
                    UserListing::PrefixSearch
                })
            })
            .await?;
        Ok(*listing)
    }

    /// The global permission that lets the account make the writes, `SYSTEM_ADMIN` or
    /// `ADMINISTER`, from `GET /rest/api/2/mypermissions` ("whether the currently logged in
    /// user has" each permission asked for); [`Error::MissingPermission`] when it has neither.
    async fn admin_permission(&self) -> Result<&'static str, Error> {
        let request = ApiRequest::get("rest/api/2/mypermissions")
            .query("permissions", ADMIN_PERMISSIONS.join(","));
        let mine: MyPermissions = self.core.send_ok(&request).await?.json("permissions")?;
        let held = |key: &str| {
            mine.permissions
                .get(key)
                .is_some_and(|permission| permission.have_permission)
        };
        if let Some(key) = ADMIN_PERMISSIONS.into_iter().rev().find(|key| held(key)) {
            return Ok(key);
        }
        Err(Error::MissingPermission {
            product: Product::Jira,
            status: 200,
            permission: "ADMINISTER (Jira Administrators) or SYSTEM_ADMIN",
            message: "mypermissions says the account holds neither; creating users, changing \
                      groups and memberships need one of them"
                .to_owned(),
        })
    }

    async fn server_info(&self) -> Result<ServerInfo, Error> {
        let response = self
            .core
            .send(&ApiRequest::get("rest/api/2/serverInfo"))
            .await?;
        if !response.is_success() {
            return Err(response.into_error());
        }
        response.json("serverInfo")
    }

    /// A user by username or key; `None` when Jira answers 404.
    async fn find_user(
        &self,
        by: UserBy<'_>,
        expand_groups: bool,
    ) -> Result<Option<UserBean>, Error> {
        let mut request = ApiRequest::get("rest/api/2/user");
        request = match by {
            UserBy::Name(name) => request.query("username", name),
            UserBy::Key(key) => request.query("key", key),
        };
        if expand_groups {
            request = request.query("expand", "groups");
        }
        let response = self.core.send(&request).await?;
        if response.status == 404 {
            return Ok(None);
        }
        if !response.is_success() {
            return Err(response.into_error());
        }
        response.json("user").map(Some)
    }

    async fn is_member(&self, group: &str, login: &str) -> Result<bool, Error> {
        let Some(user) = self.find_user(UserBy::Name(login), true).await? else {
            return Ok(false);
        };
        Ok(user.groups.is_some_and(|groups| {
            groups
                .items
                .iter()
                .any(|g| g.name.eq_ignore_ascii_case(group))
        }))
    }

    async fn group_exists(&self, name: &str) -> Result<bool, Error> {
        let request = ApiRequest::get("rest/api/2/group/member")
            .query("groupname", name)
            .query("maxResults", "1");
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(false),
            _ if response.is_success() => Ok(true),
            _ => Err(response.into_error()),
        }
    }

    async fn list_accounts_with_cursor(&self) -> Result<Vec<RemoteAccount>, Error> {
        let users = self
            .core
            .all_pages::<UserListPage>(&ApiRequest::get("rest/api/2/user/list"), "user list page")
            .await?;
        Ok(users.into_iter().map(UserBean::into_account).collect())
    }

    /// One `groups/picker` call: the names, and whether `total` says some were left out.
    async fn pick_groups(&self, query: &str) -> Result<(Vec<String>, bool), Error> {
        let request = ApiRequest::get("rest/api/2/groups/picker")
            .query("query", query)
            .query("maxResults", PICKER_MAX_RESULTS.to_string());
        let picked: GroupPicker = self.core.send_ok(&request).await?.json("group picker")?;
        let capped = picked.total > picked.groups.len() as u64;
        Ok((picked.groups.into_iter().map(|g| g.name).collect(), capped))
    }
}

impl Directory for JiraClient {
    fn product(&self) -> Product {
        Product::Jira
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_deactivate: true,
            can_rename: true,
            lists_email: true,
            async_delete: false,
            nested_group_members: true,
            groups_per_add: 1,
        }
    }

    #[tracing::instrument(skip_all, fields(product = "jira"))]
    async fn test_connection(&self) -> Result<ConnectionInfo, Error> {
        let myself: UserBean = self
            .core
            .send_ok(&ApiRequest::get("rest/api/2/myself"))
            .await?
            .json("user")?;
        let info = self.server_info().await?;
        let permission = self.admin_permission().await?;
        Ok(ConnectionInfo {
            product: Product::Jira,
            version: info.version,
            user: Some(myself.name),
            permission: Some(permission.to_owned()),
        })
    }

    /// Accounts, groups and memberships; a member missing from the account listing (one no
    /// user search could reach) is read by key and added, and one that cannot be read fails
    /// the read.
    #[tracing::instrument(skip_all, fields(product = "jira"))]
    async fn fetch_state(&self) -> Result<DirectoryState, Error> {
        let mut state = read_directory(self).await?;
        let listed: BTreeSet<&str> = state.accounts.iter().map(|a| a.id.as_str()).collect();
        let missing: BTreeSet<String> = state
            .memberships
            .iter()
            .filter(|membership| !listed.contains(membership.account_id.as_str()))
            .map(|membership| membership.account_id.clone())
            .collect();
        for key in missing {
            let Some(user) = self.find_user(UserBy::Key(&key), false).await? else {
                return Err(Error::Incomplete {
                    product: Product::Jira,
                    message: format!(
                        "the group members include the user key {key}, which the user listing \
                         missed and which cannot be read"
                    ),
                });
            };
            tracing::warn!(key = %key, "A group member was missing from the user listing; added.");
            state.accounts.push(user.into_account());
        }
        Ok(state)
    }

    #[tracing::instrument(skip_all, fields(product = "jira"))]
    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, Error> {
        match self.user_listing().await? {
            UserListing::Cursor => self.list_accounts_with_cursor().await,
            UserListing::PrefixSearch | UserListing::Auto => self.list_accounts_by_prefix().await,
        }
    }

    #[tracing::instrument(skip_all, fields(product = "jira"))]
    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, Error> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut queries = vec![String::new()];
        let mut asked: usize = 0;
        while !queries.is_empty() {
            asked = asked.saturating_add(queries.len());
            if asked > self.core.max_pages() {
                return Err(Error::Incomplete {
                    product: Product::Jira,
                    message: format!(
                        "the group picker caps so many queries that listing every group would \
                         take more than {} calls (`max_pages`)",
                        self.core.max_pages()
                    ),
                });
            }
            let mut next_queries = Vec::new();
            for query in queries.drain(..) {
                let (picked, capped) = self.pick_groups(&query).await?;
                names.extend(picked);
                if !capped {
                    continue;
                }
                if query.chars().count() >= search::MAX_PREFIX_LEN {
                    return Err(Error::Incomplete {
                        product: Product::Jira,
                        message: format!(
                            "the group picker keeps capping the query {query:?}; cannot list every group"
                        ),
                    });
                }
                if !query.is_empty() && self.group_exists(&query).await? {
                    names.insert(query.clone());
                }
                next_queries.extend(NEXT_QUERY_CHARS.chars().map(|c| format!("{query}{c}")));
            }
            queries = next_queries;
        }
        Ok(names
            .into_iter()
            .map(|name| RemoteGroup {
                name,
                read_only: None,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(product = "jira"))]
    async fn list_leads(&self) -> Result<Vec<Lead>, Error> {
        self.read_leads().await
    }

    #[tracing::instrument(skip_all, fields(product = "jira"))]
    async fn seats(&self) -> Result<Option<Seats>, Error> {
        self.read_seats().await
    }

    #[tracing::instrument(skip_all, fields(product = "jira", to = to))]
    async fn hand_over_lead(&self, target: &LeadTarget, to: &str) -> Result<Outcome, Error> {
        self.set_lead(target, to).await
    }

    #[tracing::instrument(skip_all, fields(product = "jira", group = group))]
    async fn list_members(&self, group: &str) -> Result<Vec<String>, Error> {
        let listing = ApiRequest::get("rest/api/2/group/member")
            .query("groupname", group)
            .query("includeInactiveUsers", "true");
        let users = self
            .core
            .all_pages::<MemberPage>(&listing, "group member page")
            .await?;
        Ok(users
            .into_iter()
            .map(|user| user.key.unwrap_or(user.name))
            .collect())
    }

    #[tracing::instrument(skip_all, fields(product = "jira", login = %account.login))]
    async fn create_account(&self, account: &NewAccount) -> Result<Created, Error> {
        let response = self.core.send(&create_user_request(account)).await?;
        if response.is_success() {
            let user: UserBean = response.json("user")?;
            return Ok(Created {
                id: user.key.unwrap_or(user.name),
                outcome: Outcome::Applied,
            });
        }
        // Jira answers 400 for an existing username, as for any other validation error.
        if response.status == 400
            && let Some(existing) = self.find_user(UserBy::Name(&account.login), false).await?
        {
            let existing = existing.into_account();
            if !same_account(&existing, account) {
                return Err(Error::Conflict {
                    product: Product::Jira,
                    status: response.status,
                    message: format!(
                        "user {} exists with other details ({})",
                        account.login,
                        response.message()
                    ),
                });
            }
            return Ok(Created {
                id: existing.id,
                outcome: Outcome::AlreadyDone,
            });
        }
        Err(response.into_error())
    }

    #[tracing::instrument(skip_all, fields(product = "jira", id = account.id, login = account.login))]
    async fn update_account(
        &self,
        account: AccountRef<'_>,
        update: &AccountUpdate,
    ) -> Result<Outcome, Error> {
        let Some(request) = update_user_request(account, update) else {
            return Ok(Outcome::AlreadyDone);
        };
        self.core.send_ok(&request).await?;
        Ok(Outcome::Applied)
    }

    #[tracing::instrument(skip_all, fields(product = "jira", id = account.id, login = account.login))]
    async fn deactivate_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        set_active(self, account, false).await
    }

    #[tracing::instrument(skip_all, fields(product = "jira", id = account.id, login = account.login))]
    async fn reactivate_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        set_active(self, account, true).await
    }

    #[tracing::instrument(skip_all, fields(product = "jira", id = account.id, login = account.login))]
    async fn delete_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        let request = ApiRequest::new(Method::DELETE, "rest/api/2/user").query("key", account.id);
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }

    #[tracing::instrument(skip_all, fields(product = "jira", group = name))]
    async fn create_group(&self, name: &str) -> Result<Outcome, Error> {
        let request =
            ApiRequest::new(Method::POST, "rest/api/2/group").json(json!({ "name": name }));
        let response = self.core.send(&request).await?;
        if response.is_success() {
            return Ok(Outcome::Applied);
        }
        if response.status == 400 && self.group_exists(name).await? {
            return Ok(Outcome::AlreadyDone);
        }
        Err(response.into_error())
    }

    #[tracing::instrument(skip_all, fields(product = "jira", group = name))]
    async fn delete_group(&self, name: &str) -> Result<Outcome, Error> {
        let request = ApiRequest::new(Method::DELETE, "rest/api/2/group").query("groupname", name);
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }

    #[tracing::instrument(skip_all, fields(product = "jira", group = group, id = account.id, login = account.login))]
    async fn add_member(&self, group: &str, account: AccountRef<'_>) -> Result<Outcome, Error> {
        let request = ApiRequest::new(Method::POST, "rest/api/2/group/user")
            .query("groupname", group)
            .json(json!({ "name": account.login }));
        let response = self.core.send(&request).await?;
        if response.is_success() {
            return Ok(Outcome::Applied);
        }
        // "Already a member" is a 400, like an empty name.
        if response.status == 400 && self.is_member(group, account.login).await? {
            return Ok(Outcome::AlreadyDone);
        }
        Err(response.into_error())
    }

    #[tracing::instrument(skip_all, fields(product = "jira", group = group, id = account.id, login = account.login))]
    async fn remove_member(&self, group: &str, account: AccountRef<'_>) -> Result<Outcome, Error> {
        let request = ApiRequest::new(Method::DELETE, "rest/api/2/group/user")
            .query("groupname", group)
            .query("username", account.login);
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            400 if !self.is_member(group, account.login).await? => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }
}

/// Deactivation and reactivation: read the user, then `PUT {"name", "active"}` unless it is
/// already in that state (Jira 8.3+).
async fn set_active(
    client: &JiraClient,
    account: AccountRef<'_>,
    active: bool,
) -> Result<Outcome, Error> {
    let Some(user) = client.find_user(UserBy::Key(account.id), false).await? else {
        return Err(Error::NotFound {
            product: Product::Jira,
            status: 404,
            message: format!("no user with key {}", account.id),
        });
    };
    if user.active == active {
        return Ok(Outcome::AlreadyDone);
    }
    let request = ApiRequest::new(Method::PUT, "rest/api/2/user")
        .query("key", account.id)
        .json(json!({ "name": user.name, "active": active }));
    client.core.send_ok(&request).await?;
    Ok(Outcome::Applied)
}

/// `POST /rest/api/2/user`; without a password Jira picks a random one.
fn create_user_request(account: &NewAccount) -> ApiRequest {
    let mut body = json!({
        "name": account.login,
        "emailAddress": account.email,
        "displayName": account.display_name,
    });
    if let Some(password) = &account.password {
        body["password"] = json!(password.expose());
    }
    ApiRequest::new(Method::POST, "rest/api/2/user").json(body)
}

/// `PUT /rest/api/2/user?key=…` with only the changed fields; `None` when nothing changes.
///
/// `name` is sent only when the update renames. Jira sets every field the body carries, and
/// the login keysync read may be stale (an administrator may have renamed the user since):
/// sending it would rename the user back. The body always carries a field, since an update
/// changes at least one (older Jira rejected bodies with none of `name`, `emailAddress` and
/// `displayName`).
fn update_user_request(account: AccountRef<'_>, update: &AccountUpdate) -> Option<ApiRequest> {
    if update == &AccountUpdate::default() {
        return None;
    }
    let mut body = json!({});
    if let Some(login) = &update.login {
        body["name"] = json!(login);
    }
    if let Some(display_name) = &update.display_name {
        body["displayName"] = json!(display_name);
    }
    if let Some(email) = &update.email {
        body["emailAddress"] = json!(email);
    }
    Some(
        ApiRequest::new(Method::PUT, "rest/api/2/user")
            .query("key", account.id)
            .json(body),
    )
}

#[derive(Clone, Copy)]
enum UserBy<'a> {
    Name(&'a str),
    Key(&'a str),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserBean {
    key: Option<String>,
    name: String,
    display_name: Option<String>,
    email_address: Option<String>,
    /// Required: Jira's `UserBean` always carries it, and a default either way would change
    /// the plan (a deactivated user read as active, or the reverse).
    active: bool,
    groups: Option<UserGroups>,
}

impl UserBean {
    fn into_account(self) -> RemoteAccount {
        RemoteAccount {
            id: self.key.unwrap_or_else(|| self.name.clone()),
            display_name: self.display_name.unwrap_or_default(),
            login: self.name,
            email: self.email_address,
            active: self.active,
            read_only: None,
            administrator: false,
        }
    }
}

/// `groups` of `user?expand=groups`: `{size, items}`. `items` is required: read as no
/// groups, a missing one would make a refused removal look done ([`Directory::remove_member`]).
#[derive(Deserialize)]
struct UserGroups {
    items: Vec<GroupName>,
}

#[derive(Deserialize)]
struct GroupName {
    name: String,
}

/// A page of `/user/list`: `{values, isLast, nextCursor}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserListPage {
    values: Vec<UserBean>,
    is_last: bool,
    next_cursor: Option<String>,
}

/// Asked for by [`Cursor`]. A page is the last when `isLast` (required) says so; any other
/// page must carry a non-empty `nextCursor`, with which the next is asked for. A page that is
/// not the last without one cannot be paged past and fails the listing; a cursor already
/// used fails it in the paging loop.
impl Paged for UserListPage {
    type Item = UserBean;
    type Position = Cursor;

    fn split(self, _: &Cursor) -> Result<Split<Self>, String> {
        if self.is_last {
            return Ok((self.values, None));
        }
        match self.next_cursor.filter(|cursor| !cursor.is_empty()) {
            Some(cursor) => Ok((self.values, Some(Cursor(Some(cursor))))),
            None => Err(
                "a page says it is not the last (`isLast` false) but has no `nextCursor`"
                    .to_owned(),
            ),
        }
    }
}

/// Where a `/user/list` page starts: `maxResults`, then the `cursor` the previous page
/// answered (none for the first page).
#[derive(Default)]
struct Cursor(Option<String>);

impl Position for Cursor {
    fn request(&self, listing: &ApiRequest, page_size: u32) -> ApiRequest {
        let request = listing.clone().query("maxResults", page_size.to_string());
        match &self.0 {
            Some(cursor) => request.query("cursor", cursor.clone()),
            None => request,
        }
    }

    fn key(&self) -> String {
        match &self.0 {
            Some(cursor) => format!("cursor={cursor}"),
            None => "the first page".to_owned(),
        }
    }
}

/// A page of `group/member`: `{values, isLast, startAt, maxResults, total}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberPage {
    values: Vec<UserBean>,
    is_last: bool,
    start_at: u64,
}

/// Asked for with `startAt` and `maxResults`, [`MEMBER_PAGE`] at a time at most. A page is
/// the last when `isLast` (required) says so; the next starts just after it. The page's
/// `startAt` (required) must be the one asked for: a Jira that ignores it would answer the
/// first page again and again.
impl Paged for MemberPage {
    type Item = UserBean;
    type Position = Offset;

    /// `group/member` pages are [`MEMBER_PAGE`] users by default, and never more.
    fn page_size(configured: Option<u32>, _: u32) -> u32 {
        configured.unwrap_or(MEMBER_PAGE).min(MEMBER_PAGE)
    }

    fn first() -> Offset {
        Offset::first("startAt", "maxResults")
    }

    fn split(self, start_at: &Offset) -> Result<Split<Self>, String> {
        start_at.check_start(self.start_at)?;
        if self.is_last {
            return Ok((self.values, None));
        }
        let next = start_at.after(self.values.len())?;
        Ok((self.values, Some(next)))
    }
}

/// `groups/picker`: `{header, total, groups}`; `total` is required, since without it a
/// capped answer could not be told from a complete one.
#[derive(Deserialize)]
struct GroupPicker {
    total: u64,
    groups: Vec<GroupName>,
}

/// `mypermissions`: `{"permissions": {KEY: {…, "havePermission": bool}}}`. The defaults
/// (no permissions, `havePermission` false) fail closed: a missing field can only make the
/// connection test refuse, never grant.
#[derive(Deserialize)]
struct MyPermissions {
    #[serde(default)]
    permissions: BTreeMap<String, Permission>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Permission {
    #[serde(default)]
    have_permission: bool,
}

/// `serverInfo`. Without `versionNumbers` (a default of none) `UserListing::Auto` picks
/// the prefix search, which works on every version: slower, never less complete.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerInfo {
    version: Option<String>,
    #[serde(default)]
    version_numbers: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountRef<'static> {
        AccountRef {
            id: "JIRAUSER10000",
            login: "alice",
        }
    }

    #[test]
    fn create_request_sends_name_email_and_display_name_without_a_password_by_default() {
        let request = create_user_request(&NewAccount {
            login: "alice".into(),
            display_name: "Alice".into(),
            email: "alice@example.com".into(),
            password: None,
        });
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.segments, ["rest", "api", "2", "user"]);
        assert_eq!(
            request.body,
            Some(
                json!({"name": "alice", "emailAddress": "alice@example.com", "displayName": "Alice"})
            )
        );
    }

    #[test]
    fn update_request_addresses_the_key_and_carries_a_name_only_to_rename() {
        let email = AccountUpdate {
            email: Some("new@example.com".into()),
            ..AccountUpdate::default()
        };
        let rename = AccountUpdate {
            login: Some("alicia".into()),
            display_name: Some("Alicia".into()),
            ..AccountUpdate::default()
        };

        let request = update_user_request(account(), &email).unwrap();
        let renaming = update_user_request(account(), &rename).unwrap();

        assert_eq!(request.query, [("key", "JIRAUSER10000".to_owned())]);
        assert_eq!(
            request.body,
            Some(json!({"emailAddress": "new@example.com"})),
            "the stale login `alice` would rename the user back"
        );
        assert_eq!(
            renaming.body,
            Some(json!({"name": "alicia", "displayName": "Alicia"}))
        );
    }

    #[test]
    fn update_request_is_none_when_nothing_changes() {
        assert_eq!(
            update_user_request(account(), &AccountUpdate::default()),
            None
        );
    }

    fn page<P: Paged>(body: serde_json::Value) -> P {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn user_list_pages_go_on_with_the_cursor_until_is_last_or_no_cursor() {
        let first = Cursor::default();
        let more: UserListPage = page(json!({"values": [], "isLast": false, "nextCursor": "c2"}));
        let last: UserListPage = page(json!({"values": [], "isLast": true, "nextCursor": "c3"}));
        let no_cursor: UserListPage = page(json!({"values": [], "isLast": false}));

        let next = more.split(&first).unwrap().1.map(|cursor| cursor.0);

        assert_eq!(next, Some(Some("c2".to_owned())));
        assert!(last.split(&first).unwrap().1.is_none());
        assert!(
            no_cursor.split(&first).is_err(),
            "not the last, and no cursor"
        );
        let listing = ApiRequest::get("rest/api/2/user/list");
        assert_eq!(
            Cursor(Some("c2".into())).request(&listing, 7).query,
            [("maxResults", "7".to_owned()), ("cursor", "c2".to_owned())]
        );
        assert_eq!(
            first.request(&listing, 7).query,
            [("maxResults", "7".to_owned())]
        );
    }

    #[test]
    fn member_pages_ask_for_at_most_50_from_start_at() {
        let user = json!({"name": "alice", "key": "JIRAUSER10001", "active": true});
        let more: MemberPage = page(json!({
            "values": [user.clone(), user], "isLast": false, "startAt": 0
        }));

        let (users, next) = more.split(&MemberPage::first()).unwrap();

        assert_eq!(users.len(), 2);
        assert_eq!(next, Some(Offset::first("startAt", "maxResults").at(2)));
        assert_eq!(MemberPage::page_size(None, USER_LIST_PAGE), 50);
        assert_eq!(MemberPage::page_size(Some(500), USER_LIST_PAGE), 50);
        assert_eq!(MemberPage::page_size(Some(20), USER_LIST_PAGE), 20);
    }
}
