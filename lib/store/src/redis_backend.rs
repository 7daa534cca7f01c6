//! The Redis half of the distributed backend: live state (actors, workers, nonces, aliases).
//! It knows nothing of the typed records and nothing of PostgreSQL.
//!
//! Layout per kind: each document is a JSON string at `abaco:{kind}:{key}`; the sorted sets
//! `abaco:{kind}:idx` (all documents) and `abaco:{kind}:idx:{parent}` (one parent) are scored by
//! the per-kind counter `abaco:{kind}:seq`, which gives the insertion order; the hash
//! `abaco:{kind}:parents` remembers each key's parent so a delete can find its index. Writes that
//! touch several of these run as Lua scripts, so they are atomic. `merge` reads, applies the patch
//! in Rust and writes back with a compare-and-set script, retrying when another writer got there
//! first: re-encoding the document inside Lua (cjson) would turn `[]` into `{}` and round large
//! integers. `update` works the same way, inserting an absent document with the PUT script's
//! only-if-absent flag. The scripts that must look inside documents (`insert_unless_sibling`,
//! `delete_guarded`) decode them with cjson only to read one field, never to write one, and are
//! the PUT and DELETE scripts with a check in front. The keys `idx`, `seq`, `parents` and `idx:*`
//! are reserved.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use serde_json::{Map, Value};

use crate::backend::{apply_patch, guard_holds, Backend, Kind, Merge, Page, Update, UpdateFn};
use crate::split::redact;
use crate::{Result, StoreError};

/// Redis through one multiplexed, self-reconnecting connection (cheap to clone per call).
pub(crate) struct Redis {
    conn: ConnectionManager,
    scripts: Scripts,
}

struct Scripts {
    put: Script,
    delete: Script,
    delete_children: Script,
    compare_and_set: Script,
    insert_unless_sibling: Script,
    delete_guarded: Script,
}

/// KEYS: doc, global index, parents hash, seq counter, parent index.
/// ARGV: key, parent, doc JSON, parent-index prefix, "1" to insert only when absent.
const PUT: &str = r"
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score then score = redis.call('INCR', KEYS[4]) end
local old = redis.call('HGET', KEYS[3], ARGV[1])
if old and old ~= ARGV[2] then redis.call('ZREM', ARGV[4] .. old, ARGV[1]) end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('ZADD', KEYS[5], score, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
";

/// KEYS: doc, global index, parents hash. ARGV: key, parent-index prefix.
const DELETE: &str = r"
local n = redis.call('DEL', KEYS[1])
local parent = redis.call('HGET', KEYS[3], ARGV[1])
if parent then redis.call('ZREM', ARGV[2] .. parent, ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return n
";

/// KEYS: parent index, global index, parents hash. ARGV: document key prefix.
const DELETE_CHILDREN: &str = r"
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
local n = 0
for _, key in ipairs(keys) do
  n = n + redis.call('DEL', ARGV[1] .. key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
end
redis.call('DEL', KEYS[1])
return n
";

/// KEYS: doc. ARGV: the JSON read, the JSON to write.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return {'missing'} end
if current ~= ARGV[1] then return {'changed', current} end
redis.call('SET', KEYS[1], ARGV[2])
return {'set'}
";

/// Whether the top-level field ARGV[i0] of the JSON `text` is a string among ARGV[i0 + 1..]
/// (an undecodable document has no fields). Only reads: re-encoding would alter documents.
const FIELD_IN: &str = r"
local function field_in(text, i0)
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= 'table' then return false end
  local value = doc[ARGV[i0]]
  if type(value) ~= 'string' then return false end
  for i = i0 + 1, #ARGV do
    if value == ARGV[i] then return true end
  end
  return false
end
";

/// Prefix of the PUT script for `insert_unless_sibling` (ARGV[5] must be '1').
/// ARGV (after PUT's): document key prefix, field, blocking values.
const SIBLING_CHECK: &str = r"
for _, sibling in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local sibling_text = redis.call('GET', ARGV[6] .. sibling)
  if sibling_text and field_in(sibling_text, 7) then return 0 end
end
";

/// Prefix of the DELETE script for `delete_guarded`. ARGV (after DELETE's): field, allowed values.
const DELETE_GUARD: &str = r"
local guarded_text = redis.call('GET', KEYS[1])
if not guarded_text or not field_in(guarded_text, 3) then return 0 end
";

/// How often a merge re-reads after losing a compare-and-set before giving up. Each loss means
/// another writer succeeded, so only sustained contention on one document gets near it.
const MERGE_ATTEMPTS: usize = 1000;

impl Redis {
    /// Connects to `url` (failing within a few seconds when the server is unreachable).
    pub async fn connect(url: &str) -> Result<Redis> {
        let shown = redact(url);
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Backend(format!("invalid Redis URL {shown}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to Redis at {shown}: {e}"))
            })?;
        Ok(Redis {
            conn,
            scripts: Scripts {
                put: Script::new(PUT),
                delete: Script::new(DELETE),
                delete_children: Script::new(DELETE_CHILDREN),
                compare_and_set: Script::new(COMPARE_AND_SET),
                insert_unless_sibling: Script::new(&format!("{FIELD_IN}{SIBLING_CHECK}{PUT}")),
                delete_guarded: Script::new(&format!("{FIELD_IN}{DELETE_GUARD}{DELETE}")),
            },
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn write(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        doc: &Value,
        only_new: bool,
    ) -> Result<bool> {
        let text = encode(doc)?;
        let written: i64 = self
            .scripts
            .put
            .key(doc_key(kind, key)?)
            .key(index_key(kind))
            .key(parents_key(kind))
            .key(seq_key(kind))
            .key(parent_index_key(kind, parent))
            .arg(key)
            .arg(parent)
            .arg(text)
            .arg(parent_index_prefix(kind))
            .arg(if only_new { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure("put", kind, e))?;
        Ok(written == 1)
    }
}

/// The raw JSON of a document, for a compare-and-set.
async fn read_text(
    conn: &mut ConnectionManager,
    kind: Kind,
    redis_key: &str,
) -> Result<Option<String>> {
    redis::cmd("GET")
        .arg(redis_key)
        .query_async(conn)
        .await
        .map_err(|e| failure("update", kind, e))
}

fn doc_key(kind: Kind, key: &str) -> Result<String> {
    let reserved = matches!(key, "idx" | "seq" | "parents") || key.starts_with("idx:");
    if reserved {
        return Err(StoreError::Backend(format!(
            "Redis: the key {key:?} of {} is reserved for the store's indexes",
            kind.name()
        )));
    }
    Ok(format!("abaco:{}:{key}", kind.name()))
}

fn doc_prefix(kind: Kind) -> String {
    format!("abaco:{}:", kind.name())
}

fn index_key(kind: Kind) -> String {
    format!("abaco:{}:idx", kind.name())
}

fn parent_index_prefix(kind: Kind) -> String {
    format!("abaco:{}:idx:", kind.name())
}

fn parent_index_key(kind: Kind, parent: &str) -> String {
    format!("abaco:{}:idx:{parent}", kind.name())
}

fn parents_key(kind: Kind) -> String {
    format!("abaco:{}:parents", kind.name())
}

fn seq_key(kind: Kind) -> String {
    format!("abaco:{}:seq", kind.name())
}

fn encode(doc: &Value) -> Result<String> {
    serde_json::to_string(doc).map_err(|e| StoreError::Backend(format!("serialize: {e}")))
}

fn decode(kind: Kind, key: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        kind: kind.name(),
        key: key.to_string(),
        cause: e.to_string(),
    })
}

/// Lost or refused connections and timeouts are `Unavailable` (retryable); the rest `Backend`.
fn failure(what: &str, kind: Kind, e: RedisError) -> StoreError {
    let message = format!("Redis {what} on {}: {e}", kind.name());
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        StoreError::Unavailable(message)
    } else {
        StoreError::Backend(message)
    }
}

#[async_trait]
impl Backend for Redis {
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Value>> {
        let text: Option<String> = redis::cmd("GET")
            .arg(doc_key(kind, key)?)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| failure("get", kind, e))?;
        text.map(|t| decode(kind, key, &t)).transpose()
    }

    async fn put(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<()> {
        self.write(kind, key, parent, doc, false).await.map(|_| ())
    }

    async fn insert_new(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<bool> {
        self.write(kind, key, parent, doc, true).await
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool> {
        let n: i64 = self
            .scripts
            .delete
            .key(doc_key(kind, key)?)
            .key(index_key(kind))
            .key(parents_key(kind))
            .arg(key)
            .arg(parent_index_prefix(kind))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure("delete", kind, e))?;
        Ok(n > 0)
    }

    async fn delete_children(&self, kind: Kind, parent: &str) -> Result<u64> {
        let n: u64 = self
            .scripts
            .delete_children
            .key(parent_index_key(kind, parent))
            .key(index_key(kind))
            .key(parents_key(kind))
            .arg(doc_prefix(kind))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure("delete children", kind, e))?;
        Ok(n)
    }

    async fn list(
        &self,
        kind: Kind,
        parent: Option<&str>,
        page: Page,
    ) -> Result<Vec<(String, Value)>> {
        let index = match parent {
            Some(parent) => parent_index_key(kind, parent),
            None => index_key(kind),
        };
        let start = i64::try_from(page.offset).unwrap_or(i64::MAX);
        let stop = match page.limit {
            Some(0) => return Ok(Vec::new()),
            Some(limit) => start.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)) - 1,
            None => -1,
        };
        let mut conn = self.conn();
        let keys: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(start)
            .arg(stop)
            .query_async(&mut conn)
            .await
            .map_err(|e| failure("list", kind, e))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let doc_keys = keys
            .iter()
            .map(|k| doc_key(kind, k))
            .collect::<Result<Vec<_>>>()?;
        let texts: Vec<Option<String>> = redis::cmd("MGET")
            .arg(doc_keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| failure("list", kind, e))?;
        // A document deleted between the two reads is simply left out.
        keys.into_iter()
            .zip(texts)
            .filter_map(|(key, text)| text.map(|t| (key, t)))
            .map(|(key, text)| {
                let doc = decode(kind, &key, &text)?;
                Ok((key, doc))
            })
            .collect()
    }

    async fn count(&self, kind: Kind, parent: Option<&str>) -> Result<u64> {
        let index = match parent {
            Some(parent) => parent_index_key(kind, parent),
            None => index_key(kind),
        };
        redis::cmd("ZCARD")
            .arg(index)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| failure("count", kind, e))
    }

    async fn merge(
        &self,
        kind: Kind,
        key: &str,
        guard: Option<(&str, &[&str])>,
        patch: &Map<String, Value>,
    ) -> Result<Merge> {
        let redis_key = doc_key(kind, key)?;
        let mut conn = self.conn();
        let mut current: Option<String> = redis::cmd("GET")
            .arg(&redis_key)
            .query_async(&mut conn)
            .await
            .map_err(|e| failure("merge", kind, e))?;
        for _ in 0..MERGE_ATTEMPTS {
            let Some(text) = current.take() else {
                return Ok(Merge::Missing);
            };
            let mut doc = decode(kind, key, &text)?;
            if !guard_holds(&doc, guard) {
                return Ok(Merge::Refused(doc));
            }
            apply_patch(&mut doc, patch);
            let outcome: Vec<String> = self
                .scripts
                .compare_and_set
                .key(&redis_key)
                .arg(&text)
                .arg(encode(&doc)?)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| failure("merge", kind, e))?;
            let mut outcome = outcome.into_iter();
            match outcome.next().as_deref() {
                Some("set") => return Ok(Merge::Applied(doc)),
                Some("changed") => current = outcome.next(),
                _ => return Ok(Merge::Missing),
            }
        }
        Err(StoreError::Backend(format!(
            "Redis merge on {} {key}: gave up after {MERGE_ATTEMPTS} concurrent updates",
            kind.name()
        )))
    }

    async fn update(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        f: &UpdateFn<'_>,
    ) -> Result<Update> {
        let redis_key = doc_key(kind, key)?;
        let mut conn = self.conn();
        let mut current = read_text(&mut conn, kind, &redis_key).await?;
        for _ in 0..MERGE_ATTEMPTS {
            let doc = current
                .as_deref()
                .map(|t| decode(kind, key, t))
                .transpose()?;
            let Some(next) = f(doc.as_ref()) else {
                return Ok(Update::Unchanged(doc));
            };
            let Some(text) = current.take() else {
                if self.write(kind, key, parent, &next, true).await? {
                    return Ok(Update::Written(next));
                }
                // Inserted by another writer meanwhile: start over from its document.
                current = read_text(&mut conn, kind, &redis_key).await?;
                continue;
            };
            let outcome: Vec<String> = self
                .scripts
                .compare_and_set
                .key(&redis_key)
                .arg(&text)
                .arg(encode(&next)?)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| failure("update", kind, e))?;
            let mut outcome = outcome.into_iter();
            match outcome.next().as_deref() {
                Some("set") => return Ok(Update::Written(next)),
                Some("changed") => current = outcome.next(),
                // Deleted meanwhile: `current` stays `None`, so the next round inserts.
                _ => {}
            }
        }
        Err(StoreError::Backend(format!(
            "Redis update on {} {key}: gave up after {MERGE_ATTEMPTS} concurrent updates",
            kind.name()
        )))
    }

    async fn insert_unless_sibling(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        doc: &Value,
        field: &str,
        blocking: &[&str],
    ) -> Result<bool> {
        let text = encode(doc)?;
        let mut invocation = self.scripts.insert_unless_sibling.prepare_invoke();
        invocation
            .key(doc_key(kind, key)?)
            .key(index_key(kind))
            .key(parents_key(kind))
            .key(seq_key(kind))
            .key(parent_index_key(kind, parent))
            .arg(key)
            .arg(parent)
            .arg(text)
            .arg(parent_index_prefix(kind))
            .arg("1")
            .arg(doc_prefix(kind))
            .arg(field);
        for value in blocking {
            invocation.arg(*value);
        }
        let inserted: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure("insert unless sibling", kind, e))?;
        Ok(inserted == 1)
    }

    async fn delete_guarded(&self, kind: Kind, key: &str, guard: (&str, &[&str])) -> Result<bool> {
        let (field, allowed) = guard;
        let mut invocation = self.scripts.delete_guarded.prepare_invoke();
        invocation
            .key(doc_key(kind, key)?)
            .key(index_key(kind))
            .key(parents_key(kind))
            .arg(key)
            .arg(parent_index_prefix(kind))
            .arg(field);
        for value in allowed {
            invocation.arg(*value);
        }
        let n: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| failure("guarded delete", kind, e))?;
        Ok(n > 0)
    }
}
