//! Odoo search domains (prefix `&`, `|`, `!` over `[field, operator, value]` terms) and
//! `order` clauses, evaluated over values as Odoo shows them.
//!
//! # Bounds
//! A domain is client input, so its parsing and its evaluation are bounded:
//! - parsing is iterative (no recursion on the input), and refuses a domain with more
//!   than [`MAX_LEAVES`] leaves or nested deeper than [`MAX_DEPTH`] levels, counted after
//!   chains of the same operator are flattened (`|, |, |, a, b, c, d` is one level) and
//!   double negations dropped (`!, !, a` is `a`); `like` patterns are at most
//!   [`MAX_LIKE_PATTERN`] characters;
//! - the tree is built balanced, so its height stays near `MAX_DEPTH * log2(width)` and
//!   evaluating or dropping it cannot overflow the stack;
//! - evaluation can be charged to a [`Budget`] ([`Domain::matches_within`]): every term,
//!   every `in` list element and every character a `like` pattern looks at costs one
//!   unit, and a search that runs out answers [`TooExpensive`] instead of running on;
//! - `like` is matched segment by segment (the parts between `%`), each leftmost, which is
//!   linear in the text for patterns without `_` and never backtracks exponentially.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::VecDeque;

use serde_json::Value;

/// Most leaves (terms, true/false leaves) a domain may have.
pub const MAX_LEAVES: usize = 10_000;
/// Deepest nesting of operators a domain may have (after flattening, see the module docs).
pub const MAX_DEPTH: usize = 64;
/// Longest `like` / `ilike` pattern, in characters.
pub const MAX_LIKE_PATTERN: usize = 4_096;
/// The work one search may spend evaluating its domain over the records (see [`Budget`]):
/// a few tenths of a second of CPU at most (a domain of 10 terms over 1,000,000 records
/// costs 10,000,000, and `api::orm` charges each record it looks at too).
pub const SEARCH_BUDGET: u64 = 100_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Like,
    NotLike,
    ILike,
    NotILike,
    EqLike,
    EqILike,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" | "==" => Op::Eq,
            "!=" | "<>" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "in" => Op::In,
            "not in" => Op::NotIn,
            "like" => Op::Like,
            "not like" => Op::NotLike,
            "ilike" => Op::ILike,
            "not ilike" => Op::NotILike,
            "=like" => Op::EqLike,
            "=ilike" => Op::EqILike,
            _ => return None,
        })
    }

    fn is_like(self) -> bool {
        matches!(self, Op::Like | Op::NotLike | Op::ILike | Op::NotILike | Op::EqLike | Op::EqILike)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    True,
    False,
    Term { field: String, op: Op, value: Value },
    Not(Box<Domain>),
    And(Box<Domain>, Box<Domain>),
    Or(Box<Domain>, Box<Domain>),
}

/// A search ran out of its [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the domain is too expensive to evaluate over these records (more than {0} steps): use fewer terms, shorter `in` lists or shorter like patterns"
)]
pub struct TooExpensive(pub u64);

/// Work units a search may still spend (see the module docs).
#[derive(Debug, Clone)]
pub struct Budget {
    total: u64,
    left: u64,
}

impl Budget {
    pub fn new(units: u64) -> Budget {
        Budget { total: units, left: units }
    }

    /// A budget that never runs out (for trusted domains).
    pub fn unlimited() -> Budget {
        Budget::new(u64::MAX)
    }

    /// Spends `units`, or fails when fewer are left.
    pub fn charge(&mut self, units: u64) -> Result<(), TooExpensive> {
        match self.left.checked_sub(units) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(TooExpensive(self.total))
            }
        }
    }
}

impl Domain {
    /// Parses a domain given as JSON (`[]` matches everything), within the bounds of the
    /// module docs.
    pub fn parse(value: &Value) -> Result<Domain, String> {
        let items = value.as_array().ok_or_else(|| format!("a domain must be a list, got {}", short(value)))?;
        Ok(parse_items(items)?.into_domain())
    }

    /// Every field name the domain refers to.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(d) = stack.pop() {
            match d {
                Domain::True | Domain::False => {}
                Domain::Term { field, .. } => out.push(field.as_str()),
                Domain::Not(d) => stack.push(d),
                Domain::And(a, b) | Domain::Or(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
            }
        }
        out
    }

    /// Whether a record matches. `get(field)` answers the field's values as Odoo shows
    /// them: one value for a plain field (`false` when empty; `[id, name]` for a
    /// many2one), every related value for a dotted path through an x2many (a term then
    /// matches when any of them does, as in Odoo; none at all compares as `false`).
    /// Unbounded: for client domains use [`Domain::matches_within`].
    pub fn matches(&self, get: &dyn Fn(&str) -> Vec<Value>) -> bool {
        let get = |field: &str| FieldValues::Many(get(field).into_iter().map(Cow::Owned).collect());
        self.matches_within(&get, &mut Budget::unlimited()).unwrap_or(false)
    }

    /// [`Domain::matches`], charging the work to `budget`; `get` may lend the values
    /// (a record's own) instead of copying them.
    pub fn matches_within<'v>(
        &self,
        get: &dyn Fn(&str) -> FieldValues<'v>,
        budget: &mut Budget,
    ) -> Result<bool, TooExpensive> {
        Ok(match self {
            Domain::True => true,
            Domain::False => false,
            Domain::Term { field, op, value } => {
                budget.charge(1)?;
                let values = get(field);
                let values = values.as_slice();
                if values.is_empty() {
                    return term(&Value::Bool(false), *op, value, budget);
                }
                // "none of them equals" for the negative operators on x2many.
                let negative = matches!(op, Op::Ne | Op::NotIn | Op::NotLike | Op::NotILike);
                for v in values {
                    let hit = term(v, *op, value, budget)?;
                    if hit != negative {
                        return Ok(hit);
                    }
                }
                negative
            }
            Domain::Not(d) => !d.matches_within(get, budget)?,
            Domain::And(a, b) => a.matches_within(get, budget)? && b.matches_within(get, budget)?,
            Domain::Or(a, b) => a.matches_within(get, budget)? || b.matches_within(get, budget)?,
        })
    }
}

/// The values a field path has on one record: one for a plain field (lent by the record,
/// nothing allocated), any number through a relation.
pub enum FieldValues<'v> {
    One(Cow<'v, Value>),
    Many(Vec<Cow<'v, Value>>),
}

impl<'v> FieldValues<'v> {
    pub fn as_slice(&self) -> &[Cow<'v, Value>] {
        match self {
            FieldValues::One(v) => std::slice::from_ref(v),
            FieldValues::Many(v) => v,
        }
    }

    /// The same values, copied out of the record.
    pub fn into_owned(self) -> FieldValues<'static> {
        match self {
            FieldValues::One(v) => FieldValues::One(Cow::Owned(v.into_owned())),
            FieldValues::Many(vs) => FieldValues::Many(vs.into_iter().map(|v| Cow::Owned(v.into_owned())).collect()),
        }
    }
}

/// A JSON value cut short for an error message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 120 { format!("{}…", text.chars().take(120).collect::<String>()) } else { text }
}

/// The flattened form parsing builds: n-ary `&` and `|`, double negations dropped.
enum Node {
    Leaf(Domain),
    Not(Box<Node>),
    And(VecDeque<Node>),
    Or(VecDeque<Node>),
}

/// A node with the nesting depth below it.
struct Built {
    node: Node,
    depth: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    And,
    Or,
    Not,
}

/// An operator waiting for its operands.
struct Frame {
    kind: Kind,
    /// Operands still expected.
    missing: usize,
    children: VecDeque<Node>,
    depth: usize,
    /// The operator's text, for messages.
    symbol: &'static str,
}

impl Frame {
    fn new(kind: Kind) -> Frame {
        let (missing, symbol) = match kind {
            Kind::And => (2, "&"),
            Kind::Or => (2, "|"),
            Kind::Not => (1, "!"),
        };
        Frame { kind, missing, children: VecDeque::new(), depth: 0, symbol }
    }

    /// Adds an operand, flattening a same-kind child into this node.
    fn push(&mut self, child: Built) {
        self.missing -= 1;
        let same = matches!((&child.node, self.kind), (Node::And(_), Kind::And) | (Node::Or(_), Kind::Or));
        self.depth = self.depth.max(if same { child.depth } else { child.depth + 1 });
        match child.node {
            Node::And(mut grand) | Node::Or(mut grand) if same => {
                // Small into large, order kept: linear overall, whichever side the chain grows.
                if grand.len() > self.children.len() {
                    while let Some(c) = self.children.pop_back() {
                        grand.push_front(c);
                    }
                    self.children = grand;
                } else {
                    self.children.extend(grand);
                }
            }
            node => self.children.push_back(node),
        }
    }

    fn finish(mut self) -> Built {
        match self.kind {
            Kind::Not => {
                let child = self.children.pop_front().unwrap_or(Node::Leaf(Domain::True));
                match child {
                    // !!x is x.
                    Node::Not(inner) => Built { node: *inner, depth: self.depth.saturating_sub(2) },
                    other => Built { node: Node::Not(Box::new(other)), depth: self.depth },
                }
            }
            Kind::And => Built { node: Node::And(self.children), depth: self.depth },
            Kind::Or => Built { node: Node::Or(self.children), depth: self.depth },
        }
    }
}

/// Parses the prefix notation with an explicit stack (no recursion on the input).
fn parse_items(items: &[Value]) -> Result<Built, String> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut parts: VecDeque<Node> = VecDeque::new();
    let mut parts_depth = 0;
    let mut leaves = 0usize;
    for item in items {
        let leaf = match item {
            Value::String(s) if s == "&" => {
                stack.push(Frame::new(Kind::And));
                continue;
            }
            Value::String(s) if s == "|" => {
                stack.push(Frame::new(Kind::Or));
                continue;
            }
            Value::String(s) if s == "!" => {
                stack.push(Frame::new(Kind::Not));
                continue;
            }
            other => leaf(other)?,
        };
        leaves += 1;
        if leaves > MAX_LEAVES {
            return Err(format!("a domain may hold at most {MAX_LEAVES} terms"));
        }
        let mut built = Built { node: Node::Leaf(leaf), depth: 0 };
        loop {
            let Some(top) = stack.last_mut() else {
                match built.node {
                    // Top-level terms are ANDed: a top-level `&` chain is the same level.
                    Node::And(more) => {
                        parts_depth = parts_depth.max(built.depth.saturating_sub(1));
                        parts.extend(more);
                    }
                    node => {
                        parts_depth = parts_depth.max(built.depth);
                        parts.push_back(node);
                    }
                }
                break;
            };
            top.push(built);
            if top.missing > 0 {
                break;
            }
            let Some(done) = stack.pop() else { break };
            built = done.finish();
            if built.depth > MAX_DEPTH {
                return Err(format!("a domain may nest operators at most {MAX_DEPTH} levels deep"));
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("{:?} needs {} operand(s)", open.symbol, if open.kind == Kind::Not { 1 } else { 2 }));
    }
    let depth = if parts.len() > 1 { parts_depth + 1 } else { parts_depth };
    if depth > MAX_DEPTH {
        return Err(format!("a domain may nest operators at most {MAX_DEPTH} levels deep"));
    }
    Ok(match parts.len() {
        0 => Built { node: Node::Leaf(Domain::True), depth: 0 },
        1 => Built { node: parts.pop_front().unwrap_or(Node::Leaf(Domain::True)), depth },
        _ => Built { node: Node::And(parts), depth },
    })
}

/// One non-operator element: a term or Odoo's true/false leaf.
fn leaf(item: &Value) -> Result<Domain, String> {
    match item {
        Value::Array(t) if t.len() == 3 => {
            let op = t[1]
                .as_str()
                .and_then(Op::parse)
                .ok_or_else(|| format!("unknown operator {} in a term", short(&t[1])))?;
            match &t[0] {
                Value::String(f) if !f.is_empty() => {
                    if matches!(op, Op::In | Op::NotIn) && !t[2].is_array() {
                        return Err(format!("{} needs a list in {}", t[1], short(item)));
                    }
                    if op.is_like() && t[2].as_str().is_some_and(|p| p.chars().count() > MAX_LIKE_PATTERN) {
                        return Err(format!("a like pattern may be at most {MAX_LIKE_PATTERN} characters long"));
                    }
                    Ok(Domain::Term { field: f.clone(), op, value: t[2].clone() })
                }
                // Odoo's TRUE_LEAF (1, '=', 1) and FALSE_LEAF (0, '=', 1).
                Value::Number(n) if op == Op::Eq && t[2] == 1 => {
                    Ok(if n.as_i64() == Some(1) { Domain::True } else { Domain::False })
                }
                _ => Err(format!("invalid term {}", short(item))),
            }
        }
        other => Err(format!("invalid domain element {}", short(other))),
    }
}

impl Built {
    fn into_domain(self) -> Domain {
        node_domain(self.node)
    }
}

/// The public binary tree of a flattened node, balanced. Recursion is bounded by the
/// nesting depth ([`MAX_DEPTH`]) times log2 of the widest operator.
fn node_domain(node: Node) -> Domain {
    match node {
        Node::Leaf(d) => d,
        Node::Not(inner) => Domain::Not(Box::new(node_domain(*inner))),
        Node::And(children) => balanced(children.into_iter().map(node_domain).collect(), Domain::And),
        Node::Or(children) => balanced(children.into_iter().map(node_domain).collect(), Domain::Or),
    }
}

fn balanced(mut items: Vec<Domain>, join: fn(Box<Domain>, Box<Domain>) -> Domain) -> Domain {
    match items.len() {
        0 => Domain::True,
        1 => items.pop().unwrap_or(Domain::True),
        n => {
            let right = items.split_off(n / 2);
            join(Box::new(balanced(items, join)), Box::new(balanced(right, join)))
        }
    }
}

/// The comparable scalar of a value: a many2one `[id, name]` compares by id against a
/// number and by name against a string.
fn scalar<'a>(v: &'a Value, against: &Value) -> &'a Value {
    match v.as_array() {
        Some(pair) if pair.len() == 2 => {
            if against.is_string() {
                &pair[1]
            } else {
                &pair[0]
            }
        }
        _ => v,
    }
}

fn is_false(v: &Value) -> bool {
    matches!(v, Value::Bool(false) | Value::Null)
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ if is_false(a) && is_false(b) => true,
        _ => a == b,
    }
}

/// Orders two field values the way Odoo sorts them (empty first, numbers numerically).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) if x.len() == 2 && y.len() == 2 => compare(&x[1], &y[1]),
        _ if is_false(a) && !is_false(b) => Ordering::Less,
        _ if !is_false(a) && is_false(b) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

fn term(v: &Value, op: Op, value: &Value, budget: &mut Budget) -> Result<bool, TooExpensive> {
    let v = scalar(v, value);
    Ok(match op {
        Op::Eq => equal(v, value),
        Op::Ne => !equal(v, value),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let comparable =
                matches!((v, value), (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_)));
            comparable && {
                if let (Value::String(a), Value::String(b)) = (v, value) {
                    budget.charge(a.len().min(b.len()) as u64)?;
                }
                let ord = compare(v, value);
                match op {
                    Op::Lt => ord == Ordering::Less,
                    Op::Le => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    _ => ord != Ordering::Less,
                }
            }
        }
        Op::In | Op::NotIn => {
            let mut found = false;
            for x in value.as_array().map_or(&[][..], Vec::as_slice) {
                budget.charge(1)?;
                if equal(scalar(v, x), x) {
                    found = true;
                    break;
                }
            }
            found == (op == Op::In)
        }
        Op::Like | Op::ILike | Op::NotLike | Op::NotILike | Op::EqLike | Op::EqILike => {
            let (Some(text), Some(pattern)) = (v.as_str(), value.as_str()) else {
                return Ok(matches!(op, Op::NotLike | Op::NotILike));
            };
            let fold = matches!(op, Op::ILike | Op::NotILike | Op::EqILike);
            let anchored = matches!(op, Op::EqLike | Op::EqILike);
            let hit = if fold {
                budget.charge((text.len() + pattern.len()) as u64)?;
                like(&text.to_lowercase(), &pattern.to_lowercase(), anchored, budget)?
            } else {
                like(text, pattern, anchored, budget)?
            };
            if matches!(op, Op::NotLike | Op::NotILike) { !hit } else { hit }
        }
    })
}

/// SQL LIKE: `%` any run, `_` one character; `anchored` false means `%pattern%`.
///
/// The pattern is cut at each `%` into segments; each segment is matched at its leftmost
/// place after the previous one (which is correct for `%`-separated segments: a later
/// place never leaves more room for the rest), the first one at the start and the last
/// one at the end when the pattern is anchored there. Segments without `_` are found with
/// the standard library's linear substring search.
pub fn like(text: &str, pattern: &str, anchored: bool, budget: &mut Budget) -> Result<bool, TooExpensive> {
    let segments: Vec<&str> = pattern.split('%').collect();
    // Anchored at the start unless the pattern starts with `%` (or is not anchored at all).
    let head_anchored = anchored && !pattern.starts_with('%');
    let tail_anchored = anchored && !pattern.ends_with('%');
    let literal: Vec<&str> = segments.iter().copied().filter(|s| !s.is_empty()).collect();
    if literal.is_empty() {
        // Only `%`s, or empty: an empty anchored pattern matches only the empty text.
        return Ok(!anchored || pattern.contains('%') || text.is_empty());
    }
    if pattern.contains('_') {
        let t: Vec<char> = text.chars().collect();
        budget.charge(t.len() as u64)?;
        let segs: Vec<Vec<char>> = literal.iter().map(|s| s.chars().collect()).collect();
        return match_segments(&t, &segs, head_anchored, tail_anchored, budget);
    }
    let segs: Vec<&[u8]> = literal.iter().map(|s| s.as_bytes()).collect();
    match_segments(text.as_bytes(), &segs, head_anchored, tail_anchored, budget)
}

/// One character position of a segment: equal, or `_` against anything.
trait Unit: PartialEq + Copy {
    /// Whether [`Unit::find_literal`] is linear in the text (else it costs text x segment).
    const LINEAR_SEARCH: bool;
    fn wildcard(self) -> bool;
    /// The leftmost place of a segment without wildcards.
    fn find_literal(hay: &[Self], needle: &[Self]) -> Option<usize>;
}

impl Unit for u8 {
    const LINEAR_SEARCH: bool = true;

    fn wildcard(self) -> bool {
        // Byte patterns hold no `_` (see `like`).
        false
    }

    fn find_literal(hay: &[u8], needle: &[u8]) -> Option<usize> {
        // Two-way / SIMD search: linear in the text.
        memchr::memmem::find(hay, needle)
    }
}

impl Unit for char {
    const LINEAR_SEARCH: bool = false;

    fn wildcard(self) -> bool {
        self == '_'
    }

    fn find_literal(hay: &[char], needle: &[char]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
}

fn match_segments<T: Unit>(
    text: &[T],
    segs: &[impl AsRef<[T]>],
    head_anchored: bool,
    tail_anchored: bool,
    budget: &mut Budget,
) -> Result<bool, TooExpensive> {
    let n = segs.len();
    let mut pos = 0;
    for (i, seg) in segs.iter().enumerate() {
        let seg = seg.as_ref();
        let last = i + 1 == n;
        if last && tail_anchored {
            // The last segment sits at the very end, after everything matched so far.
            let Some(start) = text.len().checked_sub(seg.len()) else { return Ok(false) };
            if start < pos || (i == 0 && head_anchored && start != 0) {
                return Ok(false);
            }
            return at(text, start, seg, budget);
        }
        if i == 0 && head_anchored {
            if !at(text, 0, seg, budget)? {
                return Ok(false);
            }
            pos = seg.len();
            continue;
        }
        match find(text, pos, seg, budget)? {
            Some(found) => pos = found + seg.len(),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Whether `seg` matches `text` at `start`.
fn at<T: Unit>(text: &[T], start: usize, seg: &[T], budget: &mut Budget) -> Result<bool, TooExpensive> {
    let Some(window) = text.get(start..start + seg.len()) else { return Ok(false) };
    budget.charge(seg.len() as u64)?;
    Ok(window.iter().zip(seg).all(|(t, p)| p.wildcard() || t == p))
}

/// The leftmost place at or after `from` where `seg` matches.
fn find<T: Unit>(text: &[T], from: usize, seg: &[T], budget: &mut Budget) -> Result<Option<usize>, TooExpensive> {
    if seg.len() > text.len().saturating_sub(from) {
        return Ok(None);
    }
    if !seg.iter().any(|u| u.wildcard()) {
        let rest = (text.len() - from) as u64;
        budget.charge(if T::LINEAR_SEARCH {
            rest + seg.len() as u64
        } else {
            rest.saturating_mul(seg.len() as u64)
        })?;
        return Ok(T::find_literal(&text[from..], seg).map(|i| i + from));
    }
    for start in from..=text.len() - seg.len() {
        if at(text, start, seg, budget)? {
            return Ok(Some(start));
        }
    }
    Ok(None)
}

/// One key of an `order` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    pub field: String,
    pub descending: bool,
}

/// Parses `"name desc, id"`; `None` or empty means by id.
pub fn parse_order(order: Option<&str>) -> Result<Vec<OrderKey>, String> {
    let Some(order) = order.filter(|o| !o.trim().is_empty()) else {
        return Ok(vec![OrderKey { field: "id".into(), descending: false }]);
    };
    order
        .split(',')
        .map(|part| {
            let words: Vec<&str> = part.split_whitespace().collect();
            let descending = match words.get(1).map(|w| w.to_ascii_lowercase()) {
                None => false,
                Some(w) if w == "asc" => false,
                Some(w) if w == "desc" => true,
                Some(w) => return Err(format!("invalid order direction {w:?} in {order:?}")),
            };
            match words.first() {
                Some(field) if words.len() <= 2 => Ok(OrderKey { field: (*field).to_string(), descending }),
                _ => Err(format!("invalid order {order:?}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(domain: Value, rec: Value) -> bool {
        let d = Domain::parse(&domain).unwrap();
        d.matches(&|f| vec![rec.get(f).cloned().unwrap_or(Value::Bool(false))])
    }

    #[test]
    fn prefix_operators_and_implicit_and() {
        let rec = json!({"name": "Alpha", "n": 3, "s": "running"});
        assert!(matches(json!([["name", "=", "Alpha"], ["n", ">", 2]]), rec.clone()));
        assert!(!matches(json!([["name", "=", "Alpha"], ["n", ">", 3]]), rec.clone()));
        assert!(matches(json!(["|", ["n", "=", 1], ["s", "in", ["running", "started"]]]), rec.clone()));
        assert!(matches(json!(["!", ["name", "ilike", "bet"]]), rec.clone()));
        assert!(matches(json!([["name", "ilike", "LPH"]]), rec.clone()));
        assert!(!matches(json!([["name", "like", "LPH"]]), rec.clone()));
        assert!(matches(json!([["name", "=like", "A%a"]]), rec.clone()));
        assert!(matches(json!([["missing", "=", false]]), rec.clone()));
        assert!(matches(json!(["&", "!", ["n", "<=", 2], ["s", "not in", ["draft"]]]), rec));
    }

    #[test]
    fn malformed_domains_are_refused() {
        for bad in
            [json!("x"), json!(["&", ["a", "=", 1]]), json!([["a", "~", 1]]), json!([["a", "in", 1]]), json!([42])]
        {
            assert!(Domain::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn x2many_paths_match_any_value() {
        let d = Domain::parse(&json!([
            ["reg_ids.id_type", "=like", "MOSIP VID"],
            "!",
            ["reg_ids.id_type", "=like", "MOSIP UIN TOKEN"]
        ]))
        .unwrap();
        let has = |types: Vec<&str>| {
            let vals: Vec<Value> = types.into_iter().map(|t| json!(t)).collect();
            d.matches(&move |_| vals.clone())
        };
        assert!(has(vec!["MOSIP VID"]));
        assert!(!has(vec!["MOSIP VID", "MOSIP UIN TOKEN"]));
        assert!(!has(vec![]));
    }

    /// The textbook dynamic programme for LIKE, as the reference.
    fn like_reference(text: &str, pattern: &str) -> bool {
        let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
        let mut dp = vec![vec![false; t.len() + 1]; p.len() + 1];
        dp[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=t.len() {
                dp[i][j] = match p[i - 1] {
                    '%' => dp[i - 1][j] || (j > 0 && dp[i][j - 1]),
                    '_' => j > 0 && dp[i - 1][j - 1],
                    c => j > 0 && t[j - 1] == c && dp[i - 1][j - 1],
                };
            }
        }
        dp[p.len()][t.len()]
    }

    #[test]
    fn like_agrees_with_the_reference_on_random_patterns() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = ['a', 'b', 'é', '%', '_'];
        for _ in 0..20_000 {
            let text: String = (0..rng.random_range(0..8)).map(|_| alphabet[rng.random_range(0..3)]).collect();
            let pattern: String = (0..rng.random_range(0..6)).map(|_| alphabet[rng.random_range(0..5)]).collect();
            let got = like(&text, &pattern, true, &mut Budget::unlimited()).unwrap();
            assert_eq!(got, like_reference(&text, &pattern), "{text:?} =like {pattern:?}");
            let got = like(&text, &pattern, false, &mut Budget::unlimited()).unwrap();
            assert_eq!(got, like_reference(&text, &format!("%{pattern}%")), "{text:?} like {pattern:?}");
        }
    }

    #[test]
    fn long_like_patterns_are_fast_or_refused() {
        let text = "ab".repeat(500_000);
        let pattern = format!("{}c", "ab".repeat(2_000));
        let started = std::time::Instant::now();
        assert!(!like(&text, &pattern, false, &mut Budget::new(SEARCH_BUDGET)).unwrap());
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        // With `_`, the work is charged and a small budget runs out instead of spinning.
        let pattern = format!("{}c", "a_".repeat(2_000));
        assert_eq!(like(&text, &pattern, false, &mut Budget::new(10_000_000)), Err(TooExpensive(10_000_000)));
        let too_long = json!([["name", "like", "x".repeat(MAX_LIKE_PATTERN + 1)]]);
        assert!(Domain::parse(&too_long).unwrap_err().contains("at most 4096 characters"));
    }

    fn height(d: &Domain) -> usize {
        match d {
            Domain::Not(x) => 1 + height(x),
            Domain::And(a, b) | Domain::Or(a, b) => 1 + height(a).max(height(b)),
            _ => 0,
        }
    }

    #[test]
    fn huge_and_deep_domains_parse_without_recursion() {
        let rec = json!({"n": 3});
        let get = |f: &str| vec![rec.get(f).cloned().unwrap_or(Value::Bool(false))];
        // 10,000 implicit-AND leaves: one level, a balanced tree.
        let wide: Vec<Value> = (0..MAX_LEAVES).map(|i| json!(["n", "!=", i + 10])).collect();
        let d = Domain::parse(&Value::Array(wide.clone())).unwrap();
        assert!(height(&d) <= 15, "{}", height(&d));
        assert!(d.matches(&get));
        assert_eq!(d.fields().len(), MAX_LEAVES);
        let mut over = wide;
        over.push(json!(["n", "=", 3]));
        assert!(Domain::parse(&Value::Array(over)).unwrap_err().contains("at most 10000 terms"));
        // Thousands of `|` (a left- and a right-leaning chain) flatten to one level.
        for right in [false, true] {
            let mut items = Vec::new();
            for i in 0..5_000 {
                if right {
                    items.push(json!("|"));
                    items.push(json!(["n", "=", i + 100]));
                } else {
                    items.insert(0, json!("|"));
                    items.push(json!(["n", "=", i + 100]));
                }
            }
            items.push(json!(["n", "=", 3]));
            let d = Domain::parse(&Value::Array(items)).unwrap();
            assert!(height(&d) <= 15, "{}", height(&d));
            assert!(d.matches(&get));
        }
        // Thousands of `!`: double negations cancel.
        let mut items: Vec<Value> = (0..5_001).map(|_| json!("!")).collect();
        items.push(json!(["n", "=", 3]));
        let d = Domain::parse(&Value::Array(items)).unwrap();
        assert!(!d.matches(&get));
        assert_eq!(height(&d), 1);
        let only_ops: Vec<Value> = (0..5_000).map(|_| json!("!")).collect();
        assert!(Domain::parse(&Value::Array(only_ops)).unwrap_err().contains("needs 1 operand"));
        // Alternating operators cannot flatten: refused past MAX_DEPTH.
        let nest = |levels: usize| {
            let mut items = Vec::new();
            for i in 0..levels {
                items.push(json!(if i % 2 == 0 { "&" } else { "|" }));
                items.push(json!(["n", "=", 3]));
            }
            items.push(json!(["n", "=", 3]));
            Value::Array(items)
        };
        assert!(Domain::parse(&nest(MAX_DEPTH)).unwrap().matches(&get));
        assert!(Domain::parse(&nest(MAX_DEPTH + 1)).unwrap_err().contains("64 levels"));
        assert!(Domain::parse(&nest(9_000)).unwrap_err().contains("64 levels"));
    }

    #[test]
    fn budgets_run_out_instead_of_spinning() {
        let rec = json!({"n": 3});
        let get = |f: &str| FieldValues::One(rec.get(f).map_or(Cow::Owned(Value::Bool(false)), Cow::Borrowed));
        let big_in = json!([["n", "in", (0..100_000).map(|i| i + 10).collect::<Vec<_>>()]]);
        let d = Domain::parse(&big_in).unwrap();
        let mut budget = Budget::new(1_000_000);
        let mut outcome = Ok(true);
        for _ in 0..100 {
            outcome = d.matches_within(&get, &mut budget);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(TooExpensive(1_000_000)));
        assert!(
            !d.matches(&|f| vec![rec.get(f).cloned().unwrap_or(Value::Bool(false))]),
            "unbounded evaluation still answers"
        );
    }

    #[test]
    fn order_clauses() {
        assert_eq!(parse_order(Some("name desc, id")).unwrap().len(), 2);
        assert!(parse_order(Some("name sideways")).is_err());
        assert_eq!(parse_order(None).unwrap()[0].field, "id");
    }
}
