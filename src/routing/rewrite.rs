//! What the upstream sees as the path: the normalised path with the route's prefix stripped or
//! replaced. The query string is carried over untouched.

/// How a route changes the path on its way upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixRewrite {
    Keep,
    Strip,
    Replace(Box<str>),
}

impl PrefixRewrite {
    pub fn from_config(strip: bool, rewrite: Option<&str>) -> PrefixRewrite {
        match (strip, rewrite) {
            (_, Some(p)) => PrefixRewrite::Replace(p.trim_end_matches('/').into()),
            (true, None) => PrefixRewrite::Strip,
            (false, None) => PrefixRewrite::Keep,
        }
    }

    /// The upstream path-and-query when it differs from what the client sent: the normalised
    /// path (if it changed), rewritten, with the query minus `strip_param` (a query token).
    pub fn upstream_target(
        &self,
        prefix: &str,
        raw_path: &str,
        normalized: Option<&str>,
        query: Option<&str>,
        strip_param: Option<&str>,
    ) -> Option<String> {
        if normalized.is_none() && strip_param.is_none() && *self == PrefixRewrite::Keep {
            return None;
        }
        let query = match (strip_param, query) {
            (Some(param), Some(q)) => crate::auth::token_source::remove_query_param(q, param),
            (_, q) => q.map(str::to_owned),
        };
        Some(self.apply(prefix, normalized.unwrap_or(raw_path), query.as_deref()))
    }

    /// Build the upstream path-and-query. `prefix` is the route's canonical prefix, which is
    /// known to be a segment-boundary prefix of `path`.
    pub fn apply(&self, prefix: &str, path: &str, query: Option<&str>) -> String {
        let rest = if prefix == "/" {
            path
        } else {
            path.get(prefix.len()..).unwrap_or("")
        };
        let mut out = String::with_capacity(path.len() + 16);
        match self {
            PrefixRewrite::Keep => out.push_str(path),
            PrefixRewrite::Strip => out.push_str(rest),
            PrefixRewrite::Replace(new) => {
                out.push_str(new);
                out.push_str(rest);
            }
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix() {
        let s = PrefixRewrite::Strip;
        assert_eq!(s.apply("/orders", "/orders/7", Some("x=1")), "/7?x=1");
        assert_eq!(s.apply("/orders", "/orders", None), "/");
        assert_eq!(s.apply("/orders", "/orders/", None), "/");
        assert_eq!(s.apply("/", "/a", None), "/a");
    }

    #[test]
    fn rewrite_prefix() {
        let r = PrefixRewrite::from_config(false, Some("/v2/orders/"));
        assert_eq!(r.apply("/orders", "/orders/7", None), "/v2/orders/7");
        assert_eq!(r.apply("/orders", "/orders", Some("a=b")), "/v2/orders?a=b");
        let root = PrefixRewrite::from_config(false, Some("/"));
        assert_eq!(root.apply("/orders", "/orders/7", None), "/7");
    }

    #[test]
    fn keep_passes_the_normalised_path() {
        assert_eq!(PrefixRewrite::Keep.apply("/a", "/a/b", None), "/a/b");
    }
}
