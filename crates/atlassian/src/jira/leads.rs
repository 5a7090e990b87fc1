//! Jira project and component leads, and Jira's licence seats.
//!
//! From Jira Data Center's REST reference (resources `api/2/project`, `api/2/component` and
//! `api/2/applicationrole`):
//! - `GET /rest/api/2/project?expand=lead` answers a plain array of projects, each with its
//!   `key` and, expanded, its `lead` (a user with `key` and `name`).
//! - `GET /rest/api/2/project/{key}/components` answers a plain array of components, each with
//!   an `id` (a string), a `name` and, when it has one, a `lead` user and `leadUserName`.
//! - `PUT /rest/api/2/project/{key}` with `{"lead": username}` and
//!   `PUT /rest/api/2/component/{id}` with `{"leadUserName": username}` hand a lead over.
//! - `GET /rest/api/2/applicationrole` (Jira 7.0 and later) answers every application role
//!   with `key`, `numberOfSeats`, `remainingSeats`, `userCount`, `hasUnlimitedSeats` and
//!   `selectedByDefault` ("whether this application role should be selected by default on
//!   user creation").
//!
//! A lead's [`Lead::account_id`] is the lead's user key, the id the client gives accounts
//! ([`RemoteAccount::id`](crate::RemoteAccount::id)); a lead without a key (Jira before 6.0)
//! falls back on its name, as accounts do.
//!
//! Seats: keysync creates users without `applicationKeys`, so Jira gives them the
//! applications selected by default; the seats reported are those of the default role that
//! has the fewest seats left (the one that runs out first), `jira-software` when Jira marks
//! no role as the default. Jira's refusal to deactivate or delete a lead is a 400 with Jira's
//! message, which the client passes on as [`Error::Validation`].
//!
//! Hostile answers: a role's `numberOfSeats`, `userCount` and `hasUnlimitedSeats` are
//! required ([`Error::Decode`] without one), since a default of 0 would make the licence look
//! full or empty; negative counts read as 0 used seats and a limit of 0.

use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::JiraClient;
use crate::http::ApiRequest;
use crate::{Error, Lead, LeadTarget, Outcome, Seats};

/// The application whose seats count when Jira marks no role as selected by default: Jira
/// Software, the application of the `jira-software-users` group.
const DEFAULT_APPLICATION: &str = "jira-software";

impl JiraClient {
    /// Every project lead and component lead; components are listed for several projects
    /// at once, within the HTTP layer's concurrency bound.
    pub(super) async fn read_leads(&self) -> Result<Vec<Lead>, Error> {
        let projects: Vec<ProjectBean> = self
            .core
            .send_ok(&projects_request())
            .await?
            .json("project list")?;
        let mut leads: Vec<Lead> = projects
            .iter()
            .filter_map(|project| {
                Some(Lead {
                    account_id: project.lead.as_ref()?.id(),
                    target: LeadTarget::Project {
                        key: project.key.clone(),
                    },
                })
            })
            .collect();
        let concurrency = self.core.max_concurrency().max(1);
        let keys: Vec<String> = projects.into_iter().map(|project| project.key).collect();
        let component_leads: Vec<Vec<Lead>> = futures::stream::iter(keys)
            .map(|key| async move { self.component_leads(&key).await })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        leads.extend(component_leads.into_iter().flatten());
        leads.sort();
        Ok(leads)
    }

    /// The leads of one project's components.
    async fn component_leads(&self, project_key: &str) -> Result<Vec<Lead>, Error> {
        let components: Vec<ComponentBean> = self
            .core
            .send_ok(&components_request(project_key))
            .await?
            .json("component list")?;
        Ok(components
            .into_iter()
            .filter_map(|component| component_lead(project_key, component))
            .collect())
    }

    /// Hands `target`'s lead to the user with login `to`.
    pub(super) async fn set_lead(&self, target: &LeadTarget, to: &str) -> Result<Outcome, Error> {
        self.core.send_ok(&hand_over_request(target, to)).await?;
        Ok(Outcome::Applied)
    }

    /// The seats of the application new users get; `None` when Jira has no
    /// `applicationrole` resource (404) or no such role.
    pub(super) async fn read_seats(&self) -> Result<Option<Seats>, Error> {
        let response = self
            .core
            .send(&ApiRequest::get("rest/api/2/applicationrole"))
            .await?;
        if response.status == 404 {
            return Ok(None);
        }
        if !response.is_success() {
            return Err(response.into_error());
        }
        let roles: Vec<ApplicationRole> = response.json("application roles")?;
        Ok(seats_of_new_users(&roles))
    }
}

/// `GET /rest/api/2/project?expand=lead`.
fn projects_request() -> ApiRequest {
    ApiRequest::get("rest/api/2/project").query("expand", "lead")
}

/// `GET /rest/api/2/project/{key}/components`.
fn components_request(project_key: &str) -> ApiRequest {
    ApiRequest::get("rest/api/2/project")
        .segment(project_key)
        .segment("components")
}

/// `PUT /rest/api/2/project/{key}` with `lead`, or `PUT /rest/api/2/component/{id}` with
/// `leadUserName`.
fn hand_over_request(target: &LeadTarget, to: &str) -> ApiRequest {
    match target {
        LeadTarget::Project { key } => ApiRequest::new(Method::PUT, "rest/api/2/project")
            .segment(key)
            .json(json!({ "lead": to })),
        LeadTarget::Component { id, .. } => ApiRequest::new(Method::PUT, "rest/api/2/component")
            .segment(id)
            .json(json!({ "leadUserName": to })),
    }
}

/// The seats of the roles new users get (`selectedByDefault`, else [`DEFAULT_APPLICATION`]):
/// of those, the one with the fewest seats left, an unlimited one only when all are.
fn seats_of_new_users(roles: &[ApplicationRole]) -> Option<Seats> {
    let mut defaults: Vec<&ApplicationRole> = roles
        .iter()
        .filter(|role| role.selected_by_default)
        .collect();
    if defaults.is_empty() {
        defaults = roles
            .iter()
            .filter(|role| role.key == DEFAULT_APPLICATION)
            .collect();
    }
    defaults
        .into_iter()
        .map(ApplicationRole::seats)
        .min_by_key(|seats| {
            seats
                .limit
                .map_or(u64::MAX, |limit| limit.saturating_sub(seats.used))
        })
}

/// A component's lead, `None` for a component without one: the lead user's key (or name),
/// or else `leadUserName`.
fn component_lead(project_key: &str, component: ComponentBean) -> Option<Lead> {
    let account_id = component
        .lead
        .as_ref()
        .map(UserRef::id)
        .or(component.lead_user_name)?;
    Some(Lead {
        account_id,
        target: LeadTarget::Component {
            id: component.id,
            project_key: project_key.to_owned(),
            name: component.name,
        },
    })
}

/// A project of the list: its key and, with `expand=lead`, its lead.
#[derive(Deserialize)]
struct ProjectBean {
    key: String,
    lead: Option<UserRef>,
}

/// A component: id, name, and its lead as a user and as a username.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ComponentBean {
    id: String,
    name: String,
    lead: Option<UserRef>,
    lead_user_name: Option<String>,
}

/// A lead as Jira shows it: the user key, and the username.
#[derive(Deserialize)]
struct UserRef {
    key: Option<String>,
    name: String,
}

impl UserRef {
    /// The user key, or the username where Jira gives no key.
    fn id(&self) -> String {
        self.key.clone().unwrap_or_else(|| self.name.clone())
    }
}

/// An application role with its seats. `numberOfSeats`, `userCount` and
/// `hasUnlimitedSeats` are required: Jira's `ApplicationRoleBean` always carries them, and a
/// default of 0 seats or users would report a full or an empty licence that is neither.
/// `selectedByDefault` defaults to false, which only falls back on [`DEFAULT_APPLICATION`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicationRole {
    key: String,
    #[serde(default)]
    selected_by_default: bool,
    number_of_seats: i64,
    user_count: i64,
    has_unlimited_seats: bool,
}

impl ApplicationRole {
    fn seats(&self) -> Seats {
        Seats {
            used: u64::try_from(self.user_count).unwrap_or(0),
            limit: if self.has_unlimited_seats {
                None
            } else {
                Some(u64::try_from(self.number_of_seats).unwrap_or(0))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn roles(body: Value) -> Vec<ApplicationRole> {
        serde_json::from_value(body).expect("application roles")
    }

    #[test]
    fn requests_have_the_documented_paths_and_bodies() {
        let projects = projects_request();
        assert_eq!(projects.method, Method::GET);
        assert_eq!(projects.segments, ["rest", "api", "2", "project"]);
        assert_eq!(projects.query, [("expand", "lead".to_owned())]);

        let components = components_request("ABC");
        assert_eq!(
            components.segments,
            ["rest", "api", "2", "project", "ABC", "components"]
        );

        let project = hand_over_request(&LeadTarget::Project { key: "ABC".into() }, "bob");
        assert_eq!(project.method, Method::PUT);
        assert_eq!(project.segments, ["rest", "api", "2", "project", "ABC"]);
        assert_eq!(project.body, Some(json!({ "lead": "bob" })));

        let component = hand_over_request(
            &LeadTarget::Component {
                id: "10001".into(),
                project_key: "ABC".into(),
                name: "Backend".into(),
            },
            "bob",
        );
        assert_eq!(component.method, Method::PUT);
        assert_eq!(
            component.segments,
            ["rest", "api", "2", "component", "10001"]
        );
        assert_eq!(component.body, Some(json!({ "leadUserName": "bob" })));
    }

    #[test]
    fn seats_are_those_of_the_default_role_with_the_fewest_left() {
        let listed = roles(json!([
            {"key": "jira-core", "selectedByDefault": false, "numberOfSeats": 5, "userCount": 5, "hasUnlimitedSeats": false},
            {"key": "jira-software", "selectedByDefault": true, "numberOfSeats": 100, "userCount": 40, "hasUnlimitedSeats": false},
            {"key": "jira-servicedesk", "selectedByDefault": true, "numberOfSeats": 10, "userCount": 8, "hasUnlimitedSeats": false},
        ]));
        assert_eq!(
            seats_of_new_users(&listed),
            Some(Seats {
                used: 8,
                limit: Some(10)
            })
        );
    }

    #[test]
    fn without_a_default_role_jira_software_counts_and_unlimited_has_no_limit() {
        let listed = roles(json!([
            {"key": "jira-core", "numberOfSeats": 5, "userCount": 1, "hasUnlimitedSeats": false},
            {"key": "jira-software", "numberOfSeats": -1, "remainingSeats": -1, "userCount": 3, "hasUnlimitedSeats": true},
        ]));
        assert_eq!(
            seats_of_new_users(&listed),
            Some(Seats {
                used: 3,
                limit: None
            })
        );
        let other = roles(json!([
            {"key": "jira-core", "numberOfSeats": 5, "userCount": 1, "hasUnlimitedSeats": false}
        ]));
        assert_eq!(seats_of_new_users(&other), None);
    }

    #[test]
    fn a_lead_is_its_user_key_or_else_its_name() {
        let components: Vec<ComponentBean> = serde_json::from_value(json!([
            {"id": "10000", "name": "A", "lead": {"key": "JIRAUSER10001", "name": "ann"}, "leadUserName": "ann"},
            {"id": "10001", "name": "B", "leadUserName": "bob"},
            {"id": "10002", "name": "C"},
        ]))
        .expect("components");
        let leads: Vec<Option<String>> = components
            .into_iter()
            .map(|component| component_lead("ABC", component).map(|lead| lead.account_id))
            .collect();
        assert_eq!(
            leads,
            [
                Some("JIRAUSER10001".to_owned()),
                Some("bob".to_owned()),
                None
            ]
        );
    }
}
