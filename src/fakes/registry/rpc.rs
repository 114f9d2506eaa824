//! The fake registry's `/jsonrpc`: `common.*` and `object.execute_kw` over its models,
//! with Odoo-shaped answers and errors.

use std::sync::Mutex;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::data::{GENDERS, ID_TYPES, RegistryState, field_def, has_vid, model_fields, number};
use crate::fakes::http::{Recorded, Reply, json, lock, reply};
use crate::fakes::registry::RpcCall;
use crate::model::domain::Domain;

pub(super) fn envelope(req: &Recorded, outcome: Result<Value, Value>) -> Reply {
    let id = req.body.as_ref().and_then(|b| b.get("id")).cloned().unwrap_or(Value::Null);
    let body = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    };
    json(StatusCode::OK, &body)
}

/// An Odoo exception as the JSON-RPC `error` object.
pub(super) fn odoo_error(name: &str, message: &str) -> Value {
    json!({
        "code": 200,
        "message": "Odoo Server Error",
        "data": {
            "name": name,
            "debug": format!("Traceback (most recent call last):\n  (fake registry)\n{name}: {message}"),
            "message": message,
            "arguments": [message],
            "context": {},
        }
    })
}

pub(super) fn no_database(db: &str) -> Value {
    odoo_error(
        "psycopg2.OperationalError",
        &format!(
            "connection to server at \"localhost\" (127.0.0.1), port 5432 failed: FATAL:  database \"{db}\" does not exist\n"
        ),
    )
}

pub(super) fn access_denied() -> Value {
    odoo_error("odoo.exceptions.AccessDenied", "Access Denied")
}

pub(super) fn value_error(message: &str) -> Value {
    odoo_error("builtins.ValueError", message)
}

pub(super) fn rpc(state: &Mutex<RegistryState>, req: &Recorded) -> Reply {
    {
        let mut st = lock(state);
        if st.fail_next > 0 {
            st.fail_next -= 1;
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/html",
                "<html><body>Internal Server Error</body></html>",
            );
        }
    }
    let Some(params) = req.body.as_ref().and_then(|b| b.get("params")) else {
        return envelope(req, Err(json!({"code": -32700, "message": "Parse error"})));
    };
    let service = params["service"].as_str().unwrap_or_default().to_string();
    let method = params["method"].as_str().unwrap_or_default().to_string();
    let args = params.get("args").cloned().unwrap_or(json!([]));
    let mut st = lock(state);
    let (model, model_method) = match service.as_str() {
        "object" => (args[3].as_str().map(str::to_string), args[4].as_str().map(str::to_string)),
        _ => (None, None),
    };
    st.calls.push(RpcCall {
        service: service.clone(),
        method: method.clone(),
        model,
        model_method,
        args: args.clone(),
    });
    let outcome = match (service.as_str(), method.as_str()) {
        ("common", "version") => Ok(json!({
            "server_version": "17.0", "server_version_info": [17, 0, 0, "final", 0, ""],
            "server_serie": "17.0", "protocol_version": 1
        })),
        ("common", "login" | "authenticate") => st.login(&args),
        ("object", "execute_kw") => {
            let call_args = args.get(5).cloned().unwrap_or(json!([]));
            let kwargs = args.get(6).cloned().unwrap_or(json!({}));
            st.execute(&args, call_args, kwargs)
        }
        ("object", "execute") => {
            let call_args =
                Value::Array(args.as_array().map(|a| a.iter().skip(5).cloned().collect()).unwrap_or_default());
            st.execute(&args, call_args, json!({}))
        }
        _ => Err(odoo_error("builtins.KeyError", &format!("'{method}'"))),
    };
    drop(st);
    envelope(req, outcome)
}

impl RegistryState {
    pub(super) fn password_ok(&self, password: &Value) -> bool {
        password.as_str().is_some_and(|p| self.passwords.iter().any(|ok| ok == p))
    }

    pub(super) fn login(&self, args: &Value) -> Result<Value, Value> {
        let db = args[0].as_str().unwrap_or_default();
        if db != self.db {
            return Err(no_database(db));
        }
        if args[1].as_str() == Some(self.login.as_str()) && self.password_ok(&args[2]) {
            Ok(json!(self.uid))
        } else {
            Ok(json!(false))
        }
    }

    pub(super) fn execute(&mut self, auth: &Value, args: Value, kwargs: Value) -> Result<Value, Value> {
        let db = auth[0].as_str().unwrap_or_default();
        if db != self.db {
            return Err(no_database(db));
        }
        if auth[1].as_i64() != Some(self.uid) || !self.password_ok(&auth[2]) {
            return Err(access_denied());
        }
        let model = auth[3].as_str().unwrap_or_default();
        let method = auth[4].as_str().unwrap_or_default();
        let Some(fields) = model_fields(model) else {
            return Err(odoo_error("builtins.KeyError", &format!("'{model}'")));
        };
        if self.denied.contains(model) {
            return Err(odoo_error(
                "odoo.exceptions.AccessError",
                &format!(
                    "You are not allowed to access '{model}' ({model}) records.\n\nThis operation is allowed for the following groups:\n\t- Administration/Settings\n\nContact your administrator to request access if necessary."
                ),
            ));
        }
        let arg = |pos: usize, name: &str| -> Value {
            kwargs.get(name).or_else(|| args.get(pos)).cloned().unwrap_or(Value::Null)
        };
        match method {
            "search_read" => {
                let domain = self.domain(model, &arg(0, "domain"))?;
                let wanted = self.wanted_fields(model, &arg(1, "fields"))?;
                let ids = self.search(model, &domain, &arg(2, "offset"), &arg(3, "limit"), &arg(4, "order"))?;
                Ok(Value::Array(ids.into_iter().map(|id| self.render(model, id, &wanted)).collect()))
            }
            "search" => {
                let domain = self.domain(model, &arg(0, "domain"))?;
                let ids = self.search(model, &domain, &arg(1, "offset"), &arg(2, "limit"), &arg(3, "order"))?;
                Ok(json!(ids))
            }
            "search_count" => {
                let domain = self.domain(model, &arg(0, "domain"))?;
                Ok(json!(self.search(model, &domain, &Value::Null, &arg(1, "limit"), &Value::Null)?.len()))
            }
            "read" => {
                let ids = self.ids_arg(model, &arg(0, "ids"))?;
                let wanted = self.wanted_fields(model, &arg(1, "fields"))?;
                Ok(Value::Array(ids.into_iter().map(|id| self.render(model, id, &wanted)).collect()))
            }
            "fields_get" => {
                let only: Option<Vec<String>> = arg(0, "allfields")
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
                let mut out = Map::new();
                for (name, ftype, comodel) in fields {
                    if only.as_ref().is_some_and(|o| !o.iter().any(|f| f == name)) {
                        continue;
                    }
                    let mut d = json!({"type": ftype, "string": name});
                    if !comodel.is_empty() {
                        d["relation"] = json!(comodel);
                    }
                    out.insert((*name).into(), d);
                }
                Ok(Value::Object(out))
            }
            "create" if model == "g2p.reg.id" => {
                // One dict or a list of dicts, as Odoo 17's create takes.
                let vals = arg(0, "vals_list");
                let list = match &vals {
                    Value::Array(items) => items.clone(),
                    other => vec![other.clone()],
                };
                let mut ids = Vec::new();
                for v in &list {
                    ids.push(self.create_reg_id(v)?);
                }
                Ok(if vals.is_array() { json!(ids) } else { json!(ids[0]) })
            }
            "write" if model == "g2p.reg.id" => {
                let ids = self.ids_arg(model, &arg(0, "ids"))?;
                let vals = arg(1, "vals");
                let unknown: Vec<&String> =
                    vals.as_object().map(|m| m.keys().filter(|k| *k != "value").collect()).unwrap_or_default();
                if !unknown.is_empty() {
                    return Err(value_error(&format!("the fake registry writes only value, not {unknown:?}")));
                }
                let Some(value) = vals["value"].as_str() else {
                    return Err(value_error("value must be a string"));
                };
                for id in ids {
                    self.write_reg_id(id, value);
                }
                Ok(json!(true))
            }
            "unlink" if model == "g2p.reg.id" => {
                let ids = self.ids_arg(model, &arg(0, "ids"))?;
                for id in ids {
                    match self.reg_owner(id) {
                        Some(owner) if owner == id && id <= self.size && has_vid(id) => {
                            self.deleted_vids.insert(id);
                        }
                        Some(owner) => {
                            if let Some(list) = self.added.get_mut(&owner) {
                                list.retain(|r| r.id != id);
                            }
                            self.added_owner.remove(&id);
                        }
                        None => {}
                    }
                    self.unlinked.push(id);
                }
                Ok(json!(true))
            }
            _ => Err(odoo_error(
                "builtins.AttributeError",
                &format!("The method '{method}' does not exist on the model '{model}'"),
            )),
        }
    }

    /// Parses a domain and checks every path in it exists.
    pub(super) fn domain(&self, model: &str, value: &Value) -> Result<Domain, Value> {
        let value = if value.is_null() || value == &json!(false) { json!([]) } else { value.clone() };
        let domain = Domain::parse(&value).map_err(|e| value_error(&format!("Invalid domain: {e}")))?;
        for path in domain.fields() {
            let mut current = model.to_string();
            let mut segments = path.split('.').peekable();
            while let Some(seg) = segments.next() {
                let Some((ftype, comodel)) = field_def(&current, seg) else {
                    return Err(value_error(&format!("Invalid field {current}.{seg} in leaf ('{path}', ...)")));
                };
                if segments.peek().is_some() {
                    if !matches!(ftype, "many2one" | "one2many") {
                        return Err(value_error(&format!("Invalid field {current}.{seg} in leaf ('{path}', ...)")));
                    }
                    current = comodel.to_string();
                }
            }
        }
        Ok(domain)
    }

    pub(super) fn wanted_fields(&self, model: &str, value: &Value) -> Result<Vec<String>, Value> {
        let all = || model_fields(model).unwrap_or_default().iter().map(|(n, _, _)| (*n).to_string()).collect();
        let Some(list) = value.as_array().filter(|l| !l.is_empty()) else { return Ok(all()) };
        let mut out = vec!["id".to_string()];
        for f in list {
            let name = f.as_str().unwrap_or_default();
            if field_def(model, name).is_none() {
                return Err(value_error(&format!("Invalid field '{name}' on model '{model}'")));
            }
            if name != "id" {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    pub(super) fn ids_arg(&self, model: &str, value: &Value) -> Result<Vec<u64>, Value> {
        let ids: Vec<u64> = match value {
            Value::Array(items) => items.iter().filter_map(number).collect(),
            v => number(v).into_iter().collect(),
        };
        let missing: Vec<String> =
            ids.iter().filter(|i| self.value(model, **i, "id").is_none()).map(|i| i.to_string()).collect();
        if !missing.is_empty() {
            return Err(odoo_error(
                "odoo.exceptions.MissingError",
                &format!(
                    "Record does not exist or has been deleted.\n(Record: {model}({},), User: {})",
                    missing.join(", "),
                    self.uid
                ),
            ));
        }
        Ok(ids)
    }

    pub(super) fn search(
        &self,
        model: &str,
        domain: &Domain,
        offset: &Value,
        limit: &Value,
        order: &Value,
    ) -> Result<Vec<u64>, Value> {
        let offset = number(offset).unwrap_or(0) as usize;
        let limit = number(limit).filter(|l| *l > 0).map(|l| l as usize);
        let desc = match order.as_str().map(str::trim) {
            None | Some("") | Some("id") | Some("id asc") | Some("id ASC") => false,
            Some("id desc") | Some("id DESC") => true,
            Some(other) => return Err(value_error(&format!("the fake registry orders by id only, not {other:?}"))),
        };
        Ok(match model {
            "res.partner" => self.search_partners(domain, offset, limit, desc),
            "g2p.reg.id" => self.search_reg_ids(domain, offset, limit, desc),
            "g2p.id.type" => Self::search_named(ID_TYPES, model, domain),
            _ => Self::search_named(GENDERS, model, domain),
        })
    }

    pub(super) fn render(&self, model: &str, id: u64, fields: &[String]) -> Value {
        let mut row = Map::new();
        for f in fields {
            row.insert(f.clone(), self.value(model, id, f).unwrap_or(Value::Bool(false)));
        }
        Value::Object(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry(size: u64) -> RegistryState {
        RegistryState::new("reg", "u", "pw", size)
    }

    #[test]
    fn unknown_fields_are_value_errors() {
        let st = registry(10);
        let err = st.domain("res.partner", &json!([["nope", "=", 1]])).unwrap_err();
        assert_eq!(err["data"]["name"], "builtins.ValueError");
        assert!(st.domain("res.partner", &json!([["reg_ids.id_type.name", "=", "x"]])).is_ok());
        assert!(st.wanted_fields("res.partner", &json!(["id", "nope"])).is_err());
    }
}
