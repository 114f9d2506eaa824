//! Odoo search domains (prefix `&`, `|`, `!` over `[field, operator, value]` terms) and
//! `order` clauses, evaluated over values as Odoo shows them.

use std::cmp::Ordering;

use serde_json::Value;

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

impl Domain {
    /// Parses a domain given as JSON (`[]` matches everything).
    pub fn parse(value: &Value) -> Result<Domain, String> {
        let items = value.as_array().ok_or_else(|| format!("a domain must be a list, got {value}"))?;
        let mut iter = items.iter();
        let mut parts = Vec::new();
        while iter.len() > 0 {
            parts.push(parse_one(&mut iter)?);
        }
        Ok(parts.into_iter().rev().reduce(|acc, d| Domain::And(Box::new(d), Box::new(acc))).unwrap_or(Domain::True))
    }

    /// Every field name the domain refers to.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Domain::True | Domain::False => vec![],
            Domain::Term { field, .. } => vec![field.as_str()],
            Domain::Not(d) => d.fields(),
            Domain::And(a, b) | Domain::Or(a, b) => {
                let mut f = a.fields();
                f.extend(b.fields());
                f
            }
        }
    }

    /// Whether a record matches. `get(field)` answers the field's values as Odoo shows
    /// them: one value for a plain field (`false` when empty; `[id, name]` for a
    /// many2one), every related value for a dotted path through an x2many (a term then
    /// matches when any of them does, as in Odoo; none at all compares as `false`).
    pub fn matches(&self, get: &dyn Fn(&str) -> Vec<Value>) -> bool {
        match self {
            Domain::True => true,
            Domain::False => false,
            Domain::Term { field, op, value } => {
                let values = get(field);
                if values.is_empty() {
                    return term(&Value::Bool(false), *op, value);
                }
                match op {
                    // "none of them equals" for the negative operators on x2many.
                    Op::Ne | Op::NotIn | Op::NotLike | Op::NotILike => values.iter().all(|v| term(v, *op, value)),
                    _ => values.iter().any(|v| term(v, *op, value)),
                }
            }
            Domain::Not(d) => !d.matches(get),
            Domain::And(a, b) => a.matches(get) && b.matches(get),
            Domain::Or(a, b) => a.matches(get) || b.matches(get),
        }
    }
}

fn parse_one(iter: &mut std::slice::Iter<'_, Value>) -> Result<Domain, String> {
    let item = iter.next().ok_or("a domain operator is missing its operands")?;
    match item {
        Value::String(s) if s == "&" || s == "|" => {
            let a = parse_one(iter).map_err(|_| format!("{s:?} needs two operands"))?;
            let b = parse_one(iter).map_err(|_| format!("{s:?} needs two operands"))?;
            Ok(if s == "&" { Domain::And(Box::new(a), Box::new(b)) } else { Domain::Or(Box::new(a), Box::new(b)) })
        }
        Value::String(s) if s == "!" => {
            Ok(Domain::Not(Box::new(parse_one(iter).map_err(|_| "\"!\" needs an operand")?)))
        }
        Value::Array(t) if t.len() == 3 => {
            let op = t[1].as_str().and_then(Op::parse).ok_or_else(|| format!("unknown operator {} in {item}", t[1]))?;
            match &t[0] {
                Value::String(f) if !f.is_empty() => {
                    if matches!(op, Op::In | Op::NotIn) && !t[2].is_array() {
                        return Err(format!("{} needs a list in {item}", t[1]));
                    }
                    Ok(Domain::Term { field: f.clone(), op, value: t[2].clone() })
                }
                // Odoo's TRUE_LEAF (1, '=', 1) and FALSE_LEAF (0, '=', 1).
                Value::Number(n) if op == Op::Eq && t[2] == 1 => {
                    Ok(if n.as_i64() == Some(1) { Domain::True } else { Domain::False })
                }
                _ => Err(format!("invalid term {item}")),
            }
        }
        other => Err(format!("invalid domain element {other}")),
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

fn term(v: &Value, op: Op, value: &Value) -> bool {
    let v = scalar(v, value);
    match op {
        Op::Eq => equal(v, value),
        Op::Ne => !equal(v, value),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let comparable =
                matches!((v, value), (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_)));
            comparable && {
                let ord = compare(v, value);
                match op {
                    Op::Lt => ord == Ordering::Less,
                    Op::Le => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    _ => ord != Ordering::Less,
                }
            }
        }
        Op::In => value.as_array().is_some_and(|list| list.iter().any(|x| equal(scalar(v, x), x))),
        Op::NotIn => !value.as_array().is_some_and(|list| list.iter().any(|x| equal(scalar(v, x), x))),
        Op::Like | Op::ILike | Op::NotLike | Op::NotILike | Op::EqLike | Op::EqILike => {
            let (Some(text), Some(pattern)) = (v.as_str(), value.as_str()) else {
                return matches!(op, Op::NotLike | Op::NotILike);
            };
            let fold = matches!(op, Op::ILike | Op::NotILike | Op::EqILike);
            let anchored = matches!(op, Op::EqLike | Op::EqILike);
            let pattern = if anchored { pattern.to_string() } else { format!("%{pattern}%") };
            let hit = if fold { like(&text.to_lowercase(), &pattern.to_lowercase()) } else { like(text, &pattern) };
            if matches!(op, Op::NotLike | Op::NotILike) { !hit } else { hit }
        }
    }
}

/// SQL LIKE: `%` any run, `_` one character.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Classic wildcard matching with backtracking on the last `%`.
    let (mut ti, mut pi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '%')
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

    #[test]
    fn order_clauses() {
        assert_eq!(parse_order(Some("name desc, id")).unwrap().len(), 2);
        assert!(parse_order(Some("name sideways")).is_err());
        assert_eq!(parse_order(None).unwrap()[0].field, "id");
    }
}
