//! Jira project and component leads: listing, handing over, and Jira's refusal to deactivate
//! or delete a lead; Jira's licence seats; Jira's username rules, as the emulator keeps them.

use atlassian::jira::JiraClient;
use atlassian::{
    AccountUpdate, Directory, DirectoryState, Error, Lead, LeadTarget, Outcome, RemoteAccount,
    Seats,
};
use emulator::store::{DumpProject, Seed, SeedComponent, SeedProject};
use emulator::{Product, Running};
use serde_json::{Value, json};

use crate::helpers::*;

/// A project `key` led by `lead`, with components `(name, lead)`.
fn project(key: &str, lead: &str, components: &[(&str, Option<&str>)]) -> SeedProject {
    SeedProject {
        key: key.to_owned(),
        name: format!("Project {key}"),
        lead: lead.to_owned(),
        components: components
            .iter()
            .map(|(name, lead)| SeedComponent {
                name: (*name).to_owned(),
                lead: lead.map(str::to_owned),
            })
            .collect(),
    }
}

/// Jira with the accounts ann, bob, cid and dee; ann leads ABC, whose component Backend bob
/// leads (Frontend has no lead); cid leads DEF and its component Ops.
async fn start() -> (Running, JiraClient) {
    let seed = Seed {
        accounts: ["ann", "bob", "cid", "dee"].map(seed_account).to_vec(),
        ..Seed::default()
    };
    let emulator = spawn(seeded(Product::Jira, seed)).await;
    emulator
        .state()
        .set_initial_projects(&[
            project(
                "ABC",
                "ann",
                &[("Backend", Some("bob")), ("Frontend", None)],
            ),
            project("DEF", "cid", &[("Ops", Some("cid"))]),
        ])
        .expect("the projects seed");
    let client = jira(&emulator);
    (emulator, client)
}

fn account<'a>(state: &'a DirectoryState, login: &str) -> &'a RemoteAccount {
    state
        .accounts
        .iter()
        .find(|account| account.login == login)
        .unwrap_or_else(|| panic!("{login} is listed"))
}

fn dump_project(emulator: &Running, key: &str) -> DumpProject {
    emulator
        .state()
        .dump()
        .projects
        .into_iter()
        .find(|project| project.key == key)
        .unwrap_or_else(|| panic!("project {key} is in the dump"))
}

fn component_lead(emulator: &Running, key: &str, name: &str) -> Option<String> {
    dump_project(emulator, key)
        .components
        .into_iter()
        .find(|component| component.name == name)
        .unwrap_or_else(|| panic!("component {name} is in the dump"))
        .lead
}

fn is_active(emulator: &Running, login: &str) -> bool {
    emulator
        .state()
        .dump()
        .accounts
        .iter()
        .find(|account| account.login == login)
        .unwrap_or_else(|| panic!("{login} is in the dump"))
        .active
}

fn component_target(state: &DirectoryState, name: &str) -> LeadTarget {
    state
        .leads
        .iter()
        .map(|lead| &lead.target)
        .find(|target| matches!(target, LeadTarget::Component { name: n, .. } if n == name))
        .unwrap_or_else(|| panic!("component {name} has a lead"))
        .clone()
}

#[tokio::test]
async fn fetch_state_lists_project_and_component_leads_by_user_key() {
    let (_emulator, client) = start().await;

    let state = client.fetch_state().await.unwrap();

    let (ann, bob, cid) = (
        account(&state, "ann").id.clone(),
        account(&state, "bob").id.clone(),
        account(&state, "cid").id.clone(),
    );
    assert!(ann.starts_with("JIRAUSER"), "{ann}");
    let mut leads = state.leads.clone();
    leads.sort();
    let backend = component_target(&state, "Backend");
    let ops = component_target(&state, "Ops");
    let mut expected = vec![
        Lead {
            account_id: ann,
            target: LeadTarget::Project { key: "ABC".into() },
        },
        Lead {
            account_id: cid.clone(),
            target: LeadTarget::Project { key: "DEF".into() },
        },
        Lead {
            account_id: bob,
            target: backend.clone(),
        },
        Lead {
            account_id: cid,
            target: ops.clone(),
        },
    ];
    expected.sort();
    assert_eq!(leads, expected);
    let LeadTarget::Component {
        id, project_key, ..
    } = backend
    else {
        unreachable!("a component target");
    };
    assert_eq!(project_key, "ABC");
    let LeadTarget::Component { id: ops_id, .. } = ops else {
        unreachable!("a component target");
    };
    assert!(id.parse::<u64>().is_ok(), "{id}");
    assert_ne!(id, ops_id);
}

#[tokio::test]
async fn a_project_lead_cannot_be_deactivated_and_stays_active() {
    let (emulator, client) = start().await;
    let state = client.fetch_state().await.unwrap();

    let error = client
        .deactivate_account(account(&state, "ann").into())
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::Validation { status: 400, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("ABC"), "{error}");
    assert!(is_active(&emulator, "ann"));
}

#[tokio::test]
async fn a_component_lead_cannot_be_deactivated() {
    let (emulator, client) = start().await;
    let state = client.fetch_state().await.unwrap();

    let error = client
        .deactivate_account(account(&state, "bob").into())
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::Validation { status: 400, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("ABC"), "{error}");
    assert!(is_active(&emulator, "bob"));
}

#[tokio::test]
async fn handing_the_leads_over_lets_the_old_lead_be_deactivated() {
    let (emulator, client) = start().await;
    let state = client.fetch_state().await.unwrap();
    let cid = account(&state, "cid");

    let project = client
        .hand_over_lead(&LeadTarget::Project { key: "DEF".into() }, "dee")
        .await
        .unwrap();
    assert_eq!(project, Outcome::Applied);
    assert_eq!(dump_project(&emulator, "DEF").lead.as_deref(), Some("dee"));
    // cid still leads Ops: still refused.
    assert!(client.deactivate_account(cid.into()).await.is_err());
    assert!(is_active(&emulator, "cid"));

    let component = client
        .hand_over_lead(&component_target(&state, "Ops"), "dee")
        .await
        .unwrap();
    assert_eq!(component, Outcome::Applied);
    assert_eq!(
        component_lead(&emulator, "DEF", "Ops").as_deref(),
        Some("dee")
    );

    assert_eq!(
        client.deactivate_account(cid.into()).await.unwrap(),
        Outcome::Applied
    );
    assert!(!is_active(&emulator, "cid"));
    let after = client.fetch_state().await.unwrap();
    let dee = account(&after, "dee").id.clone();
    assert!(
        after
            .leads
            .iter()
            .filter(|lead| lead.account_id == account(&after, "cid").id)
            .count()
            == 0
    );
    assert_eq!(
        after
            .leads
            .iter()
            .filter(|lead| lead.account_id == dee)
            .count(),
        2
    );
}

#[tokio::test]
async fn handing_a_lead_to_an_unknown_user_or_an_unknown_project_fails() {
    let (emulator, client) = start().await;

    let no_user = client
        .hand_over_lead(&LeadTarget::Project { key: "ABC".into() }, "nobody")
        .await
        .unwrap_err();
    let no_project = client
        .hand_over_lead(&LeadTarget::Project { key: "ZZZ".into() }, "dee")
        .await
        .unwrap_err();

    assert!(
        matches!(no_user, Error::Validation { status: 400, .. }),
        "{no_user:?}"
    );
    assert!(
        matches!(no_project, Error::NotFound { status: 404, .. }),
        "{no_project:?}"
    );
    assert_eq!(dump_project(&emulator, "ABC").lead.as_deref(), Some("ann"));
}

#[tokio::test]
async fn a_component_lead_can_be_deleted_and_its_component_loses_the_lead() {
    let (emulator, client) = start().await;
    let state = client.fetch_state().await.unwrap();

    let outcome = client
        .delete_account(account(&state, "bob").into())
        .await
        .unwrap();

    assert_eq!(outcome, Outcome::Applied);
    assert_eq!(component_lead(&emulator, "ABC", "Backend"), None);
    let after = client.fetch_state().await.unwrap();
    assert!(after.accounts.iter().all(|account| account.login != "bob"));
    assert_eq!(after.leads.len(), 3, "{:?}", after.leads);
}

#[tokio::test]
async fn a_project_lead_cannot_be_deleted() {
    let (emulator, client) = start().await;
    let state = client.fetch_state().await.unwrap();

    let error = client
        .delete_account(account(&state, "ann").into())
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::Validation { status: 400, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("'ann'"), "{error}");
    assert!(is_active(&emulator, "ann"));
    assert_eq!(dump_project(&emulator, "ABC").lead.as_deref(), Some("ann"));
}

#[tokio::test]
async fn a_renamed_lead_keeps_its_leads() {
    let (emulator, client) = start().await;
    let state = client.fetch_state().await.unwrap();
    let ann = account(&state, "ann");

    let update = AccountUpdate {
        login: Some("anna".into()),
        ..AccountUpdate::default()
    };
    client.update_account(ann.into(), &update).await.unwrap();

    assert_eq!(dump_project(&emulator, "ABC").lead.as_deref(), Some("anna"));
    let after = client.fetch_state().await.unwrap();
    assert!(after.leads.contains(&Lead {
        account_id: ann.id.clone(),
        target: LeadTarget::Project { key: "ABC".into() },
    }));
}

#[tokio::test]
async fn seats_report_the_active_users_and_the_licence() {
    let seed = Seed {
        accounts: vec![seed_account("ann"), seed_account("bob"), {
            let mut gone = seed_account("cid");
            gone.active = false;
            gone
        }],
        ..Seed::default()
    };
    let unlimited = spawn(seeded(Product::Jira, seed.clone())).await;
    let mut licensed = seeded(Product::Jira, seed);
    licensed.license_seats = Some(10);
    let licensed = spawn(licensed).await;

    assert_eq!(
        jira(&unlimited).seats().await.unwrap(),
        Some(Seats {
            used: 2,
            limit: None
        })
    );
    assert_eq!(
        jira(&licensed).seats().await.unwrap(),
        Some(Seats {
            used: 2,
            limit: Some(10)
        })
    );
    let state = jira(&licensed).fetch_state().await.unwrap();
    assert_eq!(
        state.seats,
        Some(Seats {
            used: 2,
            limit: Some(10)
        })
    );
}

#[tokio::test]
async fn jira_refuses_usernames_with_markup_characters_on_create_and_rename() {
    let (emulator, client) = start().await;
    let state = client.fetch_state().await.unwrap();

    let create = client
        .create_account(&new_account("tom<jerry"))
        .await
        .unwrap_err();
    let rename = client
        .update_account(
            account(&state, "dee").into(),
            &AccountUpdate {
                login: Some("dee&co".into()),
                ..AccountUpdate::default()
            },
        )
        .await
        .unwrap_err();

    for error in [&create, &rename] {
        assert!(
            matches!(error, Error::Validation { status: 400, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("username"), "{error}");
    }
    let logins: Vec<String> = emulator
        .state()
        .dump()
        .accounts
        .into_iter()
        .map(|account| account.login)
        .collect();
    assert_eq!(logins, ["ann", "bob", "cid", "dee"]);
}

/// Sends `method path` with the test token and an optional JSON body; the status and the
/// JSON answer (`Null` for none).
async fn call(
    emulator: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", emulator.url()))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_emulator_answers_jiras_error_shapes_for_leads() {
    let (emulator, _client) = start().await;
    let ann = emulator.state().dump().accounts[0].key.clone();

    let (status, deactivate) = call(
        &emulator,
        reqwest::Method::PUT,
        &format!("/rest/api/2/user?key={ann}"),
        Some(json!({ "active": false })),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(deactivate["errorMessages"], json!([]));
    assert!(
        deactivate["errors"]["active"]
            .as_str()
            .is_some_and(|message| message.contains("ABC")),
        "{deactivate}"
    );

    let (status, delete) = call(
        &emulator,
        reqwest::Method::DELETE,
        &format!("/rest/api/2/user?key={ann}"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        delete,
        json!({
            "errorMessages": ["Cannot delete user 'ann' because they are the lead of 1 project(s)"],
            "errors": {},
        })
    );

    let (status, created) = call(
        &emulator,
        reqwest::Method::POST,
        "/rest/api/2/user",
        Some(json!({ "name": "a>b", "emailAddress": "ab@example.com", "displayName": "A B" })),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(created["errorMessages"], json!([]));
    assert!(created["errors"]["username"].is_string(), "{created}");
}

#[tokio::test]
async fn the_project_list_carries_the_lead_only_when_expanded() {
    let (emulator, _client) = start().await;

    let (_, plain) = call(&emulator, reqwest::Method::GET, "/rest/api/2/project", None).await;
    let (_, expanded) = call(
        &emulator,
        reqwest::Method::GET,
        "/rest/api/2/project?expand=lead",
        None,
    )
    .await;
    let (status, components) = call(
        &emulator,
        reqwest::Method::GET,
        "/rest/api/2/project/ABC/components",
        None,
    )
    .await;

    assert!(plain[0].get("lead").is_none(), "{plain}");
    assert_eq!(expanded[0]["key"], "ABC");
    assert_eq!(expanded[0]["lead"]["name"], "ann");
    assert_eq!(status, 200);
    assert_eq!(components[0]["leadUserName"], "bob");
    assert!(components[1].get("lead").is_none(), "{components}");
}

#[tokio::test]
async fn seeding_and_resetting_the_emulator_keep_the_projects() {
    let (emulator, client) = start().await;
    let state = client.fetch_state().await.unwrap();
    client
        .hand_over_lead(&LeadTarget::Project { key: "ABC".into() }, "dee")
        .await
        .unwrap();

    let (status, _) = call(&emulator, reqwest::Method::POST, "/_emulator/reset", None).await;
    assert_eq!(status, 204);
    assert_eq!(dump_project(&emulator, "ABC").lead.as_deref(), Some("ann"));
    assert_eq!(client.list_leads().await.unwrap(), state.leads);

    let (status, _) = call(
        &emulator,
        reqwest::Method::POST,
        "/_emulator/seed",
        Some(json!({
            "accounts": [{"login": "zed", "display_name": "Zed", "email": "zed@example.com"}],
            "projects": [{"key": "ZZ", "name": "Zeta", "lead": "zed", "components": [{"name": "Core"}]}],
        })),
    )
    .await;
    assert_eq!(status, 204);
    let dump = emulator.state().dump();
    assert_eq!(dump.projects.len(), 1);
    assert_eq!(dump.projects[0].lead.as_deref(), Some("zed"));
    assert_eq!(dump.projects[0].components[0].lead, None);
    assert_eq!(dump.projects[0].components[0].id, "10000");

    let (status, refused) = call(
        &emulator,
        reqwest::Method::POST,
        "/_emulator/seed",
        Some(json!({ "projects": [{"key": "ZZ", "name": "Zeta", "lead": "nobody"}] })),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(emulator.state().dump().projects.len(), 1, "unchanged");
    // `reset` goes back to the projects of the start.
    let (status, _) = call(&emulator, reqwest::Method::POST, "/_emulator/reset", None).await;
    assert_eq!(status, 204);
    assert_eq!(emulator.state().dump().projects.len(), 2);
}

#[tokio::test]
async fn leads_and_seats_need_an_administrator() {
    let (emulator, _client) = start().await;
    let anonymous = reqwest::Client::new()
        .get(format!("{}/rest/api/2/applicationrole", emulator.url()))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let update = reqwest::Client::new()
        .put(format!("{}/rest/api/2/project/ABC", emulator.url()))
        .header("content-type", "application/json")
        .body(r#"{"lead":"dee"}"#)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();

    assert_eq!(anonymous, 401);
    assert_eq!(update, 401);
    assert_eq!(dump_project(&emulator, "ABC").lead.as_deref(), Some("ann"));
}
