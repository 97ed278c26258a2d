//! `path_policy`: what the gateway does with path spellings that backends disagree about
//! (DESIGN.md "Path policy"). Plain data; the decision lives in `routing::path_policy`.

use serde::{Deserialize, Serialize};

/// `%2F` / `%5C` inside a path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    #[default]
    Reject,
    Keep,
    Decode,
}

/// A raw `\` or a `;` path parameter: refuse it, or forward it as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectOrKeep {
    #[default]
    Reject,
    Keep,
}

/// The server-wide policy; every field defaults to `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathPolicyConfig {
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    #[serde(default)]
    pub backslash: RejectOrKeep,
    #[serde(default)]
    pub path_parameters: RejectOrKeep,
}

/// A route's override: only the fields it names replace the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathPolicyOverride {
    #[serde(default)]
    pub escaped_slashes: Option<EscapedSlashes>,
    #[serde(default)]
    pub backslash: Option<RejectOrKeep>,
    #[serde(default)]
    pub path_parameters: Option<RejectOrKeep>,
}

impl PathPolicyConfig {
    /// This policy with a route's override laid over it.
    pub fn with(self, o: Option<&PathPolicyOverride>) -> PathPolicyConfig {
        let Some(o) = o else { return self };
        PathPolicyConfig {
            escaped_slashes: o.escaped_slashes.unwrap_or(self.escaped_slashes),
            backslash: o.backslash.unwrap_or(self.backslash),
            path_parameters: o.path_parameters.unwrap_or(self.path_parameters),
        }
    }
}

/// The `warning:` lines `check` prints for a relaxed policy at `at` (a YAML path): which
/// backends read the forwarded path differently from the router.
pub fn relaxed_warnings(
    at: &str,
    escaped_slashes: Option<EscapedSlashes>,
    backslash: Option<RejectOrKeep>,
    path_parameters: Option<RejectOrKeep>,
) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if escaped_slashes == Some(EscapedSlashes::Keep) {
        out.push((
            format!("{at}.escaped_slashes"),
            "keep forwards %2F and %5C as received; backends that decode them before routing \
             (nginx, WSGI and most frameworks) read separators the gateway's routes never saw",
        ));
    }
    if backslash == Some(RejectOrKeep::Keep) {
        out.push((
            format!("{at}.backslash"),
            "keep forwards a raw \\ as received; IIS and ASP.NET read it as /, so they can see \
             segments and dot segments the gateway's routes never saw",
        ));
    }
    if path_parameters == Some(RejectOrKeep::Keep) {
        out.push((
            format!("{at}.path_parameters"),
            "keep forwards ;parameters; routes match as Tomcat, Jetty and Spring read the path \
             (parameters dropped per segment), so a backend that treats ; as data sees segment \
             names the routes never matched",
        ));
    }
    out
}

impl PathPolicyConfig {
    pub fn warnings(&self, at: &str) -> Vec<(String, &'static str)> {
        relaxed_warnings(
            at,
            Some(self.escaped_slashes),
            Some(self.backslash),
            Some(self.path_parameters),
        )
    }
}

impl PathPolicyOverride {
    pub fn warnings(&self, at: &str) -> Vec<(String, &'static str)> {
        relaxed_warnings(
            at,
            self.escaped_slashes,
            self.backslash,
            self.path_parameters,
        )
    }
}
