//! `keysync run ID --skipped` and `keysync explain RUN USER` against a stored plan with
//! conflicts and diagnostics, as the planner stores them.

use proto::v1::{self, ChangeOp, DiagnosticKind, Product, RunMode};

use crate::helpers::{TestApp, change, changes, describe, spawn_app};

fn diagnostic(
    product: Product,
    kind: DiagnosticKind,
    username: &str,
    subject: &str,
    message: &str,
) -> v1::Diagnostic {
    let mut diagnostic = v1::Diagnostic {
        subject: subject.to_owned(),
        message: message.to_owned(),
        keycloak_user_id: format!("kc-{username}"),
        username: username.to_owned(),
        ..v1::Diagnostic::default()
    };
    diagnostic.set_product(product);
    diagnostic.set_kind(kind);
    diagnostic
}

/// Stores a plan for `run_id` that creates alice (Jira, Confluence) and bob (Jira), and
/// says why three others were left out: erin has no email (her login would be e.smith,
/// under which Confluence still updates her), carol is outside the required groups, and
/// dave's login clashes with an account keysync does not manage.
async fn plan_with_findings(app: &TestApp, run_id: &str) {
    app.snapshot_ready(run_id, RunMode::Simulate as i32).await;
    let mut plan_changes = changes();
    let mut erin = change("c-2", Product::Confluence, ChangeOp::UpdateUser, "e.smith");
    erin.keycloak_user_id = "kc-erin".to_owned();
    erin.reason = "display name changed from Erin to Erin Smith".to_owned();
    plan_changes.push(erin);
    app.plan_ready_with(run_id, plan_changes, None, |plan| {
        plan.conflicts.push(v1::Conflict {
            product: Product::Jira as i32,
            login: "dave".to_owned(),
            keycloak_user_ids: vec!["kc-dave".to_owned()],
            reason: "this login belongs to account J9 (dave@other.example), which keysync does \
                     not manage, and no email matches it"
                .to_owned(),
            usernames: vec!["dave".to_owned()],
        });
        let mut scope = v1::Diagnostic {
            product: Product::Jira as i32,
            subject: "scope.required_groups".to_owned(),
            message: "only members of /staff (and of their subgroups) are read from Keycloak"
                .to_owned(),
            ..v1::Diagnostic::default()
        };
        scope.set_kind(DiagnosticKind::OutOfScope);
        plan.diagnostics = vec![
            diagnostic(
                Product::Jira,
                DiagnosticKind::MissingData,
                "erin",
                "e.smith",
                "no usable email, which a new account needs; not created",
            ),
            diagnostic(
                Product::Jira,
                DiagnosticKind::OutOfScope,
                "carol",
                "carol",
                "not in scope.required_groups (/staff, or a subgroup); not synced",
            ),
            scope,
        ];
        for summary in &mut plan.products {
            summary.skipped_users = if summary.product == Product::Jira as i32 {
                3
            } else {
                0
            };
            summary.unchanged_users = 7;
        }
    })
    .await;
}

/// Starts a simulated run, stores its plan with findings, and waits for it to end.
async fn simulated(app: &TestApp) -> String {
    let mut child = app
        .keysync(&["sync", "--simulate"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("keysync starts");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first_line = String::new();
    tokio::time::timeout(
        crate::helpers::DEADLINE,
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut first_line),
    )
    .await
    .expect("keysync prints the run in time")
    .expect("reads stdout");
    let run_id = first_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    plan_with_findings(app, &run_id).await;
    let mut rest = String::new();
    tokio::time::timeout(
        crate::helpers::DEADLINE,
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest),
    )
    .await
    .expect("keysync ends in time")
    .expect("reads stdout");
    let status = child.wait().await.expect("waits");
    assert!(status.success(), "{rest}");
    assert!(
        rest.contains("jira: create_user 2; users: 3 skipped, 7 unchanged"),
        "the summary counts the users: {rest}"
    );
    run_id
}

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{}", describe(output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn explain_prints_the_reason_of_every_decision_about_a_user() {
    let app = spawn_app().await;
    let run_id = simulated(&app).await;

    let erin = stdout(&app.run(&["explain", &run_id, "erin"]).await);
    assert!(
        erin.contains(&format!("Every decision of run {run_id} about erin:")),
        "{erin}"
    );
    let jira = erin.find("jira:").expect("a Jira section");
    let confluence = erin.find("confluence:").expect("a Confluence section");
    assert!(jira < confluence, "{erin}");
    assert!(
        erin.contains(
            "missing_data e.smith (Keycloak user kc-erin): no usable email, which a new \
             account needs; not created"
        ),
        "{erin}"
    );
    assert!(
        erin.contains(
            "change update_user e.smith: display name changed from Erin to Erin Smith [planned]"
        ),
        "the change under another login is found through the Keycloak id: {erin}"
    );

    let carol = stdout(&app.run(&["explain", &run_id, "carol"]).await);
    assert!(
        carol.contains("out_of_scope carol (Keycloak user kc-carol): not in scope.required_groups"),
        "{carol}"
    );
    let dave = stdout(&app.run(&["explain", &run_id, "DAVE"]).await);
    assert!(
        dave.contains(
            "conflict login dave (Keycloak user kc-dave): this login belongs to account J9"
        ),
        "{dave}"
    );
    let alice = stdout(&app.run(&["explain", &run_id, "alice"]).await);
    assert!(
        alice.contains("change create_user alice: alice is in Keycloak [planned]"),
        "{alice}"
    );
    assert!(alice.contains("confluence:"), "{alice}");
    assert!(
        !alice.contains("conflict") && !alice.contains("missing_data"),
        "{alice}"
    );

    let nobody = stdout(&app.run(&["explain", &run_id, "nobody"]).await);
    assert!(
        nobody.starts_with(&format!("No decision about nobody in run {run_id}")),
        "{nobody}"
    );
    assert!(
        nobody.contains("the scope left them out:\n  jira: only members of /staff"),
        "the scope is the reason a user may be missing: {nobody}"
    );

    let json = app.json(&["explain", &run_id, "carol"]).await;
    assert_eq!(json["user"], "carol");
    let decisions = json["decisions"].as_array().expect("decisions");
    assert_eq!(decisions.len(), 1, "{json}");
    assert_eq!(decisions[0]["kind"], "out_of_scope");
    assert_eq!(decisions[0]["product"], "jira");
}

#[tokio::test]
async fn run_skipped_lists_who_was_left_out_and_why_with_filters() {
    let app = spawn_app().await;
    let run_id = simulated(&app).await;

    let table = stdout(&app.run(&["run", &run_id, "--skipped"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("PRODUCT")
            && lines[0].contains("KIND")
            && lines[0].ends_with("REASON"),
        "{table}"
    );
    assert_eq!(lines.len(), 5, "a header and four rows: {table}");
    assert!(
        lines[1].contains("dave") && lines[1].contains("conflict"),
        "{table}"
    );
    assert!(
        lines[2].contains("erin") && lines[2].contains("missing_data"),
        "{table}"
    );
    assert!(
        lines[3].contains("carol") && lines[3].contains("out_of_scope"),
        "{table}"
    );
    assert!(
        lines[4].contains("scope.required_groups") && lines[4].contains("out_of_scope"),
        "{table}"
    );

    let json = app
        .json(&[
            "run",
            &run_id,
            "--skipped",
            "--kind",
            "out_of_scope",
            "--user",
            "carol",
        ])
        .await;
    let rows = json.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["user"], "carol");
    assert_eq!(rows[0]["keycloak_user_id"], "kc-carol");

    let confluence = stdout(
        &app.run(&["run", &run_id, "--skipped", "--product", "confluence"])
            .await,
    );
    assert_eq!(confluence.trim(), "No conflicts or diagnostics match.");
}
