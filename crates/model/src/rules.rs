//! The products' own rules for login names, as their documentation states them: a login the
//! product would refuse is known to the plan, which maps it through the policy's
//! `attributes.login.replace_forbidden` or reports the user as not syncable to that product
//! ([`crate::plan::DiagnosticKind::NotSyncable`]), instead of a failed change at apply time.
//! A login is lower-cased for a product that wants lower case before the rules are checked:
//! logins compare without case everywhere, so that is the same login.
//!
//! Only rules found in Atlassian's documentation are here. Confluence Data Center's
//! `createUser` (`POST /rest/api/admin/user`, Confluence Data Center REST API reference;
//! `shared/reference/atlassian-rest.md`, section 2) refuses a user name that is blank, has
//! upper-case letters or white space, contains any of `\ , + < > ' "`, or is `anonymous`.
//! Jira's user service (`com.atlassian.jira.bc.user.DefaultUserService`, Atlassian's Jira
//! source: `INVALID_USERNAME_CHARS = { '<', '>', '&' }` and `MAX_FIELD_LENGTH = 255`, checked by
//! `validateUsername` on create and rename) refuses a user name with `<`, `>` or `&`, or longer
//! than 255 characters. Bitbucket's reference states no character rule for user names, so none
//! is assumed for it.

use std::borrow::Cow;

use crate::state::Product;

/// What a product accepts as a login name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRules {
    /// Upper-case letters are refused.
    pub lowercase_only: bool,
    /// White space is refused.
    pub no_whitespace: bool,
    /// Characters that are refused.
    pub forbidden: &'static str,
    /// Names that are refused.
    pub reserved: &'static [&'static str],
    /// The longest login, in characters, when the product states one.
    pub max_chars: Option<usize>,
}

impl LoginRules {
    /// No rule beyond a non-empty login.
    pub const NONE: LoginRules = LoginRules {
        lowercase_only: false,
        no_whitespace: false,
        forbidden: "",
        reserved: &[],
        max_chars: None,
    };

    /// The documented rules of `product` (see the module documentation).
    pub fn of(product: Product) -> LoginRules {
        match product {
            Product::Confluence => LoginRules {
                lowercase_only: true,
                no_whitespace: true,
                forbidden: "\\,+<>'\"",
                reserved: &["anonymous"],
                max_chars: None,
            },
            Product::Jira => LoginRules {
                forbidden: "<>&",
                max_chars: Some(255),
                ..LoginRules::NONE
            },
            Product::Bitbucket => LoginRules::NONE,
        }
    }

    /// The rule `login` breaks, in words, or `None` when the product takes it.
    pub fn broken(&self, login: &str) -> Option<String> {
        if self.lowercase_only && login.chars().any(char::is_uppercase) {
            return Some("has upper-case letters, and user names must be lower case".to_owned());
        }
        if self.no_whitespace && login.chars().any(char::is_whitespace) {
            return Some("contains white space, which user names may not".to_owned());
        }
        if let Some(found) = login.chars().find(|ch| self.forbidden.contains(*ch)) {
            return Some(format!(
                "contains `{found}`; user names may not contain any of {}",
                self.forbidden_list()
            ));
        }
        if self.reserved.contains(&login) {
            return Some(format!("`{login}` is a reserved user name"));
        }
        if let Some(max) = self.max_chars {
            let chars = login.chars().count();
            if chars > max {
                return Some(format!(
                    "has {chars} characters, and user names may have at most {max}"
                ));
            }
        }
        None
    }

    /// `login` with every forbidden character and white space replaced by `replacement`, and
    /// lower-cased where the product needs it. The result may still break a rule (a reserved
    /// name, or a replacement that is itself forbidden): check it with [`LoginRules::broken`].
    pub fn conform<'l>(&self, login: &'l str, replacement: &str) -> Cow<'l, str> {
        let refused =
            |ch: char| self.forbidden.contains(ch) || (self.no_whitespace && ch.is_whitespace());
        let mut conformed = Cow::Borrowed(login);
        if login.chars().any(refused) {
            let mut replaced = String::with_capacity(login.len());
            for ch in login.chars() {
                if refused(ch) {
                    replaced.push_str(replacement);
                } else {
                    replaced.push(ch);
                }
            }
            conformed = Cow::Owned(replaced);
        }
        if self.lowercase_only && conformed.chars().any(char::is_uppercase) {
            conformed = Cow::Owned(conformed.to_lowercase());
        }
        conformed
    }

    fn forbidden_list(&self) -> String {
        self.forbidden
            .chars()
            .map(|ch| ch.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confluence_refuses_what_its_create_user_refuses_and_the_others_take_any_login() {
        let confluence = LoginRules::of(Product::Confluence);
        assert_eq!(confluence.broken("ann.smith-2"), None);
        for login in [
            "Ann",
            "ann smith",
            "ann+jira",
            "o'brien",
            "a,b",
            "x<y",
            "back\\slash",
        ] {
            assert!(confluence.broken(login).is_some(), "{login}");
        }
        assert_eq!(
            confluence.broken("anonymous").as_deref(),
            Some("`anonymous` is a reserved user name")
        );
        assert!(
            confluence
                .broken("ann+jira")
                .is_some_and(|rule| rule.contains("`+`")),
            "the rule names the character"
        );
        for product in [Product::Jira, Product::Bitbucket] {
            assert_eq!(LoginRules::of(product).broken("Ann O'Brien+x"), None);
        }
    }

    #[test]
    fn jira_refuses_what_its_user_service_refuses() {
        let jira = LoginRules::of(Product::Jira);
        for login in ["a<b", "a>b", "r&d"] {
            assert!(jira.broken(login).is_some(), "{login}");
        }
        assert_eq!(jira.broken(&"x".repeat(255)), None);
        assert!(
            jira.broken(&"x".repeat(256))
                .is_some_and(|rule| rule.contains("at most 255"))
        );
        assert_eq!(jira.conform("r&d", "-"), "r-d");
        assert_eq!(LoginRules::of(Product::Bitbucket).broken("r&d"), None);
    }

    #[test]
    fn conform_replaces_what_is_refused_and_lower_cases() {
        let confluence = LoginRules::of(Product::Confluence);
        assert_eq!(confluence.conform("ann+jira", "_"), "ann_jira");
        assert_eq!(confluence.conform("Ann Smith", "."), "ann.smith");
        assert!(matches!(
            confluence.conform("ann", "_"),
            Cow::Borrowed("ann")
        ));
        // A replacement the product refuses too is still refused.
        assert!(confluence.broken(&confluence.conform("a+b", "+")).is_some());
    }
}
