//! The Confluence Data Center client (`/rest/api`, admin user endpoints from 8.4 on).
//!
//! Confluence's particulars, from the reference:
//! - The stable id is the `userKey`; admin endpoints address users by username in the path,
//!   so writes first read the user by key to learn its current username.
//! - An invalid personal access token is answered as the anonymous user with 200, not 401:
//!   [`Directory::test_connection`] reads `/rest/api/user/current` and fails when it is
//!   anonymous.
//! - Deleting a user answers 202 with a long task; the client polls `/rest/api/longtask/{id}`
//!   for at most [`ConfluenceSettings::long_task_timeout`]. Data Center's task status has
//!   `id`, `name`, `elapsedTime`, `percentageComplete`, `successful` and `messages`, and no
//!   `finished` (that is Confluence Cloud's): the task is done when `percentageComplete`
//!   reaches 100, and then `successful` says whether it worked ("Long Task", "Get task by
//!   ID" in the Data Center REST reference; the `LongTaskStatus` javadoc has no
//!   `isFinished`). A task still running at the deadline is a success all the same when the
//!   user is gone by then.
//! - [`Directory::test_connection`] proves administrator rights with an admin-only read,
//!   `GET /rest/api/admin/users/list/active?limit=1` ("Admin Users" in the REST reference
//!   from 9.4 on); where that resource does not exist yet (404) the rights cannot be proven
//!   by a read, and the check says so.
//! - Creating a user when no licence seat is left answers 402 ([`Error::LicenseLimit`]); an
//!   existing user answers 409.
//! - Membership adds and removes are idempotent on the server (204 either way), so they
//!   answer [`Outcome::Applied`] even when nothing changed.
//! - There is no rename endpoint, and user objects carry no email.
//! - [`Directory::seats`] reads Confluence's licence REST module,
//!   `GET /rest/license/1.0/license/userCount` and `…/maxUsers`, each `{"count": n}`; see
//!   `ConfluenceClient::license_count` for the sources and what in them is unverified.
//!   Where the module is missing (404) the seats are `None`.
//!
//! Hostile answers (see also `client.rs` for the paging loop):
//! - A listing page must be the documented envelope: `results`, `start`, `limit`, `size` and
//!   `_links` are required ([`Error::Decode`] without one), `start` must be the one asked for
//!   and `size` the number of results ([`Error::Incomplete`] otherwise); only `_links.next`
//!   may be absent, and its absence ends the listing.
//! - A listed user (`user/list`, `group/{name}/member`, with `expand=status`) must carry
//!   `username`, `userKey` and `status`: one without is [`Error::Decode`], never dropped from
//!   the listing nor read as active.
//! - Long-task polling adds to instants with checked arithmetic. A task whose
//!   `successful` is absent counts as failed (and the delete is then judged by whether the
//!   user is gone); a licence maximum that is absent reads as unlimited, as the
//!   `UserCountService` javadoc has it, which the server's own 402 still guards.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::client::{Offset, Paged, Split, product_client};
use crate::config::ConfluenceSettings;
use crate::http::ApiRequest;
use crate::{
    AccountRef, AccountUpdate, Capabilities, ConnectionInfo, Created, Directory, Error, NewAccount,
    Outcome, Product, RemoteAccount, RemoteGroup, Seats, random_password, same_account,
};

/// The documented default (and usual largest) page of Confluence's listings.
const DEFAULT_PAGE: u32 = 200;
/// The longest wait between two polls of a long task.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);

product_client! {
    /// A Confluence Data Center client.
    pub struct ConfluenceClient(Product::Confluence, ConfluenceSettings, DEFAULT_PAGE) {}
}

impl ConfluenceClient {
    /// A user by key or username, with its status; `None` on 404.
    async fn find_user(&self, by: UserBy<'_>) -> Result<Option<Person>, Error> {
        let request = ApiRequest::get("rest/api/user");
        let request = match by {
            UserBy::Key(key) => request.query("key", key),
            UserBy::Name(name) => request.query("username", name),
        };
        let response = self.core.send(&request.query("expand", "status")).await?;
        if response.status == 404 {
            return Ok(None);
        }
        if !response.is_success() {
            return Err(response.into_error());
        }
        response.json("user").map(Some)
    }

    async fn set_active(&self, account: AccountRef<'_>, active: bool) -> Result<Outcome, Error> {
        // Read by key: an admin may have renamed the user since we last listed it.
        let Some(person) = self.find_user(UserBy::Key(account.id)).await? else {
            return Err(Error::NotFound {
                product: Product::Confluence,
                status: 404,
                message: format!("no user with key {}", account.id),
            });
        };
        if person.is_active() == Some(active) {
            return Ok(Outcome::AlreadyDone);
        }
        let username = person.username.as_deref().unwrap_or(account.login);
        let request = ApiRequest::new(Method::PUT, "rest/api/admin/user")
            .segment(username)
            .segment(if active { "enable" } else { "disable" });
        self.core.send_ok(&request).await?;
        Ok(Outcome::Applied)
    }

    /// Polls a long task until `percentageComplete` reaches 100 or the deadline passes,
    /// doubling the wait up to a second.
    async fn wait_for_long_task(&self, task_id: &str) -> Result<TaskEnd, Error> {
        let settings = &self.core.settings;
        let now = Instant::now();
        // A timeout too long to add is as good as none: poll until the task ends.
        let deadline = now.checked_add(settings.long_task_timeout);
        let mut interval = settings.long_task_poll_interval;
        loop {
            let request = ApiRequest::get("rest/api/longtask").segment(task_id);
            let task: LongTask = self.core.send_ok(&request).await?.json("long task")?;
            if task.is_done() {
                return Ok(match task.successful {
                    Some(true) => TaskEnd::Succeeded,
                    _ => TaskEnd::Failed(task.message()),
                });
            }
            let next_poll = Instant::now().checked_add(interval);
            if let Some(deadline) = deadline
                && next_poll.is_none_or(|next_poll| next_poll > deadline)
            {
                return Ok(TaskEnd::Running(task.percentage_complete.unwrap_or(0)));
            }
            tokio::time::sleep(interval.min(MAX_POLL_INTERVAL)).await;
            interval = interval.saturating_mul(2).min(MAX_POLL_INTERVAL);
        }
    }

    /// Proves the account administers Confluence with the admin-only
    /// `GET /rest/api/admin/users/list/active?limit=1`: `true` when it answers, `false` when
    /// this version has no such resource (404); a refusal (403) is
    /// [`Error::MissingPermission`].
    async fn proves_admin(&self) -> Result<bool, Error> {
        let request = ApiRequest::get("rest/api/admin/users/list/active").query("limit", "1");
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(false),
            403 => Err(Error::MissingPermission {
                product: Product::Confluence,
                status: 403,
                permission: "Confluence Administrator",
                message: format!(
                    "the admin-only GET /rest/api/admin/users/list/active was refused: {}",
                    response.message()
                ),
            }),
            _ if response.is_success() => Ok(true),
            _ => Err(response.into_error()),
        }
    }
}

impl ConfluenceClient {
    /// One number of Confluence's licence REST module: `GET /rest/license/1.0/license/{path}`;
    /// `None` when the module is missing (404).
    ///
    /// Sources, none of them Confluence's REST reference, which does not document this module:
    /// - The paths: Atlassian's CONFSERVER-37100 ("a REST API is available to query this
    ///   information: `/rest/license/1.0/license/userCount`, `…/remainingSeats`,
    ///   `…/maxUsers`"; `…/details` added in 7.1).
    /// - What they answer: the javadoc of `com.atlassian.confluence.license.rest.resource.
    ///   UserCountResource` and `LicenseResource` (Confluence 5.1 to 6.5): `getUserCount`
    ///   "the number of users that have access to this Confluence", `getMaxUsers` "the number
    ///   of users that is allowed by the current license"; the body is a
    ///   `UserCountResourceModel(Integer count)`, `{"count": n}`, which is also what public
    ///   monitoring scripts read (`data["count"]`). A bare JSON number is accepted too.
    /// - Unlimited: `UserCountService.getLicenseMaxUsers` answers `Integer.MAX_VALUE` for an
    ///   unlimited licence; a maximum that is that, negative, absent or `null` is unlimited.
    ///
    /// Unverified: the permission the module needs (the resources take a `PermissionManager`;
    /// keysync's account is an administrator) and how it refuses a caller without it (any
    /// status but 2xx and 404 is the error it means); that every Data Center version
    /// keysync supports (8.x to 10.x) still serves it; and that `userCount` leaves out
    /// deactivated users, as Confluence's licence count does.
    async fn license_count(
        &self,
        path: &'static str,
        what: &'static str,
    ) -> Result<Option<LicenseCount>, Error> {
        let response = self.core.send(&ApiRequest::get(path)).await?;
        if response.status == 404 {
            return Ok(None);
        }
        if !response.is_success() {
            return Err(response.into_error());
        }
        let count: LicenseCount = response.json(what)?;
        Ok(Some(count))
    }
}

/// How a long task ended, or that it has not yet.
enum TaskEnd {
    Succeeded,
    Failed(String),
    /// Still running at the deadline, this many percent done.
    Running(u32),
}

impl Directory for ConfluenceClient {
    fn product(&self) -> Product {
        Product::Confluence
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_deactivate: true,
            can_rename: false,
            lists_email: false,
            async_delete: true,
            nested_group_members: false,
            groups_per_add: 1,
        }
    }

    #[tracing::instrument(skip_all, fields(product = "confluence"))]
    async fn test_connection(&self) -> Result<ConnectionInfo, Error> {
        let person: Person = self
            .core
            .send_ok(&ApiRequest::get("rest/api/user/current"))
            .await?
            .json("user")?;
        // An invalid token is not refused: Confluence answers as the anonymous user.
        if person.kind.as_deref() == Some("anonymous") || person.username.is_none() {
            return Err(Error::Unauthorized {
                product: Product::Confluence,
                status: 200,
                message: "the credentials were not accepted: the current user is anonymous"
                    .to_owned(),
            });
        }
        let permission = if self.proves_admin().await? {
            Some("Confluence Administrator".to_owned())
        } else {
            tracing::warn!(
                "This Confluence has no admin-only read (GET /rest/api/admin/users/list/active \
                 answered 404); the administrator rights the writes need are not proven."
            );
            None
        };
        Ok(ConnectionInfo {
            product: Product::Confluence,
            version: None,
            user: person.username,
            permission,
        })
    }

    #[tracing::instrument(skip_all, fields(product = "confluence"))]
    async fn seats(&self) -> Result<Option<Seats>, Error> {
        let used = self.license_count("rest/license/1.0/license/userCount", "licensed user count");
        let max = self.license_count("rest/license/1.0/license/maxUsers", "licence maximum");
        let (used, max) = futures::try_join!(used, max)?;
        let (Some(used), Some(max)) = (used, max) else {
            return Ok(None);
        };
        let Some(used) = used.value().and_then(|used| u64::try_from(used).ok()) else {
            tracing::warn!(
                "Confluence's licensed user count is not a number of users; the seats are unknown."
            );
            return Ok(None);
        };
        Ok(Some(Seats {
            used,
            limit: max.limit(),
        }))
    }

    #[tracing::instrument(skip_all, fields(product = "confluence"))]
    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, Error> {
        let request = ApiRequest::get("rest/api/user/list").query("expand", "status");
        let people = self
            .core
            .all_pages::<Page<ListedPerson>>(&request, "user page")
            .await?;
        Ok(people.into_iter().map(ListedPerson::into_account).collect())
    }

    #[tracing::instrument(skip_all, fields(product = "confluence"))]
    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, Error> {
        let groups = self
            .core
            .all_pages::<Page<GroupJson>>(&ApiRequest::get("rest/api/group"), "group page")
            .await?;
        Ok(groups
            .into_iter()
            .map(|group| RemoteGroup {
                name: group.name,
                read_only: None,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", group = group))]
    async fn list_members(&self, group: &str) -> Result<Vec<String>, Error> {
        let request = ApiRequest::get("rest/api/group")
            .segment(group)
            .segment("member")
            .query("expand", "status");
        let people = self
            .core
            .all_pages::<Page<ListedPerson>>(&request, "member page")
            .await?;
        Ok(people.into_iter().map(|person| person.user_key).collect())
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", login = %account.login))]
    async fn create_account(&self, account: &NewAccount) -> Result<Created, Error> {
        let response = self.core.send(&create_user_request(account)).await?;
        if response.is_success() {
            let created: CreatedUser = response.json("created user")?;
            if let Some(user_key) = created.user_key {
                return Ok(Created {
                    id: user_key,
                    outcome: Outcome::Applied,
                });
            }
            let person = self.find_user(UserBy::Name(&account.login)).await?;
            let Some(user_key) = person.and_then(|person| person.user_key) else {
                return Err(Error::NotFound {
                    product: Product::Confluence,
                    status: 404,
                    message: format!("user {} was created but cannot be read back", account.login),
                });
            };
            return Ok(Created {
                id: user_key,
                outcome: Outcome::Applied,
            });
        }
        if response.status == 409
            && let Some(existing) = self.find_user(UserBy::Name(&account.login)).await?
            && let Some(existing) = existing.into_account()
        {
            if !same_account(&existing, account) {
                return Err(Error::Conflict {
                    product: Product::Confluence,
                    status: 409,
                    message: format!("user {} exists with other details", account.login),
                });
            }
            return Ok(Created {
                id: existing.id,
                outcome: Outcome::AlreadyDone,
            });
        }
        Err(response.into_error())
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", id = account.id, login = account.login))]
    async fn update_account(
        &self,
        account: AccountRef<'_>,
        update: &AccountUpdate,
    ) -> Result<Outcome, Error> {
        if update.login.is_some() {
            return Err(Error::Unsupported {
                product: Product::Confluence,
                operation: "rename a user",
            });
        }
        let Some(request) = update_user_request(account.login, update) else {
            return Ok(Outcome::AlreadyDone);
        };
        self.core.send_ok(&request).await?;
        Ok(Outcome::Applied)
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", id = account.id, login = account.login))]
    async fn deactivate_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        self.set_active(account, false).await
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", id = account.id, login = account.login))]
    async fn reactivate_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        self.set_active(account, true).await
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", id = account.id, login = account.login))]
    async fn delete_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        // Read by key first: with a stale username the delete would answer 404 and look done.
        let Some(person) = self.find_user(UserBy::Key(account.id)).await? else {
            return Ok(Outcome::AlreadyDone);
        };
        let username = person.username.as_deref().unwrap_or(account.login);
        let request = ApiRequest::new(Method::DELETE, "rest/api/admin/user").segment(username);
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            202 => {
                let submission: LongTaskSubmission = response.json("long task submission")?;
                let message = match self.wait_for_long_task(&submission.id).await? {
                    TaskEnd::Succeeded => return Ok(Outcome::Applied),
                    TaskEnd::Failed(message) => message,
                    TaskEnd::Running(percent) => format!(
                        "not done after {:?} ({percent}% done)",
                        self.core.settings.long_task_timeout
                    ),
                };
                // However the task reads, the user being gone is what was asked for.
                if self.find_user(UserBy::Key(account.id)).await?.is_none() {
                    return Ok(Outcome::Applied);
                }
                Err(Error::LongTask {
                    product: Product::Confluence,
                    task_id: submission.id,
                    message,
                })
            }
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", group = name))]
    async fn create_group(&self, name: &str) -> Result<Outcome, Error> {
        let request = ApiRequest::new(Method::POST, "rest/api/admin/group")
            .json(json!({ "type": "group", "name": name }));
        let response = self.core.send(&request).await?;
        match response.status {
            409 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", group = name))]
    async fn delete_group(&self, name: &str) -> Result<Outcome, Error> {
        let request = ApiRequest::new(Method::DELETE, "rest/api/admin/group").segment(name);
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", group = group, id = account.id, login = account.login))]
    async fn add_member(&self, group: &str, account: AccountRef<'_>) -> Result<Outcome, Error> {
        self.core
            .send_ok(&membership_request(Method::PUT, group, account.login))
            .await?;
        Ok(Outcome::Applied)
    }

    #[tracing::instrument(skip_all, fields(product = "confluence", group = group, id = account.id, login = account.login))]
    async fn remove_member(&self, group: &str, account: AccountRef<'_>) -> Result<Outcome, Error> {
        let response = self
            .core
            .send(&membership_request(Method::DELETE, group, account.login))
            .await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }
}

/// `POST /rest/api/admin/user`; Confluence requires a password unless it emails an
/// invitation, so a random one is sent when none is given.
fn create_user_request(account: &NewAccount) -> ApiRequest {
    let password = account.password.clone().unwrap_or_else(random_password);
    ApiRequest::new(Method::POST, "rest/api/admin/user").json(json!({
        "userName": account.login,
        "fullName": account.display_name,
        "email": account.email,
        "password": password.expose(),
        "notifyViaEmail": false,
    }))
}

/// `PUT /rest/api/admin/user/{username}` with the changed fields; `None` when nothing
/// changes.
fn update_user_request(username: &str, update: &AccountUpdate) -> Option<ApiRequest> {
    let mut body = serde_json::Map::new();
    if let Some(display_name) = &update.display_name {
        body.insert("fullName".into(), json!(display_name));
    }
    if let Some(email) = &update.email {
        body.insert("email".into(), json!(email));
    }
    if body.is_empty() {
        return None;
    }
    Some(
        ApiRequest::new(Method::PUT, "rest/api/admin/user")
            .segment(username)
            .json(body.into()),
    )
}

/// `PUT|DELETE /rest/api/user/{username}/group/{groupName}`.
fn membership_request(method: Method, group: &str, username: &str) -> ApiRequest {
    ApiRequest::new(method, "rest/api/user")
        .segment(username)
        .segment("group")
        .segment(group)
}

#[derive(Clone, Copy)]
enum UserBy<'a> {
    Key(&'a str),
    Name(&'a str),
}

/// A page of a `{results, start, limit, size, _links{base, context, self, next?}}` listing.
/// Every field but `_links.next` is required: Confluence's `PageResponse` always carries
/// them, and without `_links` "no next page" could not be told from a broken answer.
#[derive(Deserialize)]
struct Page<T> {
    results: Vec<T>,
    start: u64,
    /// Required though unused: a page without it is not the documented envelope.
    #[serde(rename = "limit")]
    _limit: u64,
    size: u64,
    #[serde(rename = "_links")]
    links: PageLinks,
}

/// Confluence pages by `start` and `limit`: a page is the last unless `_links.next` links to
/// another, which starts just after it. The page's `start` must be the one asked for (a
/// Confluence that ignores it would answer the first page forever) and its `size` the number
/// of its results.
impl<T: DeserializeOwned> Paged for Page<T> {
    type Item = T;
    type Position = Offset;

    fn split(self, start: &Offset) -> Result<Split<Self>, String> {
        start.check_start(self.start)?;
        if usize::try_from(self.size).ok() != Some(self.results.len()) {
            return Err(format!(
                "a page says its size is {} but holds {} results",
                self.size,
                self.results.len()
            ));
        }
        if self.links.next.is_none() {
            return Ok((self.results, None));
        }
        let next = start.after(self.results.len())?;
        Ok((self.results, Some(next)))
    }
}

#[derive(Deserialize)]
struct PageLinks {
    next: Option<String>,
}

/// A user of a listing (`user/list`, `group/{name}/member`, both with `expand=status`):
/// `username`, `userKey` and `status` are required. Read as optional, a user without a key
/// would vanish from the listing (and be created again), and one without a status would read
/// as active.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedPerson {
    username: String,
    user_key: String,
    display_name: Option<String>,
    status: String,
}

impl ListedPerson {
    fn into_account(self) -> RemoteAccount {
        RemoteAccount {
            active: is_active_status(&self.status),
            id: self.user_key,
            login: self.username,
            display_name: self.display_name.unwrap_or_default(),
            email: None,
            read_only: None,
            administrator: false,
        }
    }
}

/// Whether a `status` (`Active`, `Deactivated`; the casing is not documented, so it is
/// compared case-insensitively) means active.
fn is_active_status(status: &str) -> bool {
    !["deactivated", "disabled", "inactive"]
        .iter()
        .any(|inactive| status.eq_ignore_ascii_case(inactive))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Person {
    #[serde(rename = "type")]
    kind: Option<String>,
    username: Option<String>,
    user_key: Option<String>,
    display_name: Option<String>,
    /// With `expand=status`; the values seen are `Active` and `Deactivated` (the casing is
    /// not documented, so it is compared case-insensitively).
    status: Option<String>,
}

impl Person {
    fn is_active(&self) -> Option<bool> {
        self.status.as_deref().map(is_active_status)
    }

    fn into_account(self) -> Option<RemoteAccount> {
        let active = self.is_active().unwrap_or(true);
        Some(RemoteAccount {
            id: self.user_key?,
            login: self.username?,
            display_name: self.display_name.unwrap_or_default(),
            email: None,
            active,
            read_only: None,
            administrator: false,
        })
    }
}

/// What a licence-count resource answers: `{"count": n}` (`UserCountResourceModel`), or a
/// bare number; `null` or no `count` is no number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LicenseCount {
    Bare(Option<i64>),
    Object { count: Option<i64> },
}

/// What `maxUsers` answers for an unlimited licence (`Integer.MAX_VALUE`, per the
/// `UserCountService.getLicenseMaxUsers` javadoc).
const UNLIMITED_MAX_USERS: i64 = i32::MAX as i64;

impl LicenseCount {
    fn value(&self) -> Option<i64> {
        match self {
            LicenseCount::Bare(count) | LicenseCount::Object { count } => *count,
        }
    }

    /// As a licence maximum: `None` (unlimited) when absent, negative or `Integer.MAX_VALUE`.
    fn limit(&self) -> Option<u64> {
        self.value()
            .filter(|max| *max < UNLIMITED_MAX_USERS)
            .and_then(|max| u64::try_from(max).ok())
    }
}

#[derive(Deserialize)]
struct GroupJson {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedUser {
    user_key: Option<String>,
}

#[derive(Deserialize)]
struct LongTaskSubmission {
    id: String,
}

/// Data Center's `LongTaskStatus`: `{id, name, elapsedTime, percentageComplete, successful,
/// messages}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LongTask {
    successful: Option<bool>,
    percentage_complete: Option<u32>,
    #[serde(default)]
    messages: Vec<LongTaskMessage>,
}

impl LongTask {
    /// Done once `percentageComplete` reaches 100.
    fn is_done(&self) -> bool {
        self.percentage_complete
            .is_some_and(|percent| percent >= 100)
    }

    fn message(&self) -> String {
        let texts: Vec<&str> = self
            .messages
            .iter()
            .filter_map(|message| message.translation.as_deref())
            .collect();
        if texts.is_empty() {
            return "the task failed without a message".to_owned();
        }
        texts.join("; ")
    }
}

#[derive(Deserialize)]
struct LongTaskMessage {
    translation: Option<String>,
}

#[cfg(test)]
mod tests {
    use ::config::Secret;

    use super::*;

    #[test]
    fn create_request_sends_a_random_password_when_none_is_given() {
        let request = create_user_request(&NewAccount {
            login: "bob".into(),
            display_name: "Bob".into(),
            email: "bob@example.com".into(),
            password: None,
        });
        let body = request.body.unwrap();
        assert_eq!(body["userName"], "bob");
        assert_eq!(body["notifyViaEmail"], false);
        assert_eq!(body["password"].as_str().map(str::len), Some(24));
    }

    #[test]
    fn create_request_keeps_a_given_password() {
        let request = create_user_request(&NewAccount {
            login: "bob".into(),
            display_name: "Bob".into(),
            email: "bob@example.com".into(),
            password: Some(Secret::new("s3cret")),
        });
        assert_eq!(request.body.unwrap()["password"], "s3cret");
    }

    #[test]
    fn membership_request_puts_names_in_path_segments() {
        let request = membership_request(Method::PUT, "dev team", "bob");
        assert_eq!(
            request.segments,
            ["rest", "api", "user", "bob", "group", "dev team"]
        );
    }

    #[test]
    fn person_status_deactivated_means_inactive() {
        let person: Person = serde_json::from_value(json!({
            "type": "known", "username": "bob", "userKey": "k1", "displayName": "Bob",
            "status": "Deactivated"
        }))
        .unwrap();
        assert_eq!(
            person.into_account().map(|account| account.active),
            Some(false)
        );
    }

    #[test]
    fn a_data_center_long_task_is_done_at_100_percent_and_succeeds_per_successful() {
        let task = |body: serde_json::Value| -> LongTask { serde_json::from_value(body).unwrap() };
        let running = task(json!({
            "id": "9001", "name": {"key": "k", "args": []}, "elapsedTime": 12,
            "percentageComplete": 50, "successful": false, "messages": []
        }));
        let done = task(json!({
            "id": "9001", "name": {"key": "k", "args": []}, "elapsedTime": 80,
            "percentageComplete": 100, "successful": true, "messages": []
        }));
        let failed = task(json!({
            "id": "9002", "percentageComplete": 100, "successful": false,
            "messages": [{"translation": "User is a space admin", "args": []}]
        }));

        assert!(!running.is_done());
        assert!(done.is_done() && done.successful == Some(true));
        assert!(failed.is_done() && failed.successful == Some(false));
        assert_eq!(failed.message(), "User is a space admin");
    }

    #[test]
    fn a_licence_count_is_an_object_or_a_bare_number_and_a_maximum_may_mean_unlimited() {
        let count =
            |body: &str| -> LicenseCount { serde_json::from_str(body).expect("a licence count") };

        assert_eq!(count(r#"{"count": 48}"#).value(), Some(48));
        assert_eq!(count("48").value(), Some(48));
        assert_eq!(count(r#"{"count": 25}"#).limit(), Some(25));
        assert_eq!(count("0").limit(), Some(0));
        for unlimited in [
            r#"{"count": 2147483647}"#,
            "-1",
            r#"{"count": null}"#,
            "{}",
            "null",
        ] {
            assert_eq!(count(unlimited).limit(), None, "{unlimited}");
        }
        assert!(serde_json::from_str::<LicenseCount>(r#""many""#).is_err());
    }

    #[test]
    fn a_page_is_the_last_unless_it_links_to_a_next_one() {
        let start = Offset::default().at(40);
        let page =
            |body: serde_json::Value| -> Page<GroupJson> { serde_json::from_value(body).unwrap() };
        let more = page(json!({
            "results": [{"name": "a"}, {"name": "b"}], "start": 40, "limit": 2, "size": 2,
            "_links": {"next": "/rest/api/group?start=42&limit=2"}
        }));
        let last = page(json!({
            "results": [{"name": "c"}], "start": 40, "limit": 2, "size": 1, "_links": {}
        }));
        let elsewhere = page(json!({
            "results": [{"name": "c"}], "start": 0, "limit": 2, "size": 1, "_links": {}
        }));
        let missized = page(json!({
            "results": [{"name": "c"}], "start": 40, "limit": 2, "size": 2, "_links": {}
        }));

        assert_eq!(more.split(&start).unwrap().1, Some(start.after(2).unwrap()));
        assert_eq!(last.split(&start).unwrap().1, None);
        assert!(elsewhere.split(&start).is_err(), "start 0, asked for 40");
        assert!(missized.split(&start).is_err(), "size 2, one result");
        for missing in ["start", "limit", "size", "_links"] {
            let mut body = json!({
                "results": [], "start": 40, "limit": 2, "size": 0, "_links": {}
            });
            body.as_object_mut().unwrap().remove(missing);
            assert!(
                serde_json::from_value::<Page<GroupJson>>(body).is_err(),
                "{missing}"
            );
        }
    }
}
