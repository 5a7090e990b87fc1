//! Jira Data Center's user and group endpoints under `/rest/api/2` (and `/rest/api/latest`).
//!
//! Errors are `{"errorMessages":[…],"errors":{field: message}}`. Usernames are stored lower
//! case; users are addressed by `username=` or `key=`. Version behaviour follows
//! [`JiraVersion`](crate::JiraVersion): 10.3 has the `/user/list` cursor endpoint and caps
//! `/user/search` at 100; 10.1 caps `/user/search` at 100 too but has no `/user/list`; 9.12
//! has no `/user/list` and stops `/user/search` at the first 1,000 users. `group/member`
//! pages 50 at most. A 400 answers an add of an existing member.
//!
//! Rights: reading users and groups needs a signed-in caller (401 otherwise); writes and
//! `group/member` need the `ADMINISTER` global permission (403 otherwise);
//! `mypermissions` answers anyone what it holds (the `access` module says who holds what).
//!
//! Jira's own rules on usernames and on deactivating or deleting a project or component
//! lead are in `jira_rules`; projects, components and application roles in `jira_projects`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::http::header::LOCATION;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::access::Caller;
use crate::reply::{self, Params};
use crate::store::{Account, StateHandle, Store};
use crate::{JiraVersion, jira_projects, jira_rules};

/// `/user/search` in 9.x never looks past the first 1,000 users (JRASERVER-65089,
/// JSWSERVER-21156).
const SEARCH_CAP_9: usize = 1000;
/// `/user/search` in 10.x answers at most 100 users and ignores `startAt` (JRASERVER-78520,
/// JRASERVER-78660).
const SEARCH_CAP_10: usize = 100;
/// `/user/list`'s default page ("defaults to 2000": Jira 10.3 REST reference, `GET
/// /rest/api/2/user/list`, as carried by jira.js `getUserList`).
const USER_LIST_DEFAULT: usize = 2000;
/// `group/member`'s default and largest page (Jira REST reference,
/// `group-getUsersFromGroup`: `maxResults` defaults to 50; that 50 is also the largest page
/// is unverified).
const MEMBER_PAGE_MAX: usize = 50;

pub(crate) fn routes() -> Router<StateHandle> {
    let api = Router::new()
        .route("/serverInfo", get(server_info))
        .route("/myself", get(myself))
        .route("/mypermissions", get(my_permissions))
        .route(
            "/user",
            get(get_user)
                .post(create_user)
                .put(update_user)
                .delete(delete_user),
        )
        .route("/user/search", get(search_users))
        .route("/user/list", get(list_users))
        .route("/groups/picker", get(pick_groups))
        .route("/group", post(create_group).delete(delete_group))
        .route("/group/member", get(group_members))
        .route("/group/user", post(add_member).delete(remove_member))
        .merge(jira_projects::routes());
    Router::new()
        .nest("/rest/api/2", api.clone())
        .nest("/rest/api/latest", api)
}

/// Jira's error shape with one message: `{"errorMessages":[…],"errors":{}}` (the shape of
/// Jira's REST reference's error responses; example in JRASERVER-36639).
pub(crate) fn error(status: u16, message: &str) -> Response {
    reply::json(status, json!({ "errorMessages": [message], "errors": {} }))
}

/// Jira's error shape with one field error: `{"errorMessages":[],"errors":{field: message}}`
/// (Jira REST reference, `ErrorCollection`).
fn field_error(field: &str, message: &str) -> Response {
    reply::json(
        400,
        json!({ "errorMessages": [], "errors": { field: message } }),
    )
}

/// A signed-in caller, or Jira's 401 (the REST reference lists 401 for an unauthenticated
/// caller on the `api/2/user` and `api/2/group` resources; jira.js `getUserList`: "cannot be
/// accessed anonymously").
pub(crate) fn require_user(caller: &Caller) -> Result<(), Response> {
    if caller.is_anonymous() {
        return Err(error(
            401,
            "You are not authenticated. Authentication required to perform this operation.",
        ));
    }
    Ok(())
}

/// A caller holding `ADMINISTER`: 401 for nobody, 403 for a caller without it (the REST
/// reference lists 403 for a caller without administrator rights on the user and group write
/// methods and on `group-getUsersFromGroup`).
pub(crate) fn require_admin(state: &StateHandle, caller: &Caller) -> Result<(), Response> {
    require_user(caller)?;
    if !caller.jira_administer(&state.lock()) {
        return Err(error(
            403,
            "You do not have the permission to perform this operation: it needs the Jira Administrators global permission.",
        ));
    }
    Ok(())
}

pub(crate) fn user_json(base: &str, account: &Account, groups: Option<Vec<&str>>) -> Value {
    let mut user = json!({
        "self": format!("{base}/rest/api/2/user?username={}", account.name),
        "key": account.key,
        "name": account.name,
        "emailAddress": account.email,
        "avatarUrls": {},
        "displayName": account.display_name,
        "active": account.active,
        "deleted": false,
        "timeZone": "UTC",
        "locale": "en_US",
        "expand": "groups,applicationRoles",
    });
    if let Some(groups) = groups {
        let items: Vec<Value> = groups
            .iter()
            .map(|name| json!({ "name": name, "self": format!("{base}/rest/api/2/group?groupname={name}") }))
            .collect();
        user["groups"] = json!({ "size": items.len(), "items": items });
    }
    user
}

fn group_json(base: &str, name: &str) -> Value {
    json!({
        "name": name,
        "self": format!("{base}/rest/api/2/group?groupname={name}"),
        "users": { "size": 0, "items": [], "max-results": 50, "start-index": 0, "end-index": 0 },
        "expand": "users",
    })
}

/// The user a `username=` or `key=` parameter names, or Jira's 404 (`user-getUser` etc.
/// accept either parameter: JRASERVER-68189).
fn find_user<'a>(store: &'a Store, params: &Params) -> Result<&'a Account, Response> {
    if let Some(name) = params.get("username") {
        return store
            .account_by_name(name)
            .ok_or_else(|| error(404, &format!("The user named '{name}' does not exist")));
    }
    if let Some(key) = params.get("key") {
        return store.account_by_key(key).ok_or_else(|| {
            error(
                404,
                &format!("The user with the key '{key}' does not exist"),
            )
        });
    }
    Err(error(
        400,
        "Either the 'username' or the 'key' query parameter is required.",
    ))
}

/// `GET /rest/api/2/serverInfo`: the version the emulator plays (`version`,
/// `versionNumbers`, `deploymentType`, `buildNumber`, `baseUrl`, `serverTitle`); no
/// authentication needed.
///
/// Follows Jira Data Center's REST reference, resource `api/2/serverInfo`, method `getServerInfo`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/serverInfo-getServerInfo>).
async fn server_info(State(state): State<StateHandle>, headers: HeaderMap) -> Response {
    let numbers = state.config().jira_version.version_numbers();
    reply::json(
        200,
        json!({
            "baseUrl": reply::base_url(&headers),
            "version": format!("{}.{}.{}", numbers[0], numbers[1], numbers[2]),
            "versionNumbers": numbers,
            "deploymentType": "Server",
            "buildNumber": numbers[0] * 100_000 + numbers[1] * 1_000,
            "serverTitle": "Jira (keysync emulator)",
        }),
    )
}

/// `GET /rest/api/2/myself`: the signed-in caller as a UserBean; 401 for nobody.
///
/// Follows Jira Data Center's REST reference, resource `api/2/myself`, method `getUser`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/myself-getUser>).
async fn myself(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    tri!(require_user(&caller));
    let base = reply::base_url(&headers);
    if let Caller::Account { login, .. } = &caller {
        let store = state.lock();
        if let Some(account) = store.account_by_name(login) {
            return reply::json(200, user_json(&base, account, None));
        }
    }
    let name = caller.login(state.config()).unwrap_or_default();
    reply::json(
        200,
        json!({
            "self": format!("{base}/rest/api/2/user?username={name}"),
            "key": name, "name": name, "displayName": "Administrator",
            "emailAddress": "admin@example.com", "active": true, "timeZone": "UTC",
        }),
    )
}

/// The global permissions `mypermissions` knows: key, id, name.
const GLOBAL_PERMISSIONS: [(&str, &str, &str); 4] = [
    ("ADMINISTER", "0", "Jira Administrators"),
    ("SYSTEM_ADMIN", "44", "Jira System Administrators"),
    ("USER_PICKER", "27", "Browse Users"),
    ("CREATE_SHARED_OBJECTS", "22", "Create Shared Objects"),
];

/// `GET /rest/api/2/mypermissions?permissions=ADMINISTER,SYSTEM_ADMIN`: whether the caller
/// holds each global permission asked for (every known one when `permissions` is absent), as
/// `{"permissions": {KEY: {id, key, name, type, description, havePermission}}}`.
///
/// Follows Jira Data Center's REST reference, "mypermissions" (`GET /rest/api/2/mypermissions`,
/// "Returns all permissions in the system and whether the currently logged in user has them"), with
/// the `permissions` filter of comma-separated keys
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/mypermissions-getPermissions>).
/// Keys the emulator does not know are left out. A caller without credentials holds nothing.
async fn my_permissions(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    let wanted: Option<Vec<String>> = params.get("permissions").map(|keys| {
        keys.split(',')
            .map(|key| key.trim().to_uppercase())
            .collect()
    });
    let store = state.lock();
    let mut permissions = serde_json::Map::new();
    for (key, id, name) in GLOBAL_PERMISSIONS {
        if wanted
            .as_ref()
            .is_some_and(|wanted| !wanted.iter().any(|w| w == key))
        {
            continue;
        }
        let have = match key {
            "ADMINISTER" => caller.jira_administer(&store),
            "SYSTEM_ADMIN" => caller.jira_system_admin(&store),
            _ => !caller.is_anonymous(),
        };
        permissions.insert(
            key.to_owned(),
            json!({
                "id": id, "key": key, "name": name, "type": "GLOBAL",
                "description": format!("The {name} global permission."),
                "havePermission": have,
            }),
        );
    }
    reply::json(200, json!({ "permissions": permissions }))
}

/// `GET /rest/api/2/user?username=X` (or `key=`), `expand=groups`: one UserBean, with
/// `groups.items[].name` when `groups` is expanded; 401 for nobody, 404 for an unknown user,
/// 400 when neither `username` nor `key` is given.
///
/// Follows Jira Data Center's REST reference, resource `api/2/user`, method `getUser`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/user-getUser>); `key=` as
/// an alternative to `username=` per JRASERVER-68189.
async fn get_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_user(&caller));
    let store = state.lock();
    let account = tri!(find_user(&store, &params));
    let expand_groups = params
        .get("expand")
        .is_some_and(|expand| expand.split(',').any(|item| item.trim() == "groups"));
    let groups = expand_groups.then(|| {
        store
            .groups_of(account.id)
            .into_iter()
            .map(|group| group.name.as_str())
            .collect()
    });
    reply::json(200, user_json(&reply::base_url(&headers), account, groups))
}

/// `GET /rest/api/2/user/search?username=<q>&startAt&maxResults&includeActive&includeInactive`:
/// a plain array of UserBeans (no paging envelope); `username=.` matches everyone.
///
/// Follows Jira Data Center's REST reference, resource `api/2/user/search`, method `findUsers`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/user-findUsers>). The
/// caps are from Atlassian's issue tracker: 9.x never looks past the first 1,000 users, so
/// `startAt` beyond them returns nothing (JRASERVER-65089, JSWSERVER-21156); 10.x answers at most
/// 100 and ignores `startAt` (JRASERVER-78520, JRASERVER-78660: "intentional … use the new /list
/// endpoint").
async fn search_users(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_user(&caller));
    let Some(query) = params.get("username").map(|q| q.to_lowercase()) else {
        return error(400, "The username query parameter was not provided");
    };
    let start_at = tri!(reply::number(&params, "startAt", 0).map_err(|m| error(400, &m)));
    let max_results = tri!(reply::number(&params, "maxResults", 50).map_err(|m| error(400, &m)));
    let include_active = reply::flag(&params, "includeActive", true);
    let include_inactive = reply::flag(&params, "includeInactive", false);
    let store = state.lock();
    let mut matches: Vec<&Account> = store
        .accounts()
        .filter(|account| {
            (account.active && include_active) || (!account.active && include_inactive)
        })
        .filter(|account| query == "." || search_matches(account, &query))
        .collect();
    matches.sort_by(|a, b| a.name.cmp(&b.name));
    let window: Vec<&Account> = match state.config().jira_version {
        JiraVersion::V9_12 => matches
            .into_iter()
            .take(SEARCH_CAP_9)
            .skip(start_at)
            .take(max_results.min(SEARCH_CAP_9))
            .collect(),
        JiraVersion::V10_1 | JiraVersion::V10_3 => matches
            .into_iter()
            .take(max_results.min(SEARCH_CAP_10))
            .collect(),
    };
    let base = reply::base_url(&headers);
    let users: Vec<Value> = window
        .iter()
        .map(|account| user_json(&base, account, None))
        .collect();
    reply::json(200, Value::Array(users))
}

/// Jira's user search matches the start of the username, the email address, the display
/// name or any word of the display name, ignoring case (`user-findUsers`: `username` is a
/// query matched against the username, name or email address, paraphrased; the word-prefix
/// rule is unverified).
fn search_matches(account: &Account, query: &str) -> bool {
    let display_name = account.display_name.to_lowercase();
    account.name.to_lowercase().starts_with(query)
        || account.email.to_lowercase().starts_with(query)
        || display_name.starts_with(query)
        || display_name
            .split_whitespace()
            .any(|word| word.starts_with(query))
}

/// `GET /rest/api/2/user/list?cursor&maxResults` (10.3 LTS and 11.0+ only; 404 before):
/// `{self, maxResults, isLast, values, nextCursor?, nextPage?}`, 2,000 users per page by
/// default, no total, never a 404 for a cursor it did not issue.
///
/// Follows Jira Data Center's REST reference for 10.3, `GET /rest/api/2/user/list` ("Returns
/// a list of all users … never returns 404 code, even if called with a cursor parameter that
/// was not returned in the previous call"; "Available since Jira Data Center 11.0, and in
/// 10.3 LTS"), as carried by jira.js `getUserList`
/// (<https://mrrefactoring.github.io/jira.js/api/functions/server.getUserList.html>);
/// JRASERVER-78660 points `/user/search` callers here.
async fn list_users(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if !state.config().jira_version.has_user_list() {
        return reply::empty(404);
    }
    tri!(require_user(&caller));
    let max_results =
        tri!(reply::number(&params, "maxResults", USER_LIST_DEFAULT).map_err(|m| error(400, &m)))
            .clamp(1, USER_LIST_DEFAULT);
    let base = reply::base_url(&headers);
    let self_link = format!("{base}/rest/api/2/user/list?maxResults={max_results}");
    // The cursor is opaque to clients; here it is the id of the last user served. A cursor
    // that is not ours answers an empty last page, never 404 ("this endpoint never returns
    // 404 code, even if called with a cursor parameter that was not returned in the
    // previous call": Jira 10.3 REST reference via jira.js `getUserList`).
    let after = match params.get("cursor") {
        None => 0,
        Some(cursor) => match cursor.parse::<u64>() {
            Ok(after) => after,
            Err(_) => {
                return reply::json(
                    200,
                    json!({ "self": self_link, "maxResults": max_results, "isLast": true, "values": [] }),
                );
            }
        },
    };
    let store = state.lock();
    let mut page: Vec<&Account> = store.accounts_after(after).take(max_results + 1).collect();
    let is_last = page.len() <= max_results;
    page.truncate(max_results);
    let values: Vec<Value> = page
        .iter()
        .map(|account| user_json(&base, account, None))
        .collect();
    let mut body = json!({
        "self": self_link,
        "maxResults": max_results,
        "isLast": is_last,
        "values": values,
    });
    if !is_last && let Some(last) = page.last() {
        body["nextCursor"] = json!(last.id.to_string());
        body["nextPage"] = json!(format!(
            "{base}/rest/api/2/user/list?cursor={}&maxResults={max_results}",
            last.id
        ));
    }
    reply::json(200, body)
}

/// `POST /rest/api/2/user` with a UserWriteBean (`name`, `password`, `emailAddress`,
/// `displayName`, …): 201 with a `Location` header and the new UserBean; 400 with a field
/// error for a missing name, email or display name or a taken name; 401/403 for callers
/// without `ADMINISTER`.
///
/// Follows Jira Data Center's REST reference, resource `api/2/user`, method `createUser`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/user-createUser>). The
/// error body is Jira's `{"errorMessages":[…],"errors":{field: message}}` (example in
/// JRASERVER-36639). The username must pass Jira's rules (`DefaultUserService.validateUsername`,
/// see `jira_rules`).
async fn create_user(
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
        .to_lowercase();
    let email = reply::text(&body, "emailAddress")
        .unwrap_or_default()
        .trim();
    let display_name = reply::text(&body, "displayName").unwrap_or_default().trim();
    if name.is_empty() {
        return field_error("username", "You must specify a username.");
    }
    tri!(jira_rules::check_username(&name));
    if !email.contains('@') {
        return field_error("email", "You must specify a valid email address.");
    }
    if display_name.is_empty() {
        return field_error("displayName", "You must specify a full name.");
    }
    let mut store = state.lock();
    if store.account_by_name(&name).is_some() {
        return field_error("username", "A user with that username already exists.");
    }
    let id = store.insert_account(&name, display_name, email);
    store.count_write("create_account");
    let base = reply::base_url(&headers);
    let Some(account) = store.account(id) else {
        return error(500, "The new user vanished.");
    };
    let mut response = reply::json(201, user_json(&base, account, None));
    if let Ok(location) = HeaderValue::from_str(&format!("{base}/rest/api/2/user?username={name}"))
    {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// `PUT /rest/api/2/user?username=X` (or `key=`) with a partial UserWriteBean: renames
/// (`name`), changes `emailAddress`/`displayName`, and (de)activates (`active`); fields left
/// out are not changed. 200 with the user; 400 field errors; 404 unknown user; 403 for a
/// read-only (external directory) user.
///
/// Follows Jira Data Center's REST reference, resource `api/2/user`, method `updateUser`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/user-updateUser>; "Fields
/// skipped in request will not be changed"). Deactivation through `active:false` works from Jira
/// 8.3.0 (atlassian-python-api `user_deactivate`, citing
/// <https://docs.atlassian.com/software/jira/docs/api/REST/8.3.0/#api/2/user-updateUser>; earlier
/// versions answered `400 error.no.value.found.to.be.changed`, JRASERVER-36639 and
/// JRASERVER-37294). A rename must pass Jira's username rules, and a deactivation of a
/// project or component lead is refused with 400 (`DefaultUserService.validateUpdateUser`,
/// see `jira_rules`).
async fn update_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    tri!(require_admin(&state, &caller));
    let body = tri!(reply::object(&body).map_err(|m| error(400, &m)));
    let mut store = state.lock();
    let account = tri!(find_user(&store, &params)).clone();
    if account.read_only {
        return error(
            403,
            "The user is in a read-only directory and cannot be changed.",
        );
    }
    // Some clients send `"active": "false"` as a string (atlassian-python-api
    // `user_deactivate` sends `{"active": "false", "name": username}`).
    let active = match body.get("active") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(active)) => Some(*active),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Some(false),
        Some(_) => return field_error("active", "The active field must be true or false."),
    };
    let new_name = reply::text(&body, "name").map(|name| name.trim().to_lowercase());
    if let Some(new_name) = &new_name {
        if new_name.is_empty() {
            return field_error("username", "You must specify a username.");
        }
        if new_name != &account.name {
            tri!(jira_rules::check_username(new_name));
        }
        if new_name != &account.name && store.account_by_name(new_name).is_some() {
            return field_error("username", "A user with that username already exists.");
        }
    }
    let email = reply::text(&body, "emailAddress").map(str::trim);
    if email.is_some_and(|email| !email.contains('@')) {
        return field_error("email", "You must specify a valid email address.");
    }
    let display_name = reply::text(&body, "displayName").map(str::trim);
    if display_name.is_some_and(str::is_empty) {
        return field_error("displayName", "You must specify a full name.");
    }
    if active == Some(false) {
        tri!(jira_rules::check_deactivation(&store, account.id));
    }
    if let Some(new_name) = new_name.filter(|new_name| new_name != &account.name) {
        store.rename_account(account.id, &new_name);
        store.count_write("rename_account");
    }
    let mut details_changed = false;
    if let Some(stored) = store.account_mut(account.id) {
        if let Some(email) = email {
            details_changed |= stored.email != email;
            stored.email = email.to_owned();
        }
        if let Some(display_name) = display_name {
            details_changed |= stored.display_name != display_name;
            stored.display_name = display_name.to_owned();
        }
        if let Some(active) = active {
            stored.active = active;
        }
    }
    if details_changed {
        store.count_write("update_account");
    }
    match active {
        Some(false) if account.active => store.count_write("deactivate_account"),
        Some(true) if !account.active => store.count_write("reactivate_account"),
        _ => {}
    }
    let Some(updated) = store.account(account.id) else {
        return error(500, "The user vanished.");
    };
    reply::json(200, user_json(&reply::base_url(&headers), updated, None))
}

/// `DELETE /rest/api/2/user?username=X` (or `key=`): 204 with no body; 404 unknown user;
/// 403 for a read-only (external directory) user.
///
/// Follows Jira Data Center's REST reference, resource `api/2/user`, method `removeUser`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/user-removeUser>;
/// "Removes user and its references (like project roles associations, watches, history)").
/// A project lead is refused with 400 and a component lead is not, whose components lose
/// their lead (Jira's `DefaultUserService.validateDeleteUserReferences`, see `jira_rules`).
async fn delete_user(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let mut store = state.lock();
    let account = tri!(find_user(&store, &params)).clone();
    if account.read_only {
        return error(
            403,
            "The user is in a read-only directory and cannot be deleted.",
        );
    }
    tri!(jira_rules::check_deletion(
        &store,
        account.id,
        &account.name
    ));
    store.projects.clear_component_leads(account.id);
    store.remove_account(account.id);
    store.count_write("delete_account");
    reply::empty(204)
}

/// `GET /rest/api/2/groups/picker?query&maxResults`: `{header, total, groups:[{name, html,
/// labels}]}` for the groups whose name contains `query`, ignoring case; no paging.
///
/// Follows Jira Data Center's REST reference, resource `api/2/groups/picker`, method `findGroups`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/groups-findGroups>). The
/// cap on returned groups is the system property `jira.ajax.autocomplete.limit` (here
/// [`Config::jira_picker_limit`](crate::Config::jira_picker_limit)); `total` still counts every
/// match, so a client can tell it was cut.
async fn pick_groups(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_user(&caller));
    let query = params
        .get("query")
        .map(|q| q.to_lowercase())
        .unwrap_or_default();
    let limit = state.config().jira_picker_limit;
    let max_results =
        tri!(reply::number(&params, "maxResults", limit).map_err(|m| error(400, &m))).min(limit);
    let store = state.lock();
    let matching: Vec<&str> = store
        .groups()
        .filter(|group| group.name.to_lowercase().contains(&query))
        .map(|group| group.name.as_str())
        .collect();
    let shown: Vec<Value> = matching
        .iter()
        .take(max_results)
        .map(|name| json!({ "name": name, "html": name, "labels": [] }))
        .collect();
    reply::json(
        200,
        json!({
            "header": format!("Showing {} of {} matching groups", shown.len(), matching.len()),
            "total": matching.len(),
            "groups": shown,
        }),
    )
}

/// `POST /rest/api/2/group` with `{"name":"g"}`: 201 with the GroupBean; 400 for an empty
/// name or a name already taken.
///
/// Follows Jira Data Center's REST reference, resource `api/2/group`, method `createGroup`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/group-createGroup>). The
/// 201 is unverified for Data Center (Jira Cloud v2 answers 201).
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
        return error(400, "You must specify a valid group name.");
    }
    let mut store = state.lock();
    if store.group(&name).is_some() {
        return error(400, "A group or user with this name already exists.");
    }
    store.insert_group(&name);
    store.count_write("create_group");
    reply::json(201, group_json(&reply::base_url(&headers), &name))
}

/// `DELETE /rest/api/2/group?groupname=g[&swapGroup=other]`: 200 with no body; 404 for an
/// unknown group. `swapGroup` is accepted and ignored.
///
/// Follows Jira Data Center's REST reference, resource `api/2/group`, method `removeGroup`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/group-removeGroup>); the
/// 200 is unverified.
async fn delete_group(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let Some(name) = params.get("groupname") else {
        return error(400, "The groupname query parameter was not provided");
    };
    let mut store = state.lock();
    if store.remove_group(name).is_none() {
        return error(404, "Specified group does not exist.");
    }
    store.count_write("delete_group");
    reply::empty(200)
}

/// `GET /rest/api/2/group/member?groupname&includeInactiveUsers&startAt&maxResults`:
/// `{self, nextPage?, maxResults, startAt, total, isLast, values}`, at most 50 per page;
/// admin only (403); 404 for an unknown group.
///
/// Follows Jira Data Center's REST reference, resource `api/2/group/member`, method
/// `getUsersFromGroup`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/group-getUsersFromGroup>).
/// Jira also returns the members of nested subgroups; the emulator has no nested groups.
async fn group_members(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let Some(name) = params.get("groupname") else {
        return error(400, "The groupname query parameter was not provided");
    };
    let start_at = tri!(reply::number(&params, "startAt", 0).map_err(|m| error(400, &m)));
    let max_results =
        tri!(reply::number(&params, "maxResults", MEMBER_PAGE_MAX).map_err(|m| error(400, &m)))
            .clamp(1, MEMBER_PAGE_MAX);
    let include_inactive = reply::flag(&params, "includeInactiveUsers", false);
    let store = state.lock();
    if store.group(name).is_none() {
        return error(404, "Specified group does not exist.");
    }
    let members: Vec<&Account> = store
        .members(name)
        .into_iter()
        .filter(|account| account.active || include_inactive)
        .collect();
    let total = members.len();
    let base = reply::base_url(&headers);
    let values: Vec<Value> = members
        .iter()
        .skip(start_at)
        .take(max_results)
        .map(|account| user_json(&base, account, None))
        .collect();
    let is_last = start_at + values.len() >= total;
    let mut body = json!({
        "self": format!("{base}/rest/api/2/group/member?groupname={name}&startAt={start_at}&maxResults={max_results}"),
        "maxResults": max_results,
        "startAt": start_at,
        "total": total,
        "isLast": is_last,
        "values": values,
    });
    if !is_last {
        body["nextPage"] = json!(format!(
            "{base}/rest/api/2/group/member?groupname={name}&startAt={}&maxResults={max_results}",
            start_at + max_results
        ));
    }
    reply::json(200, body)
}

/// `POST /rest/api/2/group/user?groupname=g` with `{"name":"username"}`: 201 with the
/// GroupBean; 400 for an empty name and for a user who is already a member; 404 for an
/// unknown group or user.
///
/// Follows Jira Data Center's REST reference, resource `api/2/group/user`, method `addUserToGroup`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/group-addUserToGroup>);
/// the 201 is unverified.
async fn add_member(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    tri!(require_admin(&state, &caller));
    let Some(group_name) = params.get("groupname") else {
        return error(400, "The groupname query parameter was not provided");
    };
    let body = tri!(reply::object(&body).map_err(|m| error(400, &m)));
    let user_name = reply::text(&body, "name")
        .unwrap_or_default()
        .trim()
        .to_owned();
    if user_name.is_empty() {
        return error(400, "You must specify a user name.");
    }
    let mut store = state.lock();
    let Some(group) = store.group(group_name).map(|group| group.name.clone()) else {
        return error(404, "Specified group does not exist.");
    };
    let Some(account) = store.account_by_name(&user_name).cloned() else {
        return error(404, &format!("The user named '{user_name}' does not exist"));
    };
    if account.read_only {
        return error(
            403,
            "The user is in a read-only directory; its groups cannot be changed.",
        );
    }
    if !store.add_member(&group, account.id) {
        return error(
            400,
            &format!(
                "Cannot add user. '{}' is already a member of '{group}'",
                account.name
            ),
        );
    }
    store.count_write("add_member");
    reply::json(201, group_json(&reply::base_url(&headers), &group))
}

/// `DELETE /rest/api/2/group/user?groupname=g&username=u`: 200 with no body; 400 when the
/// user is not a member; 404 for an unknown group or user.
///
/// Follows Jira Data Center's REST reference, resource `api/2/group/user`, method
/// `removeUserFromGroup`
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/group-removeUserFromGroup>);
/// the 200 is unverified.
async fn remove_member(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Params>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let (Some(group_name), Some(user_name)) = (params.get("groupname"), params.get("username"))
    else {
        return error(
            400,
            "The groupname and username query parameters are required.",
        );
    };
    let mut store = state.lock();
    let Some(group) = store.group(group_name).map(|group| group.name.clone()) else {
        return error(404, "Specified group does not exist.");
    };
    let Some(account) = store.account_by_name(user_name).cloned() else {
        return error(404, &format!("The user named '{user_name}' does not exist"));
    };
    if account.read_only {
        return error(
            403,
            "The user is in a read-only directory; its groups cannot be changed.",
        );
    }
    if !store.remove_member(&group, account.id) {
        return error(
            400,
            &format!(
                "Cannot remove user '{}' from group '{group}' since user is not a member of '{group}'",
                account.name
            ),
        );
    }
    store.count_write("remove_member");
    reply::empty(200)
}
