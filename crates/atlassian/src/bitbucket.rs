//! The Bitbucket Data Center client (`/rest/api/1.0`).
//!
//! Bitbucket's particulars, from the reference and its 8.14 OpenAPI document:
//! - The stable id is the `slug` (never assumed equal to the name); admin endpoints take the
//!   `name`, so writes first find the user with `admin/users?filter=` and match its slug.
//!   That lookup also reads `mutableDetails`, `mutableGroups` and `deletable`: writes to
//!   read-only accounts (LDAP, Crowd) answer [`Outcome::Skipped`] with the reason.
//! - Every call is to an administrative endpoint (`/rest/api/1.0/admin/…`), which Bitbucket
//!   refuses to HTTP access tokens (Atlassian KB "How to use OAuth2 tokens for administrative
//!   endpoints of Bitbucket Data Center", BSERV-10482): the client needs Basic auth (or an
//!   OAuth 2.0 token). A caller without the permission an endpoint needs is answered 401 with
//!   an `AuthorisationException`.
//! - Creating a user is a body-less `POST` with query parameters answered by 204 with no
//!   body; the client reads the user back to learn its slug. 409 means it exists. The
//!   read-back also says whether the new account's groups are writable, so the client
//!   remembers the accounts it created and adds their groups without another lookup. A 403 on
//!   create ("adding the user to the default group would exceed the server's license limit")
//!   or on `add-groups` ("would exceed the server's licensing limit, or the groups
//!   permissions exceed the authenticated user's permission level") whose body speaks of the
//!   licence is [`Error::LicenseLimit`]; any other 403 is [`Error::Forbidden`].
//! - [`Directory::test_connection`] proves the `ADMIN` global permission the writes need
//!   with a read that needs it too: `GET /rest/api/1.0/admin/permissions/users?limit=1`
//!   ("The authenticated user must have ADMIN permission or higher"; the user and group
//!   listings the sync reads need only `LICENSED_USER`).
//! - There is no deactivation: [`Capabilities::can_deactivate`] is false and
//!   [`Directory::deactivate_account`] answers [`Error::Unsupported`].
//! - Listings page with `{values, isLastPage, nextPageStart}`.
//! - [`Directory::fetch_state`] also reads the global permissions ("Permission Management"
//!   in the OpenAPI document: `GET /api/latest/admin/permissions/users` and `/groups`, each
//!   a page of the grantees "and their highest global permissions", for callers with
//!   `ADMIN` or higher; `/rest/api/1.0` is the same API as `/rest/api/latest`). An account
//!   that holds `ADMIN` or `SYS_ADMIN`, itself or through a group it is a member of, is a
//!   [`RemoteAccount::administrator`].
//! - [`Directory::seats`] reads the licence: `GET /rest/api/1.0/admin/license` ("Get license
//!   details", operationId `get_2`, in the OpenAPI document's "System Maintenance"; the
//!   caller needs `ADMIN`), a `RestBitbucketLicense`. The seats taken are
//!   `status.currentNumberOfUsers` ("the current number of users applied toward the license
//!   limit"), the seats `maximumNumberOfUsers` unless `unlimitedNumberOfUsers` is true. The
//!   document marks no field required: a maximum that is absent or negative is read as
//!   unlimited too, and a licence without `currentNumberOfUsers` as seats unknown (`None`).
//!   A 404 ("No license has been installed") is `Ok(None)`.
//!
//! Hostile answers (see also `client.rs` for the paging loop). The 8.14 document marks no
//! field of these schemas required, so the choices are keysync's, each where a default would
//! change what the plan does:
//! - A page's `values`, `isLastPage` and `start` are required ([`Error::Decode`]): a missing
//!   `isLastPage` read as the last page would silently truncate the listing. `start` must be
//!   the one asked for, and a page that is not the last must carry a `nextPageStart` at or
//!   past its own end ([`Error::Incomplete`] otherwise).
//! - A `RestDetailedUser`'s `active`, `mutableDetails`, `mutableGroups` and `deletable` are
//!   required, and a `RestDetailedGroup`'s `deletable`: the reference lists them on every
//!   admin user and group, and read as `true` a missing one would let keysync write to or
//!   delete an account or group that an LDAP or Crowd directory owns.
//! - The licence fields stay optional as documented above: without them the seats are
//!   unknown or unlimited, and Bitbucket's own 403 still guards a create.

use std::collections::HashSet;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::client::{Offset, Paged, Split, product_client};
use crate::config::BitbucketSettings;
use crate::http::{ApiRequest, ApiResponse};
use crate::{
    AccountRef, AccountUpdate, Capabilities, ConnectionInfo, Created, Directory, DirectoryState,
    Error, NewAccount, Outcome, Product, RemoteAccount, RemoteGroup, Seats, add_one_by_one,
    random_password, read_directory, same_account,
};

/// Bitbucket's documented default page is 25; it serves up to 1,000 per page.
const DEFAULT_PAGE: u32 = 1000;

/// The most groups one `add-groups` request gives a user: an account's new memberships of
/// one change set, in one request after one lookup instead of a lookup and a request each.
const GROUPS_PER_ADD: usize = 50;

/// The global permissions that make their holder an administrator; the others are
/// `LICENSED_USER` and `PROJECT_CREATE`.
const ADMIN_PERMISSIONS: [&str; 2] = ["ADMIN", "SYS_ADMIN"];

mod created;
use created::CreatedHere;

product_client! {
    /// A Bitbucket Data Center client.
    pub struct BitbucketClient(Product::Bitbucket, BitbucketSettings, DEFAULT_PAGE) {
        created_here: CreatedHere,
    }
}

impl BitbucketClient {
    /// The detailed user with this slug (or, failing that, this name); `None` when absent.
    async fn find_user(
        &self,
        slug: Option<&str>,
        name: &str,
    ) -> Result<Option<DetailedUser>, Error> {
        let request = ApiRequest::get("rest/api/1.0/admin/users").query("filter", name);
        let users = self
            .core
            .all_pages::<Page<DetailedUser>>(&request, "user page")
            .await?;
        let by_slug = slug.and_then(|slug| users.iter().position(|user| user.slug == slug));
        let by_name = || {
            users
                .iter()
                .position(|user| user.name.eq_ignore_ascii_case(name))
        };
        Ok(by_slug.or_else(by_name).map(|idx| users[idx].clone()))
    }

    /// Who holds `ADMIN` or `SYS_ADMIN` directly: the users and the groups the two global
    /// permission listings name with one of them, both listings read in full.
    async fn administrators(&self) -> Result<Administrators, Error> {
        let user_listing = ApiRequest::get("rest/api/1.0/admin/permissions/users");
        let group_listing = ApiRequest::get("rest/api/1.0/admin/permissions/groups");
        let users = self
            .core
            .all_pages::<Page<PermittedUser>>(&user_listing, "user permission page");
        let groups = self
            .core
            .all_pages::<Page<PermittedGroup>>(&group_listing, "group permission page");
        let (users, groups) = futures::try_join!(users, groups)?;
        Ok(Administrators::from_listings(users, groups))
    }

    /// The error of an `AuthorisationException` on the admin-only check: the account lacks
    /// `ADMIN`, or the credentials are an HTTP access token, which no admin endpoint takes.
    fn missing_admin(&self, message: String) -> Error {
        let message = if self.core.uses_bearer_token() {
            format!(
                "{message}; Bitbucket refuses HTTP access tokens on its administrative endpoints \
                 (BSERV-10482): use Basic auth (`user` and `password_file`)"
            )
        } else {
            format!("{message}; the user and group writes need the ADMIN global permission")
        };
        Error::MissingPermission {
            product: Product::Bitbucket,
            status: 401,
            permission: "ADMIN (global)",
            message,
        }
    }

    /// `account` added to every group of `groups` with one lookup and one `add-groups`, or
    /// the `add-groups` alone for an account this client created ([`CreatedHere`]).
    /// The request is all or none and its error does not say which group refused it, so
    /// after any failure each group is added on its own for its own answer (an add is
    /// idempotent); a single group takes the one-group path.
    async fn add_groups_at_once(
        &self,
        groups: &[String],
        account: AccountRef<'_>,
    ) -> Vec<Result<Outcome, Error>> {
        if let Some(name) = self.created_here.name_of(account) {
            if self.added_at_once(&name, groups).await {
                return groups.iter().map(|_| Ok(Outcome::Applied)).collect();
            }
            self.created_here.forget(account.id);
        }
        if groups.len() < 2 {
            return add_one_by_one(self, groups, account).await;
        }
        let Ok(user) = self.existing_user(account).await else {
            return add_one_by_one(self, groups, account).await;
        };
        if let Some(reason) = user.groups_read_only_reason() {
            return groups
                .iter()
                .map(|_| {
                    Ok(Outcome::Skipped {
                        reason: reason.clone(),
                    })
                })
                .collect();
        }
        if self.added_at_once(&user.name, groups).await {
            return groups.iter().map(|_| Ok(Outcome::Applied)).collect();
        }
        add_one_by_one(self, groups, account).await
    }

    /// One `add-groups` of `groups` for the user named `name`: whether Bitbucket took it.
    async fn added_at_once(&self, name: &str, groups: &[String]) -> bool {
        matches!(
            self.core.send(&add_groups_request(name, groups)).await,
            Ok(response) if response.is_success()
        )
    }

    /// The user behind `account`, or `NotFound`.
    async fn existing_user(&self, account: AccountRef<'_>) -> Result<DetailedUser, Error> {
        self.find_user(Some(account.id), account.login)
            .await?
            .ok_or_else(|| Error::NotFound {
                product: Product::Bitbucket,
                status: 404,
                message: format!("no user with slug {} (name {})", account.id, account.login),
            })
    }
}

impl Directory for BitbucketClient {
    fn product(&self) -> Product {
        Product::Bitbucket
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_deactivate: false,
            can_rename: true,
            lists_email: true,
            async_delete: false,
            nested_group_members: false,
            groups_per_add: GROUPS_PER_ADD,
        }
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket"))]
    async fn test_connection(&self) -> Result<ConnectionInfo, Error> {
        let request = ApiRequest::get("rest/api/1.0/admin/permissions/users").query("limit", "1");
        let response = self.core.send(&request).await?;
        if response.status == 401 && is_authorisation_failure(&response) {
            return Err(self.missing_admin(response.message()));
        }
        if !response.is_success() {
            return Err(response.into_error());
        }
        let properties: ApplicationProperties = self
            .core
            .send_ok(&ApiRequest::get("rest/api/1.0/application-properties"))
            .await?
            .json("application properties")?;
        Ok(ConnectionInfo {
            product: Product::Bitbucket,
            version: properties.version,
            user: None,
            permission: Some("ADMIN".to_owned()),
        })
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket"))]
    async fn fetch_state(&self) -> Result<DirectoryState, Error> {
        let (mut state, administrators) =
            futures::try_join!(read_directory(self), self.administrators())?;
        administrators.mark(&mut state);
        Ok(state)
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket"))]
    async fn seats(&self) -> Result<Option<Seats>, Error> {
        let response = self
            .core
            .send(&ApiRequest::get("rest/api/1.0/admin/license"))
            .await?;
        match response.status {
            // "No license has been installed."
            404 => return Ok(None),
            401 if is_authorisation_failure(&response) => {
                return Err(self.missing_admin(response.message()));
            }
            _ if !response.is_success() => return Err(response.into_error()),
            _ => {}
        }
        let license: License = response.json("license")?;
        let seats = license.seats();
        if seats.is_none() {
            tracing::warn!(
                "Bitbucket's licence does not say how many users it counts \
                 (no status.currentNumberOfUsers); the seats are unknown."
            );
        }
        Ok(seats)
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket"))]
    async fn list_accounts(&self) -> Result<Vec<RemoteAccount>, Error> {
        let users = self
            .core
            .all_pages::<Page<DetailedUser>>(
                &ApiRequest::get("rest/api/1.0/admin/users"),
                "user page",
            )
            .await?;
        Ok(users.into_iter().map(DetailedUser::into_account).collect())
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket"))]
    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, Error> {
        let groups = self
            .core
            .all_pages::<Page<DetailedGroup>>(
                &ApiRequest::get("rest/api/1.0/admin/groups"),
                "group page",
            )
            .await?;
        Ok(groups
            .into_iter()
            .map(|group| RemoteGroup {
                read_only: (!group.deletable)
                    .then(|| "Bitbucket marks the group as not deletable".to_owned()),
                name: group.name,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", group = group))]
    async fn list_members(&self, group: &str) -> Result<Vec<String>, Error> {
        let request =
            ApiRequest::get("rest/api/1.0/admin/groups/more-members").query("context", group);
        let users = self
            .core
            .all_pages::<Page<DetailedUser>>(&request, "member page")
            .await?;
        Ok(users.into_iter().map(|user| user.slug).collect())
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", login = %account.login))]
    async fn create_account(&self, account: &NewAccount) -> Result<Created, Error> {
        let request = create_user_request(account, self.core.settings.add_to_default_group);
        let response = self.core.send(&request).await?;
        let created = response.is_success();
        match response.status {
            _ if created => {}
            409 => {}
            _ => return Err(licence_or_error(response)),
        }
        // 204 has no body, and 409 says nothing about the existing user: read it back.
        let Some(user) = self.find_user(None, &account.login).await? else {
            return Err(Error::NotFound {
                product: Product::Bitbucket,
                status: 404,
                message: format!("user {} cannot be read back after create", account.login),
            });
        };
        if created {
            self.created_here.remember(&user);
            return Ok(Created {
                id: user.slug,
                outcome: Outcome::Applied,
            });
        }
        if !same_account(&user.clone().into_account(), account) {
            return Err(Error::Conflict {
                product: Product::Bitbucket,
                status: 409,
                message: format!("user {} exists with other details", account.login),
            });
        }
        Ok(Created {
            id: user.slug,
            outcome: Outcome::AlreadyDone,
        })
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", id = account.id, login = account.login))]
    async fn update_account(
        &self,
        account: AccountRef<'_>,
        update: &AccountUpdate,
    ) -> Result<Outcome, Error> {
        if update == &AccountUpdate::default() {
            return Ok(Outcome::AlreadyDone);
        }
        let user = self.existing_user(account).await?;
        if let Some(reason) = user.read_only_reason() {
            return Ok(Outcome::Skipped { reason });
        }
        let mut name = user.name.clone();
        if let Some(new_name) = &update.login
            && new_name != &user.name
        {
            let request = ApiRequest::new(Method::POST, "rest/api/1.0/admin/users/rename")
                .json(json!({ "name": user.name, "newName": new_name }));
            self.created_here.forget(account.id);
            self.core.send_ok(&request).await?;
            name = new_name.clone();
        }
        if let Some(request) = update_user_request(&name, update) {
            self.core.send_ok(&request).await?;
        }
        Ok(Outcome::Applied)
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", id = account.id))]
    async fn deactivate_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        Err(Error::Unsupported {
            product: Product::Bitbucket,
            operation: "deactivate a user",
        })
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", id = account.id))]
    async fn reactivate_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        Err(Error::Unsupported {
            product: Product::Bitbucket,
            operation: "reactivate a user",
        })
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", id = account.id, login = account.login))]
    async fn delete_account(&self, account: AccountRef<'_>) -> Result<Outcome, Error> {
        self.created_here.forget(account.id);
        let Some(user) = self.find_user(Some(account.id), account.login).await? else {
            return Ok(Outcome::AlreadyDone);
        };
        if let Some(reason) = user.read_only_reason() {
            return Ok(Outcome::Skipped { reason });
        }
        let request =
            ApiRequest::new(Method::DELETE, "rest/api/1.0/admin/users").query("name", user.name);
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", group = name))]
    async fn create_group(&self, name: &str) -> Result<Outcome, Error> {
        let request =
            ApiRequest::new(Method::POST, "rest/api/1.0/admin/groups").query("name", name);
        let response = self.core.send(&request).await?;
        match response.status {
            409 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", group = name))]
    async fn delete_group(&self, name: &str) -> Result<Outcome, Error> {
        let request =
            ApiRequest::new(Method::DELETE, "rest/api/1.0/admin/groups").query("name", name);
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", group = group, id = account.id, login = account.login))]
    async fn add_member(&self, group: &str, account: AccountRef<'_>) -> Result<Outcome, Error> {
        let user = self.existing_user(account).await?;
        if let Some(reason) = user.groups_read_only_reason() {
            return Ok(Outcome::Skipped { reason });
        }
        let response = self
            .core
            .send(&add_groups_request(&user.name, &[group]))
            .await?;
        if !response.is_success() {
            return Err(licence_or_error(response));
        }
        Ok(Outcome::Applied)
    }

    /// One lookup and one `add-groups` for up to [`GROUPS_PER_ADD`] groups at a time (the
    /// document's `UserAndGroups` takes a list).
    #[tracing::instrument(skip_all, fields(product = "bitbucket", groups = groups.len(), id = account.id, login = account.login))]
    async fn add_member_to_groups(
        &self,
        groups: &[String],
        account: AccountRef<'_>,
    ) -> Vec<Result<Outcome, Error>> {
        let mut results = Vec::with_capacity(groups.len());
        for chunk in groups.chunks(GROUPS_PER_ADD) {
            results.extend(self.add_groups_at_once(chunk, account).await);
        }
        results
    }

    #[tracing::instrument(skip_all, fields(product = "bitbucket", group = group, id = account.id, login = account.login))]
    async fn remove_member(&self, group: &str, account: AccountRef<'_>) -> Result<Outcome, Error> {
        let Some(user) = self.find_user(Some(account.id), account.login).await? else {
            return Ok(Outcome::AlreadyDone);
        };
        if let Some(reason) = user.groups_read_only_reason() {
            return Ok(Outcome::Skipped { reason });
        }
        let request = ApiRequest::new(Method::POST, "rest/api/1.0/admin/users/remove-group")
            .json(json!({ "context": user.name, "itemName": group }));
        let response = self.core.send(&request).await?;
        match response.status {
            404 => Ok(Outcome::AlreadyDone),
            _ if response.is_success() => Ok(Outcome::Applied),
            _ => Err(response.into_error()),
        }
    }
}

/// Whether a 401 says the caller may not use the resource (an `AuthorisationException`,
/// "You are not permitted to access this resource") rather than that its credentials are
/// wrong.
fn is_authorisation_failure(response: &ApiResponse) -> bool {
    let body = String::from_utf8_lossy(&response.body).to_lowercase();
    body.contains("authorisationexception") || body.contains("not permitted")
}

/// The error a failed create or `add-groups` means: a 403 whose body speaks of the licence
/// ("license limit", "licensing limit", a `…LicenseLimitException`) is
/// [`Error::LicenseLimit`], as the 8.14 OpenAPI document gives that 403 to the licence and to
/// a group above the caller's own permission alike; anything else is the status's error.
fn licence_or_error(response: ApiResponse) -> Error {
    let body = String::from_utf8_lossy(&response.body).to_lowercase();
    if response.status == 403 && body.contains("licen") {
        return Error::LicenseLimit {
            product: Product::Bitbucket,
            status: 403,
            message: response.message(),
        };
    }
    response.into_error()
}

/// `POST /rest/api/1.0/admin/users?name=…` with everything in query parameters and no body;
/// a random password is sent when none is given, since `notify` needs a mail server.
fn create_user_request(account: &NewAccount, add_to_default_group: bool) -> ApiRequest {
    let password = account.password.clone().unwrap_or_else(random_password);
    ApiRequest::new(Method::POST, "rest/api/1.0/admin/users")
        .query("name", account.login.clone())
        .query("displayName", account.display_name.clone())
        .query("emailAddress", account.email.clone())
        .query("password", password.expose())
        .query("addToDefaultGroup", add_to_default_group.to_string())
        .query("notify", "false")
}

/// `POST /rest/api/1.0/admin/users/add-groups` of the document's `UserAndGroups`: the user
/// `name` into every group of `groups`.
fn add_groups_request(name: &str, groups: &[impl serde::Serialize]) -> ApiRequest {
    ApiRequest::new(Method::POST, "rest/api/1.0/admin/users/add-groups")
        .json(json!({ "user": name, "groups": groups }))
}

/// `PUT /rest/api/1.0/admin/users` with the changed details; `None` when only the name
/// changes (that is the rename call).
fn update_user_request(name: &str, update: &AccountUpdate) -> Option<ApiRequest> {
    if update.display_name.is_none() && update.email.is_none() {
        return None;
    }
    let mut body = json!({ "name": name });
    if let Some(display_name) = &update.display_name {
        body["displayName"] = json!(display_name);
    }
    if let Some(email) = &update.email {
        body["email"] = json!(email);
    }
    Some(ApiRequest::new(Method::PUT, "rest/api/1.0/admin/users").json(body))
}

/// A page of a `{values, size, limit, isLastPage, start, nextPageStart}` listing.
/// `values`, `isLastPage` and `start` are required (the document marks no field required,
/// but every page Bitbucket answers has them): a missing `isLastPage` read as "last" would
/// silently cut the listing short.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    values: Vec<T>,
    is_last_page: bool,
    start: u64,
    next_page_start: Option<u64>,
}

/// Bitbucket pages by `start` and `limit` too, but a page is the last when `isLastPage` says
/// so, and the next starts at `nextPageStart`. The page's `start` must be the one asked for;
/// a page that is not the last must carry a `nextPageStart` at or past its own end (it may
/// skip ahead: Bitbucket filters after it pages).
impl<T: DeserializeOwned> Paged for Page<T> {
    type Item = T;
    type Position = Offset;

    fn split(self, start: &Offset) -> Result<Split<Self>, String> {
        start.check_start(self.start)?;
        if self.is_last_page {
            return Ok((self.values, None));
        }
        let Some(next_page_start) = self.next_page_start else {
            return Err("a page says it is not the last but has no `nextPageStart`".to_owned());
        };
        let end = start.after(self.values.len())?;
        if next_page_start < end.start() {
            return Err(format!(
                "the page at start={} holds {} values but says the next starts at {next_page_start}",
                start.start(),
                self.values.len()
            ));
        }
        Ok((self.values, Some(start.at(next_page_start))))
    }
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DetailedUser {
    name: String,
    slug: String,
    display_name: Option<String>,
    email_address: Option<String>,
    /// Required, as `mutableDetails`, `mutableGroups` and `deletable` are: see the module
    /// documentation.
    active: bool,
    directory_name: Option<String>,
    mutable_details: bool,
    mutable_groups: bool,
    deletable: bool,
}

impl DetailedUser {
    fn directory(&self) -> &str {
        self.directory_name
            .as_deref()
            .unwrap_or("another directory")
    }

    /// Why the account must not be written, from `mutableDetails` and `deletable`.
    fn read_only_reason(&self) -> Option<String> {
        if !self.mutable_details {
            return Some(format!(
                "the details of {} are managed by {} (mutableDetails is false)",
                self.name,
                self.directory()
            ));
        }
        if !self.deletable {
            return Some(format!(
                "{} cannot be deleted (deletable is false, directory {})",
                self.name,
                self.directory()
            ));
        }
        None
    }

    /// Why the account's groups must not be written, from `mutableGroups`.
    fn groups_read_only_reason(&self) -> Option<String> {
        (!self.mutable_groups).then(|| {
            format!(
                "the groups of {} are managed by {}",
                self.name,
                self.directory()
            )
        })
    }

    fn into_account(self) -> RemoteAccount {
        RemoteAccount {
            read_only: self.read_only_reason(),
            id: self.slug,
            login: self.name,
            display_name: self.display_name.unwrap_or_default(),
            email: self.email_address,
            active: self.active,
            administrator: false,
        }
    }
}

/// Whether a global permission is `ADMIN` or `SYS_ADMIN`.
fn is_admin(permission: &str) -> bool {
    ADMIN_PERMISSIONS.contains(&permission)
}

/// The holders of `ADMIN` or `SYS_ADMIN`, as the permission listings name them: users by
/// slug and by name, groups by name; names in lower case, since Bitbucket compares them
/// without case.
#[derive(Debug, Default)]
struct Administrators {
    slugs: HashSet<String>,
    names: HashSet<String>,
    groups: HashSet<String>,
}

impl Administrators {
    /// The holders of `ADMIN` or `SYS_ADMIN` among the entries of the two listings.
    fn from_listings(users: Vec<PermittedUser>, groups: Vec<PermittedGroup>) -> Administrators {
        let mut administrators = Administrators::default();
        for permitted in users.into_iter().filter(|user| is_admin(&user.permission)) {
            administrators
                .names
                .insert(permitted.user.name.to_lowercase());
            administrators.slugs.extend(permitted.user.slug);
        }
        administrators.groups = groups
            .into_iter()
            .filter(|group| is_admin(&group.permission))
            .map(|group| group.group.name.to_lowercase())
            .collect();
        administrators
    }

    /// Marks the accounts of `state` that hold administrator rights, themselves or through
    /// one of their groups, and only those.
    fn mark(&self, state: &mut DirectoryState) {
        let through_groups: HashSet<&str> = state
            .memberships
            .iter()
            .filter(|membership| self.groups.contains(&membership.group.to_lowercase()))
            .map(|membership| membership.account_id.as_str())
            .collect();
        for account in &mut state.accounts {
            account.administrator = self.slugs.contains(&account.id)
                || self.names.contains(&account.login.to_lowercase())
                || through_groups.contains(account.id.as_str());
        }
    }
}

/// One entry of `admin/permissions/users`: a user and its highest global permission
/// (`RestPermittedUser`; the 8.14 document gives this listing the group entry's schema, but
/// describes it as "a page of users and their highest global permissions").
#[derive(Deserialize)]
struct PermittedUser {
    user: PermittedUserName,
    permission: String,
}

#[derive(Deserialize)]
struct PermittedUserName {
    name: String,
    slug: Option<String>,
}

/// One entry of `admin/permissions/groups`: a group and its highest global permission
/// (`RestPermittedGroup`).
#[derive(Deserialize)]
struct PermittedGroup {
    group: PermittedGroupName,
    permission: String,
}

#[derive(Deserialize)]
struct PermittedGroupName {
    name: String,
}

/// `RestDetailedGroup`: `deletable` is required; read as true, a missing one would let
/// keysync delete a group Bitbucket protects.
#[derive(Deserialize)]
struct DetailedGroup {
    name: String,
    deletable: bool,
}

/// `RestBitbucketLicense`, the answer of `GET /admin/license`, with the fields the seats
/// need; the document marks none of them required.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct License {
    /// `int32`; with an unlimited licence it may be absent or meaningless.
    maximum_number_of_users: Option<i64>,
    unlimited_number_of_users: Option<bool>,
    status: Option<LicenseStatus>,
}

/// `RestBitbucketLicense_status`: `{serverId, currentNumberOfUsers}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LicenseStatus {
    current_number_of_users: Option<i64>,
}

impl License {
    /// The seats the licence reports: `None` without a (non-negative) current number of
    /// users. The limit is `maximumNumberOfUsers`, and there is none (unlimited) when
    /// `unlimitedNumberOfUsers` is true or the maximum is absent or negative.
    fn seats(&self) -> Option<Seats> {
        let used = self.status.as_ref()?.current_number_of_users?;
        let used = u64::try_from(used).ok()?;
        let limit = match self.unlimited_number_of_users {
            Some(true) => None,
            _ => self
                .maximum_number_of_users
                .and_then(|max| u64::try_from(max).ok()),
        };
        Some(Seats { used, limit })
    }
}

#[derive(Deserialize)]
struct ApplicationProperties {
    version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_carries_everything_in_query_parameters_and_no_body() {
        let request = create_user_request(
            &NewAccount {
                login: "carol".into(),
                display_name: "Carol C".into(),
                email: "carol@example.com".into(),
                password: None,
            },
            true,
        );
        assert_eq!(request.body, None);
        let names: Vec<&str> = request.query.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "name",
                "displayName",
                "emailAddress",
                "password",
                "addToDefaultGroup",
                "notify"
            ]
        );
    }

    #[test]
    fn read_only_reason_names_the_directory() {
        let user = DetailedUser {
            name: "ldap-user".into(),
            slug: "ldap-user".into(),
            display_name: None,
            email_address: None,
            active: true,
            directory_name: Some("Corporate LDAP".into()),
            mutable_details: false,
            mutable_groups: false,
            deletable: false,
        };
        let reason = user.read_only_reason().unwrap();
        assert!(reason.contains("Corporate LDAP"), "{reason}");
    }

    #[test]
    fn administrators_hold_admin_or_sys_admin_themselves_or_through_a_group() {
        let users: Page<PermittedUser> = serde_json::from_value(json!({
            "values": [
                {"user": {"name": "Ops", "slug": "ops", "id": 1}, "permission": "SYS_ADMIN"},
                {"user": {"name": "Dev", "slug": "dev", "id": 2}, "permission": "PROJECT_CREATE"},
            ],
            "isLastPage": true, "start": 0,
        }))
        .unwrap();
        let groups: Page<PermittedGroup> = serde_json::from_value(json!({
            "values": [
                {"group": {"name": "BB-Admins"}, "permission": "ADMIN"},
                {"group": {"name": "stash-users"}, "permission": "LICENSED_USER"},
            ],
            "isLastPage": true, "start": 0,
        }))
        .unwrap();
        let administrators = Administrators::from_listings(users.values, groups.values);
        let account = |id: &str| DetailedUser {
            name: id.to_owned(),
            slug: id.to_owned(),
            display_name: None,
            email_address: None,
            active: true,
            directory_name: None,
            mutable_details: true,
            mutable_groups: true,
            deletable: true,
        };
        let membership = |group: &str, account_id: &str| crate::Membership {
            group: group.to_owned(),
            account_id: account_id.to_owned(),
        };
        let mut state = DirectoryState {
            accounts: ["ops", "dev", "lead", "user"]
                .map(|id| account(id).into_account())
                .to_vec(),
            groups: vec![],
            memberships: [
                membership("bb-admins", "lead"),
                membership("stash-users", "user"),
                membership("stash-users", "dev"),
            ]
            .into(),
            ..DirectoryState::default()
        };

        administrators.mark(&mut state);

        let marked: Vec<&str> = state
            .accounts
            .iter()
            .filter(|account| account.administrator)
            .map(|account| account.id.as_str())
            .collect();
        assert_eq!(marked, ["ops", "lead"]);
    }

    #[test]
    fn licence_seats_are_the_current_users_and_the_maximum_unless_unlimited() {
        let seats =
            |body: serde_json::Value| serde_json::from_value::<License>(body).unwrap().seats();
        let status = json!({"serverId": "B1", "currentNumberOfUsers": 7});

        let limited = seats(json!({
            "maximumNumberOfUsers": 25, "unlimitedNumberOfUsers": false, "status": status
        }));
        // The document's own example has both a maximum and `unlimitedNumberOfUsers: true`.
        let unlimited = seats(json!({
            "maximumNumberOfUsers": 12, "unlimitedNumberOfUsers": true, "status": status
        }));
        let no_maximum = seats(json!({"status": status}));
        let negative = seats(json!({"maximumNumberOfUsers": -1, "status": status}));
        let no_status = seats(json!({"maximumNumberOfUsers": 25}));
        let no_count = seats(json!({"maximumNumberOfUsers": 25, "status": {"serverId": "B1"}}));

        assert_eq!(
            limited,
            Some(Seats {
                used: 7,
                limit: Some(25)
            })
        );
        let unlimited_seats = Some(Seats {
            used: 7,
            limit: None,
        });
        assert_eq!(unlimited, unlimited_seats);
        assert_eq!(no_maximum, unlimited_seats);
        assert_eq!(negative, unlimited_seats);
        assert_eq!(no_status, None);
        assert_eq!(no_count, None);
    }

    #[test]
    fn a_page_is_the_last_only_when_is_last_page_says_so() {
        let start = Offset::default().at(25);
        let page = |body: serde_json::Value| -> Page<DetailedGroup> {
            serde_json::from_value(body).unwrap()
        };
        let group = json!({"name": "developers", "deletable": true});

        let jump = page(json!({
            "values": [group], "isLastPage": false, "start": 25, "nextPageStart": 60
        }));
        let no_start = page(json!({"values": [group, group], "isLastPage": false, "start": 25}));
        let last = page(json!({
            "values": [group], "isLastPage": true, "start": 25, "nextPageStart": 26
        }));
        let back = page(json!({
            "values": [group, group], "isLastPage": false, "start": 25, "nextPageStart": 26
        }));
        let elsewhere = page(json!({"values": [group], "isLastPage": true, "start": 0}));

        assert_eq!(jump.split(&start).unwrap().1, Some(start.at(60)));
        assert!(no_start.split(&start).is_err(), "no nextPageStart");
        assert_eq!(last.split(&start).unwrap().1, None);
        assert!(
            back.split(&start).is_err(),
            "the next page overlaps this one"
        );
        assert!(elsewhere.split(&start).is_err(), "start 0, asked for 25");
        let unsaid = json!({"values": [group], "start": 25});
        assert!(serde_json::from_value::<Page<DetailedGroup>>(unsaid).is_err());
    }
}
