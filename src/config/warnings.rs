//! Settings that are valid but probably not what the operator wants. `check` prints each as a
//! `warning:` line and still exits 0 (the config is usable); `run` logs them at start-up.
//! They are separate from [`super::validate`] because a problem refuses the file and a warning
//! must not: an operator may run under a unit with a larger `TimeoutStopSec`.

use super::{Config, Problem};
use std::time::Duration;

/// `TimeoutStopSec` of the shipped `systemd/tollgate.service` (tests/systemd_unit.rs checks
/// that `check` warns exactly past what that file allows).
pub const SHIPPED_UNIT_TIMEOUT_STOP: Duration = Duration::from_secs(60);

/// Pingora 0.9 keeps an old process accepting for a fixed 5 s after it handed its sockets over
/// (`CLOSE_TIMEOUT` in pingora-core `server/mod.rs`) before its drain starts.
pub const UPGRADE_HAND_OFF: Duration = Duration::from_secs(5);

pub(super) fn warnings(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    check_stop_budget(config, &mut out);
    check_path_policy(config, &mut out);
    check_unverified_upstreams(config, &mut out);
    check_self_mirrors(config, &mut out);
    check_jwt_audience(config, &mut out);
    out
}

/// Without `audience`, a token the same issuer minted for any other service is accepted here
/// (RFC 8725 §3.9: cross-service replay). Valid, since some issuers set no `aud`, but rarely
/// what is meant.
fn check_jwt_audience(config: &Config, out: &mut Vec<Problem>) {
    for (name, provider) in &config.auth.jwt {
        if provider.audience.is_none() {
            out.push(Problem::new(
                format!("auth.jwt.{name}.audience"),
                "not set: tokens the issuer minted for any other service are accepted too",
            ));
        }
    }
}

/// A mirror to an upstream the route already sends to doubles that upstream's load with
/// copies it cannot tell from the originals except by `X-Tollgate-Mirror`.
fn check_self_mirrors(config: &Config, out: &mut Vec<Problem>) {
    for (i, route) in config.routes.iter().enumerate() {
        let Some(m) = &route.mirror else { continue };
        if route
            .upstream_refs()
            .iter()
            .any(|(_, name)| *name == m.upstream)
        {
            out.push(Problem::new(
                format!("routes[{i}].mirror.upstream"),
                format!(
                    "{:?} is also where the route sends its traffic: the mirror duplicates it",
                    m.upstream
                ),
            ));
        }
    }
}

/// `tls.verify: false` encrypts without authenticating: anyone on the path can pose as the
/// backend. Allowed (some backends have no verifiable certificate) but said out loud.
fn check_unverified_upstreams(config: &Config, out: &mut Vec<Problem>) {
    for (name, upstream) in &config.upstreams {
        if upstream.tls.as_ref().is_some_and(|t| !t.verify) {
            out.push(Problem::new(
                format!("upstreams.{name}.tls.verify"),
                "false: backend certificates are not checked; the connection is encrypted but \
                 not authenticated",
            ));
        }
    }
}

/// A relaxed `path_policy` lets backends read a path differently from the router.
fn check_path_policy(config: &Config, out: &mut Vec<Problem>) {
    let server = config.server.path_policy.warnings("server.path_policy");
    let routes = config.routes.iter().enumerate().flat_map(|(i, route)| {
        route
            .path_policy
            .map(|p| p.warnings(&format!("routes[{i}].path_policy")))
            .unwrap_or_default()
    });
    out.extend(
        server
            .into_iter()
            .chain(routes)
            .map(|(at, msg)| Problem::new(at, msg)),
    );
}

/// The longest a stopping or upgraded process can live is the hand-off, plus `grace_period`
/// (a drain ends earlier once nothing is in flight, but a slow request may use all of it),
/// plus `graceful_shutdown_timeout`. Past the unit's `TimeoutStopSec`, systemd SIGKILLs the
/// process and cuts exactly the slow requests the grace period was meant to let finish.
fn check_stop_budget(config: &Config, out: &mut Vec<Problem>) {
    let grace = config.server.grace_period.0;
    let teardown = config.server.graceful_shutdown_timeout.0;
    let unit = SHIPPED_UNIT_TIMEOUT_STOP.as_secs();
    let hand_off = UPGRADE_HAND_OFF.as_secs();
    let Some(allowed) = SHIPPED_UNIT_TIMEOUT_STOP
        .checked_sub(UPGRADE_HAND_OFF)
        .and_then(|d| d.checked_sub(teardown))
        .filter(|d| !d.is_zero())
    else {
        out.push(Problem::new(
            "server.graceful_shutdown_timeout",
            format!(
                "{} leaves no grace period within systemd/tollgate.service's \
                 TimeoutStopSec={unit}s (minus the {hand_off}s upgrade hand-off); lower it or \
                 raise TimeoutStopSec, else systemd SIGKILLs a stopping gateway",
                humantime::format_duration(teardown),
            ),
        ));
        return;
    };
    if grace > allowed {
        out.push(Problem::new(
            "server.grace_period",
            format!(
                "{} exceeds what systemd/tollgate.service allows: its TimeoutStopSec={unit}s \
                 must cover the {hand_off}s upgrade hand-off + grace_period + \
                 graceful_shutdown_timeout ({}), so keep grace_period at most {} or raise \
                 TimeoutStopSec, else systemd SIGKILLs a slow drain",
                humantime::format_duration(grace),
                humantime::format_duration(teardown),
                humantime::format_duration(allowed),
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str) -> Config {
        let yaml = format!(
            "server:\n{server}\nupstreams:\n  u: {{backends: [\"127.0.0.1:1\"]}}\n\
             routes:\n  - {{name: r, match: {{path_prefix: /}}, upstream: u}}\n"
        );
        Config::load_str(&yaml).expect("valid config")
    }

    #[test]
    fn defaults_fit_the_shipped_unit() {
        let c = config("  threads: 1");
        assert_eq!(c.server.grace_period.0, Duration::from_secs(30));
        assert!(warnings(&c).is_empty(), "{:?}", warnings(&c));
    }

    #[test]
    fn grace_period_past_the_unit_budget_is_a_warning_naming_the_limit() {
        // 60 − 5 − 10 = 45 s allowed.
        let at_limit = config("  grace_period: 45s\n  graceful_shutdown_timeout: 10s");
        assert!(warnings(&at_limit).is_empty());
        let over = config("  grace_period: 46s\n  graceful_shutdown_timeout: 10s");
        let w = warnings(&over);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "server.grace_period");
        assert!(w[0].message.contains("at most 45s"), "{}", w[0].message);
        assert!(
            w[0].message.contains("TimeoutStopSec=60s"),
            "{}",
            w[0].message
        );
    }

    #[test]
    fn a_teardown_alone_over_the_budget_is_named_instead() {
        let c = config("  grace_period: 1s\n  graceful_shutdown_timeout: 2m");
        let w = warnings(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "server.graceful_shutdown_timeout");
    }
}
