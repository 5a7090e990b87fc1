//! Confluence Data Center's user and group endpoints under `/rest/api` (admin endpoints as in
//! 8.4+).
//!
//! Errors are `{"statusCode","data":{…},"message","reason"}`. Listings are
//! `{results,start,limit,size,_links{base,context,self,next?}}`, at most 200 per page. A bad
//! bearer token is the anonymous user (the gate sees to that): `/user/current` answers it with
//! 200, everything else with 403. Reads need a signed-in caller; the `admin` endpoints and
//! membership changes need a Confluence administrator (403 otherwise). Deleting a user
//! answers 202 and a long task that finishes on its second poll (or after half a second),
//! reported in Data Center's shape (see [`long_task`]); the user goes when the task
//! finishes. Creating a user beyond the licence seats answers 402. The licence REST module
//! (`/rest/license/1.0/license/userCount` and `…/maxUsers`, administrators only) reports the
//! seats.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::access::Caller;
use crate::reply::{self, Params};
use crate::store::{Account, StateHandle};

/// The largest page Confluence serves, and the default `limit` of the group listings
/// (Confluence DC REST reference, "Group", "Get groups": `limit` defaults to 200).
const PAGE_MAX: usize = 200;

pub(crate) fn routes() -> Router<StateHandle> {
    let api = Router::new()
        .route("/user/current", get(current_user))
        .route("/user", get(get_user))
        .route("/user/list", get(list_users))
        .route("/user/memberof", get(member_of))
        .route(
            "/user/{username}/group/{group}",
            put(add_member).delete(remove_member),
        )
        .route("/group", get(list_groups))
        .route("/group/{group}", get(get_group))
        .route("/group/{group}/member", get(group_members))
        .route("/admin/user", post(create_user))
        .route(
            "/admin/user/{username}",
            put(update_user).delete(delete_user),
        )
        .route("/admin/user/{username}/disable", put(disable_user))
        .route("/admin/user/{username}/enable", put(enable_user))
        .route("/admin/group", post(create_group))
        .route("/admin/group/{group}", axum::routing::delete(delete_group))
        .route("/admin/users/list/active", get(active_users))
        .route("/longtask/{id}", get(long_task));
    let license = Router::new()
        .route("/userCount", get(license_user_count))
        .route("/maxUsers", get(license_max_users));
    Router::new()
        .nest("/rest/api", api)
        .nest("/rest/license/1.0/license", license)
}

/// Confluence's error shape: `{"statusCode", "data":{"authorized","valid","errors",
/// "successful"}, "message", "reason"}` (the v1 REST error body, shown in
/// <https://developer.atlassian.com/cloud/confluence/rest/intro/>, the same in Data Center).
pub(crate) fn error(status: u16, message: &str) -> Response {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Error");
    reply::json(
        status,
        json!({
            "statusCode": status,
            "data": {
                "authorized": !matches!(status, 401 | 403),
                "valid": status != 400,
                "errors": [],
                "successful": false,
            },
            "message": message,
            "reason": reason,
        }),
    )
}

/// A signed-in caller, or Confluence's 403 for the anonymous user (the REST reference lists
/// 403, not 401, for the user and group reads when the caller may not view users).
fn require_user(caller: &Caller) -> Result<(), Response> {
    if caller.is_anonymous() {
        return Err(error(
            403,
            "Anonymous users are not permitted to use this resource.",
        ));
    }
    Ok(())
}

/// A Confluence administrator, or 403 (the REST reference's 403 on the "Admin User" and
/// "Admin Group" methods).
fn require_admin(state: &StateHandle, caller: &Caller) -> Result<(), Response> {
    require_user(caller)?;
    if !caller.confluence_admin(&state.lock()) {
        return Err(error(
            403,
            "This resource needs the Confluence Administrator permission.",
        ));
    }
    Ok(())
}

fn person(base: &str, account: &Account, expand: Option<&String>) -> Value {
    let mut person = json!({
        "type": "known",
        "username": account.name,
        "userKey": account.key,
        "profilePicture": {
            "path": "/images/icons/profilepics/default.svg",
            "width": 48, "height": 48, "isDefault": true,
        },
        "displayName": account.display_name,
        "_links": { "self": format!("{base}/rest/api/user?key={}", account.key) },
    });
    if expand.is_some_and(|expand| expand.split(',').any(|item| item.trim() == "status")) {
        person["status"] = json!(if account.active {
            "Active"
        } else {
            "Deactivated"
        });
    } else {
        person["_expandable"] = json!({ "status": "" });
    }
    person
}

fn group_json(base: &str, name: &str) -> Value {
    json!({
        "type": "group",
        "name": name,
        "_links": { "self": format!("{base}/rest/api/group/{name}") },
    })
}

/// One page of `items` (already the whole list) from `start`, with a `next` link when more
/// follow: `{results, start, limit, size, _links:{base, context, self, next?}}`, the paged
/// envelope of Confluence's REST reference (e.g. "Group", "Get groups"); clients loop until
/// `_links.next` is absent. `limit` is capped server-side at [`PAGE_MAX`].
fn page(base: &str, path: &str, params: &Params, items: Vec<Value>) -> Result<Value, Response> {
    page_of(base, path, params, items, |item| item)
}

/// [`page`] of items rendered by `render`, only those on the page: a listing of 100,000
/// people renders one page of them per request, not all of them.
fn page_of<T>(
    base: &str,
    path: &str,
    params: &Params,
    items: Vec<T>,
    render: impl FnMut(T) -> Value,
) -> Result<Value, Response> {
    let start = reply::number(params, "start", 0).map_err(|m| error(400, &m))?;
    let limit = reply::number(params, "limit", PAGE_MAX)
        .map_err(|m| error(400, &m))?
        .clamp(1, PAGE_MAX);
    let total = items.len();
    let results: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(limit)
        .map(render)
        .collect();
    let size = results.len();
    let mut links = json!({
        "base": base,
        "context": "",
        "self": format!("{base}{path}"),
    });
    if start + size < total {
        let separator = if path.contains('?') { '&' } else { '?' };
        links["next"] = json!(format!(
            "{path}{separator}start={}&limit={limit}",
            start + size
        ));
    }
    Ok(json!({
        "results": results,
        "start": start,
        "limit": limit,
        "size": size,
        "_links": links,
    }))
}

/// `GET /rest/api/user/current`: the caller as a Person; the anonymous user (which a bad
/// bearer token becomes) is answered 200 with `"type":"anonymous"`, not 401.
///
/// Follows Confluence Data Center's REST reference, "User", `GET /rest/api/user/current`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-user>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>). The 200-as-anonymous for an invalid
/// personal access token is Atlassian Community's "Identify incorrect Personal Access Token"
/// (<https://community.atlassian.com/t5/Confluence-questions/Identify-incorrect-Personal-Access-Token/qaq-p/2094301>).
async fn current_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let base = reply::base_url(&headers);
    if caller.is_anonymous() {
        return reply::json(
            200,
            json!({
                "type": "anonymous",
                "profilePicture": {
                    "path": "/images/icons/profilepics/anonymous.svg",
                    "width": 48, "height": 48, "isDefault": true,
                },
                "displayName": "Anonymous",
                "_links": { "self": format!("{base}/rest/api/user/anonymous") },
            }),
        );
    }
    if let Caller::Account { login, .. } = &caller {
        let store = state.lock();
        if let Some(account) = store.account_by_name(login) {
            return reply::json(200, person(&base, account, None));
        }
    }
    let name = caller.login(state.config()).unwrap_or_default();
    reply::json(
        200,
        json!({
            "type": "known",
            "username": name,
            "userKey": "8a7f808a00000000000000000000admin",
            "displayName": "Administrator",
            "_links": { "self": format!("{base}/rest/api/user?username={name}") },
        }),
    )
}

/// `GET /rest/api/user?username=X` (or `key=`), `expand=status`: one Person; 403 for the
/// anonymous user, 404 for an unknown user, 400 when neither parameter is given.
///
/// Follows Confluence Data Center's REST reference, "User", `GET /rest/api/user`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-user>;
/// also <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
async fn get_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_user(&caller));
    let store = state.lock();
    let account = if let Some(name) = params.get("username") {
        store.account_by_name(name)
    } else if let Some(key) = params.get("key") {
        store.account_by_key(key)
    } else {
        return error(400, "A username or key is required.");
    };
    let Some(account) = account else {
        return error(404, "No user found with the given username or key.");
    };
    reply::json(
        200,
        person(&reply::base_url(&headers), account, params.get("expand")),
    )
}

/// `GET /rest/api/user/list?start&limit&expand=status`: a page of every registered user,
/// disabled and unlicensed ones included.
///
/// Follows Confluence Data Center's REST reference, "User", `GET /rest/api/user/list`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-user>;
/// also <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
/// Added in 8.4 (CONFSERVER-87291, "retrieve all users (including inactive)").
async fn list_users(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_user(&caller));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let people: Vec<&Account> = store.accounts().collect();
    let body = tri!(page_of(
        &base,
        "/rest/api/user/list",
        &params,
        people,
        |account| person(&base, account, params.get("expand"))
    ));
    reply::json(200, body)
}

/// `GET /rest/api/user/memberof?username=X&start&limit`: a page of the user's groups.
///
/// Follows Confluence Data Center's REST reference, "User", `GET /rest/api/user/memberof`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-user>;
/// also <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
async fn member_of(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_user(&caller));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let Some(account) = params
        .get("username")
        .and_then(|name| store.account_by_name(name))
    else {
        return error(404, "No user found with the given username.");
    };
    let groups: Vec<Value> = store
        .groups_of(account.id)
        .into_iter()
        .map(|group| group_json(&base, &group.name))
        .collect();
    let path = format!("/rest/api/user/memberof?username={}", account.name);
    let body = tri!(page(&base, &path, &params, groups));
    reply::json(200, body)
}

/// `GET /rest/api/group?start&limit`: a page of `{type:"group", name}`, 200 per page by
/// default.
///
/// Follows Confluence Data Center's REST reference, "Group", "Get groups"
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-group>;
/// also <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
async fn list_groups(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_user(&caller));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let groups: Vec<Value> = store
        .groups()
        .map(|group| group_json(&base, &group.name))
        .collect();
    let body = tri!(page(&base, "/rest/api/group", &params, groups));
    reply::json(200, body)
}

/// `GET /rest/api/group/{groupName}`: one group; 404 for an unknown one.
///
/// Follows Confluence Data Center's REST reference, "Group", "Get group by name"
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-group>;
/// also <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
async fn get_group(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Response {
    tri!(require_user(&caller));
    let store = state.lock();
    let Some(group) = store.group(&group) else {
        return error(404, &format!("No group found with name: {group}"));
    };
    reply::json(200, group_json(&reply::base_url(&headers), &group.name))
}

/// `GET /rest/api/group/{groupName}/member?start&limit&expand=status`: a page of the
/// group's direct members as Persons (nested members are `/groupmember`'s, not emulated).
///
/// Follows Confluence Data Center's REST reference, "Group", `GET
/// /rest/api/group/{groupName}/member`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-group>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
async fn group_members(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(group): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_user(&caller));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let Some(group) = store.group(&group) else {
        return error(404, &format!("No group found with name: {group}"));
    };
    let people = store.members(&group.name);
    let path = format!("/rest/api/group/{}/member", group.name);
    let body = tri!(page_of(&base, &path, &params, people, |account| {
        person(&base, account, params.get("expand"))
    }));
    reply::json(200, body)
}

/// `createUser`'s documented validation of the user name (Confluence DC REST reference,
/// "Admin User", "Create user", validation rules).
fn invalid_username(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        return Some("Username should not be blank.");
    }
    if name != name.to_lowercase() {
        return Some("Username should be in lower case.");
    }
    if name.chars().any(char::is_whitespace) {
        return Some("Username should not contain whitespace.");
    }
    if name.chars().any(|c| "\\,+<>'\"".contains(c)) {
        return Some("Username should not contain any of these characters: \\ , + < > ' \"");
    }
    if name == "anonymous" {
        return Some("Username 'anonymous' is reserved.");
    }
    None
}

/// `POST /rest/api/admin/user` with `{userName, fullName, email, password}` or
/// `{userName, fullName, email, notifyViaEmail:true}`: 201 `{"userKey": …}`; 400 for the
/// documented validation rules; 409 for a taken user name; 402 when the licence has no seat.
///
/// Follows Confluence Data Center's REST reference, "Admin User", "Create user"
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-admin-user>;
/// also <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
/// The validation rules (user name not blank, lower case, no whitespace, none of
/// `\ , + < > ' "`, not `anonymous`; full name not blank and without `<>`; a valid email;
/// a password unless `notifyViaEmail`) are that method's. Added in 8.4 (CONFSERVER-87292).
async fn create_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    tri!(require_admin(&state, &caller));
    let body = tri!(reply::object(&body).map_err(|m| error(400, &m)));
    let name = reply::text(&body, "userName").unwrap_or_default();
    let full_name = reply::text(&body, "fullName").unwrap_or_default().trim();
    let email = reply::text(&body, "email").unwrap_or_default().trim();
    let password = reply::text(&body, "password").unwrap_or_default();
    let notify = body
        .get("notifyViaEmail")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(message) = invalid_username(name) {
        return error(400, message);
    }
    if full_name.is_empty() || full_name.contains(['<', '>']) {
        return error(400, "Full name should not be blank or contain < or >.");
    }
    if !email.contains('@') {
        return error(400, "Email address is not valid.");
    }
    if notify != password.is_empty() {
        return error(
            400,
            "A password is required if and only if notifyViaEmail is false.",
        );
    }
    let mut store = state.lock();
    if store.account_by_name(name).is_some() {
        return error(
            409,
            &format!("A user with username '{name}' already exists."),
        );
    }
    if let Some(seats) = state.config().license_seats
        && store.n_active_accounts() >= seats
    {
        return error(402, "The licence has no seat left for a new user.");
    }
    let id = store.insert_account(name, full_name, email);
    store.count_write("create_account");
    let Some(account) = store.account(id) else {
        return error(500, "The new user vanished.");
    };
    reply::json(201, json!({ "userKey": account.key }))
}

/// The account named in the path (404 when unknown, as the "Admin User" methods document),
/// refusing read-only ones with 403 (an emulator choice: the reference documents no answer
/// for a user of a read-only directory).
fn writable_account(state: &StateHandle, username: &str) -> Result<Account, Response> {
    let store = state.lock();
    let Some(account) = store.account_by_name(username) else {
        return Err(error(
            404,
            &format!("No user found with username: {username}"),
        ));
    };
    if account.read_only {
        return Err(error(403, "The user is in a read-only directory."));
    }
    Ok(account.clone())
}

/// `PUT /rest/api/admin/user/{username}` with `{email, fullName}` (`UserDetailsForUpdate`):
/// 204 with no body; 400 for an invalid email or full name; 404 unknown user; 403 for a
/// read-only (external directory) user.
///
/// Follows Confluence Data Center's REST reference, "Admin User", `PUT
/// /rest/api/admin/user/{username}`
/// (<https://developer.atlassian.com/server/confluence/rest/v1010/api-group-admin-user>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>). (listed in the 10.x reference; the
/// 204 is the emulator's reading of "2xx, no body").
async fn update_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
    body: Bytes,
) -> Response {
    tri!(require_admin(&state, &caller));
    let body = tri!(reply::object(&body).map_err(|m| error(400, &m)));
    let account = tri!(writable_account(&state, &username));
    let email = reply::text(&body, "email").map(str::trim);
    let full_name = reply::text(&body, "fullName").map(str::trim);
    if email.is_some_and(|email| !email.contains('@')) {
        return error(400, "Email address is not valid.");
    }
    if full_name.is_some_and(|name| name.is_empty() || name.contains(['<', '>'])) {
        return error(400, "Full name should not be blank or contain < or >.");
    }
    let mut store = state.lock();
    if let Some(stored) = store.account_mut(account.id) {
        if let Some(email) = email {
            stored.email = email.to_owned();
        }
        if let Some(full_name) = full_name {
            stored.display_name = full_name.to_owned();
        }
    }
    store.count_write("update_account");
    reply::empty(204)
}

fn set_active(state: &StateHandle, username: &str, active: bool) -> Response {
    let account = tri!(writable_account(state, username));
    let mut store = state.lock();
    if account.active != active {
        if let Some(stored) = store.account_mut(account.id) {
            stored.active = active;
        }
        store.count_write(if active {
            "reactivate_account"
        } else {
            "deactivate_account"
        });
    }
    reply::empty(204)
}

/// `PUT /rest/api/admin/user/{username}/disable`: 204, idempotent; 404 unknown user.
///
/// Follows Confluence Data Center's REST reference, "Admin User", `PUT
/// /rest/api/admin/user/{username}/disable`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-admin-user>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>). (CONFSERVER-54928).
async fn disable_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
) -> Response {
    tri!(require_admin(&state, &caller));
    set_active(&state, &username, false)
}

/// `PUT /rest/api/admin/user/{username}/enable`: 204, idempotent; 404 unknown user.
///
/// Follows Confluence Data Center's REST reference, "Admin User", `PUT
/// /rest/api/admin/user/{username}/enable`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-admin-user>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>). (CONFSERVER-54928).
async fn enable_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
) -> Response {
    tri!(require_admin(&state, &caller));
    set_active(&state, &username, true)
}

/// `DELETE /rest/api/admin/user/{username}`: 202 with a `LongTaskSubmission`
/// `{id, links:{status}}`; the user goes when the long task (see [`long_task`]) finishes.
///
/// Follows Confluence Data Center's REST reference, "Admin User", `DELETE
/// /rest/api/admin/user/{username}`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-admin-user>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>). (CONFSERVER-54928).
async fn delete_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let account = tri!(writable_account(&state, &username));
    let task_id = state.lock().submit_long_task(account.id, Instant::now());
    reply::json(
        202,
        json!({ "id": task_id, "links": { "status": format!("/rest/api/longtask/{task_id}") } }),
    )
}

/// `GET /rest/api/longtask/{id}`: the status of a long task, in Data Center's shape
/// `{id, name, elapsedTime, percentageComplete, successful, messages}`, with no `finished`
/// (that field is Confluence Cloud's). The task is done when `percentageComplete` is 100;
/// `successful` says how it ended.
///
/// Follows Confluence Data Center's REST reference, "Long Task", "Get task by ID" (v911 and
/// later; the response is a `LongTaskStatus`), and the `LongTaskStatus` javadoc
/// (`getId`, `getName`, `getElapsedTime`, `getPercentageComplete`, `isSuccessful`,
/// `getMessages`; no `isFinished`).
/// <https://developer.atlassian.com/server/confluence/rest/v922/api-group-long-task>.
async fn long_task(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Path(task_id): Path<String>,
) -> Response {
    tri!(require_user(&caller));
    let now = Instant::now();
    let mut store = state.lock();
    let Some(task) = store.long_tasks.get_mut(&task_id) else {
        return error(404, &format!("No long task found with id: {task_id}"));
    };
    task.polls += 1;
    store.settle_long_tasks(now);
    let Some(task) = store.long_tasks.get(&task_id) else {
        return error(404, &format!("No long task found with id: {task_id}"));
    };
    reply::json(
        200,
        json!({
            "id": task_id,
            "name": { "key": "com.atlassian.confluence.user.delete.longtask", "args": [] },
            "elapsedTime": (now - task.submitted).as_millis() as u64,
            "percentageComplete": if task.finished { 100 } else { 50 },
            "successful": task.finished,
            "messages": [],
        }),
    )
}

/// `GET /rest/api/admin/users/list/active?start&limit`: a page of the active users, those
/// that count into the licence; for Confluence administrators only.
///
/// Follows Confluence Data Center's REST reference (v940 and later), "Admin Users", "Get
/// active users": "a paginated collection of all active users (users which count into license
/// usage)", excluding deactivated ones. The emulator counts every active account.
/// <https://developer.atlassian.com/server/confluence/rest/v1010/api-group-admin-users>.
/// CONFSERVER-37100 names a `/rest/api/user/list/active` (9.3) instead.
async fn active_users(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let people: Vec<&Account> = store.accounts().filter(|account| account.active).collect();
    let body = tri!(page_of(
        &base,
        "/rest/api/admin/users/list/active",
        &params,
        people,
        |account| person(&base, account, params.get("expand"))
    ));
    reply::json(200, body)
}

/// What `maxUsers` answers for an unlimited licence: `Integer.MAX_VALUE` (the javadoc of
/// `com.atlassian.confluence.license.rest.service.UserCountService.getLicenseMaxUsers`: "If
/// this instance has an unlimited license then the result would be Integer.MAX_VALUE").
const UNLIMITED_MAX_USERS: i64 = i32::MAX as i64;

/// `GET /rest/license/1.0/license/userCount`: `{"count": n}`, the active accounts (those the
/// licence counts; the same count a create is refused 402 beyond).
///
/// Follows the javadoc of `com.atlassian.confluence.license.rest.resource.UserCountResource`
/// (and `LicenseResource`), Confluence 5.1 to 6.5: `getUserCount` "Return the number of users
/// that have access to this Confluence", its body a `UserCountResourceModel(Integer count)`;
/// the path is the one Atlassian's CONFSERVER-37100 gives. That "users that have access" are
/// the active ones follows Confluence's licence count, which leaves deactivated users out.
/// Administrators only: an emulator choice, like the other admin endpoints here (the
/// resource takes a `PermissionManager`; the documents do not say whom it admits).
async fn license_user_count(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let count = state.lock().n_active_accounts();
    reply::json(200, json!({ "count": count }))
}

/// `GET /rest/license/1.0/license/maxUsers`: `{"count": n}`, the licence's seats
/// ([`Config::license_seats`](crate::Config::license_seats)), or `Integer.MAX_VALUE` for an
/// unlimited licence (`None`).
///
/// Follows the same javadoc: `UserCountResource.getMaxUsers` "Return the number of users that
/// is allowed by the current license", a `UserCountResourceModel`;
/// `UserCountService.getLicenseMaxUsers` for the unlimited answer. Administrators only, as
/// for `userCount`.
async fn license_max_users(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let count = state
        .config()
        .license_seats
        .and_then(|seats| i64::try_from(seats).ok())
        .map_or(UNLIMITED_MAX_USERS, |seats| seats.min(UNLIMITED_MAX_USERS));
    reply::json(200, json!({ "count": count }))
}

/// `POST /rest/api/admin/group` with `{"name":"g"}`: 201 with the group; 400 for a blank
/// name; 409 for a taken one.
///
/// Follows Confluence Data Center's REST reference, "Admin Group", `POST /rest/api/admin/group`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-admin-group>;
/// also <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
/// (CONFSERVER-57988).
async fn create_group(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    tri!(require_admin(&state, &caller));
    let body = tri!(reply::object(&body).map_err(|m| error(400, &m)));
    let name = reply::text(&body, "name")
        .unwrap_or_default()
        .trim()
        .to_owned();
    if name.is_empty() {
        return error(400, "Group name should not be blank.");
    }
    let mut store = state.lock();
    if store.group(&name).is_some() {
        return error(409, &format!("Group with name '{name}' already exists."));
    }
    store.insert_group(&name);
    store.count_write("create_group");
    reply::json(201, group_json(&reply::base_url(&headers), &name))
}

/// `DELETE /rest/api/admin/group/{groupName}`: 204; 404 for an unknown group.
///
/// Follows Confluence Data Center's REST reference, "Admin Group", `DELETE
/// /rest/api/admin/group/{groupName}`
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-admin-group>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>). (CONFSERVER-57988). Confluence's 400
/// for deleting the last administrators' group is not emulated.
async fn delete_group(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let mut store = state.lock();
    if store.remove_group(&group).is_none() {
        return error(404, &format!("No group found with name: {group}"));
    }
    store.count_write("delete_group");
    reply::empty(204)
}

/// The account and group of a membership call, or the 404/403 answer.
fn membership_target(
    state: &StateHandle,
    username: &str,
    group: &str,
) -> Result<(u64, String), Response> {
    let account = writable_account(state, username)?;
    let store = state.lock();
    let Some(group) = store.group(group) else {
        return Err(error(404, &format!("No group found with name: {group}")));
    };
    Ok((account.id, group.name.clone()))
}

/// `PUT /rest/api/user/{username}/group/{groupName}`: 204, idempotent (adding a member
/// again is no error); 404 unknown user or group; 403 for a read-only user.
///
/// Follows Confluence Data Center's REST reference, "User Group", "Update user group" (`PUT
/// /rest/api/user/{username}/group/{groupName}`: "This method is idempotent")
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-user-group>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
async fn add_member(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Path((username, group)): Path<(String, String)>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let (account_id, group) = tri!(membership_target(&state, &username, &group));
    let mut store = state.lock();
    if store.add_member(&group, account_id) {
        store.count_write("add_member");
    }
    reply::empty(204)
}

/// `DELETE /rest/api/user/{username}/group/{groupName}`: 204, idempotent; 404 unknown user
/// or group; 403 for a read-only user.
///
/// Follows Confluence Data Center's REST reference, "User Group", "Delete user group" (`DELETE
/// /rest/api/user/{username}/group/{groupName}`)
/// (<https://developer.atlassian.com/server/confluence/rest/v922/api-group-user-group>; also
/// <https://docs.atlassian.com/ConfluenceServer/rest/8.5.0/>).
async fn remove_member(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Path((username, group)): Path<(String, String)>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let (account_id, group) = tri!(membership_target(&state, &username, &group));
    let mut store = state.lock();
    if store.remove_member(&group, account_id) {
        store.count_write("remove_member");
    }
    reply::empty(204)
}
