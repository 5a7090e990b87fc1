//! Attribute and group mapping: how one Keycloak user becomes a login name, a display name and an
//! email, and how one Keycloak group becomes a product group name. The pieces are compiled once by
//! [`crate::policy::Policy::validate`] and used by the plan for every user and group, so they
//! borrow from the input instead of allocating where the input is already in shape.
//!
//! Only [`fold`] is public: it is how keysync compares logins, emails and group names everywhere
//! (the plan, [`crate::apply`], and the services' lookups), so they all agree.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regex::Regex;

use crate::policy::{
    EmailMapping, EmailSource, GroupNaming, LoginMapping, LoginSource, ValidPolicy,
};
use crate::snapshot::{KeycloakGroup, KeycloakUser};

/// A display-name template, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Username,
    Email,
    FirstName,
    LastName,
    Attribute(String),
}

/// How Keycloak groups become product group names.
#[derive(Debug, Clone)]
pub(crate) enum GroupMapper {
    All {
        naming: GroupNaming,
    },
    Map(BTreeMap<String, String>),
    Pattern {
        regex: Regex,
        rename: String,
        naming: GroupNaming,
    },
    /// The groups of `map` as [`GroupMapper::Map`], every other group as `rest` (never itself a
    /// `MapAndRest`).
    MapAndRest {
        map: BTreeMap<String, String>,
        rest: Box<GroupMapper>,
    },
}

/// A protected-account pattern: `*` is any run of characters, `?` one character, case-insensitive.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    /// Lower-cased.
    pattern: String,
}

/// Lower-cases `text` (Unicode lower case, so `ÄRGER` and `ärger` are one name), borrowing it when
/// it is lower-case already (the usual case for logins and group names, and checked without
/// allocating, also for non-ASCII text such as `chloé`).
#[inline]
pub fn fold(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|byte| !byte.is_ascii_uppercase()) {
        if text.is_ascii() {
            return Cow::Borrowed(text);
        }
        let unchanged = text.chars().all(|ch| {
            let mut lower = ch.to_lowercase();
            lower.next() == Some(ch) && lower.next().is_none()
        });
        if unchanged {
            return Cow::Borrowed(text);
        }
    }
    Cow::Owned(text.to_lowercase())
}

/// `text.trim()`, without the call when the ends are visible ASCII characters, as they almost
/// always are.
#[inline]
pub(crate) fn trim(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

/// The login name of a user, or `None` when the source field is missing or ends up empty.
pub(crate) fn login<'u>(mapping: &LoginMapping, user: &'u KeycloakUser) -> Option<Cow<'u, str>> {
    let raw = match &mapping.from {
        LoginSource::Username => user.username.as_str(),
        LoginSource::Email => user.email.as_deref()?,
        LoginSource::Attribute(name) => first_value(user, name)?,
    };
    let mut login = trim(raw);
    if mapping.strip_domain
        && let Some((local, _domain)) = login.rsplit_once('@')
    {
        login = trim(local);
    }
    if login.is_empty() {
        return None;
    }
    Some(if mapping.lowercase {
        fold(login)
    } else {
        Cow::Borrowed(login)
    })
}

/// The email of a user, or `None` when it is missing, unverified (if the mapping requires
/// verification), or has no `@`.
pub(crate) fn email<'u>(mapping: &EmailMapping, user: &'u KeycloakUser) -> Option<Cow<'u, str>> {
    let raw = match &mapping.from {
        EmailSource::Email => user.email.as_deref()?,
        EmailSource::Attribute(name) => first_value(user, name)?,
    };
    if mapping.require_verified && !user.email_verified {
        return None;
    }
    let email = trim(raw);
    if !email.contains('@') {
        return None;
    }
    Some(if mapping.lowercase {
        fold(email)
    } else {
        Cow::Borrowed(email)
    })
}

/// Writes the display name of a user into `out`: the template if the user has a value for each of
/// its placeholders, else the fallback on the same condition, else the login name.
pub(crate) fn display_name_into(
    policy: &ValidPolicy,
    user: &KeycloakUser,
    login: &str,
    out: &mut String,
) {
    if policy.display_template.render_into(user, out) && !out.is_empty() {
        return;
    }
    if policy.display_fallback.render_into(user, out) && !out.is_empty() {
        return;
    }
    out.clear();
    out.push_str(login);
}

fn first_value<'u>(user: &'u KeycloakUser, name: &str) -> Option<&'u str> {
    user.attributes.get(name)?.first().map(String::as_str)
}

impl Template {
    /// Parses a template; the error says what is wrong, for
    /// [`crate::policy::PolicyError::Template`].
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(
                        "`}` without a matching `{` (write `}}` for a literal brace)".to_owned(),
                    );
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(
                                    "`{` without a matching `}` (write `{{` for a literal brace)"
                                        .to_owned(),
                                );
                            }
                            Some(other) => name.push(other),
                        }
                    }
                    let segment = match name.as_str() {
                        "username" => Segment::Username,
                        "email" => Segment::Email,
                        "firstName" => Segment::FirstName,
                        "lastName" => Segment::LastName,
                        _ => match name.strip_prefix("attributes.") {
                            Some(attribute) if !attribute.is_empty() => {
                                Segment::Attribute(attribute.to_owned())
                            }
                            _ => {
                                return Err(format!(
                                    "unknown placeholder `{{{name}}}`; known are \
                                     {{username}}, {{email}}, {{firstName}}, {{lastName}} \
                                     and {{attributes.NAME}}"
                                ));
                            }
                        },
                    };
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(segment);
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// Renders into `out` (cleared first), collapsing runs of whitespace to one space and trimming
    /// the ends. Returns whether every placeholder had a value that is not blank.
    pub(crate) fn render_into(&self, user: &KeycloakUser, out: &mut String) -> bool {
        out.clear();
        let mut complete = true;
        // Starting as if a space was just written drops leading whitespace.
        let mut after_space = true;
        for segment in &self.segments {
            let piece = match segment {
                Segment::Literal(text) => text.as_str(),
                Segment::Username => user.username.as_str(),
                Segment::Email => user.email.as_deref().unwrap_or(""),
                Segment::FirstName => user.first_name.as_deref().unwrap_or(""),
                Segment::LastName => user.last_name.as_deref().unwrap_or(""),
                Segment::Attribute(name) => first_value(user, name).unwrap_or(""),
            };
            if !matches!(segment, Segment::Literal(_)) && piece.trim().is_empty() {
                complete = false;
            }
            // Most pieces are one word of visible ASCII characters, copied whole.
            if !piece.is_empty() && piece.bytes().all(|byte| byte.is_ascii_graphic()) {
                out.push_str(piece);
                after_space = false;
                continue;
            }
            for ch in piece.chars() {
                if ch.is_whitespace() {
                    if !after_space {
                        out.push(' ');
                        after_space = true;
                    }
                } else {
                    out.push(ch);
                    after_space = false;
                }
            }
        }
        if out.ends_with(' ') {
            out.pop();
        }
        complete
    }
}

impl GroupMapper {
    /// The product group a Keycloak group maps to, and whether a `map` names it explicitly (so
    /// that several Keycloak groups sharing it is intended and not worth a diagnostic), or `None`
    /// when the selection leaves the group out. The name may be empty (a rename to nothing); the
    /// caller reports that.
    pub(crate) fn product_group<'g>(
        &self,
        group: &'g KeycloakGroup,
    ) -> Option<(Cow<'g, str>, bool)> {
        match self {
            GroupMapper::All { naming } => Some((Cow::Borrowed(named(group, *naming)), false)),
            GroupMapper::Map(map) => explicit(map, group),
            GroupMapper::Pattern {
                regex,
                rename,
                naming,
            } => {
                let source = named(group, *naming);
                if !regex.is_match(source) {
                    return None;
                }
                let name = match regex.replace(source, rename.as_str()) {
                    Cow::Borrowed(name) => Cow::Borrowed(name.trim()),
                    Cow::Owned(name) => Cow::Owned(name.trim().to_owned()),
                };
                Some((name, false))
            }
            GroupMapper::MapAndRest { map, rest } => {
                explicit(map, group).or_else(|| rest.product_group(group))
            }
        }
    }
}

fn explicit<'g>(
    map: &BTreeMap<String, String>,
    group: &'g KeycloakGroup,
) -> Option<(Cow<'g, str>, bool)> {
    map.get(group.path.as_str())
        .map(|name| (Cow::Owned(name.trim().to_owned()), true))
}

fn named(group: &KeycloakGroup, naming: GroupNaming) -> &str {
    match naming {
        GroupNaming::Name => group.name.trim(),
        GroupNaming::Path => group.path.trim().trim_start_matches('/'),
    }
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        Glob {
            pattern: fold(pattern.trim()).into_owned(),
        }
    }

    /// Whether the already lower-cased `text` matches. Works on bytes when both are ASCII (logins
    /// almost always are), so checking an account allocates nothing.
    pub(crate) fn matches(&self, text: &str) -> bool {
        if self.pattern.is_ascii() && text.is_ascii() {
            return wildcard_match(self.pattern.as_bytes(), text.as_bytes(), b'*', b'?');
        }
        let pattern: Vec<char> = self.pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        wildcard_match(&pattern, &text, '*', '?')
    }
}

/// The classic two-pointer wildcard match: it backtracks only to the last `*`, so it is never
/// recursive and needs no memory.
fn wildcard_match<T: Copy + PartialEq>(pattern: &[T], text: &[T], any_run: T, any_one: T) -> bool {
    let (mut text_idx, mut pattern_idx) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while text_idx < text.len() {
        match pattern.get(pattern_idx) {
            Some(&item) if item == any_run => {
                last_star = Some((pattern_idx, text_idx));
                pattern_idx += 1;
            }
            Some(&item) if item == any_one || item == text[text_idx] => {
                pattern_idx += 1;
                text_idx += 1;
            }
            _ => match last_star {
                Some((star_pattern_idx, star_text_idx)) => {
                    pattern_idx = star_pattern_idx + 1;
                    text_idx = star_text_idx + 1;
                    last_star = Some((star_pattern_idx, star_text_idx + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pattern_idx..].iter().all(|&item| item == any_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> KeycloakUser {
        KeycloakUser {
            id: crate::snapshot::UserId::new("u1"),
            username: "ann".to_owned(),
            email: Some("Ann@Example.com".to_owned()),
            first_name: Some("  Ann ".to_owned()),
            last_name: None,
            enabled: true,
            email_verified: false,
            attributes: BTreeMap::from([(
                "dept".to_owned(),
                vec!["Sales".to_owned(), "Ops".to_owned()],
            )]),
            federation_link: None,
        }
    }

    fn render(template: &str) -> String {
        let mut out = String::new();
        match Template::parse(template) {
            Ok(parsed) => {
                if !parsed.render_into(&user(), &mut out) {
                    out.push_str(" (incomplete)");
                }
            }
            Err(problem) => out = format!("error: {problem}"),
        }
        out
    }

    #[test]
    fn template_collapses_whitespace_around_missing_fields() {
        assert_eq!(render("{firstName} {lastName}"), "Ann (incomplete)");
        assert_eq!(render("  {firstName}\t {username}  "), "Ann ann");
        assert_eq!(render("{lastName}"), " (incomplete)");
        assert_eq!(render("no placeholders"), "no placeholders");
        assert_eq!(
            render("{{{username}}} ({attributes.dept})"),
            "{ann} (Sales)"
        );
    }

    #[test]
    fn template_reports_unknown_placeholders_and_unbalanced_braces() {
        assert!(render("{nickname}").starts_with("error: unknown placeholder `{nickname}`"));
        assert!(render("{username").starts_with("error: `{` without a matching `}`"));
        assert!(render("user}").starts_with("error: `}` without a matching `{`"));
        assert!(render("{attributes.}").starts_with("error: unknown placeholder"));
    }

    #[test]
    fn glob_matches_stars_and_question_marks() {
        let cases = [
            ("admin", "admin", true),
            ("admin", "admins", false),
            ("svc-*", "svc-backup", true),
            ("svc-*", "svc-", true),
            ("*-bot", "build-bot", true),
            ("*-bot", "bot", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("?dm?n", "admin", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("ädmin*", "ädmins", true),
            ("ä?", "äb", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} against {text}"
            );
        }
    }

    #[test]
    fn fold_borrows_lower_case_text() {
        assert!(matches!(fold("jdoe"), Cow::Borrowed(_)));
        assert_eq!(fold("JDoe"), "jdoe");
        assert_eq!(fold("ÄRGER"), "ärger");
        assert!(matches!(fold("ärger"), Cow::Borrowed(_)));
        assert_eq!(fold("ǅ"), "ǆ");
        assert_eq!(fold("İ"), "i̇");
    }
}
