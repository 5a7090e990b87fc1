//! Bitbucket Data Center's user and group endpoints under `/rest/api/1.0` (and
//! `/rest/api/latest`), as in the 8.14 OpenAPI document.
//!
//! Errors are `{"errors":[{"context","message","exceptionName"}]}`. Listings are
//! `{size,limit,isLastPage,values,start,nextPageStart?}`, 25 by default and at most 1,000.
//! Users are created with query parameters and answered 204 with no body; slugs are derived
//! from the name (lower case, other characters `_`) and change on rename. Read-only accounts
//! report `mutableDetails`, `mutableGroups` and `deletable` false and refuse writes. New users
//! join the default group `stash-users` when it exists. The global permissions are listed
//! (not granted or revoked) through `admin/permissions/users` and `admin/permissions/groups`.
//!
//! Rights, as the 8.14 OpenAPI document states them per endpoint: the listings of users,
//! groups and members need `LICENSED_USER`, every write and the permission listings need
//! `ADMIN`; a caller without them is answered 401 with an `AuthorisationException`, and an
//! HTTP access token is refused on every `admin` endpoint (the gate sees to that). An add to
//! a group that holds `SYS_ADMIN` needs `SYS_ADMIN` (403 otherwise). The licence
//! ([`Config::license_seats`](crate::Config::license_seats)) is held by the active accounts
//! that are in `stash-users` or hold a global permission, themselves or through a group;
//! `admin/license` reports those seats (for `ADMIN` callers).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::access::Caller;
use crate::reply::{self, Params};
use crate::store::{Account, GlobalPermission, StateHandle, Store};

/// The default `limit` ("If not passed, a page size of 25 is used": the 8.14 OpenAPI
/// document's `limit` parameter on every paged operation).
const PAGE_DEFAULT: usize = 25;
/// The largest `limit` served. Not in the 8.14 OpenAPI document (it only says, on some
/// operations, that the server applies a hard cap); the value 1,000 is unverified.
const PAGE_MAX: usize = 1000;
/// The group new users join when `addToDefaultGroup` is true, if it exists (`createUser`
/// in the 8.14 OpenAPI document describes "the default group"; its name here is the
/// emulator's choice, `stash-users`, the name Bitbucket installs create).
const DEFAULT_GROUP: &str = "stash-users";

const NO_SUCH_USER: &str = "com.atlassian.bitbucket.user.NoSuchUserException";
const NO_SUCH_GROUP: &str = "com.atlassian.bitbucket.user.NoSuchGroupException";
const VALIDATION: &str = "com.atlassian.bitbucket.validation.ArgumentValidationException";
const INTEGRITY: &str = "com.atlassian.bitbucket.IntegrityException";
const FORBIDDEN: &str = "com.atlassian.bitbucket.AuthorisationException";
const LICENSE_LIMIT: &str = "com.atlassian.bitbucket.license.LicenseLimitException";

pub(crate) fn routes() -> Router<StateHandle> {
    let api = Router::new()
        .route("/application-properties", get(application_properties))
        .route(
            "/admin/users",
            get(list_users)
                .post(create_user)
                .put(update_user)
                .delete(delete_user),
        )
        .route("/admin/users/rename", post(rename_user))
        .route("/admin/users/more-members", get(groups_of_user))
        .route("/admin/users/add-groups", post(add_user_to_groups))
        .route("/admin/users/remove-group", post(remove_user_from_group))
        .route(
            "/admin/groups",
            get(list_groups).post(create_group).delete(delete_group),
        )
        .route("/admin/groups/more-members", get(group_members))
        .route("/admin/groups/add-users", post(add_users_to_group))
        .route("/admin/permissions/users", get(permitted_users))
        .route("/admin/permissions/groups", get(permitted_groups))
        .route("/admin/license", get(license))
        .route("/users/{slug}", get(get_user));
    Router::new()
        .nest("/rest/api/1.0", api.clone())
        .nest("/rest/api/latest", api)
}

/// Bitbucket's error shape: `{"errors":[{"context","message","exceptionName"}]}`
/// (`RestErrors` / `RestErrorMessage` in the 8.14 OpenAPI document).
pub(crate) fn error(status: u16, message: &str, exception: &str) -> Response {
    reply::json(
        status,
        json!({ "errors": [{ "context": null, "message": message, "exceptionName": exception }] }),
    )
}

/// A 400 with one `RestErrorMessage` whose `context` names the field at fault (the 8.14
/// OpenAPI document's `RestErrorMessage` has `context`, `message`, `exceptionName`; that
/// `context` names the field is Bitbucket's practice, not stated there).
fn field_error(field: &str, message: &str) -> Response {
    reply::json(
        400,
        json!({ "errors": [{ "context": field, "message": message, "exceptionName": VALIDATION }] }),
    )
}

/// A signed-in caller, or Bitbucket's 401 (the 8.14 OpenAPI document answers 401, never
/// 403, on every user and group operation when the caller lacks the permission it needs).
fn require_user(caller: &Caller) -> Result<(), Response> {
    if caller.is_anonymous() {
        return Err(error(
            401,
            "Authentication is required to access this resource.",
            "com.atlassian.bitbucket.auth.AuthenticationRequiredException",
        ));
    }
    Ok(())
}

/// A caller holding `needed` or a higher global permission; else 401, as the 8.14 OpenAPI
/// document answers a caller without the permission an endpoint needs.
fn require(state: &StateHandle, caller: &Caller, needed: GlobalPermission) -> Result<(), Response> {
    require_user(caller)?;
    if caller.bitbucket_permission(&state.lock()) < Some(needed) {
        return Err(not_permitted());
    }
    Ok(())
}

/// Bitbucket's answer to a caller that may not use a resource: 401 with an
/// `AuthorisationException`, "You are not permitted to access this resource" (the body
/// Atlassian's KB "An error 'You are not permitted to access this resource' appears in
/// Bitbucket Data Center…" shows).
pub(crate) fn not_permitted() -> Response {
    error(
        401,
        "You are not permitted to access this resource",
        FORBIDDEN,
    )
}

/// Whether `account_id` holds a licence: active, and in `stash-users` or holding a global
/// permission itself or through a group.
/// (Bitbucket counts a licence for each user granted `LICENSED_USER` or a higher global
/// permission, directly or through a group; the 8.14 OpenAPI document's "Permission
/// Management" operations grant them. `stash-users` stands for the default group holding
/// `LICENSED_USER` on a fresh install.)
fn licensed(store: &Store, account_id: u64) -> bool {
    store
        .account(account_id)
        .is_some_and(|account| account.active)
        && (store.highest_permission(account_id).is_some()
            || store
                .groups_of(account_id)
                .iter()
                .any(|group| group.name.eq_ignore_ascii_case(DEFAULT_GROUP)))
}

/// How many accounts hold a licence ([`licensed`]).
fn licensed_count(store: &Store) -> usize {
    store
        .accounts()
        .filter(|account| licensed(store, account.id))
        .count()
}

/// Whether one more licence is beyond the seats.
fn seats_full(state: &StateHandle, store: &Store) -> bool {
    state
        .config()
        .license_seats
        .is_some_and(|seats| licensed_count(store) >= seats)
}

/// Bitbucket's 403 for an action beyond the licence (`createUser`: "Adding the user to the
/// default group would exceed the server's license limit"; `addUserToGroups` /
/// `addUsersToGroup`: "would exceed the server's licensing limit").
fn license_limit(message: &str) -> Response {
    error(403, message, LICENSE_LIMIT)
}

/// `RestApplicationUser`: a user as the non-admin resources answer it (schema of that name
/// in the 8.14 OpenAPI document).
fn application_user(base: &str, account: &Account) -> Value {
    json!({
        "name": account.name,
        "emailAddress": account.email,
        "active": account.active,
        "displayName": account.display_name,
        "id": account.id,
        "slug": account.key,
        "type": "NORMAL",
        "links": { "self": [{ "href": format!("{base}/users/{}", account.key) }] },
    })
}

/// `RestDetailedUser`: a user as the `admin/users` resources answer it, with
/// `directoryName`, `deletable`, `mutableDetails` and `mutableGroups` (schema of that name in
/// the 8.14 OpenAPI document; `lastAuthenticationTimestamp` is left out).
fn detailed_user(base: &str, account: &Account) -> Value {
    json!({
        "name": account.name,
        "emailAddress": account.email,
        "active": account.active,
        "displayName": account.display_name,
        "id": account.id,
        "slug": account.key,
        "type": "NORMAL",
        "directoryName": if account.read_only { "Delegated LDAP Directory" } else { "Bitbucket Internal Directory" },
        "deletable": !account.read_only,
        "mutableDetails": !account.read_only,
        "mutableGroups": !account.read_only,
        "links": { "self": [{ "href": format!("{base}/users/{}", account.key) }] },
    })
}

/// One page of `items` (already the whole list): `{size, limit, isLastPage, values, start,
/// nextPageStart?}`, the paged envelope of the 8.14 OpenAPI document (e.g. the `200` of
/// `getUsers_1`); clients loop on `start=nextPageStart` until `isLastPage`.
fn page(params: &Params, items: Vec<Value>) -> Result<Value, Response> {
    page_of(params, items, |item| item)
}

/// [`page`] of items rendered by `render`, only those on the page: a listing of 100,000
/// accounts renders one page of them per request, not all of them.
fn page_of<T>(
    params: &Params,
    items: Vec<T>,
    render: impl FnMut(T) -> Value,
) -> Result<Value, Response> {
    let start = reply::number(params, "start", 0).map_err(|m| field_error("start", &m))?;
    let limit = reply::number(params, "limit", PAGE_DEFAULT)
        .map_err(|m| field_error("limit", &m))?
        .clamp(1, PAGE_MAX);
    let total = items.len();
    let values: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(limit)
        .map(render)
        .collect();
    let size = values.len();
    let is_last_page = start + size >= total;
    let mut body = json!({
        "size": size,
        "limit": limit,
        "isLastPage": is_last_page,
        "values": values,
        "start": start,
    });
    if !is_last_page {
        body["nextPageStart"] = json!(start + size);
    }
    Ok(body)
}

/// `filter`: a case-insensitive substring of the name, display name or email ("only users
/// with usernames, display names or email addresses containing the supplied string": the
/// 8.14 OpenAPI document's `filter` on `getUsers_1` and `findUsersInGroup`).
fn user_matches(account: &Account, filter: Option<&str>) -> bool {
    let Some(filter) = filter else {
        return true;
    };
    contains_folded(&account.name, filter)
        || contains_folded(&account.display_name, filter)
        || contains_folded(&account.email, filter)
}

/// The filter of a request, lower-cased once for [`user_matches`].
fn lowered_filter(params: &Params) -> Option<String> {
    params.get("filter").map(|filter| filter.to_lowercase())
}

/// Whether `haystack`, lower-cased, contains `lowered`; without allocating when both are
/// ASCII (every account is scanned per lookup, and the applier looks a user up before each
/// write: at 100,000 accounts, allocating three strings per account made the emulator, not
/// keysync, the bottleneck of a sync).
fn contains_folded(haystack: &str, lowered: &str) -> bool {
    if !(haystack.is_ascii() && lowered.is_ascii()) {
        return haystack.to_lowercase().contains(lowered);
    }
    let needle = lowered.as_bytes();
    needle.is_empty()
        || haystack.as_bytes().windows(needle.len()).any(|window| {
            window
                .iter()
                .zip(needle)
                .all(|(byte, wanted)| byte.to_ascii_lowercase() == *wanted)
        })
}

/// `GET /rest/api/1.0/application-properties`: `{version, buildNumber, buildDate,
/// displayName}`, the version the emulator plays (8.14.0); no authentication needed.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "System Maintenance",
/// `GET /api/latest/application-properties` (operationId `getApplicationProperties`).
async fn application_properties() -> Response {
    reply::json(
        200,
        json!({
            "version": "8.14.0",
            "buildNumber": "8014000",
            "buildDate": "1690000000000",
            "displayName": "Bitbucket",
        }),
    )
}

/// `GET /rest/api/1.0/admin/license`: the installed licence as a `RestBitbucketLicense`, its
/// `status.currentNumberOfUsers` the accounts holding a licence now ([`licensed`]);
/// `maximumNumberOfUsers` [`Config::license_seats`](crate::Config::license_seats), or, when
/// that is `None`, no maximum and `unlimitedNumberOfUsers: true`. Callers need `ADMIN`.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "System Maintenance",
/// `GET /api/latest/admin/license` (operationId `get_2`): "The status includes the current
/// number of users applied toward the license limit"; "The authenticated user must have
/// ADMIN permission" (401 otherwise, as the document answers). The emulator always has a
/// licence installed, so it never gives the document's 404 ("No license has been
/// installed"). The dates, server id and SEN are fixed placeholders of the document's
/// fields; leaving the maximum out of an unlimited licence is the emulator's choice (the
/// document's example carries both).
async fn license(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let current = licensed_count(&state.lock());
    let seats = state.config().license_seats;
    let mut body = json!({
        "creationDate": 1_690_000_000_000_u64,
        "purchaseDate": 1_690_000_000_000_u64,
        "maintenanceExpiryDate": 4_102_444_800_000_u64,
        "numberOfDaysBeforeMaintenanceExpiry": 3650,
        "serverId": "BEMU-LATR-0000-0000",
        "supportEntitlementNumber": "SEN-EMULATOR",
        "unlimitedNumberOfUsers": seats.is_none(),
        "status": { "serverId": "BEMU-LATR-0000-0000", "currentNumberOfUsers": current },
    });
    if let Some(seats) = seats {
        body["maximumNumberOfUsers"] = json!(seats);
    }
    reply::json(200, body)
}

/// `GET /rest/api/1.0/admin/users?filter&start&limit`: a page of `RestDetailedUser`;
/// `filter` matches a substring of the username, display name or email address; callers
/// need `LICENSED_USER` (401 otherwise).
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `GET /api/latest/admin/users` (operationId `getUsers_1`).
async fn list_users(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::LicensedUser));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let filter = lowered_filter(&params);
    // The index narrows a filter to a few candidates; each is still checked.
    let candidates = filter
        .as_deref()
        .zip(store.search())
        .and_then(|(filter, search)| search.candidates(filter));
    let users: Vec<&Account> = match candidates {
        Some(ids) => ids
            .iter()
            .filter_map(|&id| store.account(id))
            .collect::<Vec<_>>(),
        None => store.accounts().collect(),
    }
    .into_iter()
    .filter(|account| user_matches(account, filter.as_deref()))
    .collect();
    let body = page_of(&params, users, |account| detailed_user(&base, account));
    reply::json(200, tri!(body))
}

/// `GET /rest/api/1.0/users/{userSlug}`: one `RestApplicationUser` by slug (not by name);
/// 404 for an unknown slug; 401 for nobody.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "System Maintenance",
/// `GET /api/latest/users/{userSlug}` (operationId `getUser`).
/// (its 200: "Note, this may *not* be the user's username, always use the `user.slug`
/// property").
async fn get_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Response {
    tri!(require_user(&caller));
    let store = state.lock();
    let Some(account) = store.account_by_key(&slug) else {
        return error(404, &format!("User {slug} does not exist."), NO_SUCH_USER);
    };
    reply::json(200, application_user(&reply::base_url(&headers), account))
}

/// `POST /rest/api/1.0/admin/users?name&displayName&emailAddress&password&addToDefaultGroup&notify`
/// (query parameters, no body): 204 with no body; 400 for a missing name, display name or
/// email, or a missing password when `notify` is absent or `false`; 409 for a taken name;
/// 403 when adding the user to the default group would exceed the licence.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `POST /api/latest/admin/users` (operationId `createUser`).
/// `password`: "Required if the `notify` parameter is not present or is set to `false`";
/// `notify`: "If present and not `false`"; `addToDefaultGroup` defaults to `true`.
async fn create_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let text = |name: &str| params.get(name).map(|v| v.trim()).unwrap_or_default();
    let (name, display_name, email) = (text("name"), text("displayName"), text("emailAddress"));
    if name.is_empty() {
        return field_error("name", "The username is required.");
    }
    if display_name.is_empty() {
        return field_error("displayName", "The display name is required.");
    }
    if !email.contains('@') {
        return field_error("emailAddress", "A valid email address is required.");
    }
    let notify = params
        .get("notify")
        .is_some_and(|v| !v.eq_ignore_ascii_case("false"));
    if !notify && text("password").is_empty() {
        return field_error("password", "A password is required unless notify is set.");
    }
    let add_to_default_group = reply::flag(&params, "addToDefaultGroup", true);
    let mut store = state.lock();
    if store.account_by_name(name).is_some() {
        return error(
            409,
            &format!("A user named '{name}' already exists."),
            INTEGRITY,
        );
    }
    // "403: Adding the user to the default group would exceed the server's license limit."
    if add_to_default_group && store.group(DEFAULT_GROUP).is_some() && seats_full(&state, &store) {
        return license_limit(
            "Adding the user to the default group would exceed the server's license limit.",
        );
    }
    let id = store.insert_account(name, display_name, email);
    if add_to_default_group && store.group(DEFAULT_GROUP).is_some() {
        store.add_member(DEFAULT_GROUP, id);
    }
    store.count_write("create_account");
    reply::empty(204)
}

/// The account with this name, or 404 ("The specified user does not exist" in the 8.14
/// OpenAPI document); read-only accounts answer 400 with a `ReadOnlyDirectoryException`
/// (the document names no answer for them; 400 is its "request was malformed").
fn writable_account(state: &StateHandle, name: &str) -> Result<Account, Response> {
    let store = state.lock();
    let Some(account) = store.account_by_name(name) else {
        return Err(error(
            404,
            &format!("User {name} does not exist."),
            NO_SUCH_USER,
        ));
    };
    if account.read_only {
        return Err(error(
            400,
            &format!("User {name} belongs to a read-only directory."),
            "com.atlassian.bitbucket.user.ReadOnlyDirectoryException",
        ));
    }
    Ok(account.clone())
}

/// `PUT /rest/api/1.0/admin/users` with `{name, displayName, email}` (`UserUpdate`): 200
/// with the `RestDetailedUser`; 400 for a malformed body; 404 for an unknown user.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `PUT /api/latest/admin/users` (operationId `updateUserDetails`).
/// `active` is not part of `UserUpdate`: Bitbucket has no REST deactivation.
async fn update_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let body = tri!(reply::object(&body).map_err(|m| field_error("body", &m)));
    let Some(name) = reply::text(&body, "name") else {
        return field_error("name", "The username is required.");
    };
    let account = tri!(writable_account(&state, name));
    let display_name = reply::text(&body, "displayName").map(str::trim);
    let email = reply::text(&body, "email").map(str::trim);
    if display_name.is_some_and(str::is_empty) {
        return field_error("displayName", "The display name must not be blank.");
    }
    if email.is_some_and(|email| !email.contains('@')) {
        return field_error("email", "A valid email address is required.");
    }
    let mut store = state.lock();
    store.update_account(account.id, |stored| {
        if let Some(display_name) = display_name {
            stored.display_name = display_name.to_owned();
        }
        if let Some(email) = email {
            stored.email = email.to_owned();
        }
    });
    store.count_write("update_account");
    let Some(updated) = store.account(account.id) else {
        return error(500, "The user vanished.", INTEGRITY);
    };
    reply::json(200, detailed_user(&reply::base_url(&headers), updated))
}

/// `POST /rest/api/1.0/admin/users/rename` with `{name, newName}` (`UserRename`): 200 with
/// the renamed `RestDetailedUser` (its slug follows the new name); 400 for a malformed body
/// or a taken name; 404 for an unknown user.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `POST /api/latest/admin/users/rename` (operationId `renameUser`).
async fn rename_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let body = tri!(reply::object(&body).map_err(|m| field_error("body", &m)));
    let (Some(name), Some(new_name)) = (reply::text(&body, "name"), reply::text(&body, "newName"))
    else {
        return field_error("newName", "Both name and newName are required.");
    };
    let new_name = new_name.trim();
    if new_name.is_empty() {
        return field_error("newName", "The new username must not be blank.");
    }
    let account = tri!(writable_account(&state, name));
    let mut store = state.lock();
    if let Some(other) = store.account_by_name(new_name)
        && other.id != account.id
    {
        return field_error(
            "newName",
            &format!("A user named '{new_name}' already exists."),
        );
    }
    store.rename_account(account.id, new_name);
    store.count_write("rename_account");
    let Some(renamed) = store.account(account.id) else {
        return error(500, "The user vanished.", INTEGRITY);
    };
    reply::json(200, detailed_user(&reply::base_url(&headers), renamed))
}

/// `DELETE /rest/api/1.0/admin/users?name=u`: 200 with the deleted `RestDetailedUser`;
/// 404 for an unknown user.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `DELETE /api/latest/admin/users` (operationId `deleteUser`).
/// The document's 409 ("a user can not delete themselves") and 403 (an ADMIN deleting a
/// SYS_ADMIN) are not emulated.
async fn delete_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let Some(name) = params.get("name") else {
        return field_error("name", "The username is required.");
    };
    let account = tri!(writable_account(&state, name));
    let mut store = state.lock();
    store.remove_account(account.id);
    store.count_write("delete_account");
    reply::json(200, detailed_user(&reply::base_url(&headers), &account))
}

/// `GET /rest/api/1.0/admin/users/more-members?context=<username>&start&limit`: a page of
/// the user's groups as `RestDetailedGroup` (`{name, deletable}`); 404 for an unknown user.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `GET /api/latest/admin/users/more-members` (operationId `findGroupsForUser`).
/// (summary "Get groups for user"; the document's description and response schema there
/// are copied from the group-members operation and speak of users, a known mislabel).
async fn groups_of_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::LicensedUser));
    let Some(name) = params.get("context") else {
        return field_error("context", "The user is required.");
    };
    let store = state.lock();
    let Some(account) = store.account_by_name(name) else {
        return error(404, &format!("User {name} does not exist."), NO_SUCH_USER);
    };
    let groups: Vec<Value> = store
        .groups_of(account.id)
        .into_iter()
        .map(|group| json!({ "name": group.name, "deletable": group.deletable }))
        .collect();
    reply::json(200, tri!(page(&params, groups)))
}

/// `GET /rest/api/1.0/admin/groups?filter&start&limit`: a page of `RestDetailedGroup`
/// (`{name, deletable}`), `filter` a substring of the name; callers need `LICENSED_USER`.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `GET /api/latest/admin/groups` (operationId `getGroups_1`).
async fn list_groups(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::LicensedUser));
    let filter = params.get("filter").map(|f| f.to_lowercase());
    let store = state.lock();
    let groups: Vec<Value> = store
        .groups()
        .filter(|group| {
            filter
                .as_ref()
                .is_none_or(|filter| group.name.to_lowercase().contains(filter))
        })
        .map(|group| json!({ "name": group.name, "deletable": group.deletable }))
        .collect();
    reply::json(200, tri!(page(&params, groups)))
}

/// `POST /rest/api/1.0/admin/groups?name=g`: 200 with the `RestDetailedGroup`; 400 for a
/// missing name; 409 for a taken one.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `POST /api/latest/admin/groups` (operationId `createGroup`).
async fn create_group(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let name = params.get("name").map(|n| n.trim()).unwrap_or_default();
    if name.is_empty() {
        return field_error("name", "The group name is required.");
    }
    let mut store = state.lock();
    if store.group(name).is_some() {
        return error(
            409,
            &format!("A group named '{name}' already exists."),
            INTEGRITY,
        );
    }
    store.insert_group(name);
    store.count_write("create_group");
    reply::json(200, json!({ "name": name, "deletable": true }))
}

/// `DELETE /rest/api/1.0/admin/groups?name=g`: 200 with the deleted `RestDetailedGroup`;
/// 404 for an unknown group; 403 for a group that is not `deletable`.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `DELETE /api/latest/admin/groups` (operationId `deleteGroup`).
/// The document's 403 is for "a group with greater permissions" than the caller and its 409
/// for deleting "the last group that is granting them administrative permissions"; the
/// emulator's 403 uses the group's `deletable` flag instead and has no 409.
async fn delete_group(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let Some(name) = params.get("name") else {
        return field_error("name", "The group name is required.");
    };
    let mut store = state.lock();
    match store.group(name) {
        None => return error(404, &format!("Group {name} does not exist."), NO_SUCH_GROUP),
        Some(group) if !group.deletable => {
            return error(403, &format!("Group {name} cannot be deleted."), FORBIDDEN);
        }
        Some(_) => {}
    }
    let Some(group) = store.remove_group(name) else {
        return error(404, &format!("Group {name} does not exist."), NO_SUCH_GROUP);
    };
    store.count_write("delete_group");
    reply::json(
        200,
        json!({ "name": group.name, "deletable": group.deletable }),
    )
}

/// `GET /rest/api/1.0/admin/groups/more-members?context=<group>&filter&start&limit`: a page
/// of the group's members as `RestDetailedUser`; `filter` as for the user listing; 404 for
/// an unknown group.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `GET /api/latest/admin/groups/more-members` (operationId `findUsersInGroup`).
async fn group_members(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::LicensedUser));
    let Some(name) = params.get("context") else {
        return field_error("context", "The group is required.");
    };
    let base = reply::base_url(&headers);
    let store = state.lock();
    if store.group(name).is_none() {
        return error(404, &format!("Group {name} does not exist."), NO_SUCH_GROUP);
    }
    let filter = lowered_filter(&params);
    let users: Vec<&Account> = store
        .members(name)
        .into_iter()
        .filter(|account| user_matches(account, filter.as_deref()))
        .collect();
    let body = page_of(&params, users, |account| detailed_user(&base, account));
    reply::json(200, tri!(body))
}

/// Adds every (user, group) pair after checking they all exist and may change; all or none.
///
/// As the 8.14 OpenAPI document describes `add-groups` and `add-users`: 403 when "the action
/// was disallowed as it would exceed the server's licensing limit, or the groups permissions
/// exceed the authenticated user's permission level" (here: a group holding `SYS_ADMIN`
/// added to by a caller below `SYS_ADMIN`).
fn add_memberships(
    state: &StateHandle,
    caller: &Caller,
    users: &[&str],
    groups: &[&str],
) -> Response {
    let mut store = state.lock();
    let caller_permission = caller.bitbucket_permission(&store);
    let mut pairs = Vec::new();
    for user in users {
        let Some(account) = store.account_by_name(user) else {
            return error(404, &format!("User {user} does not exist."), NO_SUCH_USER);
        };
        if account.read_only {
            return error(
                403,
                &format!("The groups of {user} cannot be changed: its directory is read-only."),
                FORBIDDEN,
            );
        }
        for group in groups {
            let Some(group) = store.group(group) else {
                return error(
                    404,
                    &format!("Group {group} does not exist."),
                    NO_SUCH_GROUP,
                );
            };
            let granted = store.group_permission(&group.name);
            if granted == Some(GlobalPermission::SysAdmin) && caller_permission < granted {
                return error(
                    403,
                    &format!(
                        "You cannot add users to {}: its permissions exceed your own.",
                        group.name
                    ),
                    FORBIDDEN,
                );
            }
            let grants_licence =
                granted.is_some() || group.name.eq_ignore_ascii_case(DEFAULT_GROUP);
            if grants_licence
                && !licensed(&store, account.id)
                && account.active
                && seats_full(state, &store)
            {
                return license_limit(&format!(
                    "Adding {user} to {} would exceed the server's license limit.",
                    group.name
                ));
            }
            pairs.push((group.name.clone(), account.id));
        }
    }
    for (group, account_id) in pairs {
        if store.add_member(&group, account_id) {
            store.count_write("add_member");
        }
    }
    reply::empty(200)
}

/// `POST /rest/api/1.0/admin/users/add-groups` with `{user, groups:[…]}` (`UserAndGroups`):
/// 200 with no body once the user is in *all* the groups; 404 for an unknown user or group;
/// 403 beyond the licence or for a group above the caller's permission.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `POST /api/latest/admin/users/add-groups` (operationId `addUserToGroups`).
async fn add_user_to_groups(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let body = tri!(reply::object(&body).map_err(|m| field_error("body", &m)));
    let Some(user) = reply::text(&body, "user") else {
        return field_error("user", "The user is required.");
    };
    let groups: Vec<&str> = body
        .get("groups")
        .and_then(Value::as_array)
        .map(|groups| groups.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if groups.is_empty() {
        return field_error("groups", "At least one group is required.");
    }
    add_memberships(&state, &caller, &[user], &groups)
}

/// `POST /rest/api/1.0/admin/groups/add-users` with `{group, users:[…]}` (`GroupAndUsers`):
/// 200 with no body once *all* the users are in the group; errors as for `add-groups`.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `POST /api/latest/admin/groups/add-users` (operationId `addUsersToGroup`).
async fn add_users_to_group(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let body = tri!(reply::object(&body).map_err(|m| field_error("body", &m)));
    let Some(group) = reply::text(&body, "group") else {
        return field_error("group", "The group is required.");
    };
    let users: Vec<&str> = body
        .get("users")
        .and_then(Value::as_array)
        .map(|users| users.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if users.is_empty() {
        return field_error("users", "At least one user is required.");
    }
    add_memberships(&state, &caller, &users, &[group])
}

/// `POST /rest/api/1.0/admin/users/remove-group` with `{context: <user>, itemName: <group>}`
/// (`GroupPickerContext`): 200 with no body (also when the user was not a member); 404 for
/// an unknown user or group; 403 for a read-only user.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document
/// (`shared/reference/specs/bitbucket-server-8.14.openapi.yaml`), "Permission Management",
/// `POST /api/latest/admin/users/remove-group` (operationId `removeGroupFromUser`).
/// The document's 403 is for a group with "a higher permission level than the context
/// user"; the emulator's 403 is for a user of a read-only directory.
async fn remove_user_from_group(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let body = tri!(reply::object(&body).map_err(|m| field_error("body", &m)));
    let (Some(user), Some(group)) = (
        reply::text(&body, "context"),
        reply::text(&body, "itemName"),
    ) else {
        return field_error(
            "context",
            "Both context (the user) and itemName (the group) are required.",
        );
    };
    let mut store = state.lock();
    let Some(account) = store.account_by_name(user).cloned() else {
        return error(404, &format!("User {user} does not exist."), NO_SUCH_USER);
    };
    let Some(group) = store.group(group).map(|group| group.name.clone()) else {
        return error(
            404,
            &format!("Group {group} does not exist."),
            NO_SUCH_GROUP,
        );
    };
    if account.read_only {
        return error(
            403,
            &format!("The groups of {user} cannot be changed: its directory is read-only."),
            FORBIDDEN,
        );
    }
    if store.remove_member(&group, account.id) {
        store.count_write("remove_member");
    }
    reply::empty(200)
}

/// `filter`: a case-insensitive substring of a user's or group's name (the `filter` of
/// `getUsersWithAnyPermission` / `getGroupsWithAnyPermission` in the 8.14 OpenAPI document).
fn name_matches(name: &str, filter: Option<&String>) -> bool {
    filter.is_none_or(|filter| name.to_lowercase().contains(&filter.to_lowercase()))
}

/// `GET /admin/permissions/users?filter&start&limit`: a page of the users granted a global
/// permission, each with its highest, `{"user": RestApplicationUser, "permission": …}`.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document, "Permission Management",
/// `GET /api/latest/admin/permissions/users` (`getUsersWithAnyPermission`): `filter` keeps
/// the user names containing it, the usual paging, and callers need ADMIN or higher (every
/// emulated caller has SYS_ADMIN; an anonymous one is answered 401, as documented). The
/// document gives the entries the group schema by mistake; they are `RestPermittedUser`,
/// as its description ("a page of users and their highest global permissions") says.
async fn permitted_users(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let users: Vec<Value> = store
        .permitted_users()
        .into_iter()
        .filter(|(account, _)| name_matches(&account.name, params.get("filter")))
        .map(|(account, permission)| {
            json!({ "user": application_user(&base, account), "permission": permission })
        })
        .collect();
    reply::json(200, tri!(page(&params, users)))
}

/// `GET /admin/permissions/groups?filter&start&limit`: a page of the groups granted a
/// global permission, each with its highest, `{"group": {"name": …}, "permission": …}`.
///
/// Follows Atlassian's Bitbucket Server 8.14 OpenAPI document, "Permission Management",
/// `GET /api/latest/admin/permissions/groups` (`getGroupsWithAnyPermission`, entries
/// `RestPermittedGroup`): `filter` keeps the group names containing it, the usual paging,
/// and callers need ADMIN or higher (an anonymous one is answered 401, as documented).
async fn permitted_groups(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require(&state, &caller, GlobalPermission::Admin));
    let store = state.lock();
    let groups: Vec<Value> = store
        .permitted_groups()
        .into_iter()
        .filter(|(group, _)| name_matches(&group.name, params.get("filter")))
        .map(|(group, permission)| {
            json!({ "group": { "name": group.name }, "permission": permission })
        })
        .collect();
    reply::json(200, tri!(page(&params, groups)))
}
