//! Streaming JSON field stripping.
//!
//! Bytes are tokenised as they arrive, in chunks cut anywhere; the output is re-assembled
//! compact JSON holding only what the rules allow. Removed values are skipped, never buffered:
//! memory is O(nesting depth + longest key), whatever the body size. Anything that is not
//! well-formed JSON is an error — the caller must then cut the response, so a body that could
//! not be sanitised never reaches the client.

use super::paths::{Mode, Rules, ROOT};
use std::sync::Arc;

/// Deeper documents are refused (and would be a stack-depth risk for clients anyway).
pub const MAX_DEPTH: usize = 512;
/// Longest object key we buffer for a lookup.
pub const MAX_KEY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    #[error("malformed JSON: {0}")]
    Malformed(&'static str),
    #[error("JSON nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("JSON object key longer than {MAX_KEY} bytes")]
    KeyTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    KeyOrEnd,
    Key,
    Colon,
    Value,
    ValueOrEnd,
    CommaOrEnd,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: Kind,
    /// Trie node for this container's children; `None` = no rules below (copy or skip all).
    node: Option<usize>,
    emit: bool,
    wrote_any: bool,
    expect: Expect,
}

/// What to do with the next value.
#[derive(Debug, Clone, Copy)]
struct Slot {
    emit: bool,
    node: Option<usize>,
    /// Keep mode, path continues below: only a container can hold what is kept.
    container_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Out,
    Key,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    Hex(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Sign,
    Zero,
    Int,
    FracStart,
    Frac,
    ExpStart,
    ExpSign,
    Exp,
}

impl Num {
    fn accepting(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }

    fn step(self, b: u8) -> Option<Num> {
        use Num::*;
        Some(match (self, b) {
            (Sign, b'0') => Zero,
            (Sign, b'1'..=b'9') => Int,
            (Zero, b'.') | (Int, b'.') => FracStart,
            (Zero, b'e' | b'E') | (Int, b'e' | b'E') | (Frac, b'e' | b'E') => ExpStart,
            (Int, b'0'..=b'9') => Int,
            (FracStart, b'0'..=b'9') | (Frac, b'0'..=b'9') => Frac,
            (ExpStart, b'+' | b'-') => ExpSign,
            (ExpStart | ExpSign | Exp, b'0'..=b'9') => Exp,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Between,
    Str {
        target: Target,
        esc: Esc,
    },
    Number {
        emit: bool,
        st: Num,
    },
    Literal {
        emit: bool,
        word: &'static [u8],
        pos: u8,
    },
}

pub struct JsonStripper {
    rules: Arc<Rules>,
    stack: Vec<Frame>,
    lex: Lex,
    root_started: bool,
    root_done: bool,
    /// Decision for the value after the current key.
    pending: Option<Slot>,
    /// Raw bytes of the current key, quotes included (written out only if the member is kept).
    key: Vec<u8>,
    key_escaped: bool,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonStripper {
    pub fn new(rules: Arc<Rules>) -> JsonStripper {
        JsonStripper {
            rules,
            stack: Vec::with_capacity(16),
            lex: Lex::Between,
            root_started: false,
            root_done: false,
            pending: None,
            key: Vec::new(),
            key_escaped: false,
        }
    }

    /// Process one chunk, appending kept bytes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), StripError> {
        let mut i = 0;
        while i < input.len() {
            match self.lex {
                Lex::Str { target, esc } => {
                    i = self.string(input, i, target, esc, out)?;
                }
                Lex::Number { emit, st } => {
                    let b = input[i];
                    match st.step(b) {
                        Some(next) => {
                            if emit {
                                out.push(b);
                            }
                            self.lex = Lex::Number { emit, st: next };
                            i += 1;
                        }
                        None => {
                            if !st.accepting() {
                                return Err(StripError::Malformed("bad number"));
                            }
                            self.lex = Lex::Between;
                            self.value_done();
                            // `b` is a delimiter: handled as structure below, not consumed here.
                        }
                    }
                }
                Lex::Literal { emit, word, pos } => {
                    let b = input[i];
                    if word[pos as usize] != b {
                        return Err(StripError::Malformed("bad literal"));
                    }
                    if emit {
                        out.push(b);
                    }
                    i += 1;
                    if pos as usize + 1 == word.len() {
                        self.lex = Lex::Between;
                        self.value_done();
                    } else {
                        self.lex = Lex::Literal {
                            emit,
                            word,
                            pos: pos + 1,
                        };
                    }
                }
                Lex::Between => {
                    let b = input[i];
                    i += 1;
                    if is_ws(b) {
                        continue;
                    }
                    self.structural(b, out)?;
                }
            }
        }
        Ok(())
    }

    /// The body ended: it must have been one complete JSON value (or nothing at all).
    pub fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), StripError> {
        if let Lex::Number { st, .. } = self.lex {
            if !st.accepting() {
                return Err(StripError::Malformed("bad number"));
            }
            self.lex = Lex::Between;
            self.value_done();
        }
        if self.lex != Lex::Between || !self.stack.is_empty() {
            return Err(StripError::Malformed("truncated"));
        }
        if self.root_started && !self.root_done {
            return Err(StripError::Malformed("truncated"));
        }
        Ok(())
    }

    fn string(
        &mut self,
        input: &[u8],
        start: usize,
        target: Target,
        mut esc: Esc,
        out: &mut Vec<u8>,
    ) -> Result<usize, StripError> {
        let mut i = start;
        loop {
            match esc {
                Esc::None => {
                    let rest = &input[i..];
                    match memchr::memchr2(b'"', b'\\', rest) {
                        None => {
                            check_controls(rest)?;
                            self.emit_str(target, rest, out)?;
                            self.lex = Lex::Str { target, esc };
                            return Ok(input.len());
                        }
                        Some(k) => {
                            check_controls(&rest[..k])?;
                            self.emit_str(target, &rest[..=k], out)?;
                            i += k + 1;
                            if rest[k] == b'"' {
                                self.lex = Lex::Between;
                                self.string_done(target)?;
                                return Ok(i);
                            }
                            if target == Target::Key {
                                self.key_escaped = true;
                            }
                            esc = Esc::Backslash;
                        }
                    }
                }
                Esc::Backslash => {
                    let Some(&b) = input.get(i) else {
                        self.lex = Lex::Str { target, esc };
                        return Ok(i);
                    };
                    esc = match b {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Esc::None,
                        b'u' => Esc::Hex(4),
                        _ => return Err(StripError::Malformed("bad escape")),
                    };
                    self.emit_str(target, &input[i..=i], out)?;
                    i += 1;
                }
                Esc::Hex(left) => {
                    let Some(&b) = input.get(i) else {
                        self.lex = Lex::Str { target, esc };
                        return Ok(i);
                    };
                    if !b.is_ascii_hexdigit() {
                        return Err(StripError::Malformed("bad \\u escape"));
                    }
                    self.emit_str(target, &input[i..=i], out)?;
                    i += 1;
                    esc = if left == 1 {
                        Esc::None
                    } else {
                        Esc::Hex(left - 1)
                    };
                }
            }
        }
    }

    fn emit_str(
        &mut self,
        target: Target,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), StripError> {
        match target {
            Target::Out => out.extend_from_slice(bytes),
            Target::Key => {
                if self.key.len() + bytes.len() > MAX_KEY {
                    return Err(StripError::KeyTooLong);
                }
                self.key.extend_from_slice(bytes);
            }
            Target::Skip => {}
        }
        Ok(())
    }

    fn string_done(&mut self, _target: Target) -> Result<(), StripError> {
        let top = self.stack.last().copied();
        match top {
            Some(f)
                if f.kind == Kind::Object && matches!(f.expect, Expect::KeyOrEnd | Expect::Key) =>
            {
                self.pending = Some(self.slot_for_key(&f)?);
                if let Some(f) = self.stack.last_mut() {
                    f.expect = Expect::Colon;
                }
                Ok(())
            }
            _ => {
                self.value_done();
                Ok(())
            }
        }
    }

    /// After the key of an object member: what to do with its value.
    fn slot_for_key(&mut self, frame: &Frame) -> Result<Slot, StripError> {
        let Some(node) = frame.node else {
            return Ok(Slot {
                emit: frame.emit,
                node: None,
                container_only: false,
            });
        };
        let child = if self.key_escaped {
            let decoded: String =
                serde_json::from_slice(&self.key).map_err(|_| StripError::Malformed("bad key"))?;
            self.rules.child(node, decoded.as_bytes())
        } else {
            self.rules.child(node, &self.key[1..self.key.len() - 1])
        };
        Ok(self.slot_for_child(frame.emit, child))
    }

    fn slot_for_child(&self, parent_emit: bool, child: Option<usize>) -> Slot {
        let r = &self.rules;
        match (r.mode, child) {
            (Mode::Remove, Some(c)) if r.terminal(c) => Slot {
                emit: false,
                node: None,
                container_only: false,
            },
            (Mode::Remove, c) => Slot {
                emit: parent_emit,
                node: c,
                container_only: false,
            },
            (Mode::Keep, None) => Slot {
                emit: false,
                node: None,
                container_only: false,
            },
            (Mode::Keep, Some(c)) if r.terminal(c) => Slot {
                emit: parent_emit,
                node: None,
                container_only: false,
            },
            (Mode::Keep, Some(c)) => Slot {
                emit: parent_emit,
                node: Some(c),
                container_only: true,
            },
        }
    }

    /// The slot of the value starting now, and bookkeeping in the enclosing container.
    fn begin_value(&mut self, is_container: bool, out: &mut Vec<u8>) -> Result<bool, StripError> {
        let slot = match self.stack.last().copied() {
            None => {
                if self.root_started {
                    return Err(StripError::Malformed("trailing data"));
                }
                self.root_started = true;
                Slot {
                    emit: true,
                    node: Some(ROOT),
                    container_only: false,
                }
            }
            Some(f) => match (f.kind, f.expect) {
                (Kind::Object, Expect::Value) => self
                    .pending
                    .take()
                    .ok_or(StripError::Malformed("value without key"))?,
                (Kind::Array, Expect::Value | Expect::ValueOrEnd) => {
                    let child = f.node.and_then(|n| self.rules.elem(n));
                    match f.node {
                        None => Slot {
                            emit: f.emit,
                            node: None,
                            container_only: false,
                        },
                        Some(_) => self.slot_for_child(f.emit, child),
                    }
                }
                _ => return Err(StripError::Malformed("unexpected value")),
            },
        };
        let emit = slot.emit && (!slot.container_only || is_container);
        if let Some(f) = self.stack.last_mut() {
            if emit {
                if f.wrote_any {
                    out.push(b',');
                }
                if f.kind == Kind::Object {
                    out.extend_from_slice(&self.key);
                    out.push(b':');
                }
                f.wrote_any = true;
            }
            f.expect = Expect::CommaOrEnd;
        }
        self.key.clear();
        self.key_escaped = false;
        if is_container {
            self.pending = Some(Slot { emit, ..slot });
        }
        Ok(emit)
    }

    fn value_done(&mut self) {
        if self.stack.is_empty() {
            self.root_done = true;
        }
    }

    fn structural(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), StripError> {
        match b {
            b'{' | b'[' => {
                let emit = self.begin_value(true, out)?;
                let slot = self.pending.take().unwrap_or(Slot {
                    emit,
                    node: None,
                    container_only: false,
                });
                if self.stack.len() >= MAX_DEPTH {
                    return Err(StripError::TooDeep);
                }
                let (kind, expect) = if b == b'{' {
                    (Kind::Object, Expect::KeyOrEnd)
                } else {
                    (Kind::Array, Expect::ValueOrEnd)
                };
                self.stack.push(Frame {
                    kind,
                    node: if emit { slot.node } else { None },
                    emit,
                    wrote_any: false,
                    expect,
                });
                if emit {
                    out.push(b);
                }
            }
            b'}' | b']' => {
                let f = self
                    .stack
                    .pop()
                    .ok_or(StripError::Malformed("unbalanced close"))?;
                let ok = matches!(
                    (f.kind, b, f.expect),
                    (Kind::Object, b'}', Expect::KeyOrEnd | Expect::CommaOrEnd)
                        | (Kind::Array, b']', Expect::ValueOrEnd | Expect::CommaOrEnd)
                );
                if !ok {
                    return Err(StripError::Malformed("unexpected close"));
                }
                if f.emit {
                    out.push(b);
                }
                self.value_done();
            }
            b':' => match self.stack.last_mut() {
                Some(f) if f.kind == Kind::Object && f.expect == Expect::Colon => {
                    f.expect = Expect::Value
                }
                _ => return Err(StripError::Malformed("unexpected ':'")),
            },
            b',' => match self.stack.last_mut() {
                Some(f) if f.expect == Expect::CommaOrEnd => {
                    f.expect = if f.kind == Kind::Object {
                        Expect::Key
                    } else {
                        Expect::Value
                    };
                }
                _ => return Err(StripError::Malformed("unexpected ','")),
            },
            b'"' => {
                let top = self.stack.last().copied();
                match top {
                    Some(f)
                        if f.kind == Kind::Object
                            && matches!(f.expect, Expect::KeyOrEnd | Expect::Key) =>
                    {
                        let target = if f.node.is_some() || f.emit {
                            Target::Key
                        } else {
                            Target::Skip
                        };
                        self.key.clear();
                        self.key_escaped = false;
                        if target == Target::Key {
                            self.key.push(b'"');
                        }
                        self.lex = Lex::Str {
                            target,
                            esc: Esc::None,
                        };
                    }
                    _ => {
                        let emit = self.begin_value(false, out)?;
                        if emit {
                            out.push(b'"');
                        }
                        self.lex = Lex::Str {
                            target: if emit { Target::Out } else { Target::Skip },
                            esc: Esc::None,
                        };
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let emit = self.begin_value(false, out)?;
                let st = Num::Sign
                    .step(b)
                    .or(if b == b'-' { Some(Num::Sign) } else { None });
                let st = st.ok_or(StripError::Malformed("bad number"))?;
                if emit {
                    out.push(b);
                }
                self.lex = Lex::Number { emit, st };
            }
            b't' | b'f' | b'n' => {
                let emit = self.begin_value(false, out)?;
                let word: &'static [u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if emit {
                    out.push(b);
                }
                self.lex = Lex::Literal { emit, word, pos: 1 };
            }
            _ => return Err(StripError::Malformed("unexpected byte")),
        }
        Ok(())
    }
}

/// Raw control characters are not allowed inside JSON strings.
fn check_controls(bytes: &[u8]) -> Result<(), StripError> {
    if bytes.iter().any(|&c| c < 0x20) {
        Err(StripError::Malformed("control character in string"))
    } else {
        Ok(())
    }
}

/// Strip a whole document at once (tests, benches, and small bodies).
pub fn strip_all(rules: &Arc<Rules>, input: &[u8]) -> Result<Vec<u8>, StripError> {
    let mut s = JsonStripper::new(rules.clone());
    let mut out = Vec::with_capacity(input.len());
    s.feed(input, &mut out)?;
    s.finish(&mut out)?;
    Ok(out)
}
