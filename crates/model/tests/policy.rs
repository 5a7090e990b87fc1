//! The policy as a configuration file gives it: defaults, strict field names, and validation errors
//! that name the field. JSON stands in for the TOML file here; both go through the same serde
//! derives.

use expect_test::{Expect, expect};
use model::policy::{
    CleanupAction, Fallback, GroupNaming, GroupSelection, LoginSource, Operations, Policy,
    PolicyError, RestSelection,
};

fn check(json: &str, expect: Expect) {
    let rendered = match serde_json::from_str::<Policy>(json) {
        Err(error) => format!("does not parse: {error}"),
        Ok(policy) => match policy.validate() {
            Ok(_) => "valid".to_owned(),
            Err(errors) => errors
                .iter()
                .map(|error| format!("{error}\n"))
                .collect::<String>(),
        },
    };
    expect.assert_eq(&rendered);
}

#[test]
fn default_policy_is_valid_and_an_empty_section_means_the_defaults() {
    assert!(Policy::default().validate().is_ok());
    let parsed: Policy = serde_json::from_str("{}").unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(parsed, Policy::default());
    let parsed: Policy = serde_json::from_str(r#"{"scope": {}, "safety": {"max_accounts": 5}}"#)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(parsed.safety.max_accounts, 5);
    assert_eq!(parsed.safety.max_percent, 10);
    assert!(parsed.scope.include_subgroups);
}

#[test]
fn defaults_are_the_documented_ones() {
    let policy = Policy::default();
    assert!(policy.scope.required_groups.is_empty());
    assert!(policy.scope.include_subgroups);
    assert_eq!(policy.attributes.login.from, LoginSource::Username);
    assert!(policy.attributes.login.lowercase);
    assert!(!policy.attributes.login.strip_domain);
    assert_eq!(
        policy.attributes.display_name.template,
        "{firstName} {lastName}"
    );
    assert_eq!(policy.attributes.display_name.fallback, "{username}");
    assert!(policy.attributes.email.lowercase);
    assert!(!policy.attributes.email.require_verified);
    assert!(policy.attributes.email.required);
    assert_eq!(policy.groups.select, GroupSelection::All);
    assert_eq!(policy.groups.naming, GroupNaming::Name);
    assert!(policy.groups.default_for_new_users.is_empty());
    assert!(policy.groups.default_for_all_users.is_empty());
    assert!(!policy.groups.remove_unmapped);
    assert!(policy.groups.exclude.is_empty());
    assert!(policy.groups.remove_unmanaged_members);
    assert_eq!(
        policy.operations,
        Operations {
            create_users: true,
            update_users: true,
            group_changes: true,
            deactivate_users: true,
        }
    );
    assert!(policy.linking.by_login);
    assert!(policy.linking.by_email);
    assert!(policy.linking.by_email_requires_verified);
    assert_eq!(policy.cleanup.action, CleanupAction::Deactivate);
    assert_eq!(
        policy.cleanup.when_cannot_deactivate,
        Fallback::RemoveGroups
    );
    assert_eq!(
        policy.protected_accounts,
        ["admin", "administrator", "sysadmin"]
    );
    assert_eq!(
        policy.protected_groups,
        [
            "jira-administrators",
            "jira-system-administrators",
            "confluence-administrators"
        ]
    );
    assert_eq!(
        (policy.safety.max_accounts, policy.safety.max_percent),
        (50, 10)
    );
}

#[test]
fn protected_groups_match_case_insensitively_with_wildcards_and_none_is_empty() {
    let mut policy = Policy {
        protected_groups: vec!["*-administrators".to_owned(), "site-admins".to_owned()],
        ..Policy::default()
    };
    let valid = policy.validate().expect("valid");
    assert!(valid.is_protected_group("Jira-Administrators"));
    assert!(valid.is_protected_group(" site-admins "));
    assert!(!valid.is_protected_group("jira-software-users"));
    policy.protected_groups = vec![" ".to_owned()];
    let errors = policy.validate().expect_err("an empty pattern");
    assert!(
        errors
            .iter()
            .any(|error| error.to_string().contains("protected_groups[0]")),
        "{errors:?}"
    );
}

#[test]
fn reads_every_section_in_snake_case() {
    let json = r#"{
        "scope": {"required_groups": ["/staff"], "include_subgroups": false},
        "attributes": {
            "login": {"from": {"attribute": "uid"}, "lowercase": false, "strip_domain": true},
            "display_name": {"template": "{lastName}, {firstName}", "fallback": "{email}"},
            "email": {"from": "email", "lowercase": false, "require_verified": true, "required": false}
        },
        "groups": {
            "select": {"pattern": {"regex": "^app-(.*)$", "rename": "$1"}},
            "naming": "path",
            "default_for_new_users": ["welcome"],
            "default_for_all_users": ["jira-software-users"],
            "remove_unmapped": true,
            "exclude": ["/staff/interns", "/tmp*"],
            "remove_unmanaged_members": false
        },
        "linking": {"by_login": true, "by_email": false},
        "cleanup": {"action": "remove_groups", "when_cannot_deactivate": "delete"},
        "protected_accounts": ["svc-*"],
        "operations": {"create_users": false, "deactivate_users": false},
        "safety": {"max_accounts": 10, "max_percent": 5}
    }"#;
    let policy: Policy = serde_json::from_str(json).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        policy.attributes.login.from,
        LoginSource::Attribute("uid".to_owned())
    );
    assert_eq!(
        policy.groups.select,
        GroupSelection::Pattern {
            regex: "^app-(.*)$".to_owned(),
            rename: "$1".to_owned()
        }
    );
    assert_eq!(policy.cleanup.action, CleanupAction::RemoveGroups);
    assert_eq!(policy.cleanup.when_cannot_deactivate, Fallback::Delete);
    assert_eq!(policy.groups.exclude, ["/staff/interns", "/tmp*"]);
    assert!(!policy.groups.remove_unmanaged_members);
    assert_eq!(
        policy.operations,
        Operations {
            create_users: false,
            update_users: true,
            group_changes: true,
            deactivate_users: false,
        }
    );
    let valid = policy.validate().expect("valid");
    assert!(valid.is_excluded_group("/Staff/Interns"));
    assert!(valid.is_excluded_group("/tmp-2024/x"));
    assert!(!valid.is_excluded_group("/staff/interns/2024"));
    check(
        r#"{"groups": {"select": {"map": {"/staff": "staff"}}}}"#,
        expect!["valid"],
    );
    check(
        r#"{"groups": {"select": {"pattern": {"regex": "^x"}}}}"#,
        expect!["valid"],
    );
}

#[test]
fn reads_a_map_with_the_rest_by_name_or_by_pattern() {
    let parse = |json: &str| -> GroupSelection {
        serde_json::from_str::<Policy>(json)
            .unwrap_or_else(|error| panic!("{error}"))
            .groups
            .select
    };
    let map = || {
        [("/staff/devs".to_owned(), "jira-developers".to_owned())]
            .into_iter()
            .collect()
    };
    assert_eq!(
        parse(
            r#"{"groups": {"select": {"map_and_rest": {"map": {"/staff/devs": "jira-developers"}}}}}"#
        ),
        GroupSelection::MapAndRest {
            map: map(),
            rest: RestSelection::All
        }
    );
    assert_eq!(
        parse(
            r#"{"groups": {"select": {"map_and_rest": {
                "map": {"/staff/devs": "jira-developers"},
                "rest": {"pattern": {"regex": "^app-(.*)$"}}
            }}}}"#
        ),
        GroupSelection::MapAndRest {
            map: map(),
            rest: RestSelection::Pattern {
                regex: "^app-(.*)$".to_owned(),
                rename: "$0".to_owned()
            }
        }
    );
    check(
        r#"{"groups": {"select": {"map_and_rest": {"map": {}, "rest": "all"}}}}"#,
        expect!["valid"],
    );
    check(
        r#"{"groups": {"select": {"map_and_rest": {"map": {}, "rest": "none"}}}}"#,
        expect![
            "does not parse: unknown variant `none`, expected `all` or `pattern` at line 1 column 65"
        ],
    );
    check(
        r#"{"groups": {"select": {"map_and_rest": {"rest": "all"}}}}"#,
        expect!["does not parse: missing field `map` at line 1 column 54"],
    );
}

#[test]
fn rejects_unknown_fields_and_values() {
    check(
        r#"{"safety": {"max_acounts": 5}}"#,
        expect![
            "does not parse: unknown field `max_acounts`, expected one of `max_accounts`, `max_percent`, `max_memberships`, `max_memberships_percent`, `max_group_loss_percent`, `max_groups`, `max_links` at line 1 column 25"
        ],
    );
    check(
        r#"{"cleanup": {"action": "disable"}}"#,
        expect![
            "does not parse: unknown variant `disable`, expected one of `deactivate`, `delete`, `remove_groups`, `keep` at line 1 column 32"
        ],
    );
    check(
        r#"{"groups": {"select": {"pattern": {"regex": "x", "renam": "y"}}}}"#,
        expect![
            "does not parse: unknown field `renam`, expected `regex` or `rename` at line 1 column 56"
        ],
    );
}

#[test]
fn validation_names_every_bad_field() {
    check(
        r#"{
            "scope": {"required_groups": ["staff", "/ok"]},
            "attributes": {
                "login": {"from": {"attribute": " "}},
                "display_name": {"template": "{first}", "fallback": "{username"},
                "email": {"from": {"attribute": ""}}
            },
            "groups": {
                "default_for_new_users": [""],
                "default_for_all_users": ["ok", " "],
                "exclude": ["/ok*", "tmp*", "/"]
            },
            "protected_accounts": [""],
            "safety": {"max_percent": 101}
        }"#,
        expect![[r#"
            scope.required_groups[0]: `staff` is not a Keycloak group path; paths start with `/`, like `/staff/devs`
            attributes.login.from.attribute: must not be empty
            attributes.email.from.attribute: must not be empty
            attributes.display_name.template: bad template `{first}`: unknown placeholder `{first}`; known are {username}, {email}, {firstName}, {lastName} and {attributes.NAME}
            attributes.display_name.fallback: bad template `{username`: `{` without a matching `}` (write `{{` for a literal brace)
            groups.exclude[1]: `tmp*` is not a Keycloak group path; paths start with `/`, like `/staff/devs`
            groups.exclude[2]: `/` is not a Keycloak group path; paths start with `/`, like `/staff/devs`
            groups.default_for_new_users[0]: must not be empty
            groups.default_for_all_users[1]: must not be empty
            protected_accounts[0]: must not be empty
            safety.max_percent: 101 is not a percentage from 0 to 100
        "#]],
    );
    check(
        r#"{"groups": {"select": {"pattern": {"regex": "(unclosed"}}}}"#,
        expect![[r#"
            groups.select.pattern.regex: bad regex `(unclosed`: regex parse error:
                (unclosed
                ^
            error: unclosed group
        "#]],
    );
    check(
        r#"{"groups": {"select": {"map_and_rest": {
            "map": {"staff": "x", "/ok": ""},
            "rest": {"pattern": {"regex": "(", "rename": "$1"}}
        }}}}"#,
        expect![[r#"
            groups.select.map_and_rest.map["/ok"]: must not be empty
            groups.select.map_and_rest.map["staff"]: `staff` is not a Keycloak group path; paths start with `/`, like `/staff/devs`
            groups.select.map_and_rest.rest.pattern.regex: bad regex `(`: regex parse error:
                (
                ^
            error: unclosed group
        "#]],
    );
    check(
        r#"{"groups": {"select": {"map": {"staff": " "}}}}"#,
        expect![[r#"
            groups.select.map["staff"]: `staff` is not a Keycloak group path; paths start with `/`, like `/staff/devs`
            groups.select.map["staff"]: must not be empty
        "#]],
    );
}

#[test]
fn policy_errors_are_plain_data() {
    let error = PolicyError::Empty {
        field: "x".to_owned(),
    };
    assert_eq!(error.clone(), error);
    assert_eq!(error.to_string(), "x: must not be empty");
}
