//! OAuth clients and the platform's own access tokens (the authorization server behind clientg
//! and `POST /oauth2/token`): the signing key shared by every process (created once, kept in the
//! store, sealed with `[web] encryption_key` when one is set), client records with hashed
//! secrets and refresh tokens, and token issuance. A token names its client; deleting the client
//! (its worker went away) revokes the token at once.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use abaco_core::time::{now, Timestamp};
use abaco_core::{DbId, Tenant, WorkerId};
use abaco_identity::secrets::SecretBox;
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
/// start together agree on one key). With `secrets` (`[web] encryption_key`) the key is kept
/// sealed with it (`sealed`); a key stored in the clear before the encryption key was set is
/// sealed on this load. A sealed key without `secrets`, or with other ones, is an error that says
/// so: the platform never falls back to a new key, which would silently void every token.
pub async fn signing_key(
    store: &Store,
    secrets: Option<&SecretBox>,
) -> Result<TokenIssuer, TokenError> {
    let signing = |e: &dyn std::fmt::Display| TokenError::Signing(e.to_string());
    if let Some(doc) = store.raw().get(Kind::Meta, SIGNING_KEY).await? {
        let issuer = decode_key(&doc, secrets)?;
        if let (Some(secrets), Some(clear)) = (secrets, doc.get("pkcs8").and_then(Value::as_str)) {
            let sealed = json!({ "sealed": secrets.encrypt(clear) });
            let clear = clear.to_string();
            // Only the clear document this process read is replaced.
            let f = move |current: Option<&Value>| match current {
                Some(doc) if doc.get("pkcs8").and_then(Value::as_str) == Some(clear.as_str()) => {
                    Some(sealed.clone())
                }
                _ => None,
            };
            store
                .raw()
                .update(Kind::Meta, SIGNING_KEY, "oauth", &f)
                .await?;
            tracing::info!("the platform signing key is now sealed with [web] encryption_key");
        }
        return Ok(issuer);
    }
    let fresh = TokenIssuer::generate().map_err(|e| signing(&e))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(fresh.to_pkcs8());
    let stored = match secrets {
        Some(secrets) => json!({ "sealed": secrets.encrypt(&encoded) }),
        None => json!({ "pkcs8": encoded }),
    };
    let f = move |current: Option<&Value>| match current {
        Some(_) => None,
        None => Some(stored.clone()),
    };
    match store
        .raw()
        .update(Kind::Meta, SIGNING_KEY, "oauth", &f)
        .await?
    {
        Update::Written(doc) | Update::Unchanged(Some(doc)) => decode_key(&doc, secrets),
        Update::Unchanged(None) => Err(TokenError::Signing("the key vanished".into())),
    }
}

fn decode_key(doc: &Value, secrets: Option<&SecretBox>) -> Result<TokenIssuer, TokenError> {
    let encoded =
        match (doc.get("sealed").and_then(Value::as_str), secrets) {
            (Some(sealed), Some(secrets)) => secrets.decrypt(sealed).map_err(|e| {
                TokenError::Signing(format!(
                    "the stored signing key cannot be opened with [web] encryption_key ({e}); \
                 set the key it was sealed with"
                ))
            })?,
            (Some(_), None) => return Err(TokenError::Signing(
                "the stored signing key is sealed with an encryption key; set [web] encryption_key"
                    .into(),
            )),
            (None, _) => doc
                .get("pkcs8")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| TokenError::Signing("the stored signing key is unreadable".into()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("abaco-tokens-{}", new_secret()));
        (
            Store::open_embedded(&dir).expect("embedded store opens"),
            dir,
        )
    }

    fn secrets(key: &str) -> SecretBox {
        SecretBox::new(key).expect("a valid key")
    }

    async fn stored(store: &Store) -> Value {
        store
            .raw()
            .get(Kind::Meta, SIGNING_KEY)
            .await
            .unwrap()
            .expect("the signing key is stored")
    }

    #[tokio::test]
    async fn signing_key_is_sealed_with_the_encryption_key_and_never_replaced() {
        let (store, dir) = temp_store();
        let key = SecretBox::generate_key();
        let first = signing_key(&store, Some(&secrets(&key))).await.unwrap();
        let doc = stored(&store).await;
        assert!(doc.get("pkcs8").is_none(), "stored in the clear: {doc}");
        assert!(doc["sealed"].as_str().unwrap().starts_with("v1:"), "{doc}");
        // The same key comes back, in this process and in any other holding the secret.
        let again = signing_key(&store, Some(&secrets(&key))).await.unwrap();
        assert_eq!(first.to_pkcs8(), again.to_pkcs8());
        // Without the secret, or with another, loading fails and names the config key.
        let missing = signing_key(&store, None).await.err().unwrap().to_string();
        assert!(missing.contains("[web] encryption_key"), "{missing}");
        let other = SecretBox::generate_key();
        let wrong = signing_key(&store, Some(&secrets(&other)))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(wrong.contains("cannot be opened"), "{wrong}");
        assert_eq!(
            stored(&store).await,
            doc,
            "a failed load must not replace the key"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_clear_signing_key_is_sealed_once_an_encryption_key_is_set() {
        let (store, dir) = temp_store();
        let clear = signing_key(&store, None).await.unwrap();
        assert!(stored(&store).await["pkcs8"].is_string());
        let key = SecretBox::generate_key();
        let sealed = signing_key(&store, Some(&secrets(&key))).await.unwrap();
        assert_eq!(
            clear.to_pkcs8(),
            sealed.to_pkcs8(),
            "the key itself is kept"
        );
        let doc = stored(&store).await;
        assert!(
            doc.get("pkcs8").is_none() && doc["sealed"].is_string(),
            "{doc}"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
