//! `GET /actors/search/{search_type}` (spec §4.20, §7.13): actors, workers, executions or logs of
//! the caller's tenant that match the query, paged, shaped as Abaco's search items. Only records
//! of actors the caller may READ are searched (admins: every actor of their tenant). The query
//! language lives in `search_query`; this file gathers documents and shapes items.

use axum::extract::{Path, RawQuery, State};
use serde_json::{json, Map, Value};

use abaco_core::time::display;
use abaco_core::{Actor, PermissionLevel};
use abaco_store::{Kind, Page};

use crate::auth;
use crate::case::{self, Case};
use crate::identity::Identity;
use crate::params::parse_urlencoded;
use crate::reply::{ApiError, Reply};
use crate::search_query::{parse_stored_time, Budget, Query, TIME_FIELDS};
use crate::{wire, Api};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SearchType {
    Actors,
    Workers,
    Executions,
    Logs,
}

impl SearchType {
    fn parse(s: &str) -> Result<SearchType, ApiError> {
        match s.to_ascii_lowercase().as_str() {
            "actors" => Ok(SearchType::Actors),
            "workers" => Ok(SearchType::Workers),
            "executions" => Ok(SearchType::Executions),
            "logs" => Ok(SearchType::Logs),
            _ => Err(ApiError::bad(format!(
                "Invalid search type: {s}. The valid search types are: actors, workers, executions, logs."
            ))),
        }
    }
}

pub async fn search(
    State(api): State<Api>,
    who: Identity,
    Path(search_type): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Reply, ApiError> {
    let search_type = SearchType::parse(&search_type)?;
    let pairs = query.as_deref().map(parse_urlencoded).unwrap_or_default();
    let mut query = Query::parse(&pairs, api.case).map_err(ApiError::BadRequest)?;
    query.qualify_actor_ids(who.tenant.as_str());
    let result = run(&api, &who, search_type, &query).await?;
    Ok(Reply::ok("Search completed successfully.", result))
}

/// Matches every candidate record in order, then slices the page.
async fn run(
    api: &Api,
    who: &Identity,
    search_type: SearchType,
    query: &Query,
) -> Result<Value, ApiError> {
    let mut matched: Vec<Value> = Vec::new();
    // One budget for the whole search, however many documents it looks at.
    let budget = Budget::default();
    for actor in readable_actors(api, who).await? {
        for (doc, item) in candidates(api, search_type, &actor).await? {
            if query
                .matches_doc(&doc, &budget)
                .map_err(ApiError::BadRequest)?
            {
                let item = item();
                if query.matches_text(&item) {
                    matched.push(item);
                }
            }
        }
    }
    let total = matched.len();
    let page: Vec<Value> = matched
        .into_iter()
        .skip(query.skip)
        .take(query.limit)
        .map(|item| match item {
            Value::Object(m) => case::dict(api.case, m),
            other => other,
        })
        .collect();
    let mut metadata = Map::new();
    metadata.insert("total_count".into(), json!(total));
    metadata.insert("records_skipped".into(), json!(query.skip));
    metadata.insert("record_limit".into(), json!(query.limit));
    metadata.insert("count_returned".into(), json!(page.len()));
    Ok(json!({"_metadata": case::dict(api.case, metadata), "search": page}))
}

/// The tenant's actors on which the caller holds READ (admins: all of them).
pub async fn readable_actors(api: &Api, who: &Identity) -> Result<Vec<Actor>, ApiError> {
    let actors = api
        .control
        .store
        .actors_of_tenant(who.tenant.as_str())
        .await?;
    let mut readable = Vec::with_capacity(actors.len());
    for actor in actors {
        if auth::level_of(api, who, actor.db_id().as_str()).await? >= PermissionLevel::Read {
            readable.push(actor);
        }
    }
    Ok(readable)
}

/// A stored document to match, and how to display it (built only when it matches).
type Candidate = (Value, Box<dyn FnOnce() -> Value + Send>);

async fn candidates(
    api: &Api,
    search_type: SearchType,
    actor: &Actor,
) -> Result<Vec<Candidate>, ApiError> {
    let store = &api.control.store;
    let db_id = actor.db_id();
    let mut out: Vec<Candidate> = Vec::new();
    match search_type {
        SearchType::Actors => {
            let mut doc = to_doc(actor)?;
            if let Value::Object(m) = &mut doc {
                m.insert("db_id".into(), json!(db_id.as_str()));
            }
            let links = actor_links(actor);
            let shown = doc.clone();
            out.push((
                doc,
                Box::new(move || {
                    item(
                        shown,
                        &["_id", "api_server", "executions", "tenant", "db_id"],
                        Some(links),
                    )
                }),
            ));
        }
        SearchType::Workers => {
            for worker in store.workers_of(&db_id).await? {
                let doc = to_doc(&worker)?;
                let mut shown = doc.clone();
                human_actor_id(&mut shown);
                out.push((doc, Box::new(move || item(shown, &["_id", "tenant"], None))));
            }
        }
        SearchType::Executions => {
            for execution in store.executions_of(&db_id, Page::all()).await? {
                let doc = to_doc(&execution)?;
                let base = format!(
                    "{}/actors/v2/{}/executions/{}",
                    execution.api_server, actor.id, execution.id
                );
                let links = json!({
                    "self": base,
                    "owner": format!("{}/profiles/v2/{}", execution.api_server, execution.executor),
                    "logs": format!("{base}/logs"),
                });
                let mut shown = doc.clone();
                human_actor_id(&mut shown);
                out.push((
                    doc,
                    Box::new(move || item(shown, &["_id", "api_server", "tenant"], Some(links))),
                ));
            }
        }
        SearchType::Logs => {
            let now = abaco_core::time::now().timestamp_millis();
            let logs = store
                .raw()
                .list(Kind::Logs, Some(db_id.as_str()), Page::all())
                .await?;
            for (execution_id, stored) in logs {
                if stored
                    .get("exp")
                    .and_then(Value::as_i64)
                    .is_some_and(|exp| exp <= now)
                {
                    continue;
                }
                let text = stored.get("logs").cloned().unwrap_or(json!(""));
                let doc = json!({
                    "_id": execution_id,
                    "execution_id": execution_id,
                    "actor_id": db_id.as_str(),
                    "tenant": actor.tenant.as_str(),
                    "logs": text,
                });
                let links = wire::logs_links(actor, &execution_id);
                out.push((
                    doc,
                    Box::new(move || json!({"logs": text, "_links": links})),
                ));
            }
        }
    }
    Ok(out)
}

/// A stored document as a search item: hidden fields dropped, times displayed, links added.
fn item(doc: Value, hidden: &[&str], links: Option<Value>) -> Value {
    let Value::Object(mut m) = doc else {
        return doc;
    };
    for key in hidden {
        m.remove(*key);
    }
    display_times(&mut m);
    if let Some(Value::Object(state)) = m.get_mut("final_state") {
        display_times(state);
    }
    if let Some(links) = links {
        m.insert("_links".into(), links);
    }
    Value::Object(m)
}

/// Rewrites the time fields of a stored document in the wire form (`"None"` when unset).
pub fn display_times(m: &mut Map<String, Value>) {
    for field in TIME_FIELDS {
        if let Some(v) = m.get_mut(*field) {
            let shown = match v {
                Value::Null => Some("None".to_string()),
                Value::String(s) => parse_stored_time(s).map(|t| display(Some(&t))),
                _ => None,
            };
            if let Some(shown) = shown {
                *v = Value::String(shown);
            }
        }
    }
}

/// Stored `actor_id` is the `{tenant}_{id}` key; items show the human id.
fn human_actor_id(doc: &mut Value) {
    if let Some(v) = doc.get_mut("actor_id") {
        if let Some(s) = v.as_str() {
            let human = s
                .rsplit_once('_')
                .map(|(_, id)| id)
                .unwrap_or(s)
                .to_string();
            *v = Value::String(human);
        }
    }
}

fn actor_links(actor: &Actor) -> Value {
    let base = format!("{}/actors/v2/{}", actor.api_server, actor.id);
    json!({
        "self": base,
        "owner": format!("{}/profiles/v2/{}", actor.api_server, actor.owner),
        "executions": format!("{base}/executions"),
    })
}

pub fn to_doc<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|e| ApiError::Internal(format!("Could not encode a record: {e}")))
}

/// The key a field has on the wire in `case` (admin and search items use `dict_to_camel`).
pub fn wire_key(case: Case, key: &str) -> String {
    match case {
        Case::Snake => key.to_string(),
        Case::Camel => crate::case::under_to_camel(key),
    }
}
