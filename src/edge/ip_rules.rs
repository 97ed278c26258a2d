//! `ip: {allow, deny}`: whether a client address may use a route. Checked on the resolved
//! `client_ip` (trusted proxies honoured, see `forwarded`), right after routing and before
//! any CORS, rate-limit or auth work, so a denied network costs one scan of a short list.

use crate::config::edge::{parse_net, IpRulesConfig};
use crate::config::Problem;
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpRules {
    /// Compile `routes[i].ip`; every entry that is not a CIDR or an address is a problem.
    pub fn build(cfg: &IpRulesConfig, at: &str) -> Result<IpRules, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut nets = |field: &str, list: &[String]| -> Vec<IpNet> {
            list.iter()
                .enumerate()
                .filter_map(|(j, s)| {
                    let net = parse_net(s);
                    if net.is_none() {
                        problems.push(Problem::new(
                            format!("{at}.{field}[{j}]"),
                            format!("invalid CIDR {s:?}"),
                        ));
                    }
                    net.map(|n| n.trunc())
                })
                .collect()
        };
        let rules = IpRules {
            allow: nets("allow", &cfg.allow),
            deny: nets("deny", &cfg.deny),
        };
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(problems)
        }
    }

    /// Deny wins; with an allow list, only listed addresses pass. An unknown client address
    /// (no IP peer) passes only when there is no allow list: fail closed where one was asked.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(canonical) else {
            return self.allow.is_empty();
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// `::ffff:10.1.2.3` is `10.1.2.3`: an IPv4 rule must not be sidestepped by a dual-stack socket.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        let cfg = IpRulesConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        IpRules::build(&cfg, "routes[0].ip").expect("valid rules")
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("address"))
    }

    #[test]
    fn deny_wins_over_allow() {
        let r = rules(&["10.0.0.0/8"], &["10.1.2.3/32"]);
        assert!(r.permits(ip("10.9.9.9")));
        assert!(!r.permits(ip("10.1.2.3")));
        assert!(!r.permits(ip("192.168.0.1")), "not in the allow list");
    }

    #[test]
    fn deny_only_lets_everyone_else_in() {
        let r = rules(&[], &["203.0.113.0/24", "2001:db8::/32"]);
        assert!(!r.permits(ip("203.0.113.77")));
        assert!(!r.permits(ip("2001:db8::1")));
        assert!(r.permits(ip("2001:db9::1")));
        assert!(r.permits(ip("198.51.100.1")));
        assert!(r.permits(None));
    }

    #[test]
    fn ipv6_and_mapped_ipv4() {
        let r = rules(&["::1", "127.0.0.0/8", "fd00::/8"], &[]);
        assert!(r.permits(ip("::1")));
        assert!(r.permits(ip("fd12:3456::9")));
        assert!(r.permits(ip("::ffff:127.0.0.1")), "mapped IPv4 is IPv4");
        assert!(!r.permits(ip("::2")));
        assert!(
            !r.permits(None),
            "an allow list fails closed without an address"
        );
        let d = rules(&[], &["10.0.0.0/8"]);
        assert!(
            !d.permits(ip("::ffff:10.0.0.1")),
            "a mapped address cannot dodge a deny"
        );
    }

    #[test]
    fn host_bits_in_a_cidr_are_ignored_and_bad_entries_reported() {
        let r = rules(&["10.1.2.3/8"], &[]);
        assert!(r.permits(ip("10.200.0.1")));
        let cfg = IpRulesConfig {
            allow: vec!["10.0.0.0/33".into()],
            deny: vec!["ok?".into()],
        };
        let p = IpRules::build(&cfg, "routes[2].ip").expect_err("invalid");
        assert_eq!(p[0].path, "routes[2].ip.allow[0]");
        assert_eq!(p[1].path, "routes[2].ip.deny[0]");
    }
}
