//! What the products refuse for reasons the plan can know: Jira's project and component leads
//! (a lead cannot be deactivated, a project lead cannot be deleted) and the licence seats. The
//! plan hands leads over (`cleanup.lead_replacement`) or leaves the leaver with a `Lead`
//! diagnostic, and creates no more accounts than there are seats free, with a `NoSeat`
//! diagnostic for each user left out.

mod fixture;

use fixture::{account, assert_converges, jira, managed, member, snapshot, user};
use model::apply::apply;
use model::plan::{Action, ChangeOp, DiagnosticKind, Handover, Plan, plan};
use model::policy::{CleanupAction, Policy, ValidPolicy};
use model::state::{AccountId, Lead, LeadTarget, ProductState, Seats};

fn policy(edit: impl FnOnce(&mut Policy)) -> ValidPolicy {
    let mut policy = Policy::default();
    edit(&mut policy);
    policy
        .validate()
        .unwrap_or_else(|errors| panic!("{errors:?}"))
}

fn project(key: &str) -> LeadTarget {
    LeadTarget::Project {
        key: key.to_owned(),
    }
}

fn component(id: &str, project_key: &str, name: &str) -> LeadTarget {
    LeadTarget::Component {
        id: id.to_owned(),
        project_key: project_key.to_owned(),
        name: name.to_owned(),
    }
}

fn lead(account_id: &str, target: LeadTarget) -> Lead {
    Lead {
        account_id: AccountId::new(account_id),
        target,
    }
}

/// Jira with `admin` (not managed), `ann` (managed, still in Keycloak) and `bob` (managed,
/// gone from Keycloak) who leads project ABC and a component of DEF.
fn leaver_who_leads() -> ProductState {
    let mut state = jira(
        vec![
            account("k0", "admin"),
            managed("k1", "ann", "u1"),
            managed("k2", "bob", "u2"),
        ],
        vec![],
        vec![],
    );
    state.leads = vec![
        lead("k2", project("ABC")),
        lead("k2", component("10001", "DEF", "Backend")),
        lead("k1", project("XYZ")),
    ];
    state
}

fn diagnostics(planned: &Plan, kind: DiagnosticKind) -> Vec<(String, String)> {
    planned
        .diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.kind == kind)
        .map(|diagnostic| (diagnostic.subject.clone(), diagnostic.message.clone()))
        .collect()
}

#[test]
fn a_leaver_who_leads_is_left_active_with_the_reason_when_no_replacement_is_set() {
    let realm = snapshot(vec![user("u1", "ann")], vec![], vec![]);
    let state = leaver_who_leads();
    let planned = plan(&realm, &state, &policy(|_| {}));

    assert_eq!(planned.count(ChangeOp::DeactivateUser), 0, "{planned}");
    let leads = diagnostics(&planned, DiagnosticKind::Lead);
    assert_eq!(leads.len(), 1, "{leads:?}");
    let (subject, message) = &leads[0];
    assert_eq!(subject, "bob");
    for expected in [
        "project ABC",
        "component Backend of project DEF",
        "cleanup.lead_replacement",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
    assert_eq!(planned.safety.losing_access, 0);
}

#[test]
fn a_replacement_takes_every_lead_before_the_deactivation_and_the_plan_converges() {
    let realm = snapshot(vec![user("u1", "ann")], vec![], vec![]);
    let state = leaver_who_leads();
    let policy = policy(|policy| policy.cleanup.lead_replacement = Some("Admin".to_owned()));
    let planned = plan(&realm, &state, &policy);

    let deactivations: Vec<_> = planned
        .changes
        .iter()
        .filter_map(|change| match &change.action {
            Action::DeactivateUser { account, handovers } => Some((
                account.login().to_owned(),
                handovers.clone(),
                &change.reason,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(deactivations.len(), 1, "{planned}");
    let (login, handovers, reason) = &deactivations[0];
    assert_eq!(login, "bob");
    assert_eq!(
        handovers,
        &vec![
            Handover {
                target: project("ABC"),
                to: "Admin".to_owned(),
            },
            Handover {
                target: component("10001", "DEF", "Backend"),
                to: "Admin".to_owned(),
            },
        ]
    );
    assert!(
        reason.contains("hands the lead of project ABC, component Backend of project DEF"),
        "{reason}"
    );
    assert!(diagnostics(&planned, DiagnosticKind::Lead).is_empty());

    // Applying moves the leads to the replacement; ann keeps hers.
    let after = assert_converges(&realm, state.clone(), &policy, &planned);
    let mut leads: Vec<(String, String)> = after
        .leads
        .iter()
        .map(|lead| (lead.account_id.to_string(), lead.target.to_string()))
        .collect();
    leads.sort();
    assert_eq!(
        leads,
        [
            (
                "k0".to_owned(),
                "component Backend of project DEF".to_owned()
            ),
            ("k0".to_owned(), "project ABC".to_owned()),
            ("k1".to_owned(), "project XYZ".to_owned()),
        ]
    );
}

#[test]
fn a_replacement_jira_does_not_have_active_leaves_the_leaver_with_the_reason() {
    let realm = snapshot(vec![user("u1", "ann")], vec![], vec![]);
    let mut state = leaver_who_leads();
    state.accounts[0].active = false;
    for (replacement, expected) in [
        ("admin", "has no active account in jira"),
        ("nobody", "has no active account in jira"),
        ("bob", "is this account itself"),
    ] {
        let policy =
            policy(|policy| policy.cleanup.lead_replacement = Some(replacement.to_owned()));
        let planned = plan(&realm, &state, &policy);
        assert_eq!(planned.count(ChangeOp::DeactivateUser), 0, "{planned}");
        let leads = diagnostics(&planned, DiagnosticKind::Lead);
        assert_eq!(leads.len(), 1, "{replacement}: {leads:?}");
        assert!(leads[0].1.contains(expected), "{}", leads[0].1);
    }
}

#[test]
fn deletion_needs_a_handover_only_for_projects_and_deactivation_for_components_too() {
    let realm = snapshot(vec![user("u1", "ann")], vec![], vec![]);
    let mut state = leaver_who_leads();
    // bob now leads only a component.
    state
        .leads
        .retain(|lead| !matches!(lead.target, LeadTarget::Project { .. }));

    let deleting = policy(|policy| policy.cleanup.action = CleanupAction::Delete);
    let planned = plan(&realm, &state, &deleting);
    assert!(
        planned.changes.iter().any(|change| matches!(
            &change.action,
            Action::DeleteUser { account, handovers }
                if account.login() == "bob" && handovers.is_empty()
        )),
        "{planned}"
    );
    // Jira makes the project lead take over the components of a deleted user.
    let after = apply(state.clone(), &planned.changes, |_| AccountId::new("?"));
    assert!(after.leads.is_empty(), "{:?}", after.leads);

    let deactivating = plan(&realm, &state, &policy(|_| {}));
    assert_eq!(deactivating.count(ChangeOp::DeactivateUser), 0);
    assert_eq!(diagnostics(&deactivating, DiagnosticKind::Lead).len(), 1);
}

#[test]
fn a_user_disabled_in_keycloak_who_leads_is_treated_like_a_leaver() {
    let mut bob = user("u2", "bob");
    bob.enabled = false;
    let realm = snapshot(vec![user("u1", "ann"), bob], vec![], vec![]);
    let planned = plan(&realm, &leaver_who_leads(), &policy(|_| {}));
    assert_eq!(planned.count(ChangeOp::DeactivateUser), 0, "{planned}");
    let leads: Vec<_> = planned
        .diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.kind == DiagnosticKind::Lead)
        .collect();
    assert_eq!(leads.len(), 1);
    assert_eq!(
        leads[0].keycloak_user_id.as_ref().map(|id| id.as_str()),
        Some("u2")
    );
}

fn newcomers() -> model::snapshot::Snapshot {
    snapshot(
        ["dan", "ann", "cat", "bob"]
            .iter()
            .enumerate()
            .map(|(idx, name)| user(&format!("u{idx}"), name))
            .collect(),
        vec![fixture::group("/staff")],
        (0..4)
            .map(|idx| member(&format!("u{idx}"), "/staff"))
            .collect(),
    )
}

fn created(planned: &Plan) -> Vec<String> {
    planned
        .changes
        .iter()
        .filter_map(|change| match &change.action {
            Action::CreateUser { fields } => Some(fields.login.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn no_more_accounts_are_created_than_there_are_seats_and_each_left_out_user_is_named() {
    let realm = newcomers();
    let policy = policy(|policy| {
        policy.groups.default_for_new_users = vec!["jira-software-users".to_owned()];
    });
    let mut state = jira(vec![account("k0", "admin")], vec![], vec![]);
    state.seats = Some(Seats {
        used: 1,
        limit: Some(3),
    });
    let planned = plan(&realm, &state, &policy);

    assert_eq!(created(&planned), ["ann", "bob"], "{planned}");
    let seats = planned.seats.expect("the product reported seats");
    assert_eq!(
        (seats.needed, seats.used, seats.limit, seats.left_out),
        (4, 1, Some(3), 2)
    );
    assert_eq!(seats.free(), Some(2));
    let no_seat = diagnostics(&planned, DiagnosticKind::NoSeat);
    let subjects: Vec<&str> = no_seat
        .iter()
        .map(|(subject, _)| subject.as_str())
        .collect();
    assert_eq!(subjects, ["cat", "dan"]);
    assert!(
        no_seat[0].1.contains("needs 4 seat(s) and 2 are free"),
        "{}",
        no_seat[0].1
    );
    // Nothing else is planned for the users left out: no membership of an account that will
    // not exist.
    assert!(
        planned.changes.iter().all(|change| {
            let text = change.to_string();
            !text.contains(" cat ") && !text.contains(" dan ")
        }),
        "{planned}"
    );

    // Applied, the seats are taken: the next plan creates nobody and names the same users.
    let after = apply(state, &planned.changes, |change| {
        AccountId::new(format!("new-{}", change.id))
    });
    assert_eq!(after.seats.map(|seats| seats.used), Some(3));
    let again = plan(&realm, &after, &policy);
    assert!(created(&again).is_empty(), "{again}");
    assert_eq!(diagnostics(&again, DiagnosticKind::NoSeat).len(), 2);

    // A bigger licence lets the rest in.
    let mut bigger = after;
    bigger.seats = Some(Seats {
        used: 3,
        limit: None,
    });
    let last = plan(&realm, &bigger, &policy);
    assert_eq!(created(&last), ["cat", "dan"]);
    assert_eq!(last.seats.and_then(|seats| seats.free()), None);
}

#[test]
fn a_product_that_reports_no_seats_limits_nothing() {
    let planned = plan(&newcomers(), &jira(vec![], vec![], vec![]), &policy(|_| {}));
    assert_eq!(created(&planned).len(), 4);
    assert_eq!(planned.seats, None);
    assert!(diagnostics(&planned, DiagnosticKind::NoSeat).is_empty());
}
