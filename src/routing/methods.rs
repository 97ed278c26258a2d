//! Methods as a bit set: a route's method check is one AND, with no string compares per request.

/// The methods a route accepts. Empty config list = every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSet(u16);

const NAMES: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

impl MethodSet {
    pub const ALL: MethodSet = MethodSet((1 << NAMES.len()) - 1);
    pub const EMPTY: MethodSet = MethodSet(0);

    /// The bit of a known method, `None` for anything else (extension methods are not routable).
    pub fn bit(method: &[u8]) -> Option<u16> {
        NAMES
            .iter()
            .position(|n| n.as_bytes() == method)
            .map(|i| 1u16 << i)
    }

    /// Build from config names. `GET` implies `HEAD`, as every HTTP server treats them.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> MethodSet {
        if names.is_empty() {
            return MethodSet::ALL;
        }
        let mut bits = 0;
        for n in names {
            if let Some(b) = Self::bit(n.as_ref().as_bytes()) {
                bits |= b;
            }
        }
        if bits & 1 != 0 {
            bits |= 2;
        }
        MethodSet(bits)
    }

    pub fn contains(self, method: &[u8]) -> bool {
        Self::bit(method).is_some_and(|b| self.0 & b != 0)
    }

    pub fn union(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `Allow` header value, e.g. `GET, HEAD, POST`.
    pub fn allow_header(self) -> String {
        NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_implies_head_and_unknown_methods_never_match() {
        let set = MethodSet::from_names(&["GET", "POST"]);
        assert!(set.contains(b"HEAD"));
        assert!(set.contains(b"POST"));
        assert!(!set.contains(b"DELETE"));
        assert!(!set.contains(b"BREW"));
        assert_eq!(set.allow_header(), "GET, HEAD, POST");
        assert!(MethodSet::from_names::<&str>(&[]).contains(b"PATCH"));
    }
}
