//! The products' documented login rules in the plan (`model::rules`): a user whose login
//! Confluence would refuse gets no change there and a `NotSyncable` diagnostic naming the
//! rule, unless the policy maps the login (`attributes.login.replace_forbidden`); Jira,
//! whose reference states no such rule, takes the same login.

mod fixture;

use fixture::{assert_converges, product, snapshot, user};
use model::plan::{DiagnosticKind, plan};
use model::policy::Policy;
use model::state::Product;

fn logins_created(planned: &model::plan::Plan) -> Vec<String> {
    planned
        .changes
        .iter()
        .filter_map(|change| {
            let text = change.to_string();
            text.strip_prefix("create_user ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn confluence_does_not_get_a_login_it_would_refuse_and_the_plan_says_why() {
    let realm = snapshot(
        vec![user("u1", "ann+jira"), user("u2", "ben")],
        vec![],
        vec![],
    );
    let policy = Policy::default()
        .validate()
        .unwrap_or_else(|errors| panic!("{errors:?}"));

    let state = product(Product::Confluence, vec![], vec![], vec![]);
    let planned = plan(&realm, &state, &policy);
    assert_eq!(logins_created(&planned), ["ben"]);
    let refused: Vec<_> = planned
        .diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.kind == DiagnosticKind::NotSyncable)
        .collect();
    assert_eq!(refused.len(), 1, "{:#?}", planned.diagnostics);
    assert_eq!(refused[0].subject, "ann+jira");
    assert!(
        refused[0].message.contains("`+`")
            && refused[0]
                .message
                .contains("attributes.login.replace_forbidden"),
        "{}",
        refused[0].message
    );
    assert_converges(&realm, state, &policy, &planned);

    // Jira states no such rule: both are created.
    let jira = product(Product::Jira, vec![], vec![], vec![]);
    let planned = plan(&realm, &jira, &policy);
    assert_eq!(logins_created(&planned), ["ann+jira", "ben"]);
}

#[test]
fn a_configured_replacement_maps_the_login_or_still_reports_it() {
    let realm = snapshot(
        vec![user("u1", "ann+jira"), user("u2", "anonymous")],
        vec![],
        vec![],
    );
    let mut policy = Policy::default();
    policy.attributes.login.replace_forbidden = Some("_".to_owned());
    let policy = policy
        .validate()
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let state = product(Product::Confluence, vec![], vec![], vec![]);
    let planned = plan(&realm, &state, &policy);
    assert_eq!(logins_created(&planned), ["ann_jira"]);
    let refused: Vec<_> = planned
        .diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.kind == DiagnosticKind::NotSyncable)
        .map(|diagnostic| diagnostic.subject.clone())
        .collect();
    assert_eq!(
        refused,
        ["anonymous"],
        "a reserved name has nothing to replace"
    );
    assert_converges(&realm, state, &policy, &planned);
}

#[test]
fn logins_that_differ_only_in_case_are_the_same_login_never_a_rename_or_a_second_account() {
    let mut policy = Policy::default();
    policy.attributes.login.lowercase = false;
    let policy = policy
        .validate()
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let realm = snapshot(vec![user("u1", "Ann"), user("u2", "BEN")], vec![], vec![]);
    for product_name in [Product::Jira, Product::Confluence, Product::Bitbucket] {
        // Ann's account is managed already, as `ann`; Ben's is unmanaged, as `ben`.
        let state = product(
            product_name,
            vec![
                fixture::managed("A1", "ann", "u1"),
                fixture::account("B1", "ben"),
            ],
            vec![],
            vec![],
        );
        let planned = plan(&realm, &state, &policy);
        let text = planned.to_string();
        assert!(!text.contains("create_user"), "{product_name}: {text}");
        assert!(!text.contains("rename"), "{product_name}: {text}");
        assert!(
            !planned.changes.iter().any(|change| {
                let line = change.to_string();
                line.contains("\"Ann\"") && line.contains("login")
            }),
            "{product_name}: {text}"
        );
        assert!(
            !planned
                .diagnostics
                .iter()
                .any(|diagnostic| diagnostic.kind == DiagnosticKind::NotSyncable),
            "{product_name}: upper case is lower-cased, not refused: {text}"
        );
        assert_converges(&realm, state, &policy, &planned);
    }
}
