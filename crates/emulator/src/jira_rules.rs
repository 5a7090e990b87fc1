//! Jira's own rules for users that the emulator's user endpoints enforce, from Jira's
//! `com.atlassian.jira.bc.user.DefaultUserService` (Atlassian, jira-core source):
//!
//! - `validateUsername` (on create, and on a rename through `validateUpdateUser`): a
//!   username longer than `MAX_FIELD_LENGTH = 255` is refused with
//!   `signup.error.username.greater.than.max.chars`, one containing any of
//!   `INVALID_USERNAME_CHARS = { '<', '>', '&' }` with `signup.error.username.invalid.chars`,
//!   both against `FieldName.NAME`, which is `"username"` in Jira's `UserService.FieldName`.
//! - `validateUpdateUser`, when the update deactivates: a lead of a component adds
//!   `admin.errors.users.cannot.deactivate.due.to.component.lead` and a lead of a project
//!   `admin.errors.users.cannot.deactivate.due.to.project.lead` against the field `active`,
//!   each with the comma-separated keys of the projects (for components, the projects the
//!   components belong to). The project error is added second, so it is the one the
//!   field's entry holds when both apply.
//! - `validateDeleteUserReferences`: a project lead cannot be deleted,
//!   `admin.errors.users.cannot.delete.due.to.project.lead` with the quoted username and the
//!   number of projects, as an error message (no field). A component lead is no obstacle
//!   ("You are not prevented from deleting a component lead": Atlassian's answer on
//!   community.atlassian.com, "Why is user deactivation restricted for component and project
//!   leads").
//!
//! The English text of these i18n keys was not found in the sources: the messages below are
//! the emulator's own wording, and clients must not parse them.

use axum::response::Response;
use serde_json::json;

use crate::reply;
use crate::store::Store;

/// `DefaultUserService.MAX_FIELD_LENGTH`.
const MAX_FIELD_LENGTH: usize = 255;
/// `DefaultUserService.INVALID_USERNAME_CHARS`.
const INVALID_USERNAME_CHARS: [char; 3] = ['<', '>', '&'];
/// `UserService.FieldName.NAME`.
const USERNAME_FIELD: &str = "username";

/// Jira's 400 for a username `validateUsername` refuses: too long, or with `<`, `>` or `&`.
/// Jira counts Java `String.length()`, UTF-16 code units.
pub(crate) fn check_username(name: &str) -> Result<(), Response> {
    if name.encode_utf16().count() > MAX_FIELD_LENGTH {
        return Err(field_error(
            USERNAME_FIELD,
            "The username must not exceed 255 characters in length.",
        ));
    }
    if name.contains(INVALID_USERNAME_CHARS) {
        return Err(field_error(
            USERNAME_FIELD,
            "The username must not contain '<', '>' or '&'.",
        ));
    }
    Ok(())
}

/// Jira's 400 for deactivating `account_id` while it leads a component or a project, with
/// the project keys against the field `active` (the project refusal wins the field).
pub(crate) fn check_deactivation(store: &Store, account_id: u64) -> Result<(), Response> {
    let projects = store.projects.led_projects(account_id);
    if !projects.is_empty() {
        return Err(field_error(
            "active",
            &format!(
                "Cannot deactivate user, they are the lead of project(s): {}",
                projects.join(", ")
            ),
        ));
    }
    let component_projects = store.projects.projects_of_led_components(account_id);
    if !component_projects.is_empty() {
        return Err(field_error(
            "active",
            &format!(
                "Cannot deactivate user, they are the lead of components in project(s): {}",
                component_projects.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Jira's 400 for deleting `account_id` while it leads a project: an error message with the
/// quoted username and the number of projects.
pub(crate) fn check_deletion(store: &Store, account_id: u64, name: &str) -> Result<(), Response> {
    let led = store.projects.led_projects(account_id).len();
    if led > 0 {
        return Err(reply::json(
            400,
            json!({
                "errorMessages": [format!(
                    "Cannot delete user '{name}' because they are the lead of {led} project(s)"
                )],
                "errors": {},
            }),
        ));
    }
    Ok(())
}

/// Jira's `{"errorMessages":[],"errors":{field: message}}` with status 400.
fn field_error(field: &str, message: &str) -> Response {
    reply::json(
        400,
        json!({ "errorMessages": [], "errors": { field: message } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_with_markup_characters_or_over_255_characters_are_refused() {
        for bad in ["a<b", "a>b", "tom&jerry"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
        assert!(check_username(&"x".repeat(256)).is_err());
        assert!(check_username(&"x".repeat(255)).is_ok());
        assert!(check_username("ǆemal.o'neil+ops@corp").is_ok());
    }
}
