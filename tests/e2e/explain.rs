//! Answers to "why?" (issue #13), end to end: a simulated run against a real Keycloak
//! stores why it left users out, and `keysync explain RUN USER` prints the reason for a
//! user with no email, a user outside the required groups (read but not in scope, and not
//! read at all) and a user whose login clashes with a protected Jira account; `keysync run
//! RUN --skipped` lists them.

use e2e::{CONNECTOR, Stack, StackOptions};
use proto::v1::{Product, RunMode};
use test_support::keycloak::{RealmSpec, UserSpec};

/// The realm: ann is synced; nomail has no email; subonly is only in a subgroup of the
/// required group, which the products' scope does not count; outsider is in no required
/// group, so the fetch does not read them; ops-admin has the login of a Jira administrator.
fn realm() -> RealmSpec {
    RealmSpec::default()
        .group("/staff")
        .group("/staff/engineering")
        .group("/contractors")
        .user(
            UserSpec::new("ann")
                .name("Ann", "Example")
                .email("ann@example.org")
                .member_of("/staff"),
        )
        .user(
            UserSpec::new("nomail")
                .name("No", "Mail")
                .no_email()
                .member_of("/staff"),
        )
        .user(
            UserSpec::new("subonly")
                .name("Sub", "Only")
                .email("subonly@example.org")
                .member_of("/staff/engineering"),
        )
        .user(
            UserSpec::new("outsider")
                .name("Out", "Sider")
                .email("outsider@example.org")
                .member_of("/contractors"),
        )
        .user(
            UserSpec::new("ops-admin")
                .name("Someone", "Else")
                .email("someone@example.org")
                .member_of("/staff"),
        )
}

/// Jira has an administrator `ops-admin` (in `jira-administrators`, a protected group)
/// that keysync does not manage.
fn jira_seed() -> serde_json::Value {
    serde_json::json!({
        "accounts": [
            {"login": "ops-admin", "display_name": "Ops Admin", "email": "ops@example.org"}
        ],
        "groups": [{"name": "jira-administrators"}],
        "memberships": [{"group": "jira-administrators", "login": "ops-admin"}]
    })
}

async fn cli_stdout(stack: &Stack, args: &[&str]) -> String {
    let output = stack.cli(args).await.expect("the CLI runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "keysync {args:?}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_why_each_left_out_user_was_left_out() {
    let stack = Stack::start(StackOptions {
        realm: realm(),
        seeds: [(Product::Jira, jira_seed())].into(),
        // The fetch and the plan read the required groups from the connector's section.
        service_env: vec![(
            format!(
                "KEYSYNC_KEYCLOAK__{}__REQUIRED_GROUPS",
                CONNECTOR.to_uppercase()
            ),
            "[\"/staff\"]".to_owned(),
        )],
        extra_config: ["jira", "confluence", "bitbucket"]
            .map(|product| {
                format!("[products.{product}.policy.scope]\ninclude_subgroups = false\n")
            })
            .concat(),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let run = stack.sync(RunMode::Simulate).await.unwrap();
    let run_id = run.run_id.as_str();
    let jira = run
        .plan
        .iter()
        .find(|summary| summary.product() == Product::Jira)
        .expect("a Jira summary");
    // nomail, subonly and ops-admin are skipped in Jira; ann is created.
    assert_eq!(jira.skipped_users, 3, "{jira:?}");

    let nomail = cli_stdout(&stack, &["explain", run_id, "nomail"]).await;
    for product in ["jira", "confluence", "bitbucket"] {
        assert!(nomail.contains(&format!("\n{product}:\n")), "{nomail}");
    }
    assert_eq!(
        nomail
            .matches("missing_data nomail (Keycloak user ")
            .count(),
        3,
        "{nomail}"
    );
    assert!(
        nomail.contains("no usable email, which a new account needs; not created"),
        "{nomail}"
    );

    let subonly = cli_stdout(&stack, &["explain", run_id, "subonly"]).await;
    assert!(
        subonly.contains("out_of_scope subonly (Keycloak user ")
            && subonly.contains("not in scope.required_groups (/staff); not synced"),
        "{subonly}"
    );

    let outsider = cli_stdout(&stack, &["explain", run_id, "outsider"]).await;
    assert!(
        outsider.starts_with(&format!("No decision about outsider in run {run_id}")),
        "{outsider}"
    );
    assert!(
        outsider.contains("jira: only members of /staff (and of their subgroups) are read"),
        "the scope says why outsider is not in the run: {outsider}"
    );

    let clash = cli_stdout(&stack, &["explain", run_id, "ops-admin"]).await;
    assert!(
        clash.contains("conflict login ops-admin (Keycloak user ")
            && clash.contains("this login belongs to protected account"),
        "{clash}"
    );
    // Confluence and Bitbucket have no such account: ops-admin is created there.
    assert!(clash.contains("change create_user ops-admin"), "{clash}");

    let skipped = cli_stdout(&stack, &["run", run_id, "--skipped", "--product", "jira"]).await;
    for (user, kind) in [
        ("ops-admin", "conflict"),
        ("nomail", "missing_data"),
        ("subonly", "out_of_scope"),
    ] {
        assert!(
            skipped
                .lines()
                .any(|line| line.contains(user) && line.contains(kind)),
            "{user} {kind}:\n{skipped}"
        );
    }
    for (user, reason) in [("ann", "ann"), ("outsider", "outsider")] {
        assert!(
            !skipped.lines().any(|line| line.contains(user)),
            "{reason} is not skipped:\n{skipped}"
        );
    }
    let summary = cli_stdout(&stack, &["run", run_id]).await;
    assert!(
        summary.contains("users: 3 skipped, 0 unchanged"),
        "the summary counts the users: {summary}"
    );
}
