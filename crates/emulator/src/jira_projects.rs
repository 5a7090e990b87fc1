//! Jira Data Center's project, component and application-role endpoints under `/rest/api/2`:
//! the project list with its leads, a project's components, handing a project or component
//! lead over, and the licence seats of each application.
//!
//! Rights: reading projects needs a signed-in caller (the emulator lets every signed-in
//! caller browse every project); the writes and `applicationrole` need `ADMINISTER`, like the
//! user and group writes (see `jira.rs`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, put};
use serde_json::{Value, json};

use crate::access::Caller;
use crate::jira::{error, require_admin, require_user, user_json};
use crate::projects::{Component, Project};
use crate::reply::{self, Params};
use crate::store::{StateHandle, Store};

/// The one application the emulator knows: Jira Software, whose application key is
/// `jira-software` ("UserWriteBean … applicationKeys [e.g. jira-software, jira-core,
/// jira-servicedesk]", Jira REST reference via the reference notes).
const JIRA_SOFTWARE: (&str, &str, &str) = ("jira-software", "Jira Software", "jira-software-users");

/// The project, component and application-role routes, nested under `/rest/api/2` and
/// `/rest/api/latest` by `jira::routes`.
pub(crate) fn routes() -> Router<StateHandle> {
    Router::new()
        .route("/project", get(list_projects))
        .route("/project/{key}", put(update_project))
        .route("/project/{key}/components", get(project_components))
        .route("/component/{id}", put(update_component))
        .route("/applicationrole", get(application_roles))
}

/// A ProjectBean: `self`, `id`, `key`, `name`, `projectTypeKey`, and the lead's UserBean
/// under `lead` when `with_lead`.
fn project_json(base: &str, store: &Store, project: &Project, with_lead: bool) -> Value {
    let mut body = json!({
        "self": format!("{base}/rest/api/2/project/{}", project.id),
        "id": project.id.to_string(),
        "key": project.key,
        "name": project.name,
        "avatarUrls": {},
        "projectTypeKey": "software",
        "expand": "description,lead,url,projectKeys",
    });
    if with_lead && let Some(lead) = project.lead.and_then(|id| store.account(id)) {
        body["lead"] = user_json(base, lead, None);
    }
    body
}

/// A ComponentBean: `self`, `id`, `name`, `project`, `projectId`, and, when it has a lead,
/// the lead's UserBean under `lead` and login under `leadUserName`.
fn component_json(base: &str, store: &Store, project: &Project, component: &Component) -> Value {
    let mut body = json!({
        "self": format!("{base}/rest/api/2/component/{}", component.id),
        "id": component.id.to_string(),
        "name": component.name,
        "assigneeType": "PROJECT_DEFAULT",
        "realAssigneeType": "PROJECT_DEFAULT",
        "isAssigneeTypeValid": false,
        "project": project.key,
        "projectId": project.id,
        "archived": false,
    });
    if let Some(lead) = component.lead.and_then(|id| store.account(id)) {
        body["lead"] = user_json(base, lead, None);
        body["leadUserName"] = json!(lead.name);
    }
    body
}

/// `GET /rest/api/2/project?expand=lead`: a plain array of ProjectBeans, each with its
/// `lead` when `expand` names `lead`; an anonymous caller sees none.
///
/// Follows Jira Data Center's REST reference, resource `api/2/project`, method
/// `getAllProjects` ("Returns all projects which are visible for the currently logged in
/// user", `expand` of `description`, `lead`, `url`, `projectKeys`)
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/project-getAllProjects>).
async fn list_projects(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if caller.is_anonymous() {
        return reply::json(200, json!([]));
    }
    let with_lead = params
        .get("expand")
        .is_some_and(|expand| expand.split(',').any(|item| item.trim() == "lead"));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let projects: Vec<Value> = store
        .projects
        .iter()
        .map(|project| project_json(&base, &store, project, with_lead))
        .collect();
    reply::json(200, Value::Array(projects))
}

/// `GET /rest/api/2/project/{key}/components`: a plain array of the project's
/// ComponentBeans; 404 for an unknown project.
///
/// Follows Jira Data Center's REST reference, resource `api/2/project/{projectIdOrKey}/components`,
/// method `getProjectComponents` ("Contains a full representation of a the specified
/// project's components")
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/project-getProjectComponents>).
async fn project_components(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    tri!(require_user(&caller));
    let base = reply::base_url(&headers);
    let store = state.lock();
    let Some(project) = store.projects.project(&key) else {
        return error(404, &format!("No project could be found with key '{key}'."));
    };
    let components: Vec<Value> = project
        .components
        .iter()
        .map(|component| component_json(&base, &store, project, component))
        .collect();
    reply::json(200, Value::Array(components))
}

/// `PUT /rest/api/2/project/{key}` with `{"lead": "<username>"}` (other fields are accepted
/// and left as they are, "only non null values sent in JSON will be updated"): 201 with the
/// project; 400 with `errors.projectLead` for a lead that is no user; 404 for an unknown
/// project; 401/403 without `ADMINISTER`.
///
/// Follows Jira Data Center's REST reference, resource `api/2/project/{projectIdOrKey}`,
/// method `updateProject`, body ProjectInputBean with `lead` a username
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/project-updateProject>;
/// jira.js `server.updateProject` carries the same `lead` string). The reference lists 201
/// for a successful update; that status and the error's field name `projectLead` are
/// unverified against a live Jira, so clients should accept any 2xx.
async fn update_project(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    tri!(require_admin(&state, &caller));
    let body = tri!(reply::object(&body).map_err(|m| error(400, &m)));
    let mut store = state.lock();
    if store.projects.project(&key).is_none() {
        return error(404, &format!("No project could be found with key '{key}'."));
    }
    if let Some(login) = reply::text(&body, "lead") {
        let Some(lead) = store
            .account_by_name(login.trim())
            .map(|account| account.id)
        else {
            return reply::json(
                400,
                json!({
                    "errorMessages": [],
                    "errors": { "projectLead": "The user you have specified as project lead does not exist." },
                }),
            );
        };
        if let Some(project) = store.projects.project_mut(&key)
            && project.lead != Some(lead)
        {
            project.lead = Some(lead);
            store.count_write("hand_over_project_lead");
        }
    }
    let base = reply::base_url(&headers);
    match store.projects.project(&key) {
        Some(project) => reply::json(201, project_json(&base, &store, project, true)),
        None => error(500, "The project vanished."),
    }
}

/// `PUT /rest/api/2/component/{id}` with `{"leadUserName": "<username>"}` (an empty name
/// removes the lead; other fields are left as they are): 200 with the component; 400 with
/// `errors.leadUserName` for a lead that is no user; 404 for an unknown component; 401/403
/// without `ADMINISTER`.
///
/// Follows Jira Data Center's REST reference, resource `api/2/component/{id}`, method
/// `updateComponent` ("Modify a component via PUT. Any fields present in the PUT will
/// override existing values", ComponentBean with `leadUserName`)
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/component-updateComponent>).
/// The error's field name is unverified.
async fn update_component(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    tri!(require_admin(&state, &caller));
    let body = tri!(reply::object(&body).map_err(|m| error(400, &m)));
    let not_found = || error(404, &format!("The component with id {id} does not exist."));
    let Ok(numeric) = id.parse::<u64>() else {
        return not_found();
    };
    let mut store = state.lock();
    if store.projects.component(numeric).is_none() {
        return not_found();
    }
    if let Some(login) = reply::text(&body, "leadUserName").map(str::trim) {
        let lead = if login.is_empty() {
            None
        } else {
            match store.account_by_name(login) {
                Some(account) => Some(account.id),
                None => {
                    return reply::json(
                        400,
                        json!({
                            "errorMessages": [],
                            "errors": { "leadUserName": format!("The user {login} does not exist.") },
                        }),
                    );
                }
            }
        };
        if let Some(component) = store.projects.component_mut(numeric)
            && component.lead != lead
        {
            component.lead = lead;
            store.count_write("hand_over_component_lead");
        }
    }
    let base = reply::base_url(&headers);
    match store.projects.component(numeric) {
        Some((project, component)) => {
            reply::json(200, component_json(&base, &store, project, component))
        }
        None => not_found(),
    }
}

/// `GET /rest/api/2/applicationrole`: a plain array with one ApplicationRoleBean per
/// application, here Jira Software only: `key`, `name`, `groups`, `defaultGroups`,
/// `selectedByDefault`, `defined`, `numberOfSeats`, `remainingSeats`, `userCount`,
/// `userCountDescription`, `hasUnlimitedSeats`, `platform`. `userCount` counts the active
/// accounts (the emulator gives every active account application access); the seats are
/// [`Config::license_seats`](crate::Config::license_seats), with `numberOfSeats` and
/// `remainingSeats` -1 and `hasUnlimitedSeats` true when it is `None`. 401/403 without
/// `ADMINISTER`.
///
/// Follows Jira Data Center's REST reference, resource `api/2/applicationrole`, method
/// `getAll` ("Returns all ApplicationRoles in the system", Jira 7.0 and later; fields as in
/// the ApplicationRole schema carried by jira.js `server.getAll`)
/// (<https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/applicationrole-getAll>).
/// Jira does not refuse to create a user beyond the licence (the user is created without
/// application access), so no write of the emulator checks the seats; -1 for unlimited is
/// unverified.
async fn application_roles(
    State(state): State<StateHandle>,
    Extension(caller): Extension<Caller>,
) -> Response {
    tri!(require_admin(&state, &caller));
    let used = state.lock().n_active_accounts();
    let seats = state.config().license_seats;
    let (number_of_seats, remaining) = match seats {
        Some(seats) => (
            i64::try_from(seats).unwrap_or(i64::MAX),
            i64::try_from(seats.saturating_sub(used)).unwrap_or(i64::MAX),
        ),
        None => (-1, -1),
    };
    let (key, name, group) = JIRA_SOFTWARE;
    reply::json(
        200,
        json!([{
            "key": key,
            "name": name,
            "groups": [group],
            "defaultGroups": [group],
            "selectedByDefault": true,
            "defined": true,
            "numberOfSeats": number_of_seats,
            "remainingSeats": remaining,
            "userCount": used,
            "userCountDescription": "users",
            "hasUnlimitedSeats": seats.is_none(),
            "platform": false,
        }]),
    )
}
