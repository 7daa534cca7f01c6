//! OAuth clients and the platform's own access tokens (the authorization server behind clientg
//! and `POST /oauth2/token`): the signing key shared by every process (created once, kept in the
//! store), client records with hashed secrets and refresh tokens, and token issuance. A token
//! names its client; deleting the client (its worker went away) revokes the token at once.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use abaco_core::time::{now, Timestamp};
use abaco_core::{DbId, Tenant, WorkerId};
use abaco_identity::{hash_secret, new_secret, verify_secret, TokenIssuer};
use abaco_store::{Kind, Store, StoreError, Update};

/// Where the platform's signing key lives in the store.
const SIGNING_KEY: &str = "oauth:signing_key";

/// The role platform tokens carry: a regular user acting as the client's owner.
pub const TOKEN_ROLE: &str = "Internal/abaco-user";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("token signing failed: {0}")]
    Signing(String),
}

/// A registered OAuth client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub secret_hash: String,
    pub tenant: Tenant,
    /// The user tokens of this client act as.
    pub owner: String,
    /// Set for clients made by clientg for a worker.
    pub actor_id: Option<DbId>,
    pub worker_id: Option<WorkerId>,
    #[serde(default)]
    pub refresh_hash: Option<String>,
    pub create_time: Timestamp,
}

/// Loads the platform's RSA signing key, creating it on first use (atomically, so processes that
/// start together agree on one key).
pub async fn signing_key(store: &Store) -> Result<TokenIssuer, TokenError> {
    let signing = |e: &dyn std::fmt::Display| TokenError::Signing(e.to_string());
    if let Some(doc) = store.raw().get(Kind::Meta, SIGNING_KEY).await? {
        return decode_key(&doc);
    }
    let fresh = TokenIssuer::generate().map_err(|e| signing(&e))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(fresh.to_pkcs8());
    let f = move |current: Option<&Value>| match current {
        Some(_) => None,
        None => Some(json!({ "pkcs8": encoded })),
    };
    match store
        .raw()
        .update(Kind::Meta, SIGNING_KEY, "oauth", &f)
        .await?
    {
        Update::Written(doc) | Update::Unchanged(Some(doc)) => decode_key(&doc),
        Update::Unchanged(None) => Err(TokenError::Signing("the key vanished".into())),
    }
}

fn decode_key(doc: &Value) -> Result<TokenIssuer, TokenError> {
    let bytes = doc
        .get("pkcs8")
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| TokenError::Signing("the stored signing key is unreadable".into()))?;
    TokenIssuer::from_pkcs8(&bytes).map_err(|e| TokenError::Signing(e.to_string()))
}

/// Creates a client and returns it with its secret (shown once; only a hash is stored).
pub async fn create_client(
    store: &Store,
    client_id: &str,
    tenant: &Tenant,
    owner: &str,
    worker: Option<(&DbId, &WorkerId)>,
) -> Result<(Client, String), TokenError> {
    let secret = new_secret();
    let client = Client {
        client_id: client_id.to_string(),
        secret_hash: hash_secret(&secret),
        tenant: tenant.clone(),
        owner: owner.to_string(),
        actor_id: worker.map(|(a, _)| a.clone()),
        worker_id: worker.map(|(_, w)| w.clone()),
        refresh_hash: None,
        create_time: now(),
    };
    let doc = serde_json::to_value(&client).map_err(|e| TokenError::Signing(e.to_string()))?;
    store
        .raw()
        .put(Kind::Clients, client_id, tenant.as_str(), &doc)
        .await?;
    Ok((client, secret))
}

pub async fn client(store: &Store, client_id: &str) -> Result<Option<Client>, TokenError> {
    Ok(store
        .raw()
        .get(Kind::Clients, client_id)
        .await?
        .and_then(|doc| serde_json::from_value(doc).ok()))
}

/// The client, if `secret` is its secret.
pub async fn authenticate(
    store: &Store,
    client_id: &str,
    secret: &str,
) -> Result<Option<Client>, TokenError> {
    Ok(client(store, client_id)
        .await?
        .filter(|c| verify_secret(secret, &c.secret_hash)))
}

pub async fn delete_client(store: &Store, client_id: &str) -> Result<bool, TokenError> {
    Ok(store.raw().delete(Kind::Clients, client_id).await?)
}

/// Every client (health removes those whose worker is gone).
pub async fn all_clients(store: &Store) -> Result<Vec<Client>, TokenError> {
    Ok(store
        .raw()
        .list(Kind::Clients, None, abaco_store::Page::all())
        .await?
        .into_iter()
        .filter_map(|(_, doc)| serde_json::from_value(doc).ok())
        .collect())
}

/// A short-lived access token acting as the client's owner.
pub fn access_token(
    issuer: &TokenIssuer,
    client: &Client,
    ttl_secs: i64,
) -> Result<String, TokenError> {
    let mut claims = Map::new();
    claims.insert("abaco_tenant".into(), json!(client.tenant.as_str()));
    claims.insert("sub".into(), json!(client.owner));
    claims.insert("http://wso2.org/claims/enduser".into(), json!(client.owner));
    claims.insert("http://wso2.org/claims/role".into(), json!(TOKEN_ROLE));
    claims.insert("client_id".into(), json!(client.client_id));
    issuer
        .issue(claims, ttl_secs, now().timestamp())
        .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Issues a new refresh token for the client (replacing the previous one).
pub async fn rotate_refresh_token(store: &Store, client: &Client) -> Result<String, TokenError> {
    let token = format!("{}.{}", client.client_id, new_secret());
    let hash = hash_secret(&token);
    let mut patch = Map::new();
    patch.insert("refresh_hash".into(), json!(hash));
    store
        .raw()
        .merge(Kind::Clients, &client.client_id, None, &patch)
        .await?;
    Ok(token)
}

/// The client a refresh token belongs to, if it is that client's current refresh token.
pub async fn redeem_refresh_token(
    store: &Store,
    token: &str,
) -> Result<Option<Client>, TokenError> {
    let Some((client_id, _)) = token.rsplit_once('.') else {
        return Ok(None);
    };
    Ok(client(store, client_id).await?.filter(|c| {
        c.refresh_hash
            .as_deref()
            .is_some_and(|h| verify_secret(token, h))
    }))
}
