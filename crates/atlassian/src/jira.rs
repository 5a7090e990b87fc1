//! The Jira Data Center client (REST v2, `/rest/api/2`).
//!
//! Jira's particulars, from the reference:
//! - The stable id is the user key (`key`); writes address users by `key=` where Jira
//!   accepts it and by username where it does not (memberships).
//! - Listing every user: `/user/list` with a cursor from 10.3 on; before that only
//!   `/user/search`, which stops at the first 1,000 users, so the client searches by prefix
//!   and splits every prefix that hits the cap ([`UserListing`]).
//! - Groups come from `/groups/picker`, which has no paging and is capped by a server
//!   property: a query whose `total` exceeds what came back is split by appending characters.
//! - An add of an existing member answers 400, and so does a create of an existing user or
//!   group: the client then reads the current state and answers [`Outcome::AlreadyDone`].
//! - `group/member` includes members of nested groups.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::client::{Offset, Paged, Position, product_client};
use crate::config::{JiraSettings, UserListing};
use crate::http::ApiRequest;
use crate::{
    AccountRef, AccountUpdate, Capabilities, ConnectionInfo, Created, Directory, Error, NewAccount,
    Outcome, Product, RemoteAccount, RemoteGroup, same_account,
};

/// `/user/search` answers at most this many users, from the first of all users on (Jira 9.x).
const SEARCH_CAP: usize = 1000;
/// `/user/list`'s documented default page, and so the client's (`group/member` sets its own).
const USER_LIST_PAGE: u32 = 2000;
/// `group/member`'s default and largest page.
const MEMBER_PAGE: u32 = 50;
/// What we ask `groups/picker` for; the server may cap it lower.
const PICKER_MAX_RESULTS: u32 = 1000;
/// The first character of a prefix search; `.` is left out because a lone `.` matches
/// everyone.
const FIRST_PREFIX_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789_-@+'";
/// Characters appended to a prefix (or group query) that hit a cap.
const NEXT_PREFIX_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789._-@+' ";
/// Beyond this many characters a capped prefix is an error rather than split again.
const MAX_PREFIX_LEN: usize = 12;

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

    /// One `/user/search` call.
    async fn search_users(&self, query: &str) -> Result<Search, Error> {
        let request = ApiRequest::get("rest/api/2/user/search")
            .query("username", query)
            .query("startAt", "0")
            .query("maxResults", SEARCH_CAP.to_string())
            .query("includeActive", "true")
            .query("includeInactive", "true");
        let users: Vec<UserBean> = self.core.send_ok(&request).await?.json("user search")?;
        let capped = users.len() >= SEARCH_CAP;
        Ok(Search { users, capped })
    }

    async fn list_accounts_by_prefix(&self) -> Result<Vec<RemoteAccount>, Error> {
        let mut by_key: BTreeMap<String, RemoteAccount> = BTreeMap::new();
        let add = |users: Vec<UserBean>, by_key: &mut BTreeMap<String, RemoteAccount>| {
            for user in users {
                let account = user.into_account();
                by_key.insert(account.id.clone(), account);
            }
        };
        let everyone = self.search_users(".").await?;
        add(everyone.users, &mut by_key);
        if !everyone.capped {
            return Ok(by_key.into_values().collect());
        }
        let mut prefixes: Vec<String> = FIRST_PREFIX_CHARS.chars().map(String::from).collect();
        while !prefixes.is_empty() {
            let results: Vec<(String, Result<Search, Error>)> =
                futures::stream::iter(prefixes.drain(..).map(|prefix| async move {
                    let result = self.search_users(&prefix).await;
                    (prefix, result)
                }))
                .buffer_unordered(self.core.max_concurrency())
                .collect()
                .await;
            let mut next_prefixes = Vec::new();
            for (prefix, result) in results {
                let search = result?;
                add(search.users, &mut by_key);
                if !search.capped {
                    continue;
                }
                if prefix.chars().count() >= MAX_PREFIX_LEN {
                    return Err(Error::UnexpectedStatus {
                        product: Product::Jira,
                        status: 200,
                        message: format!(
                            "more than {SEARCH_CAP} users match the prefix {prefix:?}; cannot list them all with user search"
                        ),
                    });
                }
                // A user whose every searched field ends exactly at the prefix matches none
                // of the longer prefixes.
                if let Some(user) = self.find_user(UserBy::Name(&prefix), false).await? {
                    add(vec![user], &mut by_key);
                }
                next_prefixes.extend(NEXT_PREFIX_CHARS.chars().map(|c| format!("{prefix}{c}")));
            }
            prefixes = next_prefixes;
        }
        Ok(by_key.into_values().collect())
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
        Ok(ConnectionInfo {
            product: Product::Jira,
            version: info.version,
            user: Some(myself.name),
        })
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
        while !queries.is_empty() {
            let mut next_queries = Vec::new();
            for query in queries.drain(..) {
                let (picked, capped) = self.pick_groups(&query).await?;
                names.extend(picked);
                if !capped {
                    continue;
                }
                if query.chars().count() >= MAX_PREFIX_LEN {
                    return Err(Error::UnexpectedStatus {
                        product: Product::Jira,
                        status: 200,
                        message: format!(
                            "the group picker keeps capping the query {query:?}; cannot list every group"
                        ),
                    });
                }
                if !query.is_empty() && self.group_exists(&query).await? {
                    names.insert(query.clone());
                }
                next_queries.extend(NEXT_PREFIX_CHARS.chars().map(|c| format!("{query}{c}")));
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

/// `PUT /rest/api/2/user?key=…` with only the changed fields plus `name` (older Jira rejects
/// bodies without it); `None` when nothing changes.
fn update_user_request(account: AccountRef<'_>, update: &AccountUpdate) -> Option<ApiRequest> {
    if update == &AccountUpdate::default() {
        return None;
    }
    let mut body = json!({ "name": update.login.as_deref().unwrap_or(account.login) });
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

/// The answer of one `/user/search` call.
struct Search {
    users: Vec<UserBean>,
    /// It hit the cap, so it may have left users out.
    capped: bool,
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
    #[serde(default = "default_active")]
    active: bool,
    groups: Option<UserGroups>,
}

fn default_active() -> bool {
    true
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

#[derive(Deserialize)]
struct UserGroups {
    #[serde(default)]
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

/// Asked for by [`Cursor`]. A page is the last when `isLast` says so or no `nextCursor`
/// comes; the next is asked for with that cursor.
impl Paged for UserListPage {
    type Item = UserBean;
    type Position = Cursor;

    fn split(self, _: &Cursor) -> (Vec<UserBean>, Option<Cursor>) {
        let next = self.next_cursor.filter(|_| !self.is_last);
        (self.values, next.map(|cursor| Cursor(Some(cursor))))
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
}

/// A page of `group/member`: `{values, isLast, startAt, maxResults, total}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberPage {
    values: Vec<UserBean>,
    is_last: bool,
}

/// Asked for with `startAt` and `maxResults`, [`MEMBER_PAGE`] at a time at most. A page is
/// the last when `isLast` says so; the next starts just after it.
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

    fn split(self, start_at: &Offset) -> (Vec<UserBean>, Option<Offset>) {
        let next = (!self.is_last).then(|| start_at.after(self.values.len()));
        (self.values, next)
    }
}

#[derive(Deserialize)]
struct GroupPicker {
    total: u64,
    groups: Vec<GroupName>,
}

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
    fn update_request_addresses_the_key_and_always_carries_a_name() {
        let update = AccountUpdate {
            email: Some("new@example.com".into()),
            ..AccountUpdate::default()
        };
        let request = update_user_request(account(), &update).unwrap();
        assert_eq!(request.query, [("key", "JIRAUSER10000".to_owned())]);
        assert_eq!(
            request.body,
            Some(json!({"name": "alice", "emailAddress": "new@example.com"}))
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

        let next = more.split(&first).1.map(|cursor| cursor.0);

        assert_eq!(next, Some(Some("c2".to_owned())));
        assert!(last.split(&first).1.is_none());
        assert!(no_cursor.split(&first).1.is_none());
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
        let user = json!({"name": "alice", "key": "JIRAUSER10001"});
        let more: MemberPage = page(json!({"values": [user.clone(), user], "isLast": false}));

        let (users, next) = more.split(&MemberPage::first());

        assert_eq!(users.len(), 2);
        assert_eq!(next, Some(Offset::first("startAt", "maxResults").at(2)));
        assert_eq!(MemberPage::page_size(None, USER_LIST_PAGE), 50);
        assert_eq!(MemberPage::page_size(Some(500), USER_LIST_PAGE), 50);
        assert_eq!(MemberPage::page_size(Some(20), USER_LIST_PAGE), 20);
    }
}
