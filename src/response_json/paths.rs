//! Field paths for `response_json` (`internal_cost`, `items[].supplier_id`, `debug`), compiled
//! into a small trie the streaming stripper walks while bytes flow.

/// `remove` drops what the paths name; `keep` drops everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Remove,
    Keep,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: Vec<(Box<[u8]>, usize)>,
    /// `[]`: every element of the array found here.
    elem: Option<usize>,
    /// A path ends here: the value at this node is removed (remove) or kept whole (keep).
    terminal: bool,
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub mode: Mode,
    nodes: Vec<Node>,
}

pub const ROOT: usize = 0;

/// Split one path into steps; `Err` explains the syntax problem.
fn steps(path: &str) -> Result<Vec<Step<'_>>, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    let mut out = Vec::new();
    for seg in path.split('.') {
        if seg.is_empty() {
            return Err(format!(
                "{path:?}: empty segment (\"..\" or a leading/trailing dot)"
            ));
        }
        let key_end = seg.find('[').unwrap_or(seg.len());
        let (key, mut rest) = seg.split_at(key_end);
        if key.contains(']') {
            return Err(format!("{path:?}: stray \"]\" in {seg:?}"));
        }
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while !rest.is_empty() {
            match rest.strip_prefix("[]") {
                Some(r) => {
                    out.push(Step::Elem);
                    rest = r;
                }
                None => {
                    return Err(format!(
                        "{path:?}: only \"[]\" (every element) may follow a key, found {rest:?}"
                    ))
                }
            }
        }
    }
    Ok(out)
}

enum Step<'a> {
    Key(&'a str),
    Elem,
}

impl Rules {
    pub fn compile<S: AsRef<str>>(mode: Mode, paths: &[S]) -> Result<Rules, Vec<(usize, String)>> {
        let mut rules = Rules {
            mode,
            nodes: vec![Node::default()],
        };
        let mut errors = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            match steps(p.as_ref()) {
                Ok(steps) => rules.insert(&steps),
                Err(e) => errors.push((i, e)),
            }
        }
        if paths.is_empty() {
            errors.push((0, "at least one path is required".to_string()));
        }
        if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        }
    }

    fn insert(&mut self, steps: &[Step<'_>]) {
        let mut at = ROOT;
        for step in steps {
            let next = match step {
                Step::Key(k) => self.nodes[at]
                    .children
                    .iter()
                    .find(|(name, _)| **name == *k.as_bytes())
                    .map(|(_, n)| *n),
                Step::Elem => self.nodes[at].elem,
            };
            at = match next {
                Some(n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(Node::default());
                    match step {
                        Step::Key(k) => self.nodes[at].children.push((k.as_bytes().into(), n)),
                        Step::Elem => self.nodes[at].elem = Some(n),
                    }
                    n
                }
            };
        }
        self.nodes[at].terminal = true;
    }

    pub fn child(&self, node: usize, key: &[u8]) -> Option<usize> {
        self.nodes[node]
            .children
            .iter()
            .find(|(name, _)| **name == *key)
            .map(|(_, n)| *n)
    }

    pub fn elem(&self, node: usize) -> Option<usize> {
        self.nodes[node].elem
    }

    pub fn terminal(&self, node: usize) -> bool {
        self.nodes[node].terminal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compile_into_a_trie() {
        let r = Rules::compile(
            Mode::Remove,
            &["internal_cost", "items[].supplier_id", "a.b.c"],
        )
        .unwrap();
        let items = r.child(ROOT, b"items").unwrap();
        let elem = r.elem(items).unwrap();
        let sup = r.child(elem, b"supplier_id").unwrap();
        assert!(r.terminal(sup));
        assert!(!r.terminal(items));
        assert!(r.terminal(r.child(ROOT, b"internal_cost").unwrap()));
        assert!(r.child(ROOT, b"other").is_none());
        let top = Rules::compile(Mode::Keep, &["[].id"]).unwrap();
        assert!(top.child(top.elem(ROOT).unwrap(), b"id").is_some());
    }

    #[test]
    fn bad_syntax_is_reported_per_path() {
        let errs = Rules::compile(Mode::Remove, &["ok", "a..b", "a[0]", "", "x]"]).unwrap_err();
        let idx: Vec<usize> = errs.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![1, 2, 3, 4]);
        assert!(errs[1].1.contains("only \"[]\""), "{errs:?}");
        assert!(Rules::compile::<&str>(Mode::Keep, &[]).is_err());
    }
}
