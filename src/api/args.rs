//! Method arguments as Odoo passes them: positional `args` and/or `kwargs`, both valid.

use serde_json::{Map, Value};

use super::error::OdooError;

pub struct Args<'a> {
    method: &'a str,
    args: &'a [Value],
    kwargs: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    pub fn new(method: &'a str, args: &'a [Value], kwargs: &'a Map<String, Value>) -> Self {
        Args { method, args, kwargs }
    }

    /// The argument at position `pos`, or named `name` in kwargs; `None` when absent
    /// or null. `context` in kwargs is accepted and ignored by never being asked for.
    pub fn get(&self, pos: usize, name: &str) -> Option<&'a Value> {
        self.kwargs.get(name).or_else(|| self.args.get(pos)).filter(|v| !v.is_null())
    }

    fn wrong(&self, name: &str, want: &str) -> OdooError {
        OdooError::Type(format!("{}(): argument {name:?} must be {want}", self.method))
    }

    /// Record ids: one integer or a list of integers.
    pub fn ids(&self, pos: usize, name: &str) -> Result<Vec<u64>, OdooError> {
        match self.get(pos, name) {
            None => Err(OdooError::Type(format!("{}() missing the record ids ({name})", self.method))),
            Some(v) => ids_of(v).ok_or_else(|| self.wrong(name, "a record id or a list of record ids")),
        }
    }

    /// A non-negative integer; absent, `false` and `0` mean none (Odoo's `limit=0`).
    pub fn opt_usize(&self, pos: usize, name: &str) -> Result<Option<usize>, OdooError> {
        match self.get(pos, name) {
            None | Some(Value::Bool(false)) => Ok(None),
            Some(v) if v.as_u64() == Some(0) => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| self.wrong(name, "a non-negative integer")),
        }
    }

    pub fn opt_str(&self, pos: usize, name: &str) -> Result<Option<&'a str>, OdooError> {
        match self.get(pos, name) {
            None | Some(Value::Bool(false)) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(name, "a string")),
        }
    }

    /// A list of field names (`None` when absent or empty: every field).
    pub fn fields(&self, pos: usize, name: &str) -> Result<Option<Vec<&'a str>>, OdooError> {
        match self.get(pos, name) {
            None | Some(Value::Bool(false)) => Ok(None),
            Some(Value::Array(list)) if list.is_empty() => Ok(None),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().ok_or_else(|| self.wrong(name, "a list of field names")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.wrong(name, "a list of field names")),
        }
    }

    pub fn object(&self, pos: usize, name: &str) -> Result<Option<&'a Map<String, Value>>, OdooError> {
        match self.get(pos, name) {
            None | Some(Value::Bool(false)) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(self.wrong(name, "a dictionary of field values")),
        }
    }

    pub fn flag(&self, pos: usize, name: &str) -> bool {
        self.get(pos, name).is_some_and(|v| v.as_bool() == Some(true))
    }
}

pub fn ids_of(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Number(n) => n.as_u64().map(|id| vec![id]),
        Value::Array(list) => list.iter().map(Value::as_u64).collect(),
        _ => None,
    }
}
