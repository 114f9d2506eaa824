//! Service and model dispatch: `common.*`, `object.execute[_kw]`, `call_kw`, and the
//! methods of each model.

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::args::Args;
use super::error::OdooError;
use super::orm::{self, Reader};
use super::{App, version};
use crate::model::connector::{self, Action};
use crate::model::domain::Domain;
use crate::model::fields::ModelDef;
use crate::model::parse_datetime;

/// What a call answers: a JSON value, or JSON already written (the rows of `read` and
/// `search_read`, written straight from the records instead of built as values first).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Value(Value),
    Json(String),
}

impl From<Value> for Answer {
    fn from(v: Value) -> Answer {
        Answer::Value(v)
    }
}

impl Answer {
    /// The answer as a value (parsing it when it was written as JSON).
    pub fn into_value(self) -> Result<Value, OdooError> {
        match self {
            Answer::Value(v) => Ok(v),
            Answer::Json(s) => {
                serde_json::from_str(&s).map_err(|e| OdooError::Internal(format!("an answer is not JSON: {e}")))
            }
        }
    }
}

impl serde::Serialize for Answer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Value(v) => v.serialize(serializer),
            Answer::Json(s) => serde_json::value::RawValue::from_string(s.clone())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
        }
    }
}

/// `/jsonrpc` with `{service, method, args}`.
pub async fn jsonrpc(app: &App, params: &Value) -> Result<Answer, OdooError> {
    let service = params.get("service").and_then(Value::as_str).unwrap_or_default();
    let method = params.get("method").and_then(Value::as_str).unwrap_or_default();
    let empty = Vec::new();
    let args = params.get("args").and_then(Value::as_array).unwrap_or(&empty);
    let str_arg = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or_default();
    match (service, method) {
        ("common", "version") => Ok(version().into()),
        ("common", "about") => {
            Ok(json!(format!("See http://openerp.com (mts-connector {})", env!("CARGO_PKG_VERSION"))).into())
        }
        ("common", "login" | "authenticate") => {
            Ok(app.login(str_arg(0), str_arg(1), str_arg(2)).map_or(Value::Bool(false), Value::from).into())
        }
        ("object", "execute" | "execute_kw") => {
            let uid = args.get(1).and_then(Value::as_u64);
            if args.len() < 5 {
                return Err(OdooError::Type(format!("{method}() takes (db, uid, password, model, method, ...)")));
            }
            if app.login(str_arg(0), &app.api_login, str_arg(2)).is_none() || uid != Some(super::UID) {
                return Err(OdooError::AccessDenied);
            }
            let (model, model_method) = (str_arg(3), str_arg(4));
            // Odoo's execute_cr: an unknown model is a UserError here (a KeyError only
            // on the web client's /web/dataset/call_kw).
            if model != "ir.model" && orm::model_def(model).is_none() {
                return Err(OdooError::User(format!("Object {model} doesn't exist")));
            }
            let empty_kwargs = Map::new();
            if method == "execute" {
                call(app, model, model_method, &args[5..], &empty_kwargs).await
            } else {
                let call_args = match args.get(5) {
                    None | Some(Value::Null) => &empty,
                    Some(Value::Array(a)) => a,
                    Some(_) => return Err(OdooError::Type("execute_kw(): args must be a list".into())),
                };
                let kwargs = match args.get(6) {
                    None | Some(Value::Null) => &empty_kwargs,
                    Some(Value::Object(k)) => k,
                    Some(_) => return Err(OdooError::Type("execute_kw(): kwargs must be a dictionary".into())),
                };
                call(app, model, model_method, call_args, kwargs).await
            }
        }
        ("common" | "object" | "db", _) => {
            Err(OdooError::Attribute(format!("The method {service}.{method} is not available on this server")))
        }
        _ => Err(OdooError::NotFound(format!("No such service {service:?}: this server offers common and object"))),
    }
}

/// `/web/dataset/call_kw` with `{model, method, args, kwargs}`.
pub async fn call_kw(app: &App, params: &Value) -> Result<Answer, OdooError> {
    let model = params.get("model").and_then(Value::as_str).unwrap_or_default();
    let method = params.get("method").and_then(Value::as_str).unwrap_or_default();
    let empty = Vec::new();
    let empty_kwargs = Map::new();
    let args = params.get("args").and_then(Value::as_array).unwrap_or(&empty);
    let kwargs = params.get("kwargs").and_then(Value::as_object).unwrap_or(&empty_kwargs);
    call(app, model, method, args, kwargs).await
}

/// The methods that may take CPU time: reads scan many records, writes validate (compile
/// jq, parse domains); they must not stall the async workers ([`super::blocking`]).
/// Reads (they change nothing) are tried on the worker first, within a small budget.
const READS: &[&str] =
    &["fields_get", "default_get", "search", "search_count", "search_read", "read", "name_get", "name_search"];
const HEAVY_WRITES: &[&str] = &["preview_mts_request", "create", "write", "copy"];

/// One model method.
pub async fn call(
    app: &App,
    model: &str,
    method: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Answer, OdooError> {
    if READS.contains(&method) {
        return super::blocking::read_first(|| dispatch(app, model, method, args, kwargs)).await;
    }
    if HEAVY_WRITES.contains(&method) {
        return super::blocking::run(dispatch(app, model, method, args, kwargs)).await;
    }
    dispatch(app, model, method, args, kwargs).await
}

async fn dispatch(
    app: &App,
    model: &str,
    method: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Answer, OdooError> {
    let a = Args::new(method, args, kwargs);
    if model == "ir.model" {
        return ir_model(method, &a).map(Answer::Value);
    }
    let def = orm::model_def(model)
        .ok_or_else(|| OdooError::Key(format!("Model {model:?} does not exist on this server")))?;
    let reader = Reader { store: &app.store, model: def };
    let now = Utc::now();
    let value = match method {
        "check_access_rights" => {
            let operation = a.opt_str(0, "operation")?.unwrap_or("read");
            check_access_rights(def, operation, a.get(1, "raise_exception").is_none_or(|v| v.as_bool() != Some(false)))?
        }
        "fields_get" => {
            let only = a.fields(0, "allfields")?;
            let attributes = a.fields(1, "attributes")?;
            orm::fields_get(def, only.as_deref(), attributes.as_deref())
        }
        "default_get" => orm::default_get(def, a.fields(0, "fields_list")?.as_deref()),
        "search" | "search_count" if method == "search_count" || a.flag(4, "count") => {
            // Counted without holding the matches.
            let n = reader.count(a.get(0, "domain"))?.saturating_sub(a.opt_usize(1, "offset")?.unwrap_or(0));
            Value::from(a.opt_usize(2, "limit")?.map_or(n, |l| n.min(l)))
        }
        "search" | "search_count" => {
            let hits = reader.search(
                a.get(0, "domain"),
                a.opt_usize(1, "offset")?.unwrap_or(0),
                a.opt_usize(2, "limit")?,
                a.opt_str(3, "order")?,
            )?;
            orm::AnswerBudget::default().collect(hits.iter().map(|r| Ok(Value::from(r.id))))?
        }
        "search_read" => {
            let columns = reader.columns(a.fields(1, "fields")?.as_deref())?;
            let hits = reader.search(
                a.get(0, "domain"),
                a.opt_usize(2, "offset")?.unwrap_or(0),
                a.opt_usize(3, "limit")?,
                a.opt_str(4, "order")?,
            )?;
            let rows = orm::AnswerBudget::default().json_list(&hits, |out, r| reader.render_json(out, r, &columns))?;
            return Ok(Answer::Json(rows));
        }
        "read" => return Ok(Answer::Json(reader.read_json(&a.ids(0, "ids")?, a.fields(1, "fields")?.as_deref())?)),
        "name_get" => {
            let ids = a.ids(0, "ids")?;
            if super::blocking::inline() && ids.len() > super::blocking::INLINE_IDS {
                return Err(OdooError::Offload);
            }
            let recs = reader.records(&ids)?;
            orm::AnswerBudget::default().collect(recs.iter().map(|r| Ok(json!([r.id, orm::display_name(def, r)]))))?
        }
        "name_search" => {
            let name = a.opt_str(0, "name")?.unwrap_or_default();
            let limit = a.opt_usize(3, "limit")?.or(Some(100));
            let field = def.rec_name.unwrap_or("id");
            let domain = json!([[field, "ilike", name]]);
            let hits = reader.search(Some(&domain), 0, limit, None)?;
            orm::AnswerBudget::default().collect(hits.iter().map(|r| Ok(json!([r.id, orm::display_name(def, r)]))))?
        }
        "create" => {
            let input = a.get(0, "vals_list").or_else(|| a.get(0, "vals"));
            let vals: Vec<&Map<String, Value>> = match input {
                Some(Value::Object(v)) => vec![v],
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|v| {
                        v.as_object()
                            .ok_or_else(|| OdooError::Type("create(): each item must be a dictionary of values".into()))
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(OdooError::Type("create() takes a dictionary of values or a list of them".into())),
            };
            let ids = orm::create(&app.store, def, &vals, now)?;
            app.store.flush().await?;
            log_change(def.name, "create", &ids);
            if matches!(input, Some(Value::Object(_))) { Value::from(ids[0]) } else { ids.into() }
        }
        "write" => {
            let ids = a.ids(0, "ids")?;
            let vals = a
                .object(1, "vals")?
                .ok_or_else(|| OdooError::Type("write() takes the ids and a dictionary of values".into()))?;
            orm::write(&app.store, def, &ids, vals, now)?;
            app.store.flush().await?;
            log_change(def.name, "write", &ids);
            Value::Bool(true)
        }
        "unlink" => {
            let ids = a.ids(0, "ids")?;
            orm::unlink(&app.store, def, &ids)?;
            app.store.flush().await?;
            log_change(def.name, "unlink", &ids);
            Value::Bool(true)
        }
        "action_cancel" if def.name == crate::model::run::MODEL => {
            app.engine.cancel_runs(&a.ids(0, "ids")?).await?;
            Value::Bool(true)
        }
        _ if def.name == connector::MODEL => return connector_method(app, method, &a).await.map(Answer::Value),
        _ => return Err(unknown_method(model, method)),
    };
    Ok(Answer::Value(value))
}

/// `check_access_rights(operation, raise_exception=True)`: the API user may read every
/// model and change the writable ones.
fn check_access_rights(def: &ModelDef, operation: &str, raise: bool) -> Result<Value, OdooError> {
    let allowed = match operation {
        "read" => true,
        "create" | "write" | "unlink" => def.writable,
        other => return Err(OdooError::Value(format!("Invalid access mode {other:?}"))),
    };
    if !allowed && raise {
        return Err(OdooError::Access(format!(
            "You are not allowed to {operation} {} records: the service keeps them",
            def.name
        )));
    }
    Ok(Value::Bool(allowed))
}

fn unknown_method(model: &str, method: &str) -> OdooError {
    OdooError::Attribute(format!("The method {method:?} does not exist on the model {model:?}"))
}

fn log_change(model: &str, what: &str, ids: &[u64]) {
    tracing::info!(model, what, ids = ?ids, "records changed");
}

/// The methods only connectors have: copy, the job actions, the request preview.
async fn connector_method(app: &App, method: &str, a: &Args<'_>) -> Result<Value, OdooError> {
    let def = &connector::CONNECTOR;
    let now = Utc::now();
    let action = match method {
        "action_start" => Some(Action::Start),
        "action_stop" => Some(Action::Stop),
        "action_restart" => Some(Action::Restart),
        "mts_action_trigger" => Some(Action::Toggle),
        _ => None,
    };
    if let Some(action) = action {
        let ids = a.ids(0, "ids")?;
        let changed = orm::update_each(&app.store, def, &ids, now, |rec| {
            let status = connector::transition(rec, action)?;
            rec.set("job_status", status);
            // The scheduler sets the next fire; a one-time job gets a fresh run.
            rec.set("next_run_at", Value::Null);
            if status == "started" {
                rec.set(connector::ONETIME_RUN, Value::Null);
            }
            Ok(())
        })?;
        app.store.flush().await?;
        tracing::info!(connector_ids = ?ids, method, "connector job status changed");
        app.engine.status_changed(&changed).await?;
        return Ok(Value::Bool(true));
    }
    let reader = Reader { store: &app.store, model: def };
    match method {
        "action_import" => {
            let recs = records(&reader, a)?;
            let start = required_time(a, 1, "window_start")?;
            let end = required_time(a, 2, "window_end")?;
            let recs: Vec<_> = recs.iter().map(|r| (**r).clone()).collect();
            let ids = app.engine.import(&recs, start, end, now).await?;
            Ok(ids.into())
        }
        "action_run_now" => {
            let recs: Vec<_> = records(&reader, a)?.iter().map(|r| (**r).clone()).collect();
            Ok(app.engine.run_now(&recs, now).await?.into())
        }
        "action_retry_failed" => {
            let ids: Vec<u64> = records(&reader, a)?.iter().map(|r| r.id).collect();
            Ok(Value::from(app.engine.retry_failed_deliveries(&ids).await?))
        }
        "action_test_connection" => {
            let mut reports = Vec::new();
            for rec in records(&reader, a)? {
                reports.push(app.engine.test_connection(&rec).await);
            }
            Ok(Value::String(reports.join("\n\n")))
        }
        "copy" => {
            let ids = a.ids(0, "id")?;
            let [id] = ids[..] else {
                return Err(OdooError::Value("copy() takes exactly one record id".into()));
            };
            let overrides = a.object(1, "default")?;
            let new_id = copy_connector(app, id, overrides, now)?;
            app.store.flush().await?;
            log_change(def.name, "copy", &[new_id]);
            Ok(Value::from(new_id))
        }
        "preview_mts_request" => {
            let recs = records(&reader, a)?;
            let start = a.opt_str(1, "window_start")?.map(parse_datetime).transpose().map_err(OdooError::Value)?;
            let end = a.opt_str(2, "window_end")?.map(parse_datetime).transpose().map_err(OdooError::Value)?;
            let mut out = Vec::new();
            let mut budget = orm::AnswerBudget::default();
            for rec in recs {
                let (next_start, next_end) = app.engine.next_window(&rec, now);
                let (ws, we) = (start.unwrap_or(next_start), end.unwrap_or(next_end));
                if ws >= we {
                    return Err(OdooError::Value("window_end must be after window_start".into()));
                }
                let input = match rec.str("input_type") {
                    Some("custom") => crate::mts::Input::Records(&[]),
                    _ => crate::mts::Input::Odk { start: ws, end: we },
                };
                let request = crate::mts::build_request(&rec, input, None, crate::mts::Secrets::Mask, now);
                budget.charge(&request)?;
                out.push(request);
            }
            Ok(if out.len() == 1 { out.remove(0) } else { Value::Array(out) })
        }
        _ => Err(unknown_method(def.name, method)),
    }
}

fn records(reader: &Reader<'_>, a: &Args<'_>) -> Result<Vec<std::sync::Arc<crate::model::fields::Record>>, OdooError> {
    reader.records(&a.ids(0, "ids")?)
}

fn required_time(a: &Args<'_>, pos: usize, name: &str) -> Result<chrono::DateTime<Utc>, OdooError> {
    let text = a
        .opt_str(pos, name)?
        .ok_or_else(|| OdooError::Type(format!("missing {name} (\"YYYY-MM-DD HH:MM:SS\", UTC)")))?;
    parse_datetime(text).map_err(|e| OdooError::Validation(format!("{name}: {e}")))
}

fn copy_connector(
    app: &App,
    id: u64,
    overrides: Option<&Map<String, Value>>,
    now: chrono::DateTime<Utc>,
) -> Result<u64, OdooError> {
    let def = &connector::CONNECTOR;
    let original = Reader { store: &app.store, model: def }.records(&[id])?.remove(0);
    let mut rec = (*original).clone();
    let name = rec.str("name").unwrap_or_default().to_string();
    rec.set("name", format!("{name} (copy)"));
    rec.set("job_status", "draft");
    for field in ["last_run_id", "next_run_at", connector::ONETIME_RUN] {
        rec.values.swap_remove(field);
    }
    if let Some(vals) = overrides {
        crate::model::apply_vals(def, &mut rec, vals)?;
    }
    crate::model::check_required(def, &rec)?;
    connector::validate(&rec, now)?;
    let stamp = crate::model::format_datetime(now);
    rec.set("create_date", stamp.clone());
    rec.set("write_date", stamp);
    let _guard = app.store.write_lock();
    rec.id = app.store.next_id(def.name)?;
    let new_id = rec.id;
    app.store.put(def.name, rec)?;
    Ok(new_id)
}

/// `ir.model` as a model definition, for what the generic checks need of it.
static IR_MODEL: ModelDef = ModelDef {
    name: "ir.model",
    description: "Models",
    fields: &[],
    rec_name: Some("name"),
    writable: false,
    validate: None,
    check_unlink: None,
};

/// `ir.model`: the models this server holds, for clients that look them up first.
fn ir_model(method: &str, a: &Args<'_>) -> Result<Value, OdooError> {
    let rows: Vec<Value> = orm::models()
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"id": i + 1, "model": m.name, "name": m.description, "state": "base", "transient": false}))
        .collect();
    let domain = a
        .get(0, "domain")
        .map(Domain::parse)
        .transpose()
        .map_err(|e| OdooError::Value(format!("Invalid domain: {e}")))?;
    let ids_arg = if method == "read" { Some(a.ids(0, "ids")?) } else { None };
    let mut budget = crate::model::domain::Budget::new(crate::model::domain::SEARCH_BUDGET);
    let mut hits: Vec<&Value> = Vec::new();
    for r in &rows {
        let get = |f: &str| {
            crate::model::domain::FieldValues::One(
                r.get(f).map_or(std::borrow::Cow::Owned(Value::Bool(false)), std::borrow::Cow::Borrowed),
            )
        };
        let matched = match &domain {
            Some(d) => {
                d.matches_within(&get, &mut budget).map_err(|e| OdooError::Value(format!("Invalid domain: {e}")))?
            }
            None => true,
        };
        if matched && ids_arg.as_ref().is_none_or(|ids| r["id"].as_u64().is_some_and(|id| ids.contains(&id))) {
            hits.push(r);
        }
    }
    match method {
        "search" => Ok(hits.iter().map(|r| r["id"].clone()).collect()),
        "search_count" => Ok(Value::from(hits.len())),
        "search_read" | "read" => Ok(hits.into_iter().cloned().collect()),
        "check_access_rights" => {
            let operation = a.opt_str(0, "operation")?.unwrap_or("read");
            let raise = a.get(1, "raise_exception").is_none_or(|v| v.as_bool() != Some(false));
            check_access_rights(&IR_MODEL, operation, raise)
        }
        "fields_get" => Ok(json!({
            "model": {"type": "char", "string": "Model", "required": true, "readonly": true},
            "name": {"type": "char", "string": "Model Description", "required": true, "readonly": true},
        })),
        _ => Err(unknown_method("ir.model", method)),
    }
}
