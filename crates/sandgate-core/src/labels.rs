//! Labels and label selectors, with the syntax and rules of Kubernetes labels.

use std::collections::BTreeMap;

use crate::validate::{ValidationError, quote};

/// Checks every label key and value against the Kubernetes rules.
///
/// A key is an optional DNS subdomain prefix of at most 253 characters and a '/', then a name of
/// 1 to 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric. A value is
/// empty or follows the rule of a name.
///
/// # Errors
/// Returns [`ValidationError`] on `field`, naming the first bad key or value.
pub fn validate(field: &str, labels: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    for (key, value) in labels {
        validate_key(field, key)?;
        if !value.is_empty() && !is_label_name(value) {
            return Err(ValidationError::new(
                format!("{field}[{key}]"),
                format!(
                    "invalid label value {}: use at most 63 letters, digits, '-', '_' or '.', \
                     starting and ending with a letter or digit",
                    quote(value)
                ),
            ));
        }
    }
    Ok(())
}

fn validate_key(field: &str, key: &str) -> Result<(), ValidationError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns_subdomain);
    if !prefix_ok || !is_label_name(name) {
        return Err(ValidationError::new(
            field,
            format!(
                "invalid label key {}: use an optional DNS subdomain prefix and '/', then a \
                 name of 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a \
                 letter or digit",
                quote(key)
            ),
        ));
    }
    Ok(())
}

fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|&b| alnum(b) || b == b'-' || b == b'_' || b == b'.')
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
}

fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|part| {
            let bytes = part.as_bytes();
            let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes.iter().all(|&b| alnum(b) || b == b'-')
                && alnum(bytes[0])
                && alnum(bytes[bytes.len() - 1])
        })
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector such as `app=web,tier!=db,env in (prod,staging),!legacy`.
///
/// The syntax is kubectl's: requirements separated by commas, each one of `k=v`, `k==v`,
/// `k!=v`, `k in (v1,v2)`, `k notin (v1,v2)`, `k` or `!k`. The empty selector matches
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses a selector.
    ///
    /// # Errors
    /// Returns [`ValidationError`] on `field`, quoting the selector and the part that is wrong.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        let fail = |detail: String| {
            ValidationError::new(
                field,
                format!(
                    "invalid label selector {}: {detail}; use forms such as \
                     'app=web,tier!=db', 'env in (prod,staging)' or '!legacy'",
                    quote(text)
                ),
            )
        };

        let mut requirements = Vec::new();
        for part in split_top_level(text).map_err(&fail)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(fail("empty requirement".to_string()));
            }
            requirements.push(parse_requirement(part).map_err(&fail)?);
        }
        let selector = Self { requirements };
        for key in selector.keys() {
            validate_key(field, key).map_err(|_| fail(format!("invalid key {}", quote(key))))?;
        }
        Ok(selector)
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| match r {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k.as_str(),
        })
    }

    /// Returns whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Returns whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits at commas that are not inside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1).ok_or("unbalanced ')'")?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_string());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(plain_key(key.trim())?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(
            plain_key(key.trim())?,
            plain_value(value.trim())?,
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(
            plain_key(key.trim())?,
            plain_value(value.trim())?,
        ));
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let body = part[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| format!("missing ')' in {}", quote(part)))?;
        let values = body
            .split(',')
            .map(|v| plain_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(key) = head.strip_suffix(" notin") {
            return Ok(Requirement::NotIn(plain_key(key.trim())?, values));
        }
        if let Some(key) = head.strip_suffix(" in") {
            return Ok(Requirement::In(plain_key(key.trim())?, values));
        }
        return Err(format!(
            "expected 'in' or 'notin' before '(' in {}",
            quote(part)
        ));
    }
    Ok(Requirement::Exists(plain_key(part)?))
}

fn plain_key(key: &str) -> Result<String, String> {
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['=', '!', '(', ')']) {
        return Err(format!("invalid key {}", quote(key)));
    }
    Ok(key.to_string())
}

fn plain_value(value: &str) -> Result<String, String> {
    if !value.is_empty() && !is_label_name(value) {
        return Err(format!("invalid value {}", quote(value)));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_matches_each_operator() {
        let set = labels(&[("app", "web"), ("env", "prod")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("env in (prod,staging)", true),
            ("env in (dev)", false),
            ("env notin (dev)", true),
            ("env notin (prod)", false),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web, env in (prod), !legacy", true),
            ("missing notin (x)", true),
        ];
        for (text, expected) in cases {
            let selector = Selector::parse("label_selector", text).unwrap();
            assert_eq!(selector.matches(&set), expected, "{text}");
        }
    }

    #[test]
    fn selector_rejects_malformed_input() {
        for text in [
            "app=",
            "=web",
            "a b=c",
            "env in (prod",
            "env (prod)",
            "app=web,",
            "a=b=c",
        ] {
            if text == "app=" {
                // An empty value is valid in Kubernetes selectors.
                assert!(Selector::parse("label_selector", text).is_ok());
                continue;
            }
            let error = Selector::parse("label_selector", text).unwrap_err();
            assert_eq!(error.field, "label_selector");
            assert!(
                error.message.contains(&format!("{text:?}")),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn label_rules_match_kubernetes() {
        assert!(validate("labels", &labels(&[("example.com/team", "ml")])).is_ok());
        assert!(validate("labels", &labels(&[("team", "")])).is_ok());
        assert!(validate("labels", &labels(&[("-team", "ml")])).is_err());
        assert!(validate("labels", &labels(&[("team", "ml ops")])).is_err());
        assert!(validate("labels", &labels(&[("Example.com/team", "ml")])).is_err());
        assert!(validate("labels", &labels(&[("team", &"x".repeat(64))])).is_err());
    }
}
